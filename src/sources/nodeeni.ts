// NodeENI objects (networking.k8s.aws/v1alpha1, the CRD of aws-multi-eni-controller) as a config
// source, read from the API before kubelet starts, and status reporting back to them.
//
// Mapping: one Layer per applicable NodeENI, source "NodeENI <name>", one [[eni]] per subnet in the
// union subnetID, subnetIDs, subnetName, subnetNames (in that order, exact duplicates dropped).
// ENI names: the NodeENI name with "." turned into "-" for the first subnet, then "<name>-1",
// "<name>-2" … for further subnets; a name that would exceed 40 characters is cut and given a
// 6-hex-digit hash of the full NodeENI name, so names stay unique, stable and valid (ENI_NAME_RE).
// deviceIndex (default 1) grows by one per further subnet. enableDPDK absent means false, as in the
// existing controller; dpdkDriver defaults to vfio-pci; deleteOnTermination to true; mtu 0 or absent
// leaves [[eni]] mtu at its default.
import { createHash } from "node:crypto";
import { nearest, type Config, type Layer } from "../config/model.js";
import { BDF_RE, ENI_NAME_RE, NODEADM_MEDIA_TYPE, SG_ID_RE, SUBNET_ID_RE } from "../config/facts.js";
import { FORBIDDEN_KEY_MESSAGE, isForbiddenKey, lookupTable, nullRecord, own } from "../core/records.js";
import { InputError, OpError, type Problem } from "../core/errors.js";
import { type Host } from "../host/host.js";
import { delayFor, sleep, type Deadline } from "../core/deadline.js";
import type { Imds, InstanceIdentity } from "../cloud/imds.js";
import type { Logger } from "../core/log.js";
import { loadState, type State } from "../core/state.js";
import type { KubeClient, NodeConfigCluster, NodeEniAttachment, NodeEniObject } from "../cloud/kube.js";
import { type Source } from "./chain.js";


/** The part of a decoded user-data part we read (src/userdata.ts UserDataPart fits). */
export interface NodeConfigPartLike {
  contentType: string;
  label: string;
  text: string;
}

export interface NodeEniInput {
  imds: Imds;
  instance: InstanceIdentity;
  userDataParts: NodeConfigPartLike[];
  /** the file-level config; [kubernetes] is read from it */
  config: Config;
  host: Host;
  log: Logger;
  deadline: Deadline;
  state: State;
  /** how long to wait for an unreachable API; default min(half the deadline, 120 s) */
  apiWaitMs?: number;
  /** default process.arch */
  arch?: string;
}

export interface NodeIdentity {
  name: string;
  /** why this name: `[kubernetes].node_name`, `kubelet --hostname-override`, `InstanceIdNodeName`, `private DNS name` */
  nameFrom: string;
  labels: Record<string, string>;
  instanceId: string;
}

/** A connection to the cluster plus who we are in it; returned by nodeEniLayers for status and watch. */
export interface NodeEniSession {
  client: KubeClient;
  node: NodeIdentity;
}

export interface NodeEniResult {
  layers: Layer[];
  warnings: string[];
  fromCache: boolean;
  nodeName: string;
  /** every NodeENI read (name + spec), to cache with rememberNodeEnis after a successful apply */
  items: NodeEniObject[];
  /** when items were read from the API (the cache's time when fromCache) */
  fetchedAt: string;
  /** the NodeENIs that apply to this node */
  applied: string[];
  /** undefined when no cluster is configured (nothing in NodeConfig or [kubernetes]) */
  session?: NodeEniSession;
}

// ---- NodeConfig (nodeadm) ---------------------------------------------------------------------

export interface NodeConfigInfo {
  cluster?: NodeConfigCluster;
  kubeletFlags: string[];
  instanceIdNodeName: boolean;
}

/**
 * Merge every NodeConfig document in the nodeadm parts (later documents win field by field,
 * kubelet flags accumulate, as nodeadm merges them). Unparseable parts are warned about and skipped:
 * nodeadm itself will fail on them and say so.
 */
export async function parseNodeConfigs(parts: NodeConfigPartLike[], warnings: string[]): Promise<NodeConfigInfo> {
  const info: NodeConfigInfo = { kubeletFlags: [], instanceIdNodeName: false };
  const mine = parts.filter((p) => p.contentType === NODEADM_MEDIA_TYPE);
  if (mine.length === 0) return info;
  const YAML = await (await import("../cloud/kube.js")).loadYaml();
  for (const part of mine) {
    for (const doc of YAML.parseAllDocuments(part.text)) {
      if (doc.errors.length) {
        warnings.push(`${part.label}: not valid YAML (${doc.errors[0]!.message.split("\n")[0]}); ignored for NodeENI`);
        continue;
      }
      let js: { kind?: unknown; spec?: unknown } | null;
      try {
        js = doc.toJS() as typeof js;
      } catch (e) {
        // e.g. an alias bomb, which yaml refuses to expand
        warnings.push(`${part.label}: YAML cannot be read (${(e as Error).message.split("\n")[0]}); ignored for NodeENI`);
        continue;
      }
      if (!isObject(js) || own(js, "kind") !== "NodeConfig" || !isObject(own(js, "spec"))) continue;
      const spec = own(js, "spec") as Record<string, unknown>;
      const cluster = isObject(own(spec, "cluster")) ? (own(spec, "cluster") as Record<string, unknown>) : {};
      const c: NodeConfigCluster = { ...info.cluster, source: part.label };
      for (const k of ["name", "apiServerEndpoint", "certificateAuthority"] as const) {
        const v = own(cluster, k);
        if (typeof v === "string" && v) c[k] = v;
      }
      info.cluster = c;
      const kubelet = own(spec, "kubelet");
      const flags = isObject(kubelet) ? own(kubelet, "flags") : undefined;
      if (Array.isArray(flags)) info.kubeletFlags.push(...flags.filter((f): f is string => typeof f === "string"));
      const gates = own(spec, "featureGates");
      const gate = isObject(gates) ? own(gates, "InstanceIdNodeName") : undefined;
      if (typeof gate === "boolean") info.instanceIdNodeName = gate;
    }
  }
  return info;
}

/** Values of a kubelet flag given as `--flag=value` or `--flag value` (inside one or two strings). */
export function flagValues(flags: string[], name: string): string[] {
  const out: string[] = [];
  const words = flags.flatMap((f) => f.trim().split(/\s+/));
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!.replace(/^--?/, "-").replace(/^-/, "--");
    if (w === `--${name}` && i + 1 < words.length) out.push(words[++i]!);
    else if (w.startsWith(`--${name}=`)) out.push(w.slice(name.length + 3));
  }
  return out;
}

/** `--node-labels=a=b,c=d` → {a: "b", c: "d"} (later flags win). */
export function labelsFromKubeletFlags(flags: string[]): Record<string, string> {
  const labels = nullRecord<string>();
  for (const v of flagValues(flags, "node-labels")) {
    for (const pair of v.replace(/^["']|["']$/g, "").split(",")) {
      const i = pair.indexOf("=");
      if (i > 0) labels[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    }
  }
  return { ...labels };
}

/** The GOARCH-style name kubelet uses for kubernetes.io/arch. */
export function kubeArch(nodeArch: string): string {
  return nodeArch === "x64" ? "amd64" : nodeArch === "ia32" ? "386" : nodeArch;
}

/**
 * This node's name and labels as kubelet will register them. Name: [kubernetes].node_name, else
 * kubelet's --hostname-override from NodeConfig flags, else the instance id when nodeadm's
 * InstanceIdNodeName gate is on, else the private DNS name (IMDS local-hostname).
 * Labels, later winning: well-known ones (kubelet and the AWS cloud controller), NodeConfig's
 * --node-labels, [kubernetes].node_labels.
 */
export function nodeIdentity(a: {
  instance: InstanceIdentity;
  nodeConfig: NodeConfigInfo;
  k8s: Config["kubernetes"];
  arch: string;
  zoneId?: string;
}): NodeIdentity {
  const override = flagValues(a.nodeConfig.kubeletFlags, "hostname-override").at(-1);
  let name: string;
  let nameFrom: string;
  if (a.k8s.node_name) [name, nameFrom] = [a.k8s.node_name, "[kubernetes].node_name"];
  else if (override) [name, nameFrom] = [override, "kubelet --hostname-override in NodeConfig"];
  else if (a.nodeConfig.instanceIdNodeName) [name, nameFrom] = [a.instance.instanceId, "NodeConfig featureGates.InstanceIdNodeName"];
  else if (a.instance.localHostname) [name, nameFrom] = [a.instance.localHostname, "private DNS name (IMDS local-hostname)"];
  else [name, nameFrom] = [a.instance.instanceId, "instance id (IMDS has no local-hostname)"];
  const arch = kubeArch(a.arch);
  const labels: Record<string, string> = {
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": arch,
    "kubernetes.io/hostname": name.toLowerCase(),
    "beta.kubernetes.io/os": "linux",
    "beta.kubernetes.io/arch": arch,
    "node.kubernetes.io/instance-type": a.instance.instanceType,
    "beta.kubernetes.io/instance-type": a.instance.instanceType,
    "topology.kubernetes.io/zone": a.instance.az,
    "topology.kubernetes.io/region": a.instance.region,
    "failure-domain.beta.kubernetes.io/zone": a.instance.az,
    "failure-domain.beta.kubernetes.io/region": a.instance.region,
    ...(a.zoneId ? { "topology.k8s.aws/zone-id": a.zoneId } : {}),
    ...labelsFromKubeletFlags(a.nodeConfig.kubeletFlags),
    ...a.k8s.node_labels,
  };
  return { name, nameFrom, labels, instanceId: a.instance.instanceId };
}

// ---- selection and mapping ---------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Equality-based selector, as the controller uses it (labels.SelectorFromSet): every entry must be
 * a label of the node with that value; an empty selector selects every node. Undefined when the
 * selector itself is malformed.
 */
export function selectorMatches(selector: unknown, labels: Record<string, string>): boolean | undefined {
  if (!isObject(selector)) return undefined;
  for (const [k, v] of Object.entries(selector)) {
    if (typeof v !== "string") return undefined;
    if (own(labels, k) !== v) return false;
  }
  return true;
}

const MAX_ENI_NAME = 40;

/** Deterministic, valid ENI names for a NodeENI with `count` subnets (see the header comment). */
export function eniNamesFor(nodeEniName: string, count: number): string[] {
  const base = nodeEniName.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "nodeeni";
  const hash = createHash("sha256").update(nodeEniName).digest("hex").slice(0, 6);
  return Array.from({ length: count }, (_, i) => {
    const suffix = i === 0 ? "" : `-${i}`;
    if (base.length + suffix.length <= MAX_ENI_NAME && ENI_NAME_RE.test(base + suffix)) return base + suffix;
    const cut = base.slice(0, MAX_ENI_NAME - suffix.length - hash.length - 1).replace(/-+$/, "");
    return `${cut}-${hash}${suffix}`;
  });
}

export const NODEENI_SPEC_FIELDS = [
  "nodeSelector",
  "subnetID",
  "subnetIDs",
  "subnetName",
  "subnetNames",
  "securityGroupIDs",
  "securityGroupNames",
  "deviceIndex",
  "deleteOnTermination",
  "description",
  "mtu",
  "enableDPDK",
  "dpdkDriver",
  "dpdkResourceName",
  "dpdkPCIAddress",
] as const;

/** config [[eni]] key (or dpdk.<key>) → the NodeENI spec field it comes from */
const SPEC_FIELD_OF = lookupTable<string>({
  name: "metadata.name",
  device_index: "spec.deviceIndex",
  security_group_ids: "spec.securityGroupIDs",
  security_group_names: "spec.securityGroupNames",
  description: "spec.description",
  mtu: "spec.mtu",
  delete_on_termination: "spec.deleteOnTermination",
  "dpdk.enabled": "spec.enableDPDK",
  "dpdk.driver": "spec.dpdkDriver",
  "dpdk.resource_name": "spec.dpdkResourceName",
  "dpdk.pci_address": "spec.dpdkPCIAddress",
});

export interface MappedNodeEni {
  layer?: Layer;
  problems: Problem[];
  warnings: string[];
  eniNames: string[];
}

/**
 * One NodeENI → one Layer. NodeENI-specific checks (types, subnet union, ID patterns with the spec
 * index, device index range, DPDK fields) come first and name `NodeENI <name>: spec.<field>`; the
 * Layer's `locate` makes buildConfig's own problems point at the same spec fields.
 */
export function nodeEniToLayer(obj: NodeEniObject): MappedNodeEni {
  const name = obj.metadata.name;
  const source = `NodeENI ${name}`;
  const problems: Problem[] = [];
  const warnings: string[] = [];
  const bad = (field: string, message: string) => problems.push({ source, key: `spec.${field}`, message });
  const spec = obj.spec;
  if (!isObject(spec)) {
    problems.push({ source, key: "spec", message: "expected an object" });
    return { problems, warnings, eniNames: [] };
  }
  for (const k of Object.keys(spec)) {
    if (isForbiddenKey(k)) {
      bad(k, `unknown field: "${k}" ${FORBIDDEN_KEY_MESSAGE}; expected the NodeENI spec fields (${NODEENI_SPEC_FIELDS.join(", ")})`);
    } else if (!(NODEENI_SPEC_FIELDS as readonly string[]).includes(k)) {
      // Case slips (subnetIds) are the usual typo in these camelCase fields.
      const near = NODEENI_SPEC_FIELDS.find((f) => f.toLowerCase() === k.toLowerCase()) ?? nearest(k, [...NODEENI_SPEC_FIELDS]);
      warnings.push(`${source}: spec.${k}: unknown field, ignored${near ? `; did you mean "${near}"?` : ""}`);
    }
  }
  const str = (k: string): string | undefined => {
    const v = own(spec, k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") return void bad(k, `expected a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const strs = (k: string): string[] => {
    const v = own(spec, k);
    if (v === undefined || v === null) return [];
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
    bad(k, "expected an array of strings");
    return [];
  };
  const int = (k: string): number | undefined => {
    const v = own(spec, k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isSafeInteger(v)) return void bad(k, `expected an integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string): boolean | undefined => {
    const v = own(spec, k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") return void bad(k, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  };

  // The subnet union, each with the spec path it came from.
  const subnets: { kind: "id" | "name"; value: string; path: string }[] = [];
  const seen = new Set<string>();
  const addSubnet = (kind: "id" | "name", value: string, path: string) => {
    if (value === "") return bad(path.slice(5), "must not be empty");
    if (kind === "id" && !SUBNET_ID_RE.test(value)) return bad(path.slice(5), `expected "subnet-" followed by 8 or 17 hex digits, got "${value}"`);
    if (seen.has(`${kind}:${value}`)) return warnings.push(`${source}: ${path}: "${value}" is already listed; one ENI per subnet`);
    seen.add(`${kind}:${value}`);
    subnets.push({ kind, value, path });
  };
  const subnetID = str("subnetID");
  if (subnetID !== undefined) addSubnet("id", subnetID, "spec.subnetID");
  strs("subnetIDs").forEach((s, i) => addSubnet("id", s, `spec.subnetIDs[${i}]`));
  const subnetName = str("subnetName");
  if (subnetName !== undefined) addSubnet("name", subnetName, "spec.subnetName");
  strs("subnetNames").forEach((s, i) => addSubnet("name", s, `spec.subnetNames[${i}]`));
  if (subnets.length === 0 && !problems.some((p) => p.key.startsWith("spec.subnet"))) {
    bad("subnetID", "required: set subnetID, subnetIDs, subnetName or subnetNames (one ENI is made per subnet)");
  }

  const sgIds = strs("securityGroupIDs");
  sgIds.forEach((sg, i) => {
    if (!SG_ID_RE.test(sg)) bad(`securityGroupIDs[${i}]`, `expected "sg-" followed by 8 or 17 hex digits, got "${sg}"`);
  });
  const sgNames = strs("securityGroupNames");
  if (sgIds.length + sgNames.length === 0 && own(spec, "securityGroupIDs") === undefined && own(spec, "securityGroupNames") === undefined) {
    bad("securityGroupIDs", "required: at least one of securityGroupIDs or securityGroupNames (eni-dpdk never falls back to the VPC's default group)");
  }

  const deviceIndex = int("deviceIndex") ?? 1;
  if (deviceIndex < 1) bad("deviceIndex", `expected 1 or more (0 is the primary ENI), got ${deviceIndex}`);
  else if (deviceIndex + Math.max(subnets.length, 1) - 1 > 127) {
    bad("deviceIndex", `${deviceIndex} plus one per further subnet (${subnets.length} subnets) exceeds the largest device index 127`);
  }
  const mtu = int("mtu");
  const description = str("description");
  const deleteOnTermination = bool("deleteOnTermination") ?? true;
  const enableDPDK = bool("enableDPDK") ?? false;
  const dpdkDriver = str("dpdkDriver");
  const dpdkResourceName = str("dpdkResourceName");
  const dpdkPCIAddress = str("dpdkPCIAddress");
  if (enableDPDK && !dpdkResourceName) {
    bad("dpdkResourceName", 'required when enableDPDK is true: the SR-IOV device plugin resource to advertise, e.g. "amazon.com/ena_dpdk"');
  }
  if (dpdkPCIAddress) {
    if (!BDF_RE.test(dpdkPCIAddress)) {
      bad("dpdkPCIAddress", `expected a PCI address DDDD:BB:DD.F in lower-case hex (e.g. 0000:00:06.0), got "${dpdkPCIAddress}"`);
    } else if (subnets.length > 1) {
      bad("dpdkPCIAddress", `names one device, but this NodeENI makes ${subnets.length} ENIs (one per subnet); use one NodeENI per subnet to pin PCI addresses`);
    }
    if (!enableDPDK) warnings.push(`${source}: spec.dpdkPCIAddress is set but enableDPDK is not true; ignored`);
  }
  const nodeSelector = own(spec, "nodeSelector");
  if (nodeSelector === undefined) bad("nodeSelector", "required (a map of node labels; {} selects every node)");
  if (problems.length) return { problems, warnings, eniNames: [] };

  const names = eniNamesFor(name, subnets.length);
  const eni = subnets.map((s, i) => {
    const e: Record<string, unknown> = {
      name: names[i],
      device_index: deviceIndex + i,
      [s.kind === "id" ? "subnet_id" : "subnet_name"]: s.value,
      delete_on_termination: deleteOnTermination,
      dpdk: {
        enabled: enableDPDK,
        ...(enableDPDK ? { driver: dpdkDriver || "vfio-pci" } : {}),
        ...(enableDPDK && dpdkResourceName ? { resource_name: dpdkResourceName } : {}),
        ...(enableDPDK && dpdkPCIAddress ? { pci_address: dpdkPCIAddress } : {}),
      },
    };
    if (sgIds.length) e.security_group_ids = sgIds;
    if (sgNames.length) e.security_group_names = sgNames;
    if (mtu !== undefined && mtu !== 0) e.mtu = mtu;
    if (description !== undefined) e.description = description;
    return e;
  });
  const locate = (keyPath: string[]): string | undefined => {
    if (keyPath[0] !== "eni") return source;
    const i = Number(keyPath[1]);
    const key = keyPath[2] === "dpdk" && keyPath[3] ? `dpdk.${keyPath[3]}` : keyPath[2] ?? "";
    if (key === "subnet_id" || key === "subnet_name") return `${source}: ${subnets[i]?.path ?? "spec.subnetID"}`;
    const field = own(SPEC_FIELD_OF, key);
    return field ? `${source}: ${field}` : source;
  };
  return { layer: { source, origin: { source: "nodeeni", name }, data: { eni }, locate }, problems, warnings, eniNames: names };
}

/** Stable JSON (sorted keys), for comparing attachments whatever their key order. */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable(v[k])}`).join(",")}}`;
  return JSON.stringify(v) ?? "null";
}

export function applicableNodeEnis(items: NodeEniObject[], labels: Record<string, string>, warnings: string[]): NodeEniObject[] {
  const out: NodeEniObject[] = [];
  for (const o of items) {
    const sel = isObject(o.spec) ? own(o.spec, "nodeSelector") : undefined;
    const m = selectorMatches(sel, labels);
    if (m === undefined) warnings.push(`NodeENI ${o.metadata.name}: spec.nodeSelector: expected a map of label → string value; this NodeENI is skipped`);
    if (m) out.push(o);
  }
  return out.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
}

/**
 * Layers for the NodeENIs that apply to this node. Throws InputError listing every problem in
 * every applicable NodeENI (nothing half-applies).
 */
export function layersForNodeEnis(applicable: NodeEniObject[], config: Config, warnings: string[]): Layer[] {
  const problems: Problem[] = [];
  const layers: Layer[] = [];
  const owner = new Map<string, string>();
  const configured = new Set(config.eni.map((e) => e.name));
  for (const o of applicable) {
    const m = nodeEniToLayer(o);
    problems.push(...m.problems);
    warnings.push(...m.warnings);
    for (const n of m.eniNames) {
      const other = owner.get(n);
      if (other) {
        problems.push({ source: `NodeENI ${o.metadata.name}`, key: "metadata.name", message: `its ENI name "${n}" is also derived from NodeENI ${other}; rename one of them` });
      }
      owner.set(n, o.metadata.name);
      if (configured.has(n)) warnings.push(`NodeENI ${o.metadata.name}: ENI "${n}" is also configured in another source; the two are merged field by field in [service].sources order`);
    }
    if (m.layer) layers.push(m.layer);
  }
  if (problems.length) throw new InputError(problems, "fix the NodeENI (kubectl edit nodeeni NAME) or its nodeSelector, then run `eni-dpdk validate` again");
  return layers;
}

// ---- reading the API, with the cache for outages -----------------------------------------------

/**
 * Every item as the code below needs it: an object whose metadata.name is a non-empty string (the
 * API server guarantees that; a proxy, a hand-edited cache or a broken aggregator may not). An item
 * that is not is named by its position, e.g. `NodeENI items[3]`.
 */
export function checkNodeEniItems(items: unknown[], from: string): NodeEniObject[] {
  const problems: Problem[] = [];
  items.forEach((item, i) => {
    const source = `NodeENI items[${i}] (${from})`;
    const add = (key: string, message: string) => void problems.push({ source, key, message });
    if (!isObject(item)) return add("(object)", `expected a NodeENI object, got ${item === null ? "null" : typeof item}`);
    const metadata = own(item, "metadata");
    if (!isObject(metadata)) return add("metadata", "expected an object with a name");
    const name = own(metadata, "name");
    if (typeof name !== "string" || name === "") {
      add("metadata.name", `expected a non-empty string, got ${name === undefined ? "nothing" : JSON.stringify(name)}`);
    }
    const spec = own(item, "spec");
    if (spec !== undefined && spec !== null && !isObject(spec)) add("spec", `expected an object, got ${JSON.stringify(spec)}`);
  });
  const hint = "fix or delete the NodeENI objects named above (kubectl get nodeeni -o yaml), then run `eni-dpdk validate` again";
  if (problems.length) throw new InputError(problems, hint);
  return items as NodeEniObject[];
}

function slim(items: NodeEniObject[]): NodeEniObject[] {
  return items.map((o) => ({ metadata: { name: o.metadata.name }, spec: o.spec }));
}

/** After a successful apply: remember the NodeENI set it used, for API outages at the next boot. */
export function rememberNodeEnis(state: State, result: Pick<NodeEniResult, "items" | "fetchedAt">): void {
  state.nodeeni = { fetchedAt: result.fetchedAt, items: slim(result.items) };
}

/** Open a client for this node's cluster; undefined when no cluster is configured. */
export async function openNodeEniSession(input: NodeEniInput, warnings: string[] = []): Promise<NodeEniSession | undefined> {
  const nodeConfig = await parseNodeConfigs(input.userDataParts, warnings);
  const zoneId = (await input.imds.get("meta-data/placement/availability-zone-id").catch(() => undefined))?.trim();
  const node = nodeIdentity({ instance: input.instance, nodeConfig, k8s: input.config.kubernetes, arch: input.arch ?? process.arch, zoneId });
  const { resolveKubeTarget, KubeClient } = await import("../cloud/kube.js");
  const target = await resolveKubeTarget({ k8s: input.config.kubernetes, nodeConfig: nodeConfig.cluster, region: input.instance.region, host: input.host });
  if (!target) return undefined;
  return { client: new KubeClient(target), node };
}

/** A refusal from the API, said plainly with what to do. */
async function explain(e: unknown, session: NodeEniSession): Promise<{ message: string; hint: string }> {
  const { KubeApiError } = await import("../cloud/kube.js");
  const t = session.client.target;
  const who = t.auth.kind === "eks" ? `the instance role's EKS token for cluster "${t.auth.clusterName}"` : `the ${t.auth.kind} from ${t.source}`;
  if (e instanceof KubeApiError && e.status === 401) {
    return {
      message: `the API server ${t.server} rejected ${who} (401 Unauthorized)`,
      hint:
        t.auth.kind === "eks"
          ? "map the node's IAM role into the cluster (an EKS access entry of type EC2_LINUX, or aws-auth mapRoles with group system:nodes), and check that the cluster name matches"
          : "renew the credentials in the kubeconfig",
    };
  }
  if (e instanceof KubeApiError && e.status === 403) {
    return { message: `the API server ${t.server} forbids it: ${e.message}`, hint: "apply deploy/rbac.yaml (group system:nodes: get/list/watch nodeenis, patch nodeenis/status)" };
  }
  if (e instanceof OpError) return { message: e.message, hint: e.hint };
  return { message: (e as Error).message, hint: `check that ${t.server} is reachable from the node (security groups, endpoint access, proxy)` };
}

async function listWithWait(session: NodeEniSession, waitMs: number, log: Logger): Promise<NodeEniObject[]> {
  const { isTransient, KubeApiError } = await import("../cloud/kube.js");
  const started = Date.now();
  let attempt = 0;
  let reauthed = false;
  for (;;) {
    try {
      return (await session.client.listNodeEnis()).items;
    } catch (e) {
      if (e instanceof KubeApiError && e.status === 401 && !reauthed) {
        reauthed = true;
        session.client.forgetToken();
        continue;
      }
      if (!isTransient(e)) throw e;
      attempt++;
      const remaining = waitMs - (Date.now() - started);
      if (remaining <= 0) throw e;
      if (attempt === 1 || attempt % 5 === 0) log.warn("waiting for the Kubernetes API", { attempt, error: (e as Error).message });
      await sleep(Math.min(remaining, delayFor({ firstMs: 400, maxMs: 5000 }, attempt - 1)));
    }
  }
}

/**
 * The NodeENI layers for this node. Waits for the API within the deadline; when it stays out of
 * reach (or refuses us), falls back loudly to the set cached by the last successful apply, and
 * fails with an OpError when there is none: an unreachable API never means "no NodeENIs".
 */
export async function nodeEniLayers(input: NodeEniInput): Promise<NodeEniResult> {
  const { log } = input;
  const warnings: string[] = [];
  const session = await openNodeEniSession(input, warnings);
  if (!session) {
    log.debug("no cluster configured (no NodeConfig in user-data, no [kubernetes]); NodeENI source has nothing to read");
    return { layers: [], warnings, fromCache: false, nodeName: "", items: [], fetchedAt: new Date().toISOString(), applied: [] };
  }
  const node = session.node;
  log.debug("node identity for NodeENI selection", { node: node.name, from: node.nameFrom });
  const waitMs = input.apiWaitMs ?? Math.min(input.deadline.remaining() / 2, 120_000);
  let items: NodeEniObject[];
  let fromCache = false;
  let fetchedAt = new Date().toISOString();
  try {
    items = checkNodeEniItems(await listWithWait(session, waitMs, log), `from ${session.client.target.server}`);
  } catch (e) {
    if (e instanceof InputError) {
      session.client.close();
      throw e;
    }
    const { KubeApiError } = await import("../cloud/kube.js");
    if (e instanceof KubeApiError && e.status === 404 && e.reason === "NotFound") {
      // The API answered: the CRD is not installed, so there are no NodeENIs.
      log.info("the NodeENI CRD is not installed in the cluster; no NodeENIs apply", { server: session.client.target.server });
      items = [];
    } else {
      const { message, hint } = await explain(e, session);
      const cache = input.state.nodeeni;
      if (!cache) {
        session.client.close();
        throw new OpError(
          `NodeENI: ${message}, and no NodeENI set was cached by an earlier apply; refusing to treat that as "no NodeENIs"`,
          `${hint}; or remove "nodeeni" from [service].sources to configure ENIs without the cluster`,
          { server: session.client.target.server },
          { cause: e },
        );
      }
      items = checkNodeEniItems(cache.items as unknown[], "the cache in the state file");
      fromCache = true;
      fetchedAt = cache.fetchedAt;
      const w = `NodeENI: USING CACHED NodeENIs from ${cache.fetchedAt}: ${message} (${hint})`;
      warnings.push(w);
      log.warn(w);
    }
  }
  const applicable = applicableNodeEnis(items, node.labels, warnings);
  const layers = layersForNodeEnis(applicable, input.config, warnings);
  return {
    layers,
    warnings,
    fromCache,
    nodeName: node.name,
    items: slim(items),
    fetchedAt,
    applied: applicable.map((o) => o.metadata.name),
    session,
  };
}

// ---- status ------------------------------------------------------------------------------------

export interface NodeEniEniResult {
  eniName: string;
  nodeEniName: string;
  eniId?: string;
  attachmentId?: string;
  subnetId?: string;
  subnetCidr?: string;
  deviceIndex: number;
  mtu: number;
  /** e.g. attached, failed: <reason> */
  status: string;
  dpdkBound: boolean;
  dpdkDriver?: string;
  dpdkPCIAddress?: string;
  dpdkResourceName?: string;
}

function attachmentFor(r: NodeEniEniResult, node: NodeIdentity, now: string): NodeEniAttachment {
  const a: NodeEniAttachment = {
    nodeID: node.name,
    instanceID: node.instanceId,
    eniID: r.eniId ?? "",
    attachmentID: r.attachmentId ?? "",
    deviceIndex: r.deviceIndex,
    mtu: r.mtu,
    status: r.status,
    lastUpdated: now,
    dpdkBound: r.dpdkBound,
  };
  if (r.subnetId) a.subnetID = r.subnetId;
  if (r.subnetCidr) a.subnetCIDR = r.subnetCidr;
  if (r.dpdkDriver) a.dpdkDriver = r.dpdkDriver;
  if (r.dpdkPCIAddress) a.dpdkPCIAddress = r.dpdkPCIAddress;
  if (r.dpdkResourceName) a.dpdkResourceName = r.dpdkResourceName;
  return a;
}

const withoutTime = (a: NodeEniAttachment) => stable({ ...a, lastUpdated: undefined });

/**
 * The new status.attachments: every other node's entry untouched and in place, this node's
 * replaced by `ours` (sorted by device index). An entry whose content did not change keeps its
 * lastUpdated; `changed` is false when nothing but time would differ, so no write is needed.
 */
export function mergeAttachments(
  existing: NodeEniAttachment[],
  nodeName: string,
  ours: NodeEniAttachment[],
): { attachments: NodeEniAttachment[]; changed: boolean } {
  const mineBefore = existing.filter((a) => a.nodeID === nodeName);
  const others = existing.filter((a) => a.nodeID !== nodeName);
  const oldByContent = new Map(mineBefore.map((a) => [withoutTime(a), a]));
  const mine = [...ours]
    .sort((a, b) => (a.deviceIndex ?? 0) - (b.deviceIndex ?? 0))
    .map((a) => oldByContent.get(withoutTime(a)) ?? a);
  const changed = mine.length !== mineBefore.length || mine.some((a, i) => a !== mineBefore[i]);
  return { attachments: [...others, ...mine], changed };
}

export interface StatusReport {
  patched: string[];
  unchanged: string[];
  warnings: string[];
}

/**
 * Patch status.attachments of every NodeENI whose entries for this node differ from `results`
 * (those that no longer apply lose this node's entries). Conditional on resourceVersion, re-read
 * and retried on 409. Never throws for API trouble: the devices are already in place, so a
 * failure here is a warning.
 */
export async function reportNodeEniStatus(
  input: Pick<NodeEniInput, "log"> & Partial<NodeEniInput> & { session?: NodeEniSession; now?: () => Date },
  results: NodeEniEniResult[],
): Promise<StatusReport> {
  const report: StatusReport = { patched: [], unchanged: [], warnings: [] };
  const session = input.session ?? (input.imds && (await openNodeEniSession(input as NodeEniInput, report.warnings)));
  if (!session) return report;
  const { KubeApiError } = await import("../cloud/kube.js");
  const now = () => (input.now ?? (() => new Date()))().toISOString().replace(/\.\d{3}Z$/, "Z");
  const byNodeEni = new Map<string, NodeEniEniResult[]>();
  for (const r of results) byNodeEni.set(r.nodeEniName, [...(byNodeEni.get(r.nodeEniName) ?? []), r]);
  let items: NodeEniObject[];
  try {
    items = checkNodeEniItems(await listWithWait(session, 10_000, input.log), `from ${session.client.target.server}`);
  } catch (e) {
    if (e instanceof InputError) {
      report.warnings.push(`NodeENI status not reported: ${e.message}`);
      for (const w of report.warnings) input.log.warn(w);
      return report;
    }
    const { message, hint } = await explain(e, session);
    report.warnings.push(`NodeENI status not reported: ${message} (${hint})`);
    return report;
  }
  const known = new Set(items.map((o) => o.metadata.name));
  for (const name of byNodeEni.keys()) {
    if (!known.has(name)) report.warnings.push(`NodeENI ${name}: deleted since it was read; status not reported`);
  }
  for (const item of items) {
    const name = item.metadata.name;
    let obj = item;
    for (let attempt = 1; ; attempt++) {
      const ours = (byNodeEni.get(name) ?? []).map((r) => attachmentFor(r, session.node, now()));
      const { attachments, changed } = mergeAttachments(obj.status?.attachments ?? [], session.node.name, ours);
      if (!changed) {
        if (ours.length) report.unchanged.push(name);
        break;
      }
      try {
        await session.client.patchNodeEniStatus(name, obj.metadata.resourceVersion ?? "", attachments);
        report.patched.push(name);
        break;
      } catch (e) {
        if (e instanceof KubeApiError && e.status === 409 && attempt < 6) {
          input.log.debug("NodeENI status conflict; re-reading", { nodeeni: name, attempt });
          try {
            obj = await session.client.getNodeEni(name);
            continue;
          } catch (e2) {
            e = e2;
          }
        }
        if (e instanceof KubeApiError && e.status === 404) break; // deleted meanwhile
        const { message, hint } = await explain(e, session);
        report.warnings.push(`NodeENI ${name}: status not reported: ${message} (${hint})`);
        break;
      }
    }
  }
  for (const w of report.warnings) input.log.warn(w);
  return report;
}

/** NodeENI objects that select this node, read once the other sources say where the cluster is. */
export const nodeEniSource: Source = {
  name: "nodeeni",
  needsInstance: true,
  async provide(ctx, prior) {
    const inst = ctx.instance!;
    const before = await prior();
    const r = await nodeEniLayers({
      imds: inst.imds,
      instance: await inst.identity(),
      userDataParts: before.userDataParts,
      config: before.config.config,
      host: ctx.host,
      log: ctx.log,
      deadline: inst.deadline,
      state: await loadState(ctx.host),
    });
    return { layers: r.layers, note: `${r.layers.length} NodeENI object(s) apply`, warnings: r.warnings.map((message) => ({ source: "nodeeni", key: "", message })), nodeEni: r };
  },
};
