// An independent model of how the SR-IOV network device plugin reads its config file, written from
// its Go sources (k8snetworkplumbingwg/sriov-network-device-plugin @ 40b6f50: pkg/types/types.go
// ResourceConfList/ResourceConfig/*DeviceSelectors, pkg/factory parseObjectOrSlice and
// GetDeviceFilter, cmd/sriovdp/manager.go readConfig/validConfigs, pkg/utils ValidResourceName;
// and @ v3.5.1, which GetDeviceFilter's selectors only as one object and knows neither
// auxNetDevice nor acpiIndexes/auxTypes, nor pKeys, added in v3.7.0).
// Tests run every file eni-dpdk writes through it. It does not share code with src/host/sriov-*.ts
// on purpose: a bug there must not hide itself here.
//
// Go's encoding/json: unknown keys are ignored; keys match struct fields exactly or, failing
// that, case-insensitively; null decodes into anything as the zero value; a type mismatch makes
// Unmarshal return an error.

type Kind = "str" | "bool" | "strs" | "info" | "raw";

const resourceConfig: Record<string, Kind> = {
  resourcePrefix: "str",
  resourceName: "str",
  deviceType: "str",
  excludeTopology: "bool",
  selectors: "raw",
  additionalInfo: "info",
};
const deviceSelectors: Record<string, Kind> = { vendors: "strs", devices: "strs", drivers: "strs" };
const genericPci: Record<string, Kind> = { pciAddresses: "strs" };
// IsRdma has no json tag in Go, so its key is "IsRdma", matched case-insensitively ("isRdma" works).
const genericNet: Record<string, Kind> = {
  pfNames: "strs",
  rootDevices: "strs",
  linkTypes: "strs",
  IsRdma: "bool",
  acpiIndexes: "strs",
  needVhostNet: "bool",
};
const selectorTypes: Record<string, Record<string, Kind>> = {
  netDevice: {
    ...deviceSelectors,
    ...genericPci,
    ...genericNet,
    ddpProfiles: "strs",
    vdpaType: "str",
    pKeys: "strs",
  },
  accelerator: { ...deviceSelectors, ...genericPci },
  auxNetDevice: { ...deviceSelectors, ...genericNet, auxTypes: "strs" },
};

/** "old": v3.5.x (selectors as one object only); "new": v3.7.0 and later. */
export type PluginRelease = "old" | "new";

export interface PluginVerdict {
  /** the plugin serves nothing at all (exits, panics, or rejects the file) */
  fatal: string[];
  /** the plugin skips these entries */
  dropped: string[];
  /** keys the plugin silently ignores (a misspelling ends up here) */
  ignored: string[];
  /** selectors that constrain nothing and so match every NIC */
  matchesAll: string[];
  /** accepted by the plugin, but not how eni-dpdk must write it */
  style: string[];
  /** entries with several selectors, as an array: only v3.6.0 and later read them */
  needsArrays: string[];
  /** resources the plugin would create, as prefix/name */
  resources: string[];
}

const obj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

// own keys only: "constructor" or "__proto__" in a file are keys like any other
function field(key: string, fields: Record<string, Kind>): string | undefined {
  return Object.prototype.hasOwnProperty.call(fields, key)
    ? key
    : Object.keys(fields).find((f) => f.toLowerCase() === key.toLowerCase());
}

function fits(kind: Kind, v: unknown): boolean {
  if (v === null) return true;
  if (kind === "raw") return true;
  if (kind === "str") return typeof v === "string";
  if (kind === "bool") return typeof v === "boolean";
  if (kind === "strs")
    return Array.isArray(v) && v.every((x) => x === null || typeof x === "string");
  return (
    obj(v) &&
    Object.values(v).every(
      (m) =>
        m === null ||
        (obj(m) && Object.values(m).every((x) => x === null || typeof x === "string")),
    )
  );
}

/** Decode `o` into a struct with `fields`; returns the decoded values or a type error. */
function decode(
  o: Record<string, unknown>,
  fields: Record<string, Kind>,
  where: string,
  v: PluginVerdict,
): Record<string, unknown> | string {
  const out: Record<string, unknown> = {};
  let err: string | undefined;
  for (const [k, val] of Object.entries(o)) {
    const f = field(k, fields);
    if (!f) {
      v.ignored.push(`${where}.${k}`);
      continue;
    }
    if (f !== k && !(f === "IsRdma" && k === "isRdma"))
      v.style.push(`${where}.${k} (case differs from ${f})`);
    if (!fits(fields[f], val))
      err ??= `${where}.${k}: cannot unmarshal ${Array.isArray(val) ? "array" : typeof val}`;
    else out[f] = val;
  }
  return err ?? out;
}

const OLD_UNKNOWN = new Set(["acpiIndexes", "auxTypes", "pKeys"]);

function selectorFieldsFor(deviceType: string, release: PluginRelease) {
  if (!Object.prototype.hasOwnProperty.call(selectorTypes, deviceType)) return undefined;
  const fields = selectorTypes[deviceType];
  if (release === "new") return fields;
  if (deviceType === "auxNetDevice") return undefined;
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !OLD_UNKNOWN.has(k)));
}

export function pluginVerdict(
  text: string,
  flagPrefix = "intel.com",
  release: PluginRelease = "new",
): PluginVerdict {
  const v: PluginVerdict = {
    fatal: [],
    dropped: [],
    ignored: [],
    matchesAll: [],
    style: [],
    needsArrays: [],
    resources: [],
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    v.fatal.push(`readConfig: not JSON: ${(e as Error).message}`);
    return v;
  }
  if (doc !== null && !obj(doc)) {
    v.fatal.push("readConfig: top level is not an object");
    return v;
  }
  const top = doc === null ? {} : decode(doc, { resourceList: "raw" }, "$", v);
  if (typeof top === "string") return v;
  const list = top.resourceList ?? [];
  if (!Array.isArray(list)) {
    v.fatal.push("readConfig: resourceList is not an array");
    return v;
  }
  const kept: Record<string, unknown>[] = [];
  // json.Unmarshal decodes every entry first; one type error anywhere fails the whole file.
  const decoded: (Record<string, unknown> | null)[] = [];
  for (const [i, e] of list.entries()) {
    if (e === null) {
      decoded.push(null);
      continue;
    }
    if (!obj(e)) {
      v.fatal.push(`readConfig: resourceList[${i}] is not an object`);
      return v;
    }
    const d = decode(e, resourceConfig, `resourceList[${i}]`, v);
    if (typeof d === "string") {
      v.fatal.push(`readConfig: ${d}`);
      return v;
    }
    decoded.push(d);
  }
  for (const [i, d0] of decoded.entries()) {
    const d = d0 ?? {};
    const where = `resourceList[${i}]`;
    const deviceType = (d.deviceType as string | null | undefined) || "netDevice";
    const fields = selectorFieldsFor(deviceType, release);
    if (!fields) {
      v.fatal.push(`readConfig: ${where}: unsupported deviceType "${deviceType}"`);
      return v;
    }
    if (d.selectors === undefined || d.selectors === null) {
      v.fatal.push(`readConfig: ${where}: nil selectors (panic)`);
      return v;
    }
    let sels: unknown[];
    if (obj(d.selectors)) {
      sels = [d.selectors];
    } else if (Array.isArray(d.selectors) && release === "old") {
      v.dropped.push(`${where}: selectors is an array, which v3.5.x cannot unmarshal`);
      continue;
    } else if (Array.isArray(d.selectors) && d.selectors.length > 0) {
      sels = d.selectors;
      if (d.selectors.length === 1)
        v.style.push(`${where}.selectors is an array of one: v3.5.x skips it; write an object`);
      else v.needsArrays.push(`${where}.selectors`);
    } else {
      v.dropped.push(`${where}: selectors is neither an object nor a non-empty array`);
      continue;
    }
    const parsed: Record<string, unknown>[] = [];
    let bad: string | undefined;
    for (const [j, s] of sels.entries()) {
      if (s === null) {
        v.fatal.push(`${where}.selectors[${j}] is null (nil pointer dereference)`);
        return v;
      }
      if (!obj(s)) {
        bad ??= `${where}.selectors[${j}] is not an object`;
        continue;
      }
      const p = decode(s, fields, `${where}.selectors[${j}]`, v);
      if (typeof p === "string") bad ??= p;
      else parsed.push(p);
    }
    if (bad) {
      v.dropped.push(bad);
      continue;
    }
    for (const [j, p] of parsed.entries()) {
      const filters = Object.entries(p).some(
        ([k, x]) =>
          (fields[k] === "strs" && Array.isArray(x) && x.length > 0) ||
          (k === "IsRdma" && x === true) ||
          (k === "vdpaType" && !!x),
      );
      if (!filters) v.matchesAll.push(`${where}.selectors[${j}]`);
      if (p.IsRdma === true && p.vdpaType) {
        v.fatal.push(`validConfigs: ${where}.selectors[${j}]: IsRdma with vdpaType`);
        return v;
      }
    }
    kept.push(d);
  }
  if (kept.length === 0) {
    v.fatal.push("main: no resource configuration");
    return v;
  }
  const seen = new Set<string>();
  for (const d of kept) {
    const name = (d.resourceName as string | null | undefined) ?? "";
    if (!/^[a-zA-Z0-9_-]+$/.test(name)) {
      v.fatal.push(`validConfigs: resource name "${name}" contains invalid characters`);
      return v;
    }
    const full = `${(d.resourcePrefix as string | null | undefined) || flagPrefix}/${name}`;
    if (seen.has(full)) {
      v.fatal.push(`validConfigs: resource name "${full}" already exists`);
      return v;
    }
    seen.add(full);
    if (!d.resourcePrefix)
      v.style.push(`${full}: no resourcePrefix (depends on the plugin's --resource-prefix)`);
    if (name.includes("-"))
      v.style.push(`${full}: hyphen in the name breaks the PCIDEVICE_ env var`);
    v.resources.push(full);
  }
  return v;
}

/** Everything clean: what every file eni-dpdk writes must satisfy. */
export function cleanVerdict(v: PluginVerdict): boolean {
  return (
    !v.fatal.length &&
    !v.dropped.length &&
    !v.ignored.length &&
    !v.matchesAll.length &&
    !v.style.length
  );
}
