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
// leaves [[eni]] mtu at its default. eni-dpdk's own fields (not in the old controller): attach
// ("eni-dpdk" | "external"; an external NodeENI may name no subnet: one ENI at deviceIndex), and the
// attributes enaExpress, enaExpressUdp, sourceDestCheck, enaQueueCount, externalEC2.
import { nearest, type Config, type Layer } from "../config/model.js";
import { BDF_RE, ENI_NAME_RE, SG_ID_RE, SUBNET_ID_RE } from "../config/facts.js";
import { FORBIDDEN_KEY_MESSAGE, isForbiddenKey, lookupTable, own } from "../core/records.js";
import { InputError, OpError, type Problem } from "../core/errors.js";
import { type Host } from "../host/host.js";
import { delayFor, isoTime, monotonicMs, sleep, type Deadline } from "../core/deadline.js";
import { readLocalHostname, type Imds, type InstanceIdentity } from "../cloud/imds.js";
import type { Logger } from "../core/log.js";
import { lazyCrypto } from "../core/lazy.js";
import { loadState, type State } from "../host/state.js";
import {
  isTransient,
  KubeApiError,
  KubeClient,
  resolveKubeTarget,
  type NodeEniObject,
} from "../cloud/kube.js";
import type { NodeEniResult, NodeEniSession, Source } from "./source.js";
import { type NodeConfigPartLike, nodeIdentity, parseNodeConfigs } from "./nodeconfig.js";

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

// ---- selection and mapping ---------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Equality-based selector, as the controller uses it (labels.SelectorFromSet): every entry must be
 * a label of the node with that value; an empty selector selects every node. Undefined when the
 * selector itself is malformed.
 */
export function selectorMatches(
  selector: unknown,
  labels: Record<string, string>,
): boolean | undefined {
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
  const base =
    nodeEniName
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-")
      .replace(/^-+|-+$/g, "") || "nodeeni";
  const hash = lazyCrypto().createHash("sha256").update(nodeEniName).digest("hex").slice(0, 6);
  return Array.from({ length: count }, (_, i) => {
    const suffix = i === 0 ? "" : `-${i}`;
    if (base.length + suffix.length <= MAX_ENI_NAME && ENI_NAME_RE.test(base + suffix))
      return base + suffix;
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
  "attach",
  "enaExpress",
  "enaExpressUdp",
  "sourceDestCheck",
  "enaQueueCount",
  "externalEC2",
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
  attach: "spec.attach",
  ena_express: "spec.enaExpress",
  ena_express_udp: "spec.enaExpressUdp",
  source_dest_check: "spec.sourceDestCheck",
  ena_queue_count: "spec.enaQueueCount",
  external_ec2: "spec.externalEC2",
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
  const bad = (field: string, message: string) =>
    problems.push({ source, key: `spec.${field}`, message });
  const spec = obj.spec;
  if (!isObject(spec)) {
    problems.push({ source, key: "spec", message: "expected an object" });
    return { problems, warnings, eniNames: [] };
  }
  for (const k of Object.keys(spec)) {
    if (isForbiddenKey(k)) {
      bad(
        k,
        `unknown field: "${k}" ${FORBIDDEN_KEY_MESSAGE}; expected the NodeENI spec fields (${NODEENI_SPEC_FIELDS.join(", ")})`,
      );
    } else if (!(NODEENI_SPEC_FIELDS as readonly string[]).includes(k)) {
      // Case slips (subnetIds) are the usual typo in these camelCase fields.
      const near =
        NODEENI_SPEC_FIELDS.find((f) => f.toLowerCase() === k.toLowerCase()) ??
        nearest(k, [...NODEENI_SPEC_FIELDS]);
      warnings.push(
        `${source}: spec.${k}: unknown field, ignored${near ? `; did you mean "${near}"?` : ""}`,
      );
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
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v;
    bad(k, "expected an array of strings");
    return [];
  };
  const int = (k: string): number | undefined => {
    const v = own(spec, k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isSafeInteger(v))
      return void bad(k, `expected an integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string): boolean | undefined => {
    const v = own(spec, k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean")
      return void bad(k, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  };

  const attach = str("attach");
  const external = attach === "external";
  // The subnet union, each with the spec path it came from.
  const subnets: { kind: "id" | "name"; value: string; path: string }[] = [];
  const seen = new Set<string>();
  const addSubnet = (kind: "id" | "name", value: string, path: string) => {
    if (value === "") return bad(path.slice(5), "must not be empty");
    if (kind === "id" && !SUBNET_ID_RE.test(value))
      return bad(
        path.slice(5),
        `expected "subnet-" followed by 8 or 17 hex digits, got "${value}"`,
      );
    if (seen.has(`${kind}:${value}`))
      return warnings.push(`${source}: ${path}: "${value}" is already listed; one ENI per subnet`);
    seen.add(`${kind}:${value}`);
    subnets.push({ kind, value, path });
  };
  const subnetID = str("subnetID");
  if (subnetID !== undefined) addSubnet("id", subnetID, "spec.subnetID");
  strs("subnetIDs").forEach((s, i) => addSubnet("id", s, `spec.subnetIDs[${i}]`));
  const subnetName = str("subnetName");
  if (subnetName !== undefined) addSubnet("name", subnetName, "spec.subnetName");
  strs("subnetNames").forEach((s, i) => addSubnet("name", s, `spec.subnetNames[${i}]`));
  if (subnets.length === 0 && !external && !problems.some((p) => p.key.startsWith("spec.subnet"))) {
    bad(
      "subnetID",
      "required: set subnetID, subnetIDs, subnetName or subnetNames (one ENI is made per subnet)",
    );
  }

  const sgIds = strs("securityGroupIDs");
  sgIds.forEach((sg, i) => {
    if (!SG_ID_RE.test(sg))
      bad(`securityGroupIDs[${i}]`, `expected "sg-" followed by 8 or 17 hex digits, got "${sg}"`);
  });
  const sgNames = strs("securityGroupNames");
  if (
    sgIds.length + sgNames.length === 0 &&
    !external &&
    own(spec, "securityGroupIDs") === undefined &&
    own(spec, "securityGroupNames") === undefined
  ) {
    bad(
      "securityGroupIDs",
      "required: at least one of securityGroupIDs or securityGroupNames (eni-dpdk never falls back to the VPC's default group)",
    );
  }

  const deviceIndex = int("deviceIndex") ?? 1;
  if (deviceIndex < 1)
    bad("deviceIndex", `expected 1 or more (0 is the primary ENI), got ${deviceIndex}`);
  else if (deviceIndex + Math.max(subnets.length, 1) - 1 > 127) {
    bad(
      "deviceIndex",
      `${deviceIndex} plus one per further subnet (${subnets.length} subnets) exceeds the largest device index 127`,
    );
  }
  const mtu = int("mtu");
  const description = str("description");
  const deleteOnTermination = bool("deleteOnTermination") ?? true;
  const enableDPDK = bool("enableDPDK") ?? false;
  const dpdkDriver = str("dpdkDriver");
  const dpdkResourceName = str("dpdkResourceName");
  const dpdkPCIAddress = str("dpdkPCIAddress");
  if (enableDPDK && !dpdkResourceName) {
    bad(
      "dpdkResourceName",
      'required when enableDPDK is true: the SR-IOV device plugin resource to advertise, e.g. "amazon.com/ena_dpdk"',
    );
  }
  if (dpdkPCIAddress) {
    if (!BDF_RE.test(dpdkPCIAddress)) {
      bad(
        "dpdkPCIAddress",
        `expected a PCI address DDDD:BB:DD.F in lower-case hex (e.g. 0000:00:06.0), got "${dpdkPCIAddress}"`,
      );
    } else if (subnets.length > 1) {
      bad(
        "dpdkPCIAddress",
        `names one device, but this NodeENI makes ${subnets.length} ENIs (one per subnet); use one NodeENI per subnet to pin PCI addresses`,
      );
    }
    if (!enableDPDK)
      warnings.push(`${source}: spec.dpdkPCIAddress is set but enableDPDK is not true; ignored`);
  }
  const attributes: Record<string, unknown> = {};
  const enaExpress = bool("enaExpress");
  if (enaExpress !== undefined) attributes.ena_express = enaExpress;
  const enaExpressUdp = bool("enaExpressUdp");
  if (enaExpressUdp !== undefined) attributes.ena_express_udp = enaExpressUdp;
  const sourceDestCheck = bool("sourceDestCheck");
  if (sourceDestCheck !== undefined) attributes.source_dest_check = sourceDestCheck;
  const enaQueueCount = int("enaQueueCount");
  if (enaQueueCount !== undefined) attributes.ena_queue_count = enaQueueCount;
  const externalEC2 = bool("externalEC2");
  if (externalEC2 !== undefined) attributes.external_ec2 = externalEC2;
  const nodeSelector = own(spec, "nodeSelector");
  if (nodeSelector === undefined)
    bad("nodeSelector", "required (a map of node labels; {} selects every node)");
  if (problems.length) return { problems, warnings, eniNames: [] };

  // An external NodeENI without a subnet still names one ENI: the one at deviceIndex.
  const slots: ((typeof subnets)[number] | undefined)[] =
    subnets.length || !external ? subnets : [undefined];
  const names = eniNamesFor(name, slots.length);
  const eni = slots.map((s, i) => {
    const e: Record<string, unknown> = {
      name: names[i],
      device_index: deviceIndex + i,
      ...(s ? { [s.kind === "id" ? "subnet_id" : "subnet_name"]: s.value } : {}),
      ...(attach !== undefined ? { attach } : {}),
      ...attributes,
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
    const key = keyPath[2] === "dpdk" && keyPath[3] ? `dpdk.${keyPath[3]}` : (keyPath[2] ?? "");
    if (key === "subnet_id" || key === "subnet_name")
      return `${source}: ${subnets[i]?.path ?? "spec.subnetID"}`;
    const field = own(SPEC_FIELD_OF, key);
    return field ? `${source}: ${field}` : source;
  };
  return {
    layer: { source, origin: { source: "nodeeni", name }, data: { eni }, locate },
    problems,
    warnings,
    eniNames: names,
  };
}

export function applicableNodeEnis(
  items: NodeEniObject[],
  labels: Record<string, string>,
  warnings: string[],
): NodeEniObject[] {
  const out: NodeEniObject[] = [];
  for (const o of items) {
    const sel = isObject(o.spec) ? own(o.spec, "nodeSelector") : undefined;
    const m = selectorMatches(sel, labels);
    if (m === undefined)
      warnings.push(
        `NodeENI ${o.metadata.name}: spec.nodeSelector: expected a map of label → string value; this NodeENI is skipped`,
      );
    if (m) out.push(o);
  }
  return out.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
}

/**
 * Layers for the NodeENIs that apply to this node. Throws InputError listing every problem in
 * every applicable NodeENI (nothing half-applies).
 */
export function layersForNodeEnis(
  applicable: NodeEniObject[],
  config: Config,
  warnings: string[],
): Layer[] {
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
        problems.push({
          source: `NodeENI ${o.metadata.name}`,
          key: "metadata.name",
          message: `its ENI name "${n}" is also derived from NodeENI ${other}; rename one of them`,
        });
      }
      owner.set(n, o.metadata.name);
      if (configured.has(n))
        warnings.push(
          `NodeENI ${o.metadata.name}: ENI "${n}" is also configured in another source; the two are merged field by field in [service].sources order`,
        );
    }
    if (m.layer) layers.push(m.layer);
  }
  if (problems.length)
    throw new InputError(
      problems,
      "fix the NodeENI (kubectl edit nodeeni NAME) or its nodeSelector, then run `eni-dpdk validate` again",
    );
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
    if (!isObject(item))
      return add(
        "(object)",
        `expected a NodeENI object, got ${item === null ? "null" : typeof item}`,
      );
    const metadata = own(item, "metadata");
    if (!isObject(metadata)) return add("metadata", "expected an object with a name");
    const name = own(metadata, "name");
    if (typeof name !== "string" || name === "") {
      add(
        "metadata.name",
        `expected a non-empty string, got ${name === undefined ? "nothing" : JSON.stringify(name)}`,
      );
    }
    const spec = own(item, "spec");
    if (spec !== undefined && spec !== null && !isObject(spec))
      add("spec", `expected an object, got ${JSON.stringify(spec)}`);
  });
  const hint =
    "fix or delete the NodeENI objects named above (kubectl get nodeeni -o yaml), then run `eni-dpdk validate` again";
  if (problems.length) throw new InputError(problems, hint);
  return items as NodeEniObject[];
}

function slim(items: NodeEniObject[]): NodeEniObject[] {
  return items.map((o) => ({ metadata: { name: o.metadata.name }, spec: o.spec }));
}

/** After a successful apply: remember the NodeENI set it used, for API outages at the next boot. */
export function rememberNodeEnis(
  state: State,
  result: Pick<NodeEniResult, "items" | "fetchedAt">,
): void {
  state.nodeeni = { fetchedAt: result.fetchedAt, items: slim(result.items) };
}

/** Open a client for this node's cluster; undefined when no cluster is configured. */
export async function openNodeEniSession(
  input: NodeEniInput,
  warnings: string[] = [],
): Promise<NodeEniSession | undefined> {
  const nodeConfig = await parseNodeConfigs(input.userDataParts, warnings);
  const [zone, localHostname] = await Promise.all([
    input.imds.get("meta-data/placement/availability-zone-id").catch(() => undefined),
    input.instance.localHostname ?? readLocalHostname(input.imds),
  ]);
  const zoneId = zone?.trim();
  const node = nodeIdentity({
    instance: { ...input.instance, localHostname },
    nodeConfig,
    k8s: input.config.kubernetes,
    arch: input.arch ?? process.arch,
    zoneId,
  });
  const target = await resolveKubeTarget({
    k8s: input.config.kubernetes,
    nodeConfig: nodeConfig.cluster,
    region: input.instance.region,
    host: input.host,
  });
  if (!target) return undefined;
  return { client: new KubeClient(target), node };
}

/** A refusal from the API, said plainly with what to do. */
export async function explain(
  e: unknown,
  session: NodeEniSession,
): Promise<{ message: string; hint: string }> {
  const t = session.client.target;
  const who =
    t.auth.kind === "eks"
      ? `the instance role's EKS token for cluster "${t.auth.clusterName}"`
      : `the ${t.auth.kind} from ${t.source}`;
  if (e instanceof KubeApiError && e.status === 401) {
    return {
      message: `the API server ${t.server} rejected ${who} (401 Unauthorized)`,
      hint:
        t.auth.kind === "eks"
          ? "map the node's IAM role into the cluster (an EKS access entry of type EC2_LINUX, or aws-auth mapRoles with group system:nodes), and check that the cluster name matches; the token is signed with the node's clock, which must be within 15 minutes of AWS's (chronyc tracking)"
          : "renew the credentials in the kubeconfig",
    };
  }
  if (e instanceof KubeApiError && e.status === 403) {
    return {
      message: `the API server ${t.server} forbids it: ${e.message}`,
      hint: "apply deploy/rbac.yaml (group system:nodes: get/list/watch nodeenis, patch nodeenis/status)",
    };
  }
  if (e instanceof OpError) return { message: e.message, hint: e.hint };
  return {
    message: (e as Error).message,
    hint: `check that ${t.server} is reachable from the node (security groups, endpoint access, proxy)`,
  };
}

export async function listWithWait(
  session: NodeEniSession,
  waitMs: number,
  log: Logger,
): Promise<NodeEniObject[]> {
  const started = monotonicMs();
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
      const remaining = waitMs - (monotonicMs() - started);
      if (remaining <= 0) throw e;
      if (attempt === 1 || attempt % 5 === 0)
        log.warn("waiting for the Kubernetes API", { attempt, error: (e as Error).message });
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
    log.debug(
      "no cluster configured (no NodeConfig in user-data, no [kubernetes]); NodeENI source has nothing to read",
    );
    return {
      layers: [],
      warnings,
      fromCache: false,
      nodeName: "",
      items: [],
      fetchedAt: isoTime(),
      applied: [],
    };
  }
  const node = session.node;
  log.debug("node identity for NodeENI selection", { node: node.name, from: node.nameFrom });
  const waitMs = input.apiWaitMs ?? Math.min(input.deadline.remaining() / 2, 120_000);
  let items: NodeEniObject[];
  let fromCache = false;
  let fetchedAt = isoTime();
  try {
    items = checkNodeEniItems(
      await listWithWait(session, waitMs, log),
      `from ${session.client.target.server}`,
    );
  } catch (e) {
    if (e instanceof InputError) {
      session.client.close();
      throw e;
    }
    if (e instanceof KubeApiError && e.status === 404 && e.reason === "NotFound") {
      // The API answered: the CRD is not installed, so there are no NodeENIs.
      log.info("the NodeENI CRD is not installed in the cluster; no NodeENIs apply", {
        server: session.client.target.server,
      });
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
      items = checkNodeEniItems(cache.items, "the cache in the state file");
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
    return {
      layers: r.layers,
      note: `${r.layers.length} NodeENI object(s) apply`,
      warnings: r.warnings.map((message) => ({ source: "nodeeni", key: "", message })),
      nodeEni: r,
    };
  },
};
