// The configuration model: schema, defaults, per-layer checks, merge, and whole-config validation.
// Every source (file, user-data, tags, NodeENI, env) produces Layers; buildConfig merges them in
// precedence order and reports every problem at once, each naming its source and key.
import path from "node:path";
import { InputError, type Problem } from "../core/errors.js";
import {
  FORBIDDEN_KEY_MESSAGE,
  isForbiddenKey,
  lookupTable,
  nullRecord,
  own,
} from "../core/records.js";
import type { BucketSize } from "../core/deadline.js";
import {
  ATTACH_MODES,
  DPDK_DRIVERS,
  EC2_BUCKET_CATEGORIES,
  EC2_LIMIT_KEYS,
  ec2Bucket,
  isEc2ReadAction,
  ENI_NAME_RE,
  MAX_ENIS,
  BDF_RE,
  prefixProblems,
  resourceNameProblems,
  SG_ID_RE,
  SOURCE_NAMES,
  SUBNET_ID_RE,
  type AttachMode,
  type DpdkDriver,
  type SourceName,
} from "./facts.js";

export interface ServiceConfig {
  sources: SourceName[];
  on_failure: "fail" | "continue";
  timeout_seconds: number;
  reconcile_interval_seconds: number;
}
export interface DpdkConfig {
  enabled: boolean;
  driver: DpdkDriver;
  binding_script: string;
  noiommu: "auto" | "on" | "off";
  hugepages_2m: number;
  hugepages_1g: number;
}
export interface SriovConfig {
  enabled: boolean;
  config_path: string;
  resource_prefix: string;
  /** argv run after `run` changes our entries (the plugin reads its config only at start). */
  restart_command: string[];
}
/** Cleaning up ENIs eni-dpdk created for instances that are gone (reconcile/gc.ts). */
export interface GcConfig {
  enabled: boolean;
  /** ENIs younger than this (their eni-dpdk:created-at tag) are never deleted */
  grace_minutes: number;
  /** at most this many deletes per pass */
  max_deletes: number;
  /** run's pass starts a random 0..delay_seconds after READY, so a fleet's passes spread out */
  delay_seconds: number;
}
/**
 * One of the account's EC2 request buckets as AWS has sized it for this account (raised limits):
 * a field left out keeps the key's category, else EC2's documented size (config/facts.ts).
 */
export interface Ec2LimitConfig {
  /** the burst: tokens the bucket holds when full */
  capacity?: number;
  /** tokens it gains per second */
  refill_per_sec?: number;
}
export interface Ec2Config {
  /**
   * The account's EC2 request limits, by bucket key: an action eni-dpdk calls
   * (`AttachNetworkInterface`), an unfiltered describe's bucket (`DescribeInstances:unfiltered`), or
   * a category for every bucket not named (`mutating`, `describe`). The pacer paces by them.
   */
  limits: Record<string, Ec2LimitConfig>;
}
export interface KubernetesConfig {
  api_server: string;
  ca_file: string;
  cluster_name: string;
  kubeconfig: string;
  node_name: string;
  node_labels: Record<string, string>;
  /** write nodeadm a drop-in that lowers kubelet's maxPods by the ENIs eni-dpdk takes */
  adjust_max_pods: boolean;
}
export interface EniDpdkConfig {
  enabled: boolean;
  driver: DpdkDriver;
  /** as configured: `prefix/name` or `name` */
  resource_name: string;
  pci_address: string;
}
export interface EniConfig {
  name: string;
  /** "eni-dpdk": created or adopted and attached through EC2; "external": attached by someone else, found through IMDS */
  attach: AttachMode;
  device_index: number;
  network_card_index: number;
  subnet_id: string;
  subnet_name: string;
  security_group_ids: string[];
  security_group_names: string[];
  description: string;
  mtu: number;
  delete_on_termination: boolean;
  tags: Record<string, string>;
  // The attributes below are optional: absent means "leave it as EC2 has it".
  /** ENA Express (EnaSrdSpecification.EnaSrdEnabled) */
  ena_express?: boolean;
  /** ENA Express for UDP (EnaSrdUdpSpecification.EnaSrdUdpEnabled); needs ena_express */
  ena_express_udp?: boolean;
  /** false to route or NAT through the ENI */
  source_dest_check?: boolean;
  /** EnaQueueCount at attach (flexible ENA queues); EC2 sets it only at attach or launch */
  ena_queue_count?: number;
  /** attach = "external" only: allow the EC2 calls that check and set the attributes above */
  external_ec2: boolean;
  dpdk: EniDpdkConfig;
}

export interface Config {
  service: ServiceConfig;
  dpdk: DpdkConfig;
  sriov: SriovConfig;
  gc: GcConfig;
  ec2: Ec2Config;
  kubernetes: KubernetesConfig;
  eni: EniConfig[];
}

/** Where each effective value came from, keyed by dotted path (`dpdk.driver`, `eni.data1.mtu`). */
export type Origin = Record<string, string>;

export interface EffectiveConfig {
  config: Config;
  origin: Origin;
  /** each ENI's defining layers, as data: kept in its state record, so a warning can name them once no source does */
  eniOrigins: Record<string, LayerOrigin[]>;
  /** Non-fatal findings (e.g. deprecated forms); printed by validate and status. */
  warnings: Problem[];
}

/** Where a layer came from, as data: which source, and which file, part, tag, variable or NodeENI. */
export interface LayerOrigin {
  source: SourceName | "env";
  name: string;
}

/** One source's contribution, before merge. `source` is how messages name it; `origin` says the same as data. */
export interface Layer {
  source: string;
  origin?: LayerOrigin;
  data: Record<string, unknown>;
  /** Tag values arrive as strings and are coerced by the schema. */
  stringly?: boolean;
  /** Parsed TOML (bigint mode): integers arrive as BigInt, so a JS number is a TOML float. */
  tomlTyped?: boolean;
  locate?: (keyPath: string[]) => string | undefined;
}

// ---- schema ----------------------------------------------------------------------------------

/** An integer kind with its valid range; `expect` is how messages state it. */
interface IntKind {
  int: { min: number; max: number; expect: string };
}
/** `ec2-limits`: a table of bucket keys, each a table of capacity and refill_per_sec (checkLimits). */
type Kind = "string" | "bool" | "string[]" | "map" | "ec2-limits" | IntKind | { table: Schema };
type Schema = Readonly<Record<string, Kind>>;

const int = (min: number, max: number, expect = `${min}..${max}`): IntKind => ({
  int: { min, max, expect },
});
const isIntKind = (k: Kind): k is IntKind => typeof k === "object" && "int" in k;

const eniDpdkSchema: Schema = lookupTable<Kind>({
  enabled: "bool",
  driver: "string",
  resource_name: "string",
  pci_address: "string",
});
const eniSchema: Schema = lookupTable<Kind>({
  name: "string",
  attach: "string",
  device_index: int(1, 127, "1..127 (0 is the primary ENI)"),
  network_card_index: int(0, 31),
  subnet_id: "string",
  subnet_name: "string",
  security_group_ids: "string[]",
  security_group_names: "string[]",
  description: "string",
  mtu: int(576, 9216),
  delete_on_termination: "bool",
  tags: "map",
  ena_express: "bool",
  ena_express_udp: "bool",
  source_dest_check: "bool",
  ena_queue_count: int(
    1,
    256,
    "a queue count 1..256 (the instance type's per-interface maximum applies)",
  ),
  external_ec2: "bool",
  dpdk: { table: eniDpdkSchema },
});
const pages = int(0, 1_000_000, "a page count 0..1000000");
export const schema: Readonly<Record<string, Schema>> = lookupTable<Schema>({
  service: lookupTable<Kind>({
    sources: "string[]",
    on_failure: "string",
    timeout_seconds: int(10, 3600, "10..3600 seconds"),
    reconcile_interval_seconds: int(0, 86400, "0 (off) or up to 86400 seconds"),
  }),
  dpdk: lookupTable<Kind>({
    enabled: "bool",
    driver: "string",
    binding_script: "string",
    noiommu: "string",
    hugepages_2m: pages,
    hugepages_1g: pages,
  }),
  sriov: lookupTable<Kind>({
    enabled: "bool",
    config_path: "string",
    resource_prefix: "string",
    restart_command: "string[]",
  }),
  gc: lookupTable<Kind>({
    enabled: "bool",
    grace_minutes: int(1, 10080, "1..10080 minutes"),
    max_deletes: int(1, 1000, "1..1000 deletes per pass"),
    delay_seconds: int(0, 3600, "0..3600 seconds"),
  }),
  ec2: lookupTable<Kind>({
    limits: "ec2-limits",
  }),
  kubernetes: lookupTable<Kind>({
    api_server: "string",
    ca_file: "string",
    cluster_name: "string",
    kubeconfig: "string",
    node_name: "string",
    node_labels: "map",
    adjust_max_pods: "bool",
  }),
});
export const eniKeys = Object.keys(eniSchema);
export const eniDpdkKeys = Object.keys(eniDpdkSchema);
/** The top-level tables a config document may hold. */
export const TOP_LEVEL_KEYS: readonly string[] = [...Object.keys(schema), "eni"];

export function defaults(): Config {
  return {
    service: {
      sources: [...SOURCE_NAMES],
      on_failure: "fail",
      timeout_seconds: 300,
      reconcile_interval_seconds: 60,
    },
    dpdk: {
      enabled: true,
      driver: "vfio-pci",
      binding_script: "",
      noiommu: "auto",
      hugepages_2m: 0,
      hugepages_1g: 0,
    },
    sriov: {
      enabled: true,
      config_path: "/etc/pcidp/config.json",
      resource_prefix: "amazon.com",
      restart_command: [],
    },
    gc: {
      enabled: true,
      grace_minutes: 5,
      max_deletes: 200,
      delay_seconds: 300,
    },
    ec2: { limits: nullRecord() },
    kubernetes: {
      api_server: "",
      ca_file: "",
      cluster_name: "",
      kubeconfig: "",
      node_name: "",
      node_labels: {},
      adjust_max_pods: true,
    },
    eni: [],
  };
}

const eniDefaults = (): Omit<EniConfig, "name" | "device_index" | "dpdk"> => ({
  attach: "eni-dpdk",
  network_card_index: 0,
  subnet_id: "",
  subnet_name: "",
  security_group_ids: [],
  security_group_names: [],
  description: "",
  mtu: 9001,
  delete_on_termination: true,
  tags: {},
  external_ec2: false,
});

/** The nearest known key, for "did you mean" suggestions. */
export function nearest(key: string, known: string[]): string | undefined {
  const lower = key.toLowerCase();
  const prefixed = known.filter(
    (k) => k.toLowerCase().startsWith(lower) || lower.startsWith(k.toLowerCase()),
  );
  if (lower.length >= 3 && prefixed.length > 0)
    return prefixed.sort((a, b) => a.length - b.length)[0];
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}

// ---- per-layer type checking ---------------------------------------------------------------------

function unknownKey(key: string, known: string[]): string {
  if (isForbiddenKey(key))
    return `unknown key: "${key}" ${FORBIDDEN_KEY_MESSAGE} (known: ${known.join(", ")})`;
  const near = nearest(key, known);
  return `unknown key${near ? `; did you mean "${near}"?` : ""} (known: ${known.join(", ")})`;
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  if (v instanceof Date) return "date";
  if (typeof v === "bigint") return "integer";
  if (typeof v === "object") return "table";
  return typeof v;
}

/** A TOML float as written in the usual form: 1 → "1.0". */
function floatText(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/** Decimal digits, optional minus, no leading zeros: what a tag or env value may spell as an integer. */
const STRICT_INT_RE = /^(0|-?[1-9][0-9]*)$/;

/** A BigInt as a number when it is within the kind's range, else a problem stating the range. */
function intInRange(kind: IntKind, v: bigint, problem: (m: string) => void): number | undefined {
  const n = safeNumber(v);
  if (n === undefined) problem(`out of range: expected ${kind.int.expect}, got ${v}`);
  return n;
}

/** A BigInt as a number when no precision is lost (within ±(2^53 − 1)), else undefined. */
export function safeNumber(v: bigint): number | undefined {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : undefined;
}

interface ValueContext {
  stringly: boolean;
  tomlTyped: boolean;
}

/** Check (and for tag layers coerce) one value against its kind. Returns undefined on a problem. */
function checkValue(
  kind: Kind,
  v: unknown,
  cx: ValueContext,
  problem: (m: string) => void,
): unknown {
  if (cx.stringly && kind !== "map" && isTable(v)) {
    problem(
      `expected a value, got dotted sub-keys (${Object.keys(v).join(", ")}): this key is not a table; write key=value`,
    );
    return undefined;
  }
  if (isIntKind(kind)) {
    if (cx.stringly && typeof v === "string") {
      if (STRICT_INT_RE.test(v)) return intInRange(kind, BigInt(v), problem);
      const hint = /^\s*[-+]?[0-9]/.test(v)
        ? ' (plain decimal digits: no "+", exponent, 0x, "_", leading zero or spaces)'
        : "";
      problem(`expected an integer, got "${v}"${hint}`);
      return undefined;
    }
    if (typeof v === "bigint") return intInRange(kind, v, problem);
    if (typeof v === "number" && cx.tomlTyped) {
      problem(
        `expected an integer, got a float ${floatText(v)}; write it without a decimal point or exponent`,
      );
      return undefined;
    }
    if (typeof v === "number" && Number.isSafeInteger(v)) return v;
    problem(`expected an integer, got ${typeof v === "number" ? v : typeName(v)}`);
    return undefined;
  }
  if (typeof kind === "object") {
    problem("internal: nested table handled by caller");
    return undefined;
  }
  switch (kind) {
    case "ec2-limits":
      problem("internal: [ec2.limits] is checked by checkLimits");
      return undefined;
    case "string":
      if (typeof v === "string") return v;
      problem(`expected a string, got ${typeName(v)}`);
      return undefined;
    case "bool": {
      if (cx.stringly && typeof v === "string") {
        if (v === "true" || v === "false") return v === "true";
        problem(`expected true or false, got "${v}"`);
        return undefined;
      }
      if (typeof v === "boolean") return v;
      problem(`expected true or false, got ${typeName(v)}`);
      return undefined;
    }
    case "string[]": {
      if (cx.stringly && typeof v === "string") {
        const list = v === "" ? [] : v.split(",").map((s) => s.trim());
        const empty = list.indexOf("");
        if (empty < 0) return list;
        problem(`element ${empty} of "${v}" is empty; remove the stray comma`);
        return undefined;
      }
      if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v;
      problem(
        `expected an array of strings, got ${Array.isArray(v) ? "an array with non-strings" : typeName(v)}`,
      );
      return undefined;
    }
    case "map": {
      if (isTable(v)) {
        const entries = Object.entries(v);
        const forbidden = entries.find(([k]) => isForbiddenKey(k));
        if (forbidden) {
          problem(`expected a table of strings; "${forbidden[0]}" ${FORBIDDEN_KEY_MESSAGE}`);
          return undefined;
        }
        const bad = entries.find(([, x]) => typeof x !== "string");
        if (bad) {
          problem(`expected a table of strings; "${bad[0]}" is ${typeName(bad[1])}`);
          return undefined;
        }
        return Object.fromEntries(entries);
      }
      problem(`expected a table of strings, got ${typeName(v)}`);
      return undefined;
    }
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);
}

/** A checked layer: typed partial values with their key paths. */
interface Checked {
  node: Record<string, Record<string, unknown>>;
  enis: {
    label: string;
    values: Record<string, unknown>;
    dpdk: Record<string, unknown>;
    index: number;
  }[];
}

function checkLayer(layer: Layer, problems: Problem[]): Checked {
  const out: Checked = { node: nullRecord(), enis: [] };
  const cx: ValueContext = { stringly: !!layer.stringly, tomlTyped: !!layer.tomlTyped };
  const where = (keyPath: string[]) => layer.locate?.(keyPath) ?? layer.source;
  const add = (keyPath: string[], label: string, message: string) =>
    problems.push({ source: where(keyPath), key: label, message });

  for (const [top, value] of Object.entries(layer.data)) {
    if (top === "eni") continue;
    const tableSchema = own(schema, top);
    if (!tableSchema) {
      add([top], top, unknownKey(top, [...TOP_LEVEL_KEYS]));
      continue;
    }
    if (!isTable(value)) {
      const hint = Array.isArray(value)
        ? ` (an array; write [${top}] with single brackets, once)`
        : "";
      add([top], top, `expected a table [${top}], got ${typeName(value)}${hint}`);
      continue;
    }
    const t: Record<string, unknown> = (out.node[top] = nullRecord());
    for (const [k, v] of Object.entries(value)) {
      const kind = own(tableSchema, k);
      if (!kind) {
        add([top, k], `${top}.${k}`, unknownKey(k, Object.keys(tableSchema)));
        continue;
      }
      if (kind === "ec2-limits") {
        const c = checkLimits(v, cx, [top, k], add);
        if (c !== undefined) t[k] = c;
        continue;
      }
      const c = checkValue(kind, v, cx, (m) => add([top, k], `${top}.${k}`, m));
      if (c !== undefined) t[k] = c;
    }
  }

  const enis = own(layer.data, "eni");
  if (enis !== undefined) {
    const list = Array.isArray(enis) ? enis : null;
    if (!list) {
      const hint = isTable(enis)
        ? " (a single table [eni]; write [[eni]] with double brackets before each ENI)"
        : "";
      add(["eni"], "eni", `expected an array of tables [[eni]], got ${typeName(enis)}${hint}`);
    }
    list?.forEach((raw, index) => {
      const rawName = isTable(raw) ? own(raw, "name") : undefined;
      const label0 = typeof rawName === "string" && rawName ? `eni.${rawName}` : `eni[${index}]`;
      if (!isTable(raw)) {
        add(["eni", String(index)], label0, `expected a table, got ${typeName(raw)}`);
        return;
      }
      const values: Record<string, unknown> = nullRecord();
      const dpdk: Record<string, unknown> = nullRecord();
      for (const [k, v] of Object.entries(raw)) {
        const kind = own(eniSchema, k);
        const kp = ["eni", String(index), k];
        if (!kind) {
          add(kp, `${label0}.${k}`, unknownKey(k, eniKeys));
          continue;
        }
        if (typeof kind === "object" && "table" in kind) {
          if (!isTable(v)) {
            add(kp, `${label0}.${k}`, `expected a table, got ${typeName(v)}`);
            continue;
          }
          for (const [dk, dv] of Object.entries(v)) {
            const dkind = own(kind.table, dk);
            const dkp = [...kp, dk];
            if (!dkind) {
              add(dkp, `${label0}.dpdk.${dk}`, unknownKey(dk, eniDpdkKeys));
              continue;
            }
            const c = checkValue(dkind, dv, cx, (m) => add(dkp, `${label0}.dpdk.${dk}`, m));
            if (c !== undefined) dpdk[dk] = c;
          }
          continue;
        }
        const c = checkValue(kind, v, cx, (m) => add(kp, `${label0}.${k}`, m));
        if (c !== undefined) values[k] = c;
      }
      if (typeof values.name !== "string" || values.name === "") {
        add(["eni", String(index)], label0 + ".name", "required: every [[eni]] needs a name");
        return;
      }
      out.enis.push({ label: label0, values, dpdk, index });
    });
  }
  return out;
}

// ---- [ec2.limits] ----------------------------------------------------------------------------------

/** The largest capacity and refill accepted: far above any EC2 bucket, low enough to catch a slip. */
const LIMIT_MAX = 100_000;
const LIMIT_FIELDS = ["capacity", "refill_per_sec"];
const CAPACITY_EXPECT = `a whole number of requests 1..${LIMIT_MAX} (the bucket's burst)`;
const REFILL_EXPECT = `a number of requests per second above 0, up to ${LIMIT_MAX} (e.g. 20 or 2.5)`;

/** A TOML float as written: nan, inf, -inf, 1.0, 2.5. */
function tomlNumberText(v: number): string {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return floatText(v);
}

/** One capacity or refill_per_sec: positive, finite, at most LIMIT_MAX, and whole for a capacity. */
function limitNumber(
  v: unknown,
  cx: ValueContext,
  whole: boolean,
  problem: (m: string) => void,
): number | undefined {
  const expect = whole ? CAPACITY_EXPECT : REFILL_EXPECT;
  let n: number;
  let text: string;
  if (cx.stringly && typeof v === "string") {
    const re = whole ? STRICT_INT_RE : /^(0|-?[1-9][0-9]*)(\.[0-9]+)?$/;
    if (!re.test(v)) {
      problem(`expected ${expect}, got "${v}"`);
      return undefined;
    }
    n = Number(v);
    text = v;
  } else if (typeof v === "bigint") {
    n = Number(v);
    text = String(v);
  } else if (typeof v === "number") {
    n = v;
    text = cx.tomlTyped ? tomlNumberText(v) : String(v);
    if (whole && cx.tomlTyped) {
      problem(
        `expected ${expect}, got a float ${text}${Number.isFinite(v) ? "; write it without a decimal point or exponent" : ""}`,
      );
      return undefined;
    }
  } else {
    problem(`expected ${expect}, got ${typeName(v)}`);
    return undefined;
  }
  if (!Number.isFinite(n) || n <= 0 || n > LIMIT_MAX || (whole && !Number.isInteger(n))) {
    problem(`expected ${expect}, got ${text}`);
    return undefined;
  }
  return n;
}

/**
 * `[ec2.limits]`: bucket key → { capacity, refill_per_sec }. Each key is one eni-dpdk can use
 * (EC2_LIMIT_KEYS), each entry a table of one or both fields. The fields that pass are returned.
 */
function checkLimits(
  v: unknown,
  cx: ValueContext,
  at: string[],
  add: (keyPath: string[], label: string, message: string) => void,
): Record<string, Ec2LimitConfig> | undefined {
  const label = at.join(".");
  const shape = "{ capacity = N, refill_per_sec = N }";
  if (!isTable(v)) {
    add(
      at,
      label,
      `expected a table of EC2 actions, each ${shape} (e.g. [${label}] AttachNetworkInterface = { capacity = 200, refill_per_sec = 20 }), got ${typeName(v)}`,
    );
    return undefined;
  }
  const out = nullRecord<Ec2LimitConfig>();
  for (const [key, entry] of Object.entries(v)) {
    const kp = [...at, key];
    const kl = `${label}.${key}`;
    if (!EC2_LIMIT_KEYS.includes(key)) {
      const near = isForbiddenKey(key) ? undefined : nearest(key, [...EC2_LIMIT_KEYS]);
      add(
        kp,
        kl,
        `unknown EC2 action "${key}"${near ? ` (did you mean "${near}"?)` : ""}; expected an action eni-dpdk calls, an unfiltered describe's own bucket, or ${EC2_BUCKET_CATEGORIES.map((c) => `"${c}"`).join(" or ")} for every bucket not named (known: ${EC2_LIMIT_KEYS.join(", ")})`,
      );
      continue;
    }
    if (!isTable(entry)) {
      add(kp, kl, `expected a table ${shape}, got ${typeName(entry)}`);
      continue;
    }
    const fields = Object.entries(entry);
    if (fields.length === 0)
      add(kp, kl, `expected capacity, refill_per_sec or both in ${shape}; the table is empty`);
    const checked: Ec2LimitConfig = {};
    for (const [f, fv] of fields) {
      const problem = (m: string) => add([...kp, f], `${kl}.${f}`, m);
      if (f === "capacity" || f === "refill_per_sec") {
        const n = limitNumber(fv, cx, f === "capacity", problem);
        if (n !== undefined) checked[f] = n;
      } else problem(unknownKey(f, LIMIT_FIELDS));
    }
    out[key] = checked;
  }
  return out;
}

/**
 * The bucket sizes to pace EC2 calls by: for each bucket key, capacity and refill from the
 * account's `[ec2.limits]` entry for that key, else from its category's (`describe` for
 * Describe*, unfiltered ones included; `mutating` for the rest), else EC2's documented size.
 */
export function ec2BucketOf(ec2: Ec2Config): (key: string) => BucketSize {
  const limits = ec2.limits;
  if (Object.keys(limits).length === 0) return ec2Bucket;
  return (key) => {
    const documented = ec2Bucket(key);
    const named = own(limits, key);
    const category = own(limits, isEc2ReadAction(key) ? "describe" : "mutating");
    return {
      capacity: named?.capacity ?? category?.capacity ?? documented.capacity,
      refillPerSec: named?.refill_per_sec ?? category?.refill_per_sec ?? documented.refillPerSec,
    };
  };
}

/** The message for an integer outside its kind's range (undefined when inside). */
function rangeProblem(kind: IntKind, v: number): string | undefined {
  return v < kind.int.min || v > kind.int.max ? `expected ${kind.int.expect}, got ${v}` : undefined;
}

/** Why `p` is not one absolute, normalized program path, as "is …" (undefined when it is). */
export function programPathProblem(p: string): string | undefined {
  if (p === "") return "is empty";
  if (/\s/.test(p)) return "contains whitespace";
  if (!p.startsWith("/") || p.endsWith("/") || path.posix.normalize(p) !== p) {
    return 'is not an absolute, normalized path (no "..", ".", "//" or trailing "/")';
  }
  return undefined;
}

// ---- merge and whole-config validation -----------------------------------------------------------

/**
 * Merge layers in order (later wins, key by key; ENIs by name, field by field) over the defaults,
 * then validate the result as a whole. Throws InputError with every problem found.
 */
export function buildConfig(layers: Layer[]): EffectiveConfig {
  const problems: Problem[] = [];
  const warnings: Problem[] = [];
  const config = defaults();
  const origin: Origin = {};
  const eniOrigins: EffectiveConfig["eniOrigins"] = {};
  const node = config as unknown as Record<string, Record<string, unknown>>;
  for (const [table, s] of Object.entries(schema))
    for (const k of Object.keys(s)) origin[`${table}.${k}`] = "default";

  interface Partial {
    values: Record<string, unknown>;
    dpdk: Record<string, unknown>;
    origin: Record<string, string>;
    firstSource: string;
    layers: LayerOrigin[];
  }
  const enis = new Map<string, Partial>();
  const locateEni = new Map<string, (key: string) => string>();

  for (const layer of layers) {
    const checked = checkLayer(layer, problems);
    for (const [table, values] of Object.entries(checked.node)) {
      for (const [k, v] of Object.entries(values)) {
        origin[`${table}.${k}`] = layer.locate?.([table, k]) ?? layer.source;
        if (schema[table][k] !== "ec2-limits") {
          node[table][k] = v;
          continue;
        }
        // [ec2.limits] merges bucket by bucket, field by field, as ENIs do.
        const into = node[table][k] as Record<string, Ec2LimitConfig>;
        for (const [key, entry] of Object.entries(v as Record<string, Ec2LimitConfig>)) {
          into[key] = { ...own(into, key), ...entry };
          for (const f of Object.keys(entry))
            origin[`${table}.${k}.${key}.${f}`] =
              layer.locate?.([table, k, key, f]) ?? layer.source;
        }
      }
    }
    const seenInLayer = new Set<string>();
    for (const e of checked.enis) {
      const name = e.values.name as string;
      if (seenInLayer.has(name)) {
        problems.push({
          source: layer.locate?.(["eni", String(e.index), "name"]) ?? layer.source,
          key: `eni.${name}.name`,
          message: `duplicate ENI name "${name}" in the same source; names must be unique`,
        });
        continue;
      }
      seenInLayer.add(name);
      let p = enis.get(name);
      if (!p)
        enis.set(
          name,
          (p = { values: {}, dpdk: {}, origin: {}, firstSource: layer.source, layers: [] }),
        );
      const from = layer.origin;
      if (from && !p.layers.some((o) => o.source === from.source && o.name === from.name))
        p.layers.push({ source: from.source, name: from.name });
      for (const [k, v] of Object.entries(e.values)) {
        p.values[k] = v;
        p.origin[k] = layer.locate?.(["eni", String(e.index), k]) ?? layer.source;
      }
      for (const [k, v] of Object.entries(e.dpdk)) {
        p.dpdk[k] = v;
        p.origin[`dpdk.${k}`] = layer.locate?.(["eni", String(e.index), "dpdk", k]) ?? layer.source;
      }
      locateEni.set(name, (key) => p.origin[key] ?? p.firstSource);
    }
  }

  // node-level checks
  const at = (key: string) => origin[key] ?? "default";
  const nodeProblem = (key: string, message: string) =>
    problems.push({ source: at(key), key, message });
  const s = config.service;
  s.sources.forEach((src, i) => {
    if (!(SOURCE_NAMES as readonly string[]).includes(src)) {
      nodeProblem(
        "service.sources",
        `unknown source "${src}" at position ${i}; expected any of ${SOURCE_NAMES.join(", ")}`,
      );
    }
  });
  if (new Set(s.sources).size !== s.sources.length)
    nodeProblem("service.sources", "lists a source more than once");
  if (!["fail", "continue"].includes(s.on_failure))
    nodeProblem("service.on_failure", `expected "fail" or "continue", got "${s.on_failure}"`);
  for (const [table, tableSchema] of Object.entries(schema)) {
    for (const [k, kind] of Object.entries(tableSchema)) {
      const m = isIntKind(kind) ? rangeProblem(kind, node[table][k] as number) : undefined;
      if (m) nodeProblem(`${table}.${k}`, m);
    }
  }
  const d = config.dpdk;
  if (!(DPDK_DRIVERS as readonly string[]).includes(d.driver))
    nodeProblem("dpdk.driver", `expected one of ${DPDK_DRIVERS.join(", ")}, got "${d.driver}"`);
  if (!["auto", "on", "off"].includes(d.noiommu))
    nodeProblem("dpdk.noiommu", `expected "auto", "on" or "off", got "${d.noiommu}"`);
  const script = d.binding_script && programPathProblem(d.binding_script);
  if (script) {
    const why =
      "binding_script takes one program path, no arguments (eni-dpdk runs it as PATH --force --bind DRIVER BDF)";
    nodeProblem("dpdk.binding_script", `"${d.binding_script}" ${script}: ${why}`);
  }
  const sr = config.sriov;
  if (!sr.config_path.startsWith("/") || sr.config_path.includes(".."))
    nodeProblem(
      "sriov.config_path",
      `expected an absolute path without "..", got "${sr.config_path}"`,
    );
  for (const m of prefixProblems(sr.resource_prefix)) nodeProblem("sriov.resource_prefix", m);
  // An empty argument is a real argv word (`-e ""`); an empty program is not.
  const program =
    sr.restart_command.length > 0 ? programPathProblem(sr.restart_command[0]) : undefined;
  if (program) {
    nodeProblem(
      "sriov.restart_command",
      `the program (first element) must be an absolute path; "${sr.restart_command[0]}" ${program}`,
    );
  }
  const k8s = config.kubernetes;
  if (k8s.api_server && !/^https:\/\/[^\s/]+/.test(k8s.api_server))
    nodeProblem("kubernetes.api_server", `expected an https:// URL, got "${k8s.api_server}"`);
  for (const key of ["ca_file", "kubeconfig"] as const) {
    if (k8s[key] && !k8s[key].startsWith("/"))
      nodeProblem(`kubernetes.${key}`, `expected an absolute path, got "${k8s[key]}"`);
  }

  // ENIs
  if (enis.size > MAX_ENIS) {
    problems.push({
      source: layers.at(-1)?.source ?? "config",
      key: "eni",
      message: `${enis.size} ENIs configured; at most ${MAX_ENIS} are supported`,
    });
  }
  const byIndex = new Map<string, string>();
  const byPci = new Map<string, string>();
  for (const [name, p] of enis) {
    const src = locateEni.get(name)!;
    // One problem per key: a value that failed its type check is not also reported as missing.
    const prob = (key: string, message: string) =>
      problems.some((x) => x.key === `eni.${name}.${key}`) ||
      problems.push({
        source: src(key.startsWith("dpdk.") ? key : key.split(".")[0]),
        key: `eni.${name}.${key}`,
        message,
      });
    const v = { ...eniDefaults(), ...p.values } as Record<string, unknown> &
      Omit<EniConfig, "dpdk">;
    if (!ENI_NAME_RE.test(name))
      prob(
        "name",
        `"${name}" must match ^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$ (lower-case, digits, "-", at most 40 characters)`,
      );
    if (v.device_index === undefined)
      prob("device_index", "required: the device index to attach at (>= 1; 0 is the primary ENI)");
    for (const k of ["device_index", "network_card_index", "mtu", "ena_queue_count"] as const) {
      const m = v[k] === undefined ? undefined : rangeProblem(eniSchema[k] as IntKind, v[k]);
      if (m) prob(k, m);
    }
    const external = v.attach === "external";
    if (!(ATTACH_MODES as readonly string[]).includes(v.attach))
      prob(
        "attach",
        `expected "eni-dpdk" (eni-dpdk creates and attaches it) or "external" (the launch template or a lifecycle hook attaches it), got "${v.attach}"`,
      );
    if (v.subnet_id && v.subnet_name)
      prob("subnet_id", "set exactly one of subnet_id or subnet_name, not both");
    else if (!v.subnet_id && !v.subnet_name && !external)
      prob("subnet_id", "required: set subnet_id (subnet-…) or subnet_name");
    else if (v.subnet_id && !SUBNET_ID_RE.test(v.subnet_id))
      prob("subnet_id", `expected "subnet-" followed by 8 or 17 hex digits, got "${v.subnet_id}"`);
    v.security_group_ids.forEach((sg) => {
      if (!SG_ID_RE.test(sg))
        prob("security_group_ids", `expected "sg-" followed by 8 or 17 hex digits, got "${sg}"`);
    });
    if (v.security_group_ids.length + v.security_group_names.length === 0 && !external) {
      prob("security_group_ids", "required: at least one security group id or name in total");
    }
    // An external ENI is checked against IMDS alone, which knows ids, not Name tags.
    if (external && v.subnet_name)
      prob(
        "subnet_name",
        'attach = "external" checks the ENI against IMDS only (no EC2 call), and IMDS knows subnet ids, not names: set subnet_id, or leave the subnet out',
      );
    if (external && v.security_group_names.length)
      prob(
        "security_group_names",
        'attach = "external" checks the ENI against IMDS only (no EC2 call), and IMDS knows security group ids, not names: use security_group_ids, or leave them out',
      );
    if (v.external_ec2 && !external)
      prob("external_ec2", 'applies only to attach = "external"; remove it');
    if (external && !v.external_ec2 && v.source_dest_check !== undefined)
      prob(
        "source_dest_check",
        'on attach = "external" it needs an EC2 call (a launch template cannot set it): set external_ec2 = true to let eni-dpdk set it at boot, or remove it',
      );
    if (v.ena_express_udp !== undefined && v.ena_express === undefined)
      prob("ena_express_udp", "set ena_express too: EC2 takes the UDP switch with ENA Express");
    else if (v.ena_express_udp && v.ena_express === false)
      prob(
        "ena_express_udp",
        "true needs ena_express = true (ENA Express for UDP is part of ENA Express)",
      );
    if (v.security_group_ids.length + v.security_group_names.length > 16)
      prob("security_group_ids", "at most 16 security groups per ENI");
    if (v.description.length > 255) prob("description", "at most 255 characters");
    for (const [tk, tv] of Object.entries(v.tags)) {
      if (tk.startsWith("aws:") || tk.startsWith("eni-dpdk:"))
        prob("tags", `tag key "${tk}" is reserved (aws: and eni-dpdk: prefixes)`);
      if (tk.length > 128 || tv.length > 256)
        prob("tags", `tag "${tk}" exceeds EC2 limits (key 128, value 256 characters)`);
    }
    const dp: EniDpdkConfig = {
      enabled: (p.dpdk.enabled as boolean | undefined) ?? config.dpdk.enabled,
      driver: ((p.dpdk.driver as string | undefined) ?? config.dpdk.driver) as DpdkDriver,
      resource_name: (p.dpdk.resource_name as string | undefined) ?? "",
      pci_address: (p.dpdk.pci_address as string | undefined) ?? "",
    };
    if (p.dpdk.driver !== undefined && !(DPDK_DRIVERS as readonly string[]).includes(dp.driver))
      prob("dpdk.driver", `expected one of ${DPDK_DRIVERS.join(", ")}, got "${dp.driver}"`);
    if (dp.enabled) {
      if (!dp.resource_name)
        prob(
          "dpdk.resource_name",
          'required when DPDK is enabled, e.g. "amazon.com/ena_dpdk" (or set dpdk.enabled = false for a kernel ENI)',
        );
      else
        for (const m of resourceNameProblems(dp.resource_name, config.sriov.resource_prefix))
          prob("dpdk.resource_name", m);
    }
    if (dp.pci_address && !BDF_RE.test(dp.pci_address)) {
      prob(
        "dpdk.pci_address",
        `expected a PCI address DDDD:BB:DD.F in lower-case hex (e.g. 0000:00:06.0), got "${dp.pci_address}"`,
      );
    }
    if (dp.pci_address) {
      const other = byPci.get(dp.pci_address);
      if (other) prob("dpdk.pci_address", `${dp.pci_address} is also claimed by ENI "${other}"`);
      byPci.set(dp.pci_address, name);
    }
    if (typeof v.device_index === "number") {
      const key = `${v.network_card_index}/${v.device_index}`;
      const other = byIndex.get(key);
      if (other)
        prob(
          "device_index",
          `device index ${v.device_index} on network card ${v.network_card_index} is also used by ENI "${other}"`,
        );
      else byIndex.set(key, name);
    }
    config.eni.push({ ...(v as Omit<EniConfig, "dpdk">), name, dpdk: dp });
    if (p.layers.length) eniOrigins[name] = p.layers;
    for (const k of eniKeys)
      if (k !== "dpdk") origin[`eni.${name}.${k}`] = p.origin[k] ?? "default";
    for (const k of eniDpdkKeys)
      origin[`eni.${name}.dpdk.${k}`] =
        p.origin[`dpdk.${k}`] ??
        (k === "enabled" || k === "driver" ? `${origin[`dpdk.${k}`]} ([dpdk].${k})` : "default");
  }
  config.eni.sort(
    (a, b) => a.network_card_index - b.network_card_index || a.device_index - b.device_index,
  );
  if (problems.length) throw new InputError(problems);
  return { config, origin, eniOrigins, warnings };
}
