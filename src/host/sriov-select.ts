// Which devices the SR-IOV network device plugin will advertise, per resource, on this host (pure:
// no I/O). The plugin decides once, at start, and says little: a resource that matches nothing is
// silently not advertised, a device goes to the first resource that claims it. This mirrors its
// selection (k8snetworkplumbingwg/sriov-network-device-plugin v3.5.1..v3.11.0: cmd/sriovdp
// manager.go initServers/excludeAllocatedDevices, pkg/netdevice netDeviceProvider
// AddTargetDevices/GetFilteredDevices, pkg/resources deviceSelectors.go, pkg/utils; PCI discovery
// by jaypipes/ghw from each device's modalias), so "my pod gets no device" is answered before the
// plugin starts.
import { isDpdkDriver, pluginEnvVar } from "../config/facts.js";
import {
  analyzeSriovDoc,
  goDecode,
  goGet,
  isObject,
  PLUGIN_DEFAULT_PREFIX,
  selectorFieldsOf,
  type Decoded,
  type PluginVersion,
} from "./sriov-model.js";

/** A PCI device as the plugin sees it (read by sriov-check.ts from sysfs under the root). */
export interface PluginDevice {
  bdf: string;
  /** from modalias, lower-case hex as ghw reports them; undefined: no readable modalias, so the plugin never lists it */
  vendor?: string;
  device?: string;
  /** PCI base class from modalias: 0x02 network (netDevice), 0x12 accelerator */
  baseClass?: number;
  /** the driver bound now; undefined: none, and the plugin skips a device without one */
  driver?: string;
  /** netdevs under the device, sorted (the order the plugin reads them in) */
  netdevs: string[];
  /** those of them with an IPv4 default route in the main table */
  defaultRoute: string[];
  /** an SR-IOV PF with VFs enabled: the plugin offers its VFs, never the PF */
  pfWithVfs: boolean;
  /** `acpi_index`, "" when absent */
  acpiIndex: string;
  /** for a VF: its PF's first netdev, the PF's address and the VF's index; "", "", -1 otherwise */
  pfName: string;
  pfAddr: string;
  funcId: number;
  /** netlink's name for the link type of the first netdev (else the PF's): "ether", "infiniband"; "" with neither; undefined: a type this model does not name */
  linkType?: string;
}

export interface SelectedDevice {
  bdf: string;
  vendor: string;
  device: string;
  driver: string;
  netdev?: string;
}

export interface SelectedResource {
  /** index in resourceList */
  index: number;
  /** prefix/name as the plugin advertises it (an entry without resourcePrefix takes the plugin's flag, default intel.com) */
  full: string;
  owner: "eni-dpdk" | "foreign";
  deviceType: string;
  /** the env var pods get the PCI addresses in */
  envVar: string;
  /** advertised: gets devices; empty: matches none, so not advertised; dropped: the plugin skips the entry; not-served: the plugin serves nothing at all; not-evaluated: a kind this check does not model */
  state: "advertised" | "empty" | "dropped" | "not-served" | "not-evaluated";
  devices: SelectedDevice[];
  /** devices its selectors match that an earlier resource took; certain unless a not-evaluated field is involved */
  lost: { bdf: string; claimedBy: string; certain: boolean }[];
  /** selector fields this check cannot evaluate from sysfs; the devices are then the most it can get */
  notEvaluated: string[];
  /** why it gets no (or fewer) devices */
  why: string[];
}

export interface Selection {
  /** the plugin serves nothing at all (exits, panics, rejects the file) */
  fatal: string[];
  resources: SelectedResource[];
  /** devices the plugin offers that no resource takes */
  unclaimed: SelectedDevice[];
  /** network-class devices the plugin leaves out, with the reason */
  excluded: { bdf: string; reason: string }[];
  /** what makes pods get no or fewer devices than the file says: `sriov check` fails on these */
  errors: string[];
  /** what works, but is fragile or was not evaluated */
  warnings: string[];
}

export interface SelectOptions {
  /** full names of entries eni-dpdk owns */
  owned?: Set<string>;
  /** the plugin's --resource-prefix flag */
  defaultPrefix?: string;
  version?: PluginVersion;
}

const NET_CLASS = 0x02;
const ACCEL_CLASS = 0x12;

const selected = (d: PluginDevice): SelectedDevice => ({
  bdf: d.bdf,
  vendor: d.vendor ?? "",
  device: d.device ?? "",
  driver: d.driver ?? "",
  ...(d.netdevs[0] ? { netdev: d.netdevs[0] } : {}),
});

/** Why the plugin's netDevice provider leaves a device out, or undefined when it offers it. */
function netExclusion(d: PluginDevice): string | undefined {
  if (d.defaultRoute.length)
    return `${d.defaultRoute.join(", ")} has an IPv4 default route: the plugin never offers a NIC the host uses`;
  if (d.pfWithVfs) return "an SR-IOV PF with VFs enabled: the plugin offers its VFs, not the PF";
  if (!d.driver) return "no driver bound: the plugin skips a device without one";
  return undefined;
}

// ---- one selector --------------------------------------------------------------------------------

/** Go's strconv.Atoi, for the "#" ranges of pfNames/rootDevices. */
function atoi(s: string): number | undefined {
  return /^[+-]?\d{1,18}$/.test(s) ? Number(s) : undefined;
}

/** pkg/resources getItem + isSelected: "<pf>[#<i>[-<j>],...]", the PF part case-insensitive. */
function pfSelected(values: string[], pf: string, funcId: number): boolean {
  if (!pf) return false;
  const item = values.find((v) => v.split("#")[0].toLowerCase() === pf.toLowerCase());
  if (item === undefined) return false;
  if (!item.includes("#")) return true;
  const fields = item.split("#");
  if (fields.length !== 2) return false;
  for (const entry of fields[1].split(",")) {
    if (entry.includes("-")) {
      const rng = entry.split("-");
      const [a, b] = [atoi(rng[0]), atoi(rng[1] ?? "")];
      if (rng.length !== 2 || a === undefined || b === undefined) return false;
      if (funcId >= a && funcId <= b) return true;
    } else {
      const n = atoi(entry);
      if (n === undefined) return false;
      if (funcId === n) return true;
    }
  }
  return false;
}

interface FilterRule {
  field: string;
  /** the device's value for an exact-match field; undefined: not known for this device */
  value?: (d: PluginDevice) => string | undefined;
  /** a field with its own match rule, and what to show of the device when it matches none */
  match?: (values: string[], d: PluginDevice) => boolean;
  show?: (d: PluginDevice) => string;
}

// The order GetFilteredDevices applies them in; an empty list filters nothing.
const NET_RULES: FilterRule[] = [
  { field: "vendors", value: (d) => d.vendor },
  { field: "devices", value: (d) => d.device },
  { field: "drivers", value: (d) => d.driver },
  { field: "pciAddresses", value: (d) => d.bdf },
  { field: "acpiIndexes", value: (d) => d.acpiIndex },
  {
    field: "pfNames",
    match: (v, d) => pfSelected(v, d.pfName, d.funcId),
    show: (d) => (d.pfName ? `VF ${d.funcId} of ${d.pfName}` : "not a VF"),
  },
  {
    field: "rootDevices",
    match: (v, d) => pfSelected(v, d.pfAddr, d.funcId),
    show: (d) => (d.pfAddr ? `VF ${d.funcId} of ${d.pfAddr}` : "not a VF"),
  },
  { field: "linkTypes", value: (d) => d.linkType },
  // from devlink, ddptool, the RDMA and vDPA subsystems: not in sysfs
  { field: "ddpProfiles" },
  { field: "pKeys" },
];
const ACCEL_RULES = NET_RULES.slice(0, 4);

/** What the plugin compares exactly, and how a near miss is spelt right. */
function nearMiss(field: string, value: string, actual: string): boolean {
  const norm = (s: string) =>
    field === "drivers" ? s.replaceAll("_", "-") : s.trim().toLowerCase().replace(/^0x/, "");
  if (field === "pciAddresses")
    return value.toLowerCase() === actual || `0000:${value.toLowerCase()}` === actual;
  return value !== actual && norm(value) === norm(actual);
}

const SPELLING: Record<string, string> = {
  vendors: "lower-case hex without 0x, as in modalias",
  devices: "lower-case hex without 0x, as in modalias",
  drivers: "the driver's directory name, e.g. vfio-pci",
  pciAddresses: "the full lower-case address, e.g. 0000:00:06.0",
};

interface SelectorResult {
  matched: PluginDevice[];
  notEvaluated: string[];
  /** set when nothing matched: the field that left no device, and why */
  why?: string;
}

function applySelector(
  sel: Decoded,
  candidates: PluginDevice[],
  rules: FilterRule[],
  where: string,
): SelectorResult {
  let devs = candidates;
  const notEvaluated: string[] = [];
  let why: string | undefined;
  for (const rule of rules) {
    const values = sel.get(rule.field);
    if (!Array.isArray(values) || values.length === 0) continue;
    const vs = values as string[];
    const before = devs;
    if (rule.match) {
      devs = devs.filter((d) => rule.match!(vs, d));
    } else if (rule.value) {
      const unknown = devs.filter((d) => rule.value!(d) === undefined);
      if (unknown.length)
        notEvaluated.push(`${where}.${rule.field} (for ${unknown.map((d) => d.bdf).join(", ")})`);
      devs = devs.filter((d) => {
        const v = rule.value!(d);
        return v === undefined || vs.includes(v);
      });
    } else {
      notEvaluated.push(`${where}.${rule.field}`);
    }
    if (!why && before.length > 0 && devs.length === 0) {
      const seen = before
        .slice(0, 6)
        .map((d) => {
          const v = rule.show ? rule.show(d) : rule.value?.(d);
          return v === undefined ? d.bdf : `${d.bdf} (${v === "" ? "none" : v})`;
        })
        .join(", ");
      const more = before.length > 6 ? ` and ${before.length - 6} more` : "";
      const misses = rule.value
        ? vs.filter((v) => before.some((d) => nearMiss(rule.field, v, rule.value!(d) ?? "")))
        : [];
      const hint = misses.length
        ? `; the plugin compares exactly: ${JSON.stringify(misses)} would match if written as ${SPELLING[rule.field] ?? "the device shows it"}`
        : rule.field === "linkTypes"
          ? "; a device on a DPDK driver has no netdev, so its link type is empty"
          : "";
      why = `${where}: ${rule.field} ${JSON.stringify(vs)} matches none of ${seen}${more}${hint}`;
    }
  }
  if (sel.get("isRdma") === true) notEvaluated.push(`${where}.isRdma`);
  if (typeof sel.get("vdpaType") === "string" && sel.get("vdpaType") !== "")
    notEvaluated.push(`${where}.vdpaType`);
  return { matched: devs, notEvaluated, ...(why ? { why } : {}) };
}

// ---- the whole file --------------------------------------------------------------------------------

/**
 * What the plugin would advertise from this parsed config document over these devices: resources
 * in file order, each selector's matches (fields ANDed, selectors unioned), a device to the first
 * resource that claims it, devices with a default route or without a driver left out.
 */
export function selectDevices(
  doc: unknown,
  devices: PluginDevice[],
  opts: SelectOptions = {},
): Selection {
  const defaultPrefix = opts.defaultPrefix ?? PLUGIN_DEFAULT_PREFIX;
  const owned = opts.owned ?? new Set<string>();
  const findings = analyzeSriovDoc(doc, defaultPrefix, opts.version);
  const out: Selection = {
    fatal: [],
    resources: [],
    unclaimed: [],
    excluded: [],
    errors: [],
    warnings: [],
  };
  out.fatal = findings.filter((f) => f.severity === "fatal").map((f) => f.message);
  out.warnings.push(...findings.filter((f) => f.severity === "warn").map((f) => f.message));
  const dropped = new Map<number, string[]>();
  for (const f of findings)
    if (f.severity === "dropped" && f.index !== undefined)
      dropped.set(f.index, [...(dropped.get(f.index) ?? []), f.message]);

  const visibleNet: PluginDevice[] = [];
  const visibleAccel: PluginDevice[] = [];
  for (const d of devices) {
    if (d.baseClass === undefined) {
      out.excluded.push({
        bdf: d.bdf,
        reason: "no readable modalias: the plugin's PCI scan skips it",
      });
    } else if (d.baseClass === NET_CLASS) {
      const why = netExclusion(d);
      if (why) out.excluded.push({ bdf: d.bdf, reason: why });
      else visibleNet.push(d);
    } else if (d.baseClass === ACCEL_CLASS && d.driver) visibleAccel.push(d);
  }

  const list = isObject(doc) ? goGet(doc, "resourceList") : undefined;
  const entries = Array.isArray(list) ? (list as unknown[]) : [];
  const claimedBy = new Map<string, { index: number; full: string; exact: boolean }>();
  entries.forEach((e, index) => {
    if (!isObject(e)) return;
    const name = goGet(e, "resourceName");
    const prefixRaw = goGet(e, "resourcePrefix");
    const prefix = typeof prefixRaw === "string" && prefixRaw ? prefixRaw : defaultPrefix;
    const rname = typeof name === "string" ? name : "";
    const full = `${prefix}/${rname}`;
    const dtRaw = goGet(e, "deviceType");
    const deviceType = typeof dtRaw === "string" && dtRaw ? dtRaw : "netDevice";
    const r: SelectedResource = {
      index,
      full,
      owner: owned.has(full) ? "eni-dpdk" : "foreign",
      deviceType,
      envVar: pluginEnvVar(prefix, rname),
      state: "advertised",
      devices: [],
      lost: [],
      notEvaluated: [],
      why: [],
    };
    out.resources.push(r);
    const label = `resourceList[${index}] ${full}`;
    // a drop first: dropping every entry is itself fatal ("no resource configuration")
    if (!dropped.has(index) && out.fatal.length) {
      r.state = "not-served";
      return;
    }
    if (dropped.has(index)) {
      r.state = "dropped";
      r.why.push(...dropped.get(index)!);
      out.errors.push(
        `${label} is dropped by the plugin, so pods get no device from it: ${dropped.get(index)!.join("; ")}`,
      );
      return;
    }
    if (deviceType === "auxNetDevice") {
      r.state = "not-evaluated";
      r.notEvaluated.push(
        "auxNetDevice (auxiliary devices, e.g. mlx5 SFs, are not in /sys/bus/pci)",
      );
      out.warnings.push(
        `${label}: not evaluated: auxNetDevice resources select auxiliary devices, which this check does not model`,
      );
      return;
    }
    const fields = selectorFieldsOf(deviceType, opts.version);
    const raw = goGet(e, "selectors");
    const sels = (Array.isArray(raw) ? raw : [raw])
      .filter(isObject)
      .map((s) => goDecode(s, fields));
    const candidates = deviceType === "accelerator" ? visibleAccel : visibleNet;
    const rules = deviceType === "accelerator" ? ACCEL_RULES : NET_RULES;
    sels.forEach((sel, si) => {
      const where = Array.isArray(raw) ? `selectors[${si}]` : "selectors";
      const res = applySelector(sel, candidates, rules, where);
      r.notEvaluated.push(...res.notEvaluated);
      const exact = res.notEvaluated.length === 0;
      for (const d of res.matched) {
        const c = claimedBy.get(d.bdf);
        if (!c) {
          claimedBy.set(d.bdf, { index, full, exact });
          r.devices.push(selected(d));
        } else if (c.index !== index) {
          r.lost.push({ bdf: d.bdf, claimedBy: c.full, certain: c.exact && exact });
        }
      }
      if (res.why) r.why.push(res.why);
    });
    if (candidates.length === 0)
      r.why.push(
        `the plugin offers no ${deviceType === "accelerator" ? "accelerator (class 12)" : "network (class 02)"} device on this host${out.excluded.length ? " (see the devices it leaves out)" : ""}`,
      );
    // one line per earlier claimer (and certainty), not one per device
    const groups = new Map<string, { claimedBy: string; certain: boolean; bdfs: string[] }>();
    for (const l of r.lost) {
      const key = `${l.claimedBy} ${l.certain}`;
      const g = groups.get(key) ?? { claimedBy: l.claimedBy, certain: l.certain, bdfs: [] };
      groups.set(key, g);
      g.bdfs.push(l.bdf);
    }
    for (const g of groups.values()) {
      const msg = `${label} does not get ${g.bdfs.join(", ")}: the earlier resource ${g.claimedBy} claims ${g.bdfs.length === 1 ? "it" : "them"} (a device goes to the first resource that matches it; make the selectors disjoint)`;
      if (g.certain) out.errors.push(msg);
      else out.warnings.push(`${msg}, unless a not-evaluated field decides otherwise`);
    }
    if (r.devices.length === 0) {
      r.state = "empty";
      const msg = `${label} gets no device, so the plugin does not advertise it and pods requesting it stay Pending${r.why.length ? `: ${r.why.join("; ")}` : ""}`;
      if (r.lost.every((l) => l.certain)) out.errors.push(msg);
      else
        out.warnings.push(
          `${msg} (not certain: an earlier resource's not-evaluated fields decide)`,
        );
    }
    if (r.notEvaluated.length)
      out.warnings.push(
        `${label}: not evaluated from sysfs: ${r.notEvaluated.join(", ")}; its devices are the most it can get`,
      );
  });
  if (out.fatal.length) out.errors.push(...out.fatal.map((f) => `the plugin serves nothing: ${f}`));

  for (const d of [...visibleNet, ...visibleAccel]) {
    if (claimedBy.has(d.bdf)) continue;
    out.unclaimed.push(selected(d));
    if (isDpdkDriver(d.driver) && !out.fatal.length)
      out.warnings.push(`${d.bdf} is on ${d.driver} but no resource selects it: no pod can get it`);
  }
  return out;
}
