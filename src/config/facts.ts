// The one home of facts shared across eni-dpdk: names, patterns, driver lists, media types, and
// the device plugin's resource-name rules. Each is written once and imported where it is used.
import type { BucketSize } from "../core/deadline.js";

export const SOURCE_NAMES = ["file", "user-data", "tags", "nodeeni"] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

/** The userspace drivers a DPDK ENI may be bound to. */
export const DPDK_DRIVERS = ["vfio-pci", "igb_uio", "uio_pci_generic"] as const;
export type DpdkDriver = (typeof DPDK_DRIVERS)[number];
export function isDpdkDriver(d: string | undefined): d is DpdkDriver {
  return d !== undefined && (DPDK_DRIVERS as readonly string[]).includes(d);
}

export const MAX_ENIS = 32;

/**
 * Who attaches an ENI: eni-dpdk (create or adopt, attach, through EC2) or someone else (the launch
 * template or an Auto Scaling lifecycle hook), found through IMDS only.
 */
export const ATTACH_MODES = ["eni-dpdk", "external"] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

/** The VPC CNI leaves ENIs with this tag alone (its ipamd ignores it on the primary ENI). */
export const TAG_NO_MANAGE = "node.k8s.amazonaws.com/no_manage";

export const ENI_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;
export const SUBNET_ID_RE = /^subnet-([0-9a-f]{8}|[0-9a-f]{17})$/;
export const SG_ID_RE = /^sg-([0-9a-f]{8}|[0-9a-f]{17})$/;
export const INSTANCE_ID_RE = /^i-([0-9a-f]{8}|[0-9a-f]{17})$/;
/** A PCI address DDDD:BB:DD.F, lower-case: it becomes a sysfs path, so nothing else may pass. */
export const BDF_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
export const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
/** A PCI vendor or device id as sysfs shows it, without 0x. */
export const HEX4_RE = /^[0-9a-f]{4}$/;
/** A kernel driver name (it becomes a sysfs path segment). */
export const DRIVER_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** ENA's PCI vendor; EFA shares it, so a device is never chosen by vendor alone. */
export const ENA_VENDOR = "1d0f";
/** The device ids the DPDK ENA PMD accepts (the kernel ena driver claims more). */
export const ENA_DPDK_DEVICE_IDS = ["ec20", "ec21"];

/** Our user-data part, and nodeadm's. */
export const OUR_MEDIA_TYPE = "application/eni-dpdk+toml";
export const NODEADM_MEDIA_TYPE = "application/node.eks.aws";

export const CONFIG_HOME = "/etc/eni-dpdk";
export const CONFIG_FILE = "/etc/eni-dpdk/config.toml";
export const CONFIG_DIR = "/etc/eni-dpdk/config.d";

// ---- the device plugin's resource names -----------------------------------------------------------

const DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS_SUBDOMAIN_RE = new RegExp(`^${DNS_LABEL}(\\.${DNS_LABEL})*$`);
/** Stricter than the plugin (which allows "-"): pods get it as the env var PCIDEVICE_<PREFIX>_<NAME>. */
export const RESOURCE_NAME_RE = /^[A-Za-z0-9_]{1,63}$/;

/** Split `prefix/name`; the prefix falls back to [sriov].resource_prefix. */
export function splitResourceName(
  full: string,
  defaultPrefix: string,
): { prefix: string; name: string } {
  const i = full.lastIndexOf("/");
  return i < 0
    ? { prefix: defaultPrefix, name: full }
    : { prefix: full.slice(0, i), name: full.slice(i + 1) };
}

/** The full name `prefix/name`, as the plugin advertises it. */
export function fullResourceName(resource: string, defaultPrefix: string): string {
  const { prefix, name } = splitResourceName(resource, defaultPrefix);
  return `${prefix}/${name}`;
}

/**
 * The env var a pod gets its devices' PCI addresses in, as the plugin names it (pkg/resources
 * GetEnvs): PCIDEVICE_<prefix>_<name>, "." → "_", upper-cased. Nothing else is replaced.
 */
export function pluginEnvVar(prefix: string, name: string): string {
  return `PCIDEVICE_${prefix}_${name}`.replaceAll(".", "_").toUpperCase();
}

/** Problems with a resource name, as messages (empty when valid). */
export function resourceNameProblems(full: string, defaultPrefix: string): string[] {
  const out: string[] = [];
  if (full.split("/").length > 2)
    return [`"${full}" has more than one "/"; expected prefix/name, e.g. amazon.com/ena_dpdk`];
  const { prefix, name } = splitResourceName(full, defaultPrefix);
  if (!RESOURCE_NAME_RE.test(name)) {
    out.push(
      `name "${name}" must match [A-Za-z0-9_]{1,63}: the device plugin exports it to pods as the env var PCIDEVICE_<PREFIX>_<NAME>, where "-" or "." breaks the variable name`,
    );
  }
  out.push(...prefixProblems(prefix));
  return out;
}

export function prefixProblems(prefix: string): string[] {
  if (prefix.length > 253 || !DNS_SUBDOMAIN_RE.test(prefix)) {
    return [
      `prefix "${prefix}" must be a DNS subdomain (lower-case labels of [a-z0-9-] joined by ".", e.g. amazon.com)`,
    ];
  }
  if (prefix === "kubernetes.io" || prefix.endsWith(".kubernetes.io")) {
    return [`prefix "${prefix}" is reserved by Kubernetes; use your own domain, e.g. amazon.com`];
  }
  return [];
}

// ---- EC2's request throttling ----------------------------------------------------------------------

/**
 * EC2's documented buckets (EC2 API reference, "Request throttling"), per account and region and
 * **per action**, shared with every other caller there (the VPC CNI, Karpenter). A throttled call
 * gets RequestLimitExceeded and takes no token. The emulator enforces these; the client paces by them.
 */
export const EC2_BUCKETS: Readonly<Record<string, BucketSize>> = {
  CreateNetworkInterface: { capacity: 100, refillPerSec: 5 },
  ModifyNetworkInterfaceAttribute: { capacity: 100, refillPerSec: 5 },
  DeleteNetworkInterface: { capacity: 100, refillPerSec: 5 },
  AttachNetworkInterface: { capacity: 50, refillPerSec: 5 },
  DetachNetworkInterface: { capacity: 50, refillPerSec: 5 },
  CreateTags: { capacity: 100, refillPerSec: 10 },
};
/** Any other mutating action: EC2's plain "mutating actions" bucket. */
export const EC2_MUTATING_BUCKET: BucketSize = { capacity: 50, refillPerSec: 5 };
/** Describe* with a filter or pagination (and every describe not listed below). */
export const EC2_DESCRIBE_BUCKET: BucketSize = { capacity: 100, refillPerSec: 20 };
/** These describes called without a filter or pagination have their own, smaller bucket. */
export const EC2_UNFILTERED_BUCKET: BucketSize = { capacity: 50, refillPerSec: 10 };
const UNFILTERED_ACTIONS = new Set([
  "DescribeInstances",
  "DescribeNetworkInterfaces",
  "DescribeSecurityGroups",
]);

/** Read-only actions: Describe*, Get*, List*. Everything else counts against a mutating bucket. */
export const isEc2ReadAction = (action: string) => /^(Describe|Get|List)/.test(action);

/**
 * The bucket a request draws from: its action, or `<action>:unfiltered` for the describes that
 * EC2 limits harder when they come without Filter or pagination (MaxResults/NextToken).
 */
export function ec2BucketKey(action: string, filteredOrPaged: boolean): string {
  return UNFILTERED_ACTIONS.has(action) && !filteredOrPaged ? `${action}:unfiltered` : action;
}

/** The EC2 actions eni-dpdk calls (cloud/ec2.ts `Ec2Api`, one method each). */
export const EC2_ACTIONS = [
  "CreateNetworkInterface",
  "AttachNetworkInterface",
  "ModifyNetworkInterfaceAttribute",
  "DeleteNetworkInterface",
  "DescribeNetworkInterfaces",
  "DescribeInstances",
  "DescribeSubnets",
  "DescribeSecurityGroups",
  "DescribeInstanceTypes",
  "DescribeTags",
] as const;
export type Ec2Action = (typeof EC2_ACTIONS)[number];

/** The categories a bucket falls back to when its own key is not configured: by isEc2ReadAction. */
export const EC2_BUCKET_CATEGORIES = ["mutating", "describe"] as const;

/**
 * The keys an account's own limits may be given for (config `[ec2.limits]`): the bucket of each
 * action eni-dpdk calls, the unfiltered describes' own buckets, and the two categories.
 */
export const EC2_LIMIT_KEYS: readonly string[] = [
  ...EC2_ACTIONS,
  ...[...UNFILTERED_ACTIONS].map((a) => `${a}:unfiltered`),
  ...EC2_BUCKET_CATEGORIES,
];

/** The documented size of the bucket behind `key` (from ec2BucketKey). */
export function ec2Bucket(key: string): BucketSize {
  if (key.endsWith(":unfiltered")) return EC2_UNFILTERED_BUCKET;
  return EC2_BUCKETS[key] ?? (isEc2ReadAction(key) ? EC2_DESCRIBE_BUCKET : EC2_MUTATING_BUCKET);
}
