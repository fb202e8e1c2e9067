// The SR-IOV network device plugin's config as the plugin sees it (pure: no I/O). The plugin reads
// this file once, at start, and fails quietly on malformed input (it exits 0 or panics and the node
// shows zero allocatable devices), so every rule below mirrors its parser
// (k8snetworkplumbingwg/sriov-network-device-plugin, pkg/types, pkg/factory parseObjectOrSlice,
// cmd/sriovdp readConfig/validConfigs): what it would make of a document, how our entries are
// rendered, and how they merge into a file without touching entries we do not own.
import { nearest } from "../config/model.js";
import { BDF_RE, resourceNameProblems, splitResourceName } from "../config/facts.js";
import { errorMessage, InputError, OpError, type Problem } from "../core/errors.js";

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
  /** one selector as an object (every plugin version reads it); several as an array (v3.6.0+) */
  selectors: SriovSelector | SriovSelector[];
}

/** The selectors of an entry we rendered, as a list whatever its shape. */
export function selectorList(e: SriovEntry): SriovSelector[] {
  return Array.isArray(e.selectors) ? e.selectors : [e.selectors];
}

export interface RenderedEntry {
  full: string;
  entry: SriovEntry;
  /** ENIs advertised in this entry */
  enis: string[];
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

export type FieldKind = "string" | "bool" | "string[]" | "additionalInfo" | "raw";
const ENTRY_FIELDS: Record<string, FieldKind> = {
  resourceName: "string",
  resourcePrefix: "string",
  deviceType: "string",
  excludeTopology: "bool",
  selectors: "raw",
  additionalInfo: "additionalInfo",
};
const COMMON_SELECTOR: Record<string, FieldKind> = {
  vendors: "string[]",
  devices: "string[]",
  drivers: "string[]",
};
const NET_SELECTOR: Record<string, FieldKind> = {
  pfNames: "string[]",
  rootDevices: "string[]",
  linkTypes: "string[]",
  isRdma: "bool",
  acpiIndexes: "string[]",
  needVhostNet: "bool",
};
/** Selector fields per deviceType, spelt as in the plugin's README (the newest release). */
export const SELECTOR_FIELDS: Record<string, Record<string, FieldKind>> = {
  netDevice: {
    ...COMMON_SELECTOR,
    pciAddresses: "string[]",
    ...NET_SELECTOR,
    ddpProfiles: "string[]",
    vdpaType: "string",
    pKeys: "string[]",
  },
  accelerator: { ...COMMON_SELECTOR, pciAddresses: "string[]" },
  auxNetDevice: { ...COMMON_SELECTOR, ...NET_SELECTOR, auxTypes: "string[]" },
};

// ---- plugin releases ---------------------------------------------------------------------------------

/** The newest plugin release these rules were checked against; deploy/examples pin it. */
export const PLUGIN_RELEASE = "v3.11.0";
/** The first release that reads `selectors` as an array (parseObjectOrSlice); v3.5.x skips such an entry. */
export const ARRAY_SELECTORS_SINCE = "v3.6.0";

/** A plugin release as [major, minor, patch]; where optional, undefined means the newest. */
export type PluginVersion = readonly [number, number, number];

export function parsePluginVersion(s: string): PluginVersion | undefined {
  const m = /^v?(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?$/.exec(s.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

export const formatPluginVersion = (v: PluginVersion) => `v${v.join(".")}`;

/** Is `v` (undefined: the newest) at least release `since`, e.g. "v3.6.0"? */
export function pluginAtLeast(v: PluginVersion | undefined, since: string): boolean {
  if (!v) return true;
  const s = parsePluginVersion(since)!;
  for (let i = 0; i < 3; i++) if (v[i] !== s[i]) return v[i] > s[i];
  return true;
}

/** What later releases added (pkg/types at each tag); before it, a key is unknown and ignored. */
const SINCE: Record<string, string> = {
  auxNetDevice: "v3.6.0",
  acpiIndexes: "v3.6.0",
  auxTypes: "v3.6.0",
  pKeys: "v3.7.0",
};
const knownIn = (name: string, v: PluginVersion | undefined) =>
  !Object.hasOwn(SINCE, name) || pluginAtLeast(v, SINCE[name]);

export function deviceTypesOf(v: PluginVersion | undefined): string[] {
  return PLUGIN_DEVICE_TYPES.filter((t) => knownIn(t, v));
}

export function selectorFieldsOf(
  deviceType: string,
  v: PluginVersion | undefined,
): Record<string, FieldKind> {
  const all = Object.hasOwn(SELECTOR_FIELDS, deviceType) ? SELECTOR_FIELDS[deviceType] : {};
  return Object.fromEntries(Object.entries(all).filter(([k]) => knownIn(k, v)));
}

export interface SriovFinding {
  /** index in resourceList, when the finding is about one entry */
  index?: number;
  /** fatal: the plugin serves nothing (exits or panics); dropped: the plugin skips this entry; warn: works, but wrong */
  severity: "fatal" | "dropped" | "warn";
  /** the selector matches every NIC the plugin sees (an empty or fully misspelt selector) */
  matchesAll?: boolean;
  /** works from ARRAY_SELECTORS_SINCE only: an older plugin skips the entry */
  compat?: boolean;
  message: string;
}

const CORRECT_FORM =
  '{"resourceName": "ena_dpdk", "resourcePrefix": "amazon.com", "deviceType": "netDevice", "selectors": {"vendors": ["1d0f"], "devices": ["ec20"], "drivers": ["vfio-pci"], "pciAddresses": ["0000:00:06.0"]}}';

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Go's encoding/json refuses a document nested deeper than this (its scanner's maxNestingDepth). */
const GO_MAX_DEPTH = 10_000;

/**
 * Parse the plugin's config file text as Go would accept it: JSON, and nested no deeper than Go's
 * limit (a deeper file is unreadable to the plugin, and would overflow our own recursion).
 */
export function parseConfigJson(text: string): { doc: unknown } | { error: string } {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > GO_MAX_DEPTH)
        return {
          error: `not valid JSON for the plugin (nested deeper than ${GO_MAX_DEPTH} levels, Go's limit)`,
        };
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  try {
    return { doc: JSON.parse(text) as unknown };
  } catch (e) {
    return { error: `not valid JSON (${errorMessage(e)})` };
  }
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** Go's encoding/json matches keys exactly first, then case-insensitively (own keys only: not "constructor"). */
function goField(key: string, fields: Record<string, FieldKind>): string | undefined {
  if (Object.hasOwn(fields, key)) return key;
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
      return (
        isObject(v) &&
        Object.values(v).every(
          (m) =>
            m === null ||
            (isObject(m) && Object.values(m).every((x) => x === null || typeof x === "string")),
        )
      );
  }
}

function entryLabel(i: number, e: unknown): string {
  return isObject(e) && typeof e.resourceName === "string"
    ? `resourceList[${i}] ("${e.resourceName}")`
    : `resourceList[${i}]`;
}

/** Read a field the way Go would (case-insensitive), for an entry already known to decode. */
export function goGet(o: Record<string, unknown>, name: string): unknown {
  let found: unknown;
  for (const [k, v] of Object.entries(o)) {
    if (k === name) return v;
    if (k.toLowerCase() === name.toLowerCase()) found = v;
  }
  return found;
}

/**
 * Decode an object already known to decode into a Go struct with `fields`, as encoding/json does:
 * keys in document order, each to its field (exact, else case-insensitive), the last one winning;
 * unknown keys ignored; null resets a list and leaves anything else alone; a null in a list is "".
 */
export function goDecode(o: Record<string, unknown>, fields: Record<string, FieldKind>): Decoded {
  const out: Decoded = new Map();
  for (const [k, v] of Object.entries(o)) {
    const f = goField(k, fields);
    if (!f) continue;
    if (v === null) {
      if (fields[f] === "string[]") out.delete(f);
      continue;
    }
    out.set(f, Array.isArray(v) ? v.map((x) => (typeof x === "string" ? x : "")) : v);
  }
  return out;
}
export type Decoded = Map<string, unknown>;

/**
 * What the plugin would make of a parsed config document, entry by entry. Mirrors its decoding
 * (unknown keys ignored, type errors fail the file or drop the entry), its deviceType check, the
 * nil-selectors panic, and validConfigs (name characters, unique prefix/name).
 */
export function analyzeSriovDoc(
  doc: unknown,
  defaultPrefix = PLUGIN_DEFAULT_PREFIX,
  version?: PluginVersion,
): SriovFinding[] {
  const out: SriovFinding[] = [];
  if (!isObject(doc)) {
    out.push({
      severity: "fatal",
      message: `the top level is ${typeName(doc)}; the plugin expects an object {"resourceList": [...]} and serves nothing`,
    });
    return out;
  }
  for (const k of Object.keys(doc)) {
    if (k.toLowerCase() !== "resourcelist") {
      const near = nearest(k, ["resourceList"]);
      out.push({
        severity: "warn",
        message: `top-level key "${k}" is ignored by the plugin${near ? `; did you mean "${near}"?` : ""}`,
      });
    }
  }
  const list = goGet(doc, "resourceList");
  if (list === undefined || list === null || (Array.isArray(list) && list.length === 0)) {
    out.push({
      severity: "fatal",
      message:
        'no resources in "resourceList": the plugin logs "no resource configuration" and exits',
    });
    return out;
  }
  if (!Array.isArray(list)) {
    out.push({
      severity: "fatal",
      message: `"resourceList" is ${typeName(list)}; the plugin expects an array of entries and serves nothing`,
    });
    return out;
  }
  const survivors: { index: number; e: Record<string, unknown> }[] = [];
  list.forEach((e, index) => {
    const label = entryLabel(index, e);
    const add = (severity: SriovFinding["severity"], message: string, matchesAll?: boolean) =>
      out.push({
        index,
        severity,
        message: `${label}: ${message}`,
        ...(matchesAll ? { matchesAll } : {}),
      });
    if (e === null)
      return add(
        "fatal",
        "null entry: it has no selectors, and the plugin panics on nil selectors",
      );
    if (!isObject(e))
      return add(
        "fatal",
        `expected an object, got ${typeName(e)}; the plugin's JSON decoding fails for the whole file`,
      );
    let typeError = false;
    for (const [k, v] of Object.entries(e)) {
      const f = goField(k, ENTRY_FIELDS);
      if (!f) {
        if (k === "devices") {
          add(
            "warn",
            `"devices" (the seed document's shape) is not a plugin field and is ignored; list devices in "selectors" instead, e.g. ${CORRECT_FORM}`,
          );
        } else {
          const near = nearest(k, Object.keys(ENTRY_FIELDS));
          add(
            "warn",
            `unknown key "${k}" is ignored by the plugin${near ? `; did you mean "${near}"?` : ""}`,
          );
        }
        continue;
      }
      if (f !== k)
        add(
          "warn",
          `key "${k}" only matches "${f}" through Go's case-insensitive decoding; write "${f}"`,
        );
      if (!decodes(ENTRY_FIELDS[f], v)) {
        typeError = true;
        add(
          "fatal",
          `"${k}" must be ${ENTRY_FIELDS[f] === "additionalInfo" ? "an object of objects of strings" : `a ${ENTRY_FIELDS[f]}`}, got ${typeName(v)}; the plugin's JSON decoding fails for the whole file`,
        );
      }
    }
    if (typeError) return;
    const dt = (goGet(e, "deviceType") as string | null | undefined) || "netDevice";
    const types = deviceTypesOf(version);
    if (!types.includes(dt)) {
      const near = nearest(dt, types);
      return add(
        "fatal",
        `deviceType "${dt}" is not one of ${types.join(", ")} (case matters)${near ? `; did you mean "${near}"?` : ""}; the plugin rejects the whole file`,
      );
    }
    const sel = goGet(e, "selectors");
    if (sel === undefined || sel === null)
      return add(
        "fatal",
        `no "selectors": the plugin panics at start (nil selectors); use ${CORRECT_FORM}`,
      );
    let selectors: unknown[];
    if (isObject(sel)) {
      selectors = [sel];
    } else if (Array.isArray(sel)) {
      if (!pluginAtLeast(version, ARRAY_SELECTORS_SINCE))
        return add(
          "dropped",
          `"selectors" is an array, which the plugin reads only from ${ARRAY_SELECTORS_SINCE}; ${formatPluginVersion(version!)} skips the entry with a warning; write a single selector as an object`,
        );
      if (sel.length === 0)
        return add(
          "dropped",
          '"selectors" is an empty array; the plugin drops the entry ("need at least one selector")',
        );
      if (!version) {
        const message =
          sel.length === 1
            ? `"selectors" is an array of one; plugin releases before ${ARRAY_SELECTORS_SINCE} (v3.5.1 is what aws-samples' guide deploys) skip this entry; write the selector as an object, which every release reads`
            : `${sel.length} selectors as an array: read only by plugin ${ARRAY_SELECTORS_SINCE} or later; v3.5.x skips this entry`;
        out.push({ index, severity: "warn", compat: true, message: `${label}: ${message}` });
      }
      selectors = sel;
    } else {
      return add(
        "dropped",
        `"selectors" is ${typeName(sel)}; it must be an object (or, from ${ARRAY_SELECTORS_SINCE}, an array of objects), so the plugin drops the entry`,
      );
    }
    const fields = selectorFieldsOf(dt, version);
    let dropped = false;
    let fatal = false;
    selectors.forEach((s, si) => {
      const where = isObject(sel) ? "selectors" : `selectors[${si}]`;
      if (s === null) {
        fatal = true;
        return add("fatal", `${where} is null; the plugin dereferences it and panics`);
      }
      if (!isObject(s)) {
        dropped = true;
        return add(
          "dropped",
          `${where} is ${typeName(s)}, not an object; the plugin drops the entry`,
        );
      }
      let constrains = false;
      for (const [k, v] of Object.entries(s)) {
        const f = goField(k, fields);
        if (!f) {
          const near = nearest(k, Object.keys(fields));
          add(
            "warn",
            `${where}: unknown key "${k}" is ignored by the plugin, so it constrains nothing${near ? `; did you mean "${near}"?` : ""} (known for ${dt}: ${Object.keys(fields).join(", ")})`,
          );
          continue;
        }
        if (f !== k)
          add(
            "warn",
            `${where}: key "${k}" only matches "${f}" through Go's case-insensitive decoding; write "${f}"`,
          );
        const kind = fields[f];
        if (!decodes(kind, v)) {
          dropped = true;
          add(
            "dropped",
            `${where}.${k} must be ${kind === "string[]" ? "an array of strings" : `a ${kind}`}, got ${typeName(v)}; the plugin drops the entry`,
          );
          continue;
        }
        if (
          (kind === "string[]" && Array.isArray(v) && v.length > 0) ||
          (f === "isRdma" && v === true) ||
          (f === "vdpaType" && typeof v === "string" && v !== "")
        ) {
          constrains = true;
        }
      }
      if (
        goGet(s, "isRdma") === true &&
        typeof goGet(s, "vdpaType") === "string" &&
        goGet(s, "vdpaType") !== ""
      ) {
        fatal = true;
        add("fatal", `${where}: isRdma and vdpaType are mutually exclusive; the plugin exits`);
      }
      if (!constrains)
        add(
          "warn",
          `${where} constrains nothing, so it matches every NIC the plugin sees (eni-dpdk's too)`,
          true,
        );
    });
    if (!dropped && !fatal) survivors.push({ index, e });
  });

  // validConfigs, over the entries the plugin kept
  const seen = new Map<string, number>();
  for (const { index, e } of survivors) {
    const label = entryLabel(index, e);
    const name = (goGet(e, "resourceName") as string | null | undefined) ?? "";
    if (!PLUGIN_NAME_RE.test(name)) {
      const hint = name.includes("/")
        ? `; put the part before "/" in "resourcePrefix" and "${name.slice(name.lastIndexOf("/") + 1)}" in "resourceName"`
        : "";
      out.push({
        index,
        severity: "fatal",
        message: `${label}: resourceName "${name}" has characters outside [a-zA-Z0-9_-]; the plugin exits${hint}`,
      });
      continue;
    }
    if (name.includes("-")) {
      out.push({
        index,
        severity: "warn",
        message: `${label}: resourceName "${name}" has a hyphen; pods get it as the env var PCIDEVICE_<PREFIX>_<NAME>, where "-" is not valid; use "_"`,
      });
    }
    const prefix = (goGet(e, "resourcePrefix") as string | null | undefined) || defaultPrefix;
    const full = `${prefix}/${name}`;
    const other = seen.get(full);
    if (other !== undefined) {
      out.push({
        index,
        severity: "fatal",
        message: `${label}: full name "${full}" is also used by resourceList[${other}]; the plugin exits (names must be unique)`,
      });
    } else seen.set(full, index);
  }
  if (survivors.length === 0 && !out.some((f) => f.severity === "fatal")) {
    out.push({
      severity: "fatal",
      message: 'the plugin keeps no entry, logs "no resource configuration" and exits',
    });
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
 * resource were bound to different drivers; only then an array, which needs plugin v3.6.0+).
 * Throws InputError for bad names, OpError for device records the host stage should never produce.
 */
export function renderSriovEntries(devices: SriovDevice[], defaultPrefix: string): RenderedEntry[] {
  const problems: Problem[] = [];
  const broken: string[] = [];
  const byBdf = new Map<string, string>();
  const groups = new Map<
    string,
    { prefix: string; name: string; devs: (SriovDevice & { vendor: string; device: string })[] }
  >();
  for (const d of devices) {
    const nameProblems = resourceNameProblems(d.resource, defaultPrefix);
    for (const m of nameProblems)
      problems.push({ source: "config", key: `eni.${d.eniName}.dpdk.resource_name`, message: m });
    const vendor = hex4(d.vendor);
    const device = hex4(d.device);
    if (!BDF_RE.test(d.bdf))
      broken.push(`ENI ${d.eniName}: PCI address "${d.bdf}" is not DDDD:BB:DD.F`);
    if (!vendor) broken.push(`ENI ${d.eniName}: vendor "${d.vendor}" is not a 4-digit hex id`);
    if (!device) broken.push(`ENI ${d.eniName}: device "${d.device}" is not a 4-digit hex id`);
    if (!/^[A-Za-z0-9_.-]+$/.test(d.driver))
      broken.push(`ENI ${d.eniName}: driver "${d.driver}" is not a driver name`);
    const prev = byBdf.get(d.bdf);
    if (prev !== undefined)
      broken.push(`PCI address ${d.bdf} is given for ENI ${prev} and ENI ${d.eniName}`);
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
    throw new OpError(
      `SR-IOV: invalid bound-device records: ${broken.join("; ")}`,
      "this is a bug in eni-dpdk's host stage; report it with `eni-dpdk status` output",
    );
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
        entry: {
          resourceName: g.name,
          resourcePrefix: g.prefix,
          deviceType: "netDevice" as const,
          // An object unless there really are several: plugin v3.5.x skips an entry whose selectors are an array.
          selectors: selectors.length === 1 ? selectors[0] : selectors,
        },
      };
    });
}

// ---- merge -------------------------------------------------------------------------------------------

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) &&
      Array.isArray(b) &&
      a.length === b.length &&
      a.every((x, i) => deepEqual(x, b[i]))
    );
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return (
      ka.length === Object.keys(b).length &&
      ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]))
    );
  }
  return false;
}

/** An entry with `selectors: [x]` as `selectors: x`, the form we write now; anything else as it is. */
function singleSelectorAsObject(e: unknown): unknown {
  return isObject(e) && Array.isArray(e.selectors) && e.selectors.length === 1
    ? { ...e, selectors: e.selectors[0] as unknown }
    : e;
}

/** The full name of an entry written with an explicit prefix, as we always write ours. */
function explicitFullName(e: unknown): string | undefined {
  return isObject(e) &&
    typeof e.resourceName === "string" &&
    typeof e.resourcePrefix === "string" &&
    e.resourcePrefix
    ? `${e.resourcePrefix}/${e.resourceName}`
    : undefined;
}

export interface Merge {
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
export function mergeText(
  filePath: string,
  existing: string | undefined,
  desired: RenderedEntry[],
  owned: Set<string>,
  strict: boolean,
): Merge {
  const m: Merge = {
    existed: existing !== undefined,
    changed: false,
    text: "",
    ours: [],
    added: [],
    updated: [],
    removed: [],
    adopted: [],
    warnings: [],
  };
  let parsed: Record<string, unknown> | undefined;
  const read = existing === undefined ? undefined : parseConfigJson(existing);
  if (read && "error" in read) m.invalid = read.error;
  else if (read) {
    const doc = read.doc;
    const variant = isObject(doc)
      ? Object.keys(doc).find((k) => k !== "resourceList" && k.toLowerCase() === "resourcelist")
      : undefined;
    if (!isObject(doc)) m.invalid = `the top level is ${typeName(doc)}, not an object`;
    else if (variant)
      m.invalid = `it spells "resourceList" as "${variant}", which the plugin's case-insensitive decoding would mix with ours`;
    else if (
      doc.resourceList !== undefined &&
      doc.resourceList !== null &&
      !Array.isArray(doc.resourceList)
    ) {
      m.invalid = `"resourceList" is ${typeName(doc.resourceList)}, not an array`;
    } else parsed = doc;
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
    if (d && !placed.has(d.full) && deepEqual(singleSelectorAsObject(e), d.entry)) {
      // ours without a record (a lost state file); an older eni-dpdk wrote one selector as an array
      m.adopted.push(d.full);
      if (!deepEqual(e, d.entry)) m.updated.push(d.full);
      list.push(d.entry);
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
  for (const d of desired)
    for (const s of selectorList(d.entry)) for (const a of s.pciAddresses) ourBdfs.set(a, d.full);
  for (const { index, e } of foreign) {
    if (!isObject(e)) continue;
    const name = goGet(e, "resourceName");
    const prefix = goGet(e, "resourcePrefix");
    for (const d of desired) {
      if (name !== d.entry.resourceName) continue;
      if (prefix === d.entry.resourcePrefix) {
        conflicts.push({
          source: filePath,
          key: `resourceList[${index}]`,
          message: `"${d.full}" is already defined by an entry eni-dpdk does not own; rename eni-dpdk's resource (dpdk.resource_name of ENI ${d.enis.join(", ")}) or remove that entry`,
        });
      } else if (typeof prefix !== "string" || prefix === "") {
        conflicts.push({
          source: filePath,
          key: `resourceList[${index}]`,
          message: `an entry eni-dpdk does not own is named "${name}" without resourcePrefix; its full name depends on the plugin's --resource-prefix flag (default ${PLUGIN_DEFAULT_PREFIX}) and may clash with "${d.full}"; give it an explicit resourcePrefix or rename eni-dpdk's resource`,
        });
      }
    }
    const sel = goGet(e, "selectors");
    for (const s of Array.isArray(sel) ? sel : [sel]) {
      const addrs = isObject(s) ? goGet(s, "pciAddresses") : undefined;
      if (!Array.isArray(addrs)) continue;
      for (const a of addrs) {
        const ours = typeof a === "string" ? ourBdfs.get(a) : undefined;
        if (ours)
          m.warnings.push(
            `${entryLabel(index, e)} also selects ${a}, which eni-dpdk advertises as ${ours}; the plugin gives a device to the first entry that matches it`,
          );
      }
    }
  }
  if (strict && conflicts.length)
    throw new InputError(
      conflicts,
      `fix the names, then run \`eni-dpdk validate\` and apply again; ${filePath} was not changed`,
    );

  const out: Record<string, unknown> = parsed
    ? { ...parsed, resourceList: list }
    : { resourceList: list };
  if (list.length > 0) {
    const oursAt = new Set(
      list.flatMap((e, i) => (m.ours.includes(explicitFullName(e) ?? "") ? [i] : [])),
    );
    const findings = analyzeSriovDoc(out);
    const ourProblems = findings.filter(
      (f) => f.index !== undefined && oursAt.has(f.index) && !f.compat,
    );
    if (ourProblems.length) {
      throw new OpError(
        `SR-IOV: eni-dpdk rendered an entry the plugin would not accept: ${ourProblems.map((f) => f.message).join("; ")}`,
        "this is a bug in eni-dpdk; report it",
      );
    }
    const blocking = findings.filter(
      (f) =>
        (f.index === undefined || !oursAt.has(f.index)) && (f.severity === "fatal" || f.matchesAll),
    );
    if (strict && m.ours.length > 0 && blocking.length) {
      throw new OpError(
        `SR-IOV: ${filePath} has entries eni-dpdk does not own that keep the device plugin from serving eni-dpdk's devices: ${blocking.map((f) => f.message).join("; ")}`,
        `fix or remove those entries (see \`eni-dpdk validate\`), then apply again; ${filePath} was not changed`,
      );
    }
    m.warnings.push(...findings.map((f) => f.message));
  }
  // An unmergeable file is only replaced (after moving it aside) when we have entries to write.
  m.changed =
    m.invalid !== undefined
      ? m.ours.length > 0
      : m.existed
        ? !deepEqual(parsed, out)
        : list.length > 0;
  m.text = JSON.stringify(out, null, 2) + "\n";
  return m;
}
