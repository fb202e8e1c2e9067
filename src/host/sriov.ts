// The SR-IOV network device plugin's config (default /etc/pcidp/config.json): our resourceList
// entries, in the shape the plugin really parses, merged into the file without touching entries we
// do not own, and written atomically. The plugin reads this file once, at start, and fails quietly
// on malformed input (it exits 0 or panics and the node shows zero allocatable devices), so every
// rule below mirrors its parser (k8snetworkplumbingwg/sriov-network-device-plugin, pkg/types,
// pkg/factory parseObjectOrSlice, cmd/sriovdp readConfig/validConfigs).
import { promises as fs } from "node:fs";
import path from "node:path";
import { type Config, nearest } from "../config/model.js";
import { BDF_RE, ENA_VENDOR, resourceNameProblems, splitResourceName } from "../config/facts.js";
import { errorMessage, InputError, OpError, type Problem } from "../core/errors.js";
import { type Host } from "./host.js";
import { run } from "../core/process.js";
import type { Logger } from "../core/log.js";
import type { Action, StageContext } from "../reconcile/stage.js";
import { saveState, type State } from "../core/state.js";

/** A device the host stage verified as bound; only these are advertised. */
export interface SriovDevice {
  eniName: string;
  /** full `prefix/name` (a bare name takes [sriov].resource_prefix) */
  resource: string;
  bdf: string;
  /** sysfs `vendor`/`device` values; a leading 0x is accepted */
  vendor: string;
  device: string;
  /** the driver the device is bound to now */
  driver: string;
}

export interface SriovSelector {
  vendors: string[];
  devices: string[];
  drivers: string[];
  pciAddresses: string[];
}

export interface SriovEntry {
  resourceName: string;
  resourcePrefix: string;
  deviceType: "netDevice";
  selectors: SriovSelector[];
}

export interface RenderedEntry {
  full: string;
  entry: SriovEntry;
  /** ENIs advertised in this entry */
  enis: string[];
}

export interface SriovPlan {
  enabled: boolean;
  path: string;
  actions: Action[];
  /** full names of our entries once applied */
  resources: string[];
  added: string[];
  updated: string[];
  removed: string[];
  /** entries identical to ours found without an ownership record (e.g. a lost state file) */
  adopted: string[];
  /** why the existing file cannot be merged; apply moves it aside */
  invalidExisting?: string;
  /** a previous config_path still holding entries we own */
  previousPath?: string;
}

export interface SriovApplyResult {
  changed: boolean;
  path: string;
  resources: string[];
  movedAside?: string;
}

// ---- the plugin's parser rules ---------------------------------------------------------------------

/** The plugin's default for --resource-prefix, used for entries without resourcePrefix. */
export const PLUGIN_DEFAULT_PREFIX = "intel.com";
/** deviceType values the plugin accepts (exact case; anything else fails the whole file). */
export const PLUGIN_DEVICE_TYPES = ["netDevice", "accelerator", "auxNetDevice"] as const;
/** The plugin's own resource name check (hyphens pass there; we reject them for the env var). */
const PLUGIN_NAME_RE = /^[a-zA-Z0-9_-]+$/;

type FieldKind = "string" | "bool" | "string[]" | "additionalInfo" | "raw";
const ENTRY_FIELDS: Record<string, FieldKind> = {
  resourceName: "string",
  resourcePrefix: "string",
  deviceType: "string",
  excludeTopology: "bool",
  selectors: "raw",
  additionalInfo: "additionalInfo",
};
const COMMON_SELECTOR: Record<string, FieldKind> = { vendors: "string[]", devices: "string[]", drivers: "string[]" };
const NET_SELECTOR: Record<string, FieldKind> = {
  pfNames: "string[]",
  rootDevices: "string[]",
  linkTypes: "string[]",
  isRdma: "bool",
  acpiIndexes: "string[]",
  needVhostNet: "bool",
};
/** Selector fields per deviceType, spelt as in the plugin's README. */
export const SELECTOR_FIELDS: Record<string, Record<string, FieldKind>> = {
  netDevice: { ...COMMON_SELECTOR, pciAddresses: "string[]", ...NET_SELECTOR, ddpProfiles: "string[]", vdpaType: "string", pKeys: "string[]" },
  accelerator: { ...COMMON_SELECTOR, pciAddresses: "string[]" },
  auxNetDevice: { ...COMMON_SELECTOR, ...NET_SELECTOR, auxTypes: "string[]" },
};

export interface SriovFinding {
  /** index in resourceList, when the finding is about one entry */
  index?: number;
  /** fatal: the plugin serves nothing (exits or panics); dropped: the plugin skips this entry; warn: works, but wrong */
  severity: "fatal" | "dropped" | "warn";
  /** the selector matches every NIC the plugin sees (an empty or fully misspelt selector) */
  matchesAll?: boolean;
  message: string;
}

const CORRECT_FORM =
  '{"resourceName": "ena_dpdk", "resourcePrefix": "amazon.com", "deviceType": "netDevice", "selectors": [{"vendors": ["1d0f"], "devices": ["ec20"], "drivers": ["vfio-pci"], "pciAddresses": ["0000:00:06.0"]}]}';

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** Go's encoding/json matches keys exactly first, then case-insensitively. */
function goField(key: string, fields: Record<string, FieldKind>): string | undefined {
  if (key in fields) return key;
  return Object.keys(fields).find((k) => k.toLowerCase() === key.toLowerCase());
}

/** Does a value decode into the Go field without a type error? (null decodes into anything) */
function decodes(kind: FieldKind, v: unknown): boolean {
  if (v === null || kind === "raw") return true;
  switch (kind) {
    case "string":
      return typeof v === "string";
    case "bool":
      return typeof v === "boolean";
    case "string[]":
      return Array.isArray(v) && v.every((x) => x === null || typeof x === "string");
    case "additionalInfo":
      return isObject(v) && Object.values(v).every((m) => m === null || (isObject(m) && Object.values(m).every((x) => x === null || typeof x === "string")));
  }
}

function entryLabel(i: number, e: unknown): string {
  return isObject(e) && typeof e.resourceName === "string" ? `resourceList[${i}] ("${e.resourceName}")` : `resourceList[${i}]`;
}

/** Read a field the way Go would (case-insensitive), for an entry already known to decode. */
function goGet(o: Record<string, unknown>, name: string): unknown {
  let found: unknown;
  for (const [k, v] of Object.entries(o)) {
    if (k === name) return v;
    if (k.toLowerCase() === name.toLowerCase()) found = v;
  }
  return found;
}

/**
 * What the plugin would make of a parsed config document, entry by entry. Mirrors its decoding
 * (unknown keys ignored, type errors fail the file or drop the entry), its deviceType check, the
 * nil-selectors panic, and validConfigs (name characters, unique prefix/name).
 */
export function analyzeSriovDoc(doc: unknown, defaultPrefix = PLUGIN_DEFAULT_PREFIX): SriovFinding[] {
  const out: SriovFinding[] = [];
  if (!isObject(doc)) {
    out.push({ severity: "fatal", message: `the top level is ${typeName(doc)}; the plugin expects an object {"resourceList": [...]} and serves nothing` });
    return out;
  }
  for (const k of Object.keys(doc)) {
    if (k.toLowerCase() !== "resourcelist") {
      const near = nearest(k, ["resourceList"]);
      out.push({ severity: "warn", message: `top-level key "${k}" is ignored by the plugin${near ? `; did you mean "${near}"?` : ""}` });
    }
  }
  const list = goGet(doc, "resourceList");
  if (list === undefined || list === null || (Array.isArray(list) && list.length === 0)) {
    out.push({ severity: "fatal", message: 'no resources in "resourceList": the plugin logs "no resource configuration" and exits' });
    return out;
  }
  if (!Array.isArray(list)) {
    out.push({ severity: "fatal", message: `"resourceList" is ${typeName(list)}; the plugin expects an array of entries and serves nothing` });
    return out;
  }
  const survivors: { index: number; e: Record<string, unknown> }[] = [];
  list.forEach((e, index) => {
    const label = entryLabel(index, e);
    const add = (severity: SriovFinding["severity"], message: string, matchesAll?: boolean) =>
      out.push({ index, severity, message: `${label}: ${message}`, ...(matchesAll ? { matchesAll } : {}) });
    if (e === null) return add("fatal", "null entry: it has no selectors, and the plugin panics on nil selectors");
    if (!isObject(e)) return add("fatal", `expected an object, got ${typeName(e)}; the plugin's JSON decoding fails for the whole file`);
    let typeError = false;
    for (const [k, v] of Object.entries(e)) {
      const f = goField(k, ENTRY_FIELDS);
      if (!f) {
        if (k === "devices") {
          add("warn", `"devices" (the seed document's shape) is not a plugin field and is ignored; list devices in "selectors" instead, e.g. ${CORRECT_FORM}`);
        } else {
          const near = nearest(k, Object.keys(ENTRY_FIELDS));
          add("warn", `unknown key "${k}" is ignored by the plugin${near ? `; did you mean "${near}"?` : ""}`);
        }
        continue;
      }
      if (f !== k) add("warn", `key "${k}" only matches "${f}" through Go's case-insensitive decoding; write "${f}"`);
      if (!decodes(ENTRY_FIELDS[f]!, v)) {
        typeError = true;
        add("fatal", `"${k}" must be ${ENTRY_FIELDS[f] === "additionalInfo" ? "an object of objects of strings" : `a ${ENTRY_FIELDS[f]}`}, got ${typeName(v)}; the plugin's JSON decoding fails for the whole file`);
      }
    }
    if (typeError) return;
    const dt = (goGet(e, "deviceType") as string | null | undefined) || "netDevice";
    if (!(PLUGIN_DEVICE_TYPES as readonly string[]).includes(dt)) {
      const near = nearest(dt, [...PLUGIN_DEVICE_TYPES]);
      return add("fatal", `deviceType "${dt}" is not one of ${PLUGIN_DEVICE_TYPES.join(", ")} (case matters)${near ? `; did you mean "${near}"?` : ""}; the plugin rejects the whole file`);
    }
    const sel = goGet(e, "selectors");
    if (sel === undefined || sel === null) return add("fatal", `no "selectors": the plugin panics at start (nil selectors); use ${CORRECT_FORM}`);
    let selectors: unknown[];
    if (isObject(sel)) {
      add("warn", '"selectors" is a single object; the plugin still accepts that form, but write an array of objects');
      selectors = [sel];
    } else if (Array.isArray(sel)) {
      if (sel.length === 0) return add("dropped", '"selectors" is an empty array; the plugin drops the entry ("need at least one selector")');
      selectors = sel;
    } else {
      return add("dropped", `"selectors" is ${typeName(sel)}; it must be an array of objects, so the plugin drops the entry`);
    }
    const fields = SELECTOR_FIELDS[dt]!;
    let dropped = false;
    let fatal = false;
    selectors.forEach((s, si) => {
      const where = `selectors[${si}]`;
      if (s === null) {
        fatal = true;
        return add("fatal", `${where} is null; the plugin dereferences it and panics`);
      }
      if (!isObject(s)) {
        dropped = true;
        return add("dropped", `${where} is ${typeName(s)}, not an object; the plugin drops the entry`);
      }
      let constrains = false;
      for (const [k, v] of Object.entries(s)) {
        const f = goField(k, fields);
        if (!f) {
          const near = nearest(k, Object.keys(fields));
          add("warn", `${where}: unknown key "${k}" is ignored by the plugin, so it constrains nothing${near ? `; did you mean "${near}"?` : ""} (known for ${dt}: ${Object.keys(fields).join(", ")})`);
          continue;
        }
        if (f !== k) add("warn", `${where}: key "${k}" only matches "${f}" through Go's case-insensitive decoding; write "${f}"`);
        const kind = fields[f]!;
        if (!decodes(kind, v)) {
          dropped = true;
          add("dropped", `${where}.${k} must be ${kind === "string[]" ? "an array of strings" : `a ${kind}`}, got ${typeName(v)}; the plugin drops the entry`);
          continue;
        }
        if ((kind === "string[]" && Array.isArray(v) && v.length > 0) || (f === "isRdma" && v === true) || (f === "vdpaType" && typeof v === "string" && v !== "")) {
          constrains = true;
        }
      }
      if (goGet(s, "isRdma") === true && typeof goGet(s, "vdpaType") === "string" && goGet(s, "vdpaType") !== "") {
        fatal = true;
        add("fatal", `${where}: isRdma and vdpaType are mutually exclusive; the plugin exits`);
      }
      if (!constrains) add("warn", `${where} constrains nothing, so it matches every NIC the plugin sees (eni-dpdk's too)`, true);
    });
    if (!dropped && !fatal) survivors.push({ index, e });
  });

  // validConfigs, over the entries the plugin kept
  const seen = new Map<string, number>();
  for (const { index, e } of survivors) {
    const label = entryLabel(index, e);
    const name = (goGet(e, "resourceName") as string | null | undefined) ?? "";
    if (!PLUGIN_NAME_RE.test(name)) {
      const hint = name.includes("/") ? `; put the part before "/" in "resourcePrefix" and "${name.slice(name.lastIndexOf("/") + 1)}" in "resourceName"` : "";
      out.push({ index, severity: "fatal", message: `${label}: resourceName "${name}" has characters outside [a-zA-Z0-9_-]; the plugin exits${hint}` });
      continue;
    }
    if (name.includes("-")) {
      out.push({ index, severity: "warn", message: `${label}: resourceName "${name}" has a hyphen; pods get it as the env var PCIDEVICE_<PREFIX>_<NAME>, where "-" is not valid; use "_"` });
    }
    const prefix = (goGet(e, "resourcePrefix") as string | null | undefined) || defaultPrefix;
    const full = `${prefix}/${name}`;
    const other = seen.get(full);
    if (other !== undefined) {
      out.push({ index, severity: "fatal", message: `${label}: full name "${full}" is also used by resourceList[${other}]; the plugin exits (names must be unique)` });
    } else seen.set(full, index);
  }
  if (survivors.length === 0 && !out.some((f) => f.severity === "fatal")) {
    out.push({ severity: "fatal", message: "the plugin keeps no entry, logs \"no resource configuration\" and exits" });
  }
  return out;
}

// ---- rendering ---------------------------------------------------------------------------------------

function hex4(v: string): string | undefined {
  const s = v.trim().toLowerCase().replace(/^0x/, "");
  return /^[0-9a-f]{4}$/.test(s) ? s : undefined;
}

const uniqSorted = (xs: string[]) => [...new Set(xs)].sort();

/**
 * Our entries: one per resource, with one selector per bound driver (one, unless ENIs sharing a
 * resource were bound to different drivers). Throws InputError for bad names, OpError for device
 * records the host stage should never produce.
 */
export function renderSriovEntries(devices: SriovDevice[], defaultPrefix: string): RenderedEntry[] {
  const problems: Problem[] = [];
  const broken: string[] = [];
  const byBdf = new Map<string, string>();
  const groups = new Map<string, { prefix: string; name: string; devs: (SriovDevice & { vendor: string; device: string })[] }>();
  for (const d of devices) {
    const nameProblems = resourceNameProblems(d.resource, defaultPrefix);
    for (const m of nameProblems) problems.push({ source: "config", key: `eni.${d.eniName}.dpdk.resource_name`, message: m });
    const vendor = hex4(d.vendor);
    const device = hex4(d.device);
    if (!BDF_RE.test(d.bdf)) broken.push(`ENI ${d.eniName}: PCI address "${d.bdf}" is not DDDD:BB:DD.F`);
    if (!vendor) broken.push(`ENI ${d.eniName}: vendor "${d.vendor}" is not a 4-digit hex id`);
    if (!device) broken.push(`ENI ${d.eniName}: device "${d.device}" is not a 4-digit hex id`);
    if (!/^[A-Za-z0-9_.-]+$/.test(d.driver)) broken.push(`ENI ${d.eniName}: driver "${d.driver}" is not a driver name`);
    const prev = byBdf.get(d.bdf);
    if (prev !== undefined) broken.push(`PCI address ${d.bdf} is given for ENI ${prev} and ENI ${d.eniName}`);
    byBdf.set(d.bdf, d.eniName);
    if (nameProblems.length || !vendor || !device) continue;
    const { prefix, name } = splitResourceName(d.resource, defaultPrefix);
    const full = `${prefix}/${name}`;
    let g = groups.get(full);
    if (!g) groups.set(full, (g = { prefix, name, devs: [] }));
    g.devs.push({ ...d, vendor, device });
  }
  if (problems.length) throw new InputError(problems);
  if (broken.length) {
    throw new OpError(`SR-IOV: invalid bound-device records: ${broken.join("; ")}`, "this is a bug in eni-dpdk's host stage; report it with `eni-dpdk status` output");
  }
  return [...groups.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([full, g]) => {
      const drivers = uniqSorted(g.devs.map((d) => d.driver));
      const selectors = drivers.map((driver) => {
        const ds = g.devs.filter((d) => d.driver === driver);
        return {
          vendors: uniqSorted(ds.map((d) => d.vendor)),
          devices: uniqSorted(ds.map((d) => d.device)),
          drivers: [driver],
          pciAddresses: uniqSorted(ds.map((d) => d.bdf)),
        };
      });
      return {
        full,
        enis: uniqSorted(g.devs.map((d) => d.eniName)),
        entry: { resourceName: g.name, resourcePrefix: g.prefix, deviceType: "netDevice" as const, selectors },
      };
    });
}

// ---- merge -------------------------------------------------------------------------------------------

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/** The full name of an entry written with an explicit prefix, as we always write ours. */
function explicitFullName(e: unknown): string | undefined {
  return isObject(e) && typeof e.resourceName === "string" && typeof e.resourcePrefix === "string" && e.resourcePrefix
    ? `${e.resourcePrefix}/${e.resourceName}`
    : undefined;
}

interface Merge {
  existed: boolean;
  invalid?: string;
  changed: boolean;
  text: string;
  ours: string[];
  added: string[];
  updated: string[];
  removed: string[];
  adopted: string[];
  /** problems with foreign entries that do not block us */
  warnings: string[];
}

/**
 * Merge our desired entries into the existing file text. Foreign entries (and any keys we do not
 * know) are kept as parsed; ours are replaced in place, removed when no longer desired, appended
 * when new. `strict` refuses when foreign entries would keep the plugin from serving ours.
 */
function mergeText(filePath: string, existing: string | undefined, desired: RenderedEntry[], owned: Set<string>, strict: boolean): Merge {
  const m: Merge = { existed: existing !== undefined, changed: false, text: "", ours: [], added: [], updated: [], removed: [], adopted: [], warnings: [] };
  let parsed: Record<string, unknown> | undefined;
  if (existing !== undefined) {
    try {
      const doc: unknown = JSON.parse(existing);
      const variant = isObject(doc) ? Object.keys(doc).find((k) => k !== "resourceList" && k.toLowerCase() === "resourcelist") : undefined;
      if (!isObject(doc)) m.invalid = `the top level is ${typeName(doc)}, not an object`;
      else if (variant) m.invalid = `it spells "resourceList" as "${variant}", which the plugin's case-insensitive decoding would mix with ours`;
      else if (doc.resourceList !== undefined && doc.resourceList !== null && !Array.isArray(doc.resourceList)) {
        m.invalid = `"resourceList" is ${typeName(doc.resourceList)}, not an array`;
      } else parsed = doc;
    } catch (e) {
      m.invalid = `not valid JSON (${errorMessage(e)})`;
    }
  }
  const before = (parsed?.resourceList as unknown[] | null | undefined) ?? [];
  const want = new Map(desired.map((d) => [d.full, d]));
  const placed = new Set<string>();
  const list: unknown[] = [];
  const foreign: { index: number; e: unknown }[] = [];
  for (const e of before) {
    const full = explicitFullName(e);
    const d = full === undefined ? undefined : want.get(full);
    if (full !== undefined && owned.has(full)) {
      // ours by name; a duplicate of ours goes too
      if (!d || placed.has(full)) {
        m.removed.push(full);
        continue;
      }
      if (!deepEqual(e, d.entry)) m.updated.push(full);
      list.push(d.entry);
      placed.add(full);
      continue;
    }
    if (d && !placed.has(d.full) && deepEqual(e, d.entry)) {
      m.adopted.push(d.full);
      list.push(e);
      placed.add(d.full);
      continue;
    }
    foreign.push({ index: list.length, e });
    list.push(e);
  }
  for (const d of desired) {
    if (placed.has(d.full)) continue;
    m.added.push(d.full);
    list.push(d.entry);
    placed.add(d.full);
  }
  m.ours = [...placed].sort();

  // conflicts between ours and foreign entries
  const conflicts: Problem[] = [];
  const ourBdfs = new Map<string, string>();
  for (const d of desired) for (const s of d.entry.selectors) for (const a of s.pciAddresses) ourBdfs.set(a, d.full);
  for (const { index, e } of foreign) {
    if (!isObject(e)) continue;
    const name = goGet(e, "resourceName");
    const prefix = goGet(e, "resourcePrefix");
    for (const d of desired) {
      if (name !== d.entry.resourceName) continue;
      if (prefix === d.entry.resourcePrefix) {
        conflicts.push({ source: filePath, key: `resourceList[${index}]`, message: `"${d.full}" is already defined by an entry eni-dpdk does not own; rename eni-dpdk's resource (dpdk.resource_name of ENI ${d.enis.join(", ")}) or remove that entry` });
      } else if (typeof prefix !== "string" || prefix === "") {
        conflicts.push({ source: filePath, key: `resourceList[${index}]`, message: `an entry eni-dpdk does not own is named "${name}" without resourcePrefix; its full name depends on the plugin's --resource-prefix flag (default ${PLUGIN_DEFAULT_PREFIX}) and may clash with "${d.full}"; give it an explicit resourcePrefix or rename eni-dpdk's resource` });
      }
    }
    const sel = goGet(e, "selectors");
    for (const s of Array.isArray(sel) ? sel : [sel]) {
      const addrs = isObject(s) ? goGet(s, "pciAddresses") : undefined;
      if (!Array.isArray(addrs)) continue;
      for (const a of addrs) {
        const ours = typeof a === "string" ? ourBdfs.get(a) : undefined;
        if (ours) m.warnings.push(`${entryLabel(index, e)} also selects ${a}, which eni-dpdk advertises as ${ours}; the plugin gives a device to the first entry that matches it`);
      }
    }
  }
  if (strict && conflicts.length) throw new InputError(conflicts, `fix the names, then run \`eni-dpdk validate\` and apply again; ${filePath} was not changed`);

  const out: Record<string, unknown> = parsed ? { ...parsed, resourceList: list } : { resourceList: list };
  if (list.length > 0) {
    const oursAt = new Set(list.flatMap((e, i) => (m.ours.includes(explicitFullName(e) ?? "") ? [i] : [])));
    const findings = analyzeSriovDoc(out);
    const ourProblems = findings.filter((f) => f.index !== undefined && oursAt.has(f.index));
    if (ourProblems.length) {
      throw new OpError(`SR-IOV: eni-dpdk rendered an entry the plugin would not accept: ${ourProblems.map((f) => f.message).join("; ")}`, "this is a bug in eni-dpdk; report it");
    }
    const blocking = findings.filter((f) => (f.index === undefined || !oursAt.has(f.index)) && (f.severity === "fatal" || f.matchesAll));
    if (strict && m.ours.length > 0 && blocking.length) {
      throw new OpError(
        `SR-IOV: ${filePath} has entries eni-dpdk does not own that keep the device plugin from serving eni-dpdk's devices: ${blocking.map((f) => f.message).join("; ")}`,
        `fix or remove those entries (see \`eni-dpdk validate\`), then apply again; ${filePath} was not changed`,
      );
    }
    m.warnings.push(...findings.map((f) => f.message));
  }
  // An unmergeable file is only replaced (after moving it aside) when we have entries to write.
  m.changed = m.invalid !== undefined ? m.ours.length > 0 : m.existed ? !deepEqual(parsed, out) : list.length > 0;
  m.text = JSON.stringify(out, null, 2) + "\n";
  return m;
}

/** Entries we own in `filePath`: ownership is recorded per file, so a changed config_path owns nothing yet. */
function ownedIn(state: State, filePath: string): Set<string> {
  const p = state.sriov.configPath;
  return new Set(p === undefined || p === filePath ? state.sriov.owned : []);
}

function describe(m: Merge, byName: Map<string, RenderedEntry>): string {
  const count = (f: string) => {
    const n = byName.get(f)?.entry.selectors.reduce((s, x) => s + x.pciAddresses.length, 0) ?? 0;
    return `${f} (${n} device${n === 1 ? "" : "s"})`;
  };
  const parts: string[] = [];
  if (m.added.length) parts.push(`add ${m.added.map(count).join(", ")}`);
  if (m.updated.length) parts.push(`update ${m.updated.map(count).join(", ")}`);
  if (m.removed.length) parts.push(`remove ${m.removed.join(", ")}`);
  if (m.adopted.length) parts.push(`adopt ${m.adopted.join(", ")}`);
  if (!parts.length) parts.push("rewrite with the same entries");
  return parts.join("; ");
}

// ---- stage API ------------------------------------------------------------------------------------

/** Compute what applySriov would change. Reads only. Throws InputError/OpError on conflicts. */
export async function planSriov(ctx: StageContext, devices: SriovDevice[]): Promise<SriovPlan> {
  const filePath = ctx.config.sriov.config_path;
  const plan: SriovPlan = { enabled: ctx.config.sriov.enabled, path: filePath, actions: [], resources: [], added: [], updated: [], removed: [], adopted: [] };
  if (!plan.enabled) return plan;
  const desired = renderSriovEntries(devices, ctx.config.sriov.resource_prefix);
  const byName = new Map(desired.map((d) => [d.full, d]));
  const prev = previousPath(ctx.state, filePath);
  if (prev) {
    plan.previousPath = prev;
    plan.actions.push({ stage: "sriov", kind: "write-sriov", target: prev, detail: `remove eni-dpdk's entries ${ctx.state.sriov.owned.join(", ")} ([sriov].config_path changed to ${filePath})` });
  }
  const m = mergeText(filePath, await ctx.host.read(filePath), desired, ownedIn(ctx.state, filePath), true);
  Object.assign(plan, { resources: m.ours, added: m.added, updated: m.updated, removed: m.removed, adopted: m.adopted });
  if (m.invalid && m.existed && m.changed) {
    plan.invalidExisting = m.invalid;
    plan.actions.push({ stage: "sriov", kind: "move-aside", target: filePath, detail: `${m.invalid}; it is never overwritten: move it to ${filePath}.invalid-<timestamp> and start a new file` });
  }
  if (m.changed) plan.actions.push({ stage: "sriov", kind: "write-sriov", target: filePath, detail: describe(m, byName) });
  return plan;
}

/**
 * Before the first mutation of an apply: would our resources clash with entries in the file that
 * we do not own? Checked with stand-in devices, since on a first boot no device is bound yet; the
 * real merge after binding then cannot fail on names. Throws what planSriov would (InputError, OpError).
 */
export async function preflightSriov(ctx: StageContext): Promise<void> {
  const cfg = ctx.config;
  const standIns: SriovDevice[] = cfg.eni
    .filter((e) => e.dpdk.enabled && e.dpdk.resource_name)
    .map((e, i) => ({ eniName: e.name, resource: e.dpdk.resource_name, bdf: `ffff:ff:${i.toString(16).padStart(2, "0")}.7`, vendor: ENA_VENDOR, device: "ec20", driver: e.dpdk.driver }));
  if (!standIns.length) return;
  const filePath = cfg.sriov.config_path;
  mergeText(filePath, await ctx.host.read(filePath), renderSriovEntries(standIns, cfg.sriov.resource_prefix), ownedIn(ctx.state, filePath), true);
}


function previousPath(state: State, filePath: string): string | undefined {
  const p = state.sriov.configPath;
  return p !== undefined && p !== filePath && state.sriov.owned.length > 0 ? p : undefined;
}

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Rename a file we must not overwrite to `<path>.invalid-<UTC timestamp>`; returns the new host path. */
async function moveAside(host: Host, filePath: string): Promise<string> {
  const base = `${filePath}.invalid-${stamp()}`;
  let target = base;
  for (let i = 1; await host.exists(target); i++) target = `${base}-${i}`;
  await fs.rename(host.path(filePath), host.path(target));
  host.writes++; // a mutation, counted like Host's own writes
  return target;
}

/** Temp files `.<name>.<pid>.<ms>.tmp` left by a writer that died between write and rename. */
async function removeStaleTemps(host: Host, filePath: string, log: Logger): Promise<void> {
  const dir = path.posix.dirname(filePath);
  const re = new RegExp(`^\\.${path.posix.basename(filePath).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(\\d+)\\.\\d+\\.tmp$`);
  for (const name of await host.list(dir)) {
    const pid = Number(re.exec(name)?.[1]);
    if (!pid || pid === process.pid || alive(pid)) continue;
    if (await host.remove(path.posix.join(dir, name))) log.info("removed a temp file left by an interrupted write", { path: path.posix.join(dir, name) });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Read, merge and write one file. Returns the merge, and the moved-aside path when the old file was unusable. */
async function writeMerged(
  host: Host,
  filePath: string,
  desired: RenderedEntry[],
  owned: Set<string>,
  state: State,
  log: Logger,
  strict: boolean,
): Promise<{ m: Merge; changed: boolean; movedAside?: string }> {
  const m = mergeText(filePath, await host.read(filePath), desired, owned, strict);
  // Loud when we touch the file; `status`/`validate` show them every time.
  for (const w of m.warnings) (m.changed ? log.warn : log.debug).call(log, `SR-IOV config: ${w}`, { path: filePath });
  if (m.invalid && m.existed && !m.changed) log.warn("SR-IOV device plugin config is not usable; eni-dpdk has nothing to write there and leaves it untouched", { path: filePath, reason: m.invalid });
  if (!m.changed) return { m, changed: false };
  let movedAside: string | undefined;
  if (m.invalid && m.existed) {
    movedAside = await moveAside(host, filePath);
    log.warn("SR-IOV device plugin config could not be merged; moved it aside instead of overwriting it", { path: filePath, reason: m.invalid, moved_to: movedAside });
  }
  // Record intent first (owned ∪ new), so a crash between the two writes leaves no orphan of ours.
  const intent = [...new Set([...owned, ...m.ours])].sort();
  if (!sameList(intent, state.sriov.owned) || state.sriov.configPath !== filePath) {
    state.sriov = { configPath: filePath, owned: intent };
    await saveState(host, state);
  }
  const changed = await host.writeFileAtomic(filePath, m.text, 0o644);
  log.info("SR-IOV device plugin config written", { path: filePath, added: m.added, updated: m.updated, removed: m.removed, adopted: m.adopted });
  return { m, changed: changed || movedAside !== undefined, movedAside };
}

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Merge our entries into the plugin config and write it atomically (0644) when it changes. Call
 * with the host lock held. An unmergeable existing file is moved aside, never overwritten.
 */
export async function applySriov(ctx: StageContext, devices: SriovDevice[], plan: SriovPlan): Promise<SriovApplyResult> {
  const { host, log, state } = ctx;
  const filePath = ctx.config.sriov.config_path;
  if (!ctx.config.sriov.enabled) return { changed: false, path: filePath, resources: [] };
  const desired = renderSriovEntries(devices, ctx.config.sriov.resource_prefix);
  if (ctx.dryRun) return { changed: false, path: filePath, resources: plan.resources };
  let changed = false;
  const prev = previousPath(state, filePath);
  if (prev) {
    const r = await writeMerged(host, prev, [], new Set(state.sriov.owned), state, log, false).catch((e: unknown) => {
      log.warn("could not remove eni-dpdk's entries from the previous SR-IOV config path", { path: prev, error: errorMessage(e) });
      return undefined;
    });
    if (r && !r.m.invalid) {
      changed ||= r.changed;
      state.sriov = { configPath: filePath, owned: [] };
      await saveState(host, state);
    }
  }
  const owned = ownedIn(state, filePath);
  const r = await writeMerged(host, filePath, desired, owned, state, log, true);
  changed ||= r.changed;
  if (!sameList(r.m.ours, state.sriov.owned) || (r.m.ours.length > 0 && state.sriov.configPath !== filePath)) {
    state.sriov = { configPath: filePath, owned: r.m.ours };
    await saveState(host, state);
  }
  await removeStaleTemps(host, filePath, log);
  return { changed, path: filePath, resources: r.m.ours, ...(r.movedAside ? { movedAside: r.movedAside } : {}) };
}

/** For `reset`: remove only our entries. Never rewrites an unparsable file. Returns true when the file changed. */
export async function removeOwnedSriov(host: Host, config: Config, state: State, log: Logger): Promise<boolean> {
  const filePath = state.sriov.configPath ?? config.sriov.config_path;
  if (state.sriov.owned.length === 0) return false;
  const m = mergeText(filePath, await host.read(filePath), [], new Set(state.sriov.owned), false);
  if (m.invalid) {
    log.warn("SR-IOV device plugin config is not valid; leaving it untouched", { path: filePath, reason: m.invalid });
    return false;
  }
  const changed = m.changed && (await host.writeFileAtomic(filePath, m.text, 0o644));
  if (changed) log.info("removed eni-dpdk's entries from the SR-IOV device plugin config", { path: filePath, removed: m.removed });
  state.sriov = { configPath: filePath, owned: [] };
  await saveState(host, state);
  return changed;
}

/** For `status`/`validate`: what the plugin would make of the file, as readable warnings. */
export async function inspectSriov(
  host: Host,
  filePath: string,
  defaultPrefix = PLUGIN_DEFAULT_PREFIX,
): Promise<{ exists: boolean; valid: boolean; warnings: string[]; entries: unknown[] }> {
  const text = await host.read(filePath);
  if (text === undefined) return { exists: false, valid: true, warnings: [], entries: [] };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return {
      exists: true,
      valid: false,
      warnings: [`${host.path(filePath)} is not valid JSON (${errorMessage(e)}): the device plugin serves nothing; eni-dpdk will move it aside, never overwrite it`],
      entries: [],
    };
  }
  const findings = analyzeSriovDoc(doc, defaultPrefix);
  const list = isObject(doc) ? goGet(doc, "resourceList") : undefined;
  const tag = (f: SriovFinding) => (f.severity === "fatal" ? "plugin serves nothing: " : f.severity === "dropped" ? "entry dropped: " : "");
  return {
    exists: true,
    valid: !findings.some((f) => f.severity === "fatal"),
    warnings: findings.map((f) => `${tag(f)}${f.message}`),
    entries: Array.isArray(list) ? list : [],
  };
}

// ---- plugin restart --------------------------------------------------------------------------------

/** Run [sriov].restart_command (argv, never a shell). */
export async function restartDevicePlugin(argv: string[], log: Logger): Promise<{ ok: boolean; detail: string }> {
  if (argv.length === 0) return { ok: false, detail: "no [sriov].restart_command configured" };
  try {
    const r = await run(argv, { timeoutMs: 60_000 });
    const out = (r.stderr.trim() || r.stdout.trim()).split("\n").slice(-3).join(" | ");
    const detail = `${argv.join(" ")} exited ${r.code}${out ? `: ${out}` : ""}`;
    if (r.code === 0) log.info("restarted the SR-IOV device plugin", { command: argv });
    else log.error("SR-IOV device plugin restart command failed", { command: argv, code: r.code, output: out });
    return { ok: r.code === 0, detail };
  } catch (e) {
    const detail = `${argv[0]} could not be started: ${errorMessage(e)}`;
    log.error("SR-IOV device plugin restart command failed", { command: argv, error: errorMessage(e) });
    return { ok: false, detail };
  }
}

/** The status-line/log text when our entries changed while the plugin may already be running. */
export function sriovRestartNotice(result: SriovApplyResult): string {
  return `SR-IOV config ${result.path} changed (${result.resources.join(", ") || "eni-dpdk entries removed"}); restart the device plugin to advertise it (it reads its config only at start), or set [sriov].restart_command`;
}

/**
 * After applySriov: at boot the plugin starts after us and needs nothing. Later (`run`), a change
 * needs a restart: run restart_command when configured, else log and return the status text.
 */
export async function afterSriovChange(
  config: Config,
  result: SriovApplyResult,
  log: Logger,
  opts: { atBoot: boolean },
): Promise<{ restartNeeded: boolean; restarted: boolean; status?: string }> {
  if (!result.changed || opts.atBoot) return { restartNeeded: false, restarted: false };
  if (config.sriov.restart_command.length > 0) {
    const r = await restartDevicePlugin(config.sriov.restart_command, log);
    if (r.ok) return { restartNeeded: false, restarted: true };
    const status = `SR-IOV config changed but the device plugin restart failed (${r.detail}); restart it by hand`;
    return { restartNeeded: true, restarted: false, status };
  }
  const status = sriovRestartNotice(result);
  log.warn(status, { path: result.path });
  return { restartNeeded: true, restarted: false, status };
}
