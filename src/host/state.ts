// The state file <root>/var/lib/eni-dpdk/state.json: what eni-dpdk created and bound, so a reboot
// (when bound devices have no netdev) and `reset` know what is ours. Written atomically under the lock.
// Beside it, the intent journal inflight.json: every sysfs bind or restore is recorded there before
// its first write and cleared after it is verified, so a process killed half-way is finished or
// rolled back by the next one (host/recovery.ts) before anything else. A rebind that its binding
// record already describes needs no entry: the record is its intent (BindOptions.recorded).
import { InputError } from "../core/errors.js";
import type { Host } from "./host.js";
import { RUN_DIR, VAR_DIR } from "./root.js";
import { Turns } from "../core/turns.js";
import {
  BDF_RE,
  DRIVER_NAME_RE as DRIVER_RE,
  HEX4_RE,
  INSTANCE_ID_RE,
  MAC_RE,
  SOURCE_NAMES,
} from "../config/facts.js";
import type { LayerOrigin } from "../config/model.js";
import { nullRecord } from "../core/records.js";
import { isoTime, type PaceState } from "../core/deadline.js";

export const STATE_PATH = `${VAR_DIR}/state.json`;
export const JOURNAL_PATH = `${VAR_DIR}/inflight.json`;
/** The last apply, for `status` and the SRE: /run, so it starts empty at every boot. */
export const STATUS_PATH = `${RUN_DIR}/status.json`;
/** What this boot learned of EC2's throttling (cloud/ec2.ts Ec2Pacer): a restarted unit goes on from it. */
export const PACING_PATH = `${RUN_DIR}/ec2-pacing.json`;

/** The pacing state of this boot; undefined when absent or unreadable (it is advisory). */
export async function loadPacing(host: Host): Promise<Record<string, PaceState> | undefined> {
  try {
    const doc = JSON.parse((await host.read(PACING_PATH)) ?? "null") as unknown;
    return doc && typeof doc === "object" && !Array.isArray(doc)
      ? (doc as Record<string, PaceState>)
      : undefined;
  } catch {
    return undefined;
  }
}

export async function savePacing(host: Host, state: Record<string, PaceState>): Promise<void> {
  await host.writeFileAtomic(PACING_PATH, JSON.stringify(state) + "\n", 0o644);
}

/** ENI attributes as last set or seen through EC2 (only those known); the IMDS-only proof compares them. */
export interface EniAttributes {
  enaSrd?: boolean;
  enaSrdUdp?: boolean;
  sourceDestCheck?: boolean;
  enaQueueCount?: number;
}

/** An ENI as the ENI stage left it. */
export interface EniRecord {
  name: string;
  eniId: string;
  mac: string;
  deviceIndex: number;
  networkCardIndex: number;
  subnetId: string;
  attachmentId?: string;
  createdByUs: boolean;
  /** DeleteOnTermination as last set or observed; the IMDS-only fast path needs it to match config. */
  deleteOnTermination?: boolean;
  /** subnet_name the subnet was resolved from, so a renamed subnet_name is not taken as converged. */
  subnetName?: string;
  /** "external": attached by someone else (launch template, lifecycle hook); never detached or deleted */
  attach?: "external";
  attributes?: EniAttributes;
  /** the sources that configured it (a file, a NodeENI…), for the warning once none does */
  configuredBy?: LayerOrigin[];
}

/** A device as the host stage bound it; keyed by MAC, the ENI's identity (a BDF is not). */
export interface BindingRecord {
  mac: string;
  bdf: string;
  vendor: string;
  device: string;
  originalDriver: string;
  driver: string;
  eniName: string;
  eniId?: string;
  /** when this binding was first made; a reboot's rebind of the same binding keeps it */
  boundAt: string;
  /** the kernel netdev name before binding; nodeadm's cache is keyed by it (host stage) */
  ifname?: string;
}

/** The primary ENI as the last apply saw it, so the offline paths (early, bind) refuse it too. */
export interface PrimaryRecord {
  /** IMDS meta-data/mac */
  mac: string;
  /** its PCI address, when its netdev was found */
  bdf?: string;
  /** every MAC IMDS listed with device-number 0 (one per network card) */
  deviceZeroMacs: string[];
}

export interface State {
  version: 1;
  instanceId?: string;
  primary?: PrimaryRecord;
  enis: Record<string, EniRecord>;
  bindings: Record<string, BindingRecord>;
  /** SR-IOV resourceList entries we own, by full name `prefix/name`, and the file they live in. */
  sriov: { configPath?: string; owned: string[] };
  /** networkd `.network` files we wrote (host paths). */
  networkdFiles: string[];
  /** Last NodeENI set applied successfully (for API outages at boot). */
  nodeeni?: { fetchedAt: string; items: unknown[] };
}

export function emptyState(): State {
  return {
    version: 1,
    enis: nullRecord(),
    bindings: nullRecord(),
    sriov: { owned: [] },
    networkdFiles: [],
  };
}

const corrupt = (host: Host, file: string, key: string, message: string) =>
  new InputError(
    [{ source: host.path(file), key, message }],
    `move it aside (mv ${host.path(file)} ${host.path(file)}.corrupt) and run \`eni-dpdk apply\`: ENIs are found again by their eni-dpdk tags and devices by MAC`,
  );

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function isAttributes(a: unknown): a is EniAttributes {
  if (!isObj(a)) return false;
  const kinds: Record<string, string> = {
    enaSrd: "boolean",
    enaSrdUdp: "boolean",
    sourceDestCheck: "boolean",
    enaQueueCount: "number",
  };
  return Object.entries(a).every(([k, v]) => Object.hasOwn(kinds, k) && typeof v === kinds[k]);
}

export async function loadState(host: Host): Promise<State> {
  const raw = await host.read(STATE_PATH);
  if (raw === undefined) return emptyState();
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw corrupt(host, STATE_PATH, "(file)", `not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(parsed) || parsed.version !== 1)
    throw corrupt(host, STATE_PATH, "version", "expected a JSON object with version 1");
  const s = emptyState();
  if (parsed.instanceId !== undefined) {
    if (typeof parsed.instanceId !== "string" || !INSTANCE_ID_RE.test(parsed.instanceId))
      throw corrupt(host, STATE_PATH, "instanceId", "expected an instance id i-…");
    s.instanceId = parsed.instanceId;
  }
  if (parsed.primary !== undefined) {
    const p = parsed.primary;
    if (
      !isObj(p) ||
      typeof p.mac !== "string" ||
      !MAC_RE.test(p.mac) ||
      (p.bdf !== undefined && (typeof p.bdf !== "string" || !BDF_RE.test(p.bdf)))
    ) {
      throw corrupt(host, STATE_PATH, "primary", "expected {mac, bdf?, deviceZeroMacs}");
    }
    const zero = Array.isArray(p.deviceZeroMacs)
      ? p.deviceZeroMacs.filter((m): m is string => typeof m === "string" && MAC_RE.test(m))
      : [];
    s.primary = { mac: p.mac, ...(p.bdf ? { bdf: p.bdf } : {}), deviceZeroMacs: zero };
  }
  for (const [key, table] of [
    ["enis", s.enis],
    ["bindings", s.bindings],
  ] as const) {
    const v = parsed[key];
    if (v === undefined) continue;
    if (!isObj(v)) throw corrupt(host, STATE_PATH, key, "expected an object");
    for (const [k, r] of Object.entries(v)) (table as Record<string, unknown>)[k] = r;
  }
  for (const [name, e] of Object.entries(s.enis)) {
    if (
      !isObj(e) ||
      e.name !== name ||
      typeof e.eniId !== "string" ||
      typeof e.mac !== "string" ||
      !(e.mac === "" || MAC_RE.test(e.mac)) ||
      (e.attach !== undefined && e.attach !== "external") ||
      (e.attributes !== undefined && !isAttributes(e.attributes))
    ) {
      throw corrupt(
        host,
        STATE_PATH,
        `enis.${name}`,
        "expected an ENI record {name, eniId, mac, …} keyed by its name",
      );
    }
    // Only ever named in a warning: a record of another shape loses it, and the warning its source.
    if (e.configuredBy !== undefined && !isOrigins(e.configuredBy)) delete e.configuredBy;
  }
  for (const [mac, b] of Object.entries(s.bindings)) {
    // The BDF and driver names become sysfs paths: a record that could point elsewhere is refused.
    const ok =
      isObj(b) &&
      b.mac === mac &&
      MAC_RE.test(mac) &&
      isDeviceRef(b) &&
      typeof b.driver === "string" &&
      DRIVER_RE.test(b.driver) &&
      isDriverOrNone(b.originalDriver) &&
      typeof b.eniName === "string";
    if (!ok)
      throw corrupt(
        host,
        STATE_PATH,
        `bindings.${mac}`,
        "expected a binding {mac, bdf DDDD:BB:DD.F, vendor, device, driver, originalDriver, eniName} keyed by its MAC",
      );
  }
  if (isObj(parsed.sriov)) {
    const owned = parsed.sriov.owned;
    s.sriov = {
      ...(typeof parsed.sriov.configPath === "string"
        ? { configPath: parsed.sriov.configPath }
        : {}),
      owned: Array.isArray(owned) ? owned.filter((x): x is string => typeof x === "string") : [],
    };
  }
  if (Array.isArray(parsed.networkdFiles))
    s.networkdFiles = parsed.networkdFiles.filter(
      (x): x is string => typeof x === "string" && x.startsWith("/") && !x.includes(".."),
    );
  if (
    isObj(parsed.nodeeni) &&
    typeof parsed.nodeeni.fetchedAt === "string" &&
    Array.isArray(parsed.nodeeni.items)
  ) {
    s.nodeeni = { fetchedAt: parsed.nodeeni.fetchedAt, items: parsed.nodeeni.items };
  }
  return s;
}

function isOrigins(v: unknown): v is LayerOrigin[] {
  return (
    Array.isArray(v) &&
    v.every(
      (o) =>
        isObj(o) &&
        ((SOURCE_NAMES as readonly unknown[]).includes(o.source) || o.source === "env") &&
        typeof o.name === "string" &&
        o.name.length <= 4096,
    )
  );
}

/** Persist the in-memory state of this apply. Stages call it after each step that must survive a crash. */
export async function saveState(host: Host, s: State): Promise<void> {
  await host.writeFileAtomic(STATE_PATH, serialize(s), 0o600);
}

/**
 * Keys sorted at every level, so the file's bytes depend only on its content: writeFileAtomic skips
 * unchanged content, and a load/save round trip must not reorder keys into a spurious write.
 */
function serialize(s: unknown): string {
  const sortKeys = (_k: string, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v;
  return JSON.stringify(s, sortKeys, 2) + "\n";
}

// ---- the intent journal -----------------------------------------------------------------------------

/** A sysfs operation begun and not yet verified: enough to finish or undo it after a crash. */
export interface InflightOp {
  /** bind: to a DPDK driver; restore: back to a kernel driver */
  op: "bind" | "restore";
  bdf: string;
  vendor: string;
  device: string;
  /** the ENI's MAC, verified before the first write (absent only for a forced bind of a device without one) */
  mac?: string;
  /** the driver before the operation ("" = none) */
  from: string;
  /** the driver it is going to ("" = whichever the kernel picks by id) */
  to: string;
  eniName?: string;
  eniId?: string;
  ifname?: string;
  startedAt: string;
  pid: number;
}

// The BDF and driver names of records become sysfs paths: each must be what it claims to be.
function isDeviceRef(o: Record<string, unknown>): boolean {
  return (
    typeof o.bdf === "string" &&
    BDF_RE.test(o.bdf) &&
    typeof o.vendor === "string" &&
    HEX4_RE.test(o.vendor) &&
    typeof o.device === "string" &&
    HEX4_RE.test(o.device)
  );
}

const isDriverOrNone = (v: unknown): boolean =>
  typeof v === "string" && (v === "" || DRIVER_RE.test(v));

export async function journalPending(host: Host): Promise<InflightOp[]> {
  const raw = await host.read(JOURNAL_PATH);
  if (raw === undefined) return [];
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch (e) {
    throw corrupt(host, JOURNAL_PATH, "(file)", `not valid JSON (${(e as Error).message})`);
  }
  const ops = isObj(doc) && Array.isArray(doc.ops) ? doc.ops : undefined;
  if (!ops) throw corrupt(host, JOURNAL_PATH, "ops", "expected {ops: [...]}");
  return ops.map((o, i) => {
    const ok =
      isObj(o) &&
      (o.op === "bind" || o.op === "restore") &&
      isDeviceRef(o) &&
      isDriverOrNone(o.from) &&
      isDriverOrNone(o.to) &&
      (o.mac === undefined || (typeof o.mac === "string" && MAC_RE.test(o.mac)));
    if (!ok)
      throw corrupt(
        host,
        JOURNAL_PATH,
        `ops[${i}]`,
        "expected {op: bind|restore, bdf, vendor, device, from, to, mac?}",
      );
    return o as unknown as InflightOp;
  });
}

/** Devices bound at once change the journal one at a time (each reads it, then writes it). */
const journalTurns = new Turns();
/** Begins not yet written, per root: those made in one turn of the event loop share a write. */
const pendingBegins = new Map<string, { ops: InflightOp[]; written: Promise<void> }>();

/**
 * Record an operation durably (fsync) before its first sysfs write. One entry per device. The
 * devices' binds start together, so their intents are written at once (one fsync, not one each).
 */
export function journalBegin(host: Host, op: Omit<InflightOp, "startedAt" | "pid">): Promise<void> {
  let batch = pendingBegins.get(host.root);
  if (!batch) {
    const ops: InflightOp[] = [];
    const written = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      pendingBegins.delete(host.root);
      return journalTurns.run(host.root, async () => {
        const begun = new Set(ops.map((o) => o.bdf));
        const others = (await journalPending(host)).filter((o) => !begun.has(o.bdf));
        await host.writeFileAtomic(JOURNAL_PATH, serialize({ ops: [...others, ...ops] }), 0o600);
      });
    });
    batch = { ops, written };
    pendingBegins.set(host.root, batch);
  }
  const same = batch.ops.findIndex((o) => o.bdf === op.bdf);
  if (same >= 0) batch.ops.splice(same, 1);
  batch.ops.push({ ...op, startedAt: isoTime(), pid: process.pid });
  return batch.written;
}

/** The operation on `bdf` is verified done (or undone): forget it. No journal file once nothing is in flight. */
export function journalEnd(host: Host, bdf: string): Promise<void> {
  return journalTurns.run(host.root, async () => {
    const ops = await journalPending(host);
    const rest = ops.filter((o) => o.bdf !== bdf);
    if (rest.length === ops.length) return;
    if (rest.length === 0) await host.remove(JOURNAL_PATH);
    else await host.writeFileAtomic(JOURNAL_PATH, serialize({ ops: rest }), 0o600);
  });
}
