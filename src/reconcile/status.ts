// The status document: what eni-dpdk manages (from the state file, verified in sysfs) and how the
// host is set up for DPDK, with the last apply's outcome. `status` prints it; every apply writes it
// to /run/eni-dpdk/status.json. It needs neither IMDS nor EC2.
import { defaults, type Config } from "../config/model.js";
import { fullResourceName, isDpdkDriver } from "../config/facts.js";
import { errorMessage } from "../core/errors.js";
import { isoTime } from "../core/deadline.js";
import { type Host, type LockHolder } from "../host/host.js";
import {
  deviceNodeFor,
  driverlessHint,
  listNetdevs,
  listPciDevices,
  readPciDevice,
  type DeviceHolder,
} from "../host/pci.js";
import { readRoutes, routeReasons } from "../host/guard.js";
import { type BindingRecord, loadState, type State, STATUS_PATH } from "../host/state.js";
import {
  hugepageProblem,
  hugepageWants,
  hugetlbfsMounts,
  readHugepages,
  readKernelFacts,
  writeCombiningReport,
  type HugepageInfo,
  type HugepageProblem,
  type KernelFacts,
  type WcReport,
} from "../host/kernel.js";
import { inspectSriov, ownedIn } from "../host/sriov-file.js";
import { checkSriov, type SriovCheckReport } from "../host/sriov-check.js";
import {
  MAX_PODS_DROPIN,
  NODEADM_DROPIN_DIR,
  ourMaxPods,
  readDropins,
} from "../host/nodeadm-dropin.js";
import type { MaxPodsResult } from "./stage.js";

export interface StatusDevice {
  name: string;
  eniId: string;
  deviceIndex: number | null;
  networkCardIndex: number | null;
  mac: string;
  bdf: string;
  vendor: string;
  device: string;
  ifname: string;
  driver: string;
  originalDriver: string;
  deviceNode: string;
  resourceName: string;
  /** bound: on its DPDK driver with a device node; kernel: on a kernel driver by design;
   *  unbound: meant for DPDK but on a kernel driver; failed: the last apply failed it or it is broken;
   *  missing: not found on this host */
  state: "bound" | "kernel" | "unbound" | "failed" | "missing";
  detail: string;
  /** the processes that have the device open (a DPDK app): only `eni-dpdk status` looks */
  holders?: DeviceHolder[];
}

export interface OtherDevice {
  bdf: string;
  vendor: string;
  device: string;
  driver: string;
  ifname: string;
  mac: string;
  /** why a bind would be refused: routes */
  active: string[];
}

export interface StatusDoc {
  generatedAt: string;
  /** `eni-dpdk status` only: the pass that holds the host lock as the status is read */
  running?: LockHolder;
  host: {
    noiommu: KernelFacts["noiommu"];
    iommuPresent: boolean;
    vfioLoaded: boolean;
    dpdkDrivers: string[];
    hugepages: HugepageInfo[];
    /** hugetlbfs mount points (/proc/mounts) */
    hugetlbfs: string[];
    /** devices on a DPDK driver without usable hugepages */
    hugepageProblem?: HugepageProblem;
    writeCombining: WcReport;
    sriov: {
      configPath: string;
      exists?: boolean;
      valid?: boolean;
      warnings: string[];
      /** what the device plugin will advertise from the file on this host (when the file exists) */
      check?: SriovCheckReport;
    };
    /** kubelet's maxPods: eni-dpdk's nodeadm drop-in, or why there is none */
    maxPods: {
      path: string;
      /** ours: eni-dpdk's drop-in is there; foreign: another file at that path; none; no-dir: nodeadm reads no drop-ins */
      dropIn: "ours" | "foreign" | "none" | "no-dir";
      /** the value eni-dpdk's drop-in sets */
      maxPods?: number;
      /** what nodeadm computes alone (from the last apply) */
      nodeadmMaxPods?: number;
      /** the computation in the drop-in, or the last apply's reason for none */
      detail: string;
    };
  };
  devices: StatusDevice[];
  otherDevices: OtherDevice[];
  /** from /run/eni-dpdk/status.json when an apply wrote one */
  lastApply?: {
    startedAt?: string;
    ok?: boolean;
    summary?: string;
    unchangedSince?: string;
    warnings?: string[];
  };
  configProblems: string[];
}

/** The status document: state file + sysfs (+ config, + the last apply's status file). No IMDS. */
export async function collectStatus(
  host: Host,
  opts: {
    config?: Config;
    state?: State;
    configProblems?: string[];
    /** the apply that writes this document (otherwise the one in the status file) */
    last?: LastApplyFile;
    /** that apply's SR-IOV check of the file, made after its write (otherwise made here) */
    sriovCheck?: SriovCheckReport;
    /** that apply's hugepage check, after its binds; null: none found (otherwise made here) */
    hugepageProblem?: HugepageProblem | null;
  } = {},
): Promise<StatusDoc> {
  const config = opts.config ?? defaults();
  const state = opts.state ?? (await loadState(host));
  const last = opts.last ?? (await readLastApply(host));
  const routes = await readRoutes(host);
  const netdevs = await listNetdevs(host);
  const devices: StatusDevice[] = [];
  const seenMacs = new Set<string>();
  const rows: { name: string; mac: string }[] = [];
  for (const e of Object.values(state.enis)) rows.push({ name: e.name, mac: e.mac.toLowerCase() });
  for (const b of Object.values(state.bindings))
    if (!rows.some((r) => r.mac === b.mac)) rows.push({ name: b.eniName, mac: b.mac });
  for (const e of config.eni)
    if (!rows.some((r) => r.name === e.name)) rows.push({ name: e.name, mac: "" });

  for (const row of rows) {
    const eni =
      Object.values(state.enis).find((e) => e.mac.toLowerCase() === row.mac && row.mac) ??
      state.enis[row.name];
    const cfg = config.eni.find((e) => e.name === row.name);
    const rec: BindingRecord | undefined = row.mac ? state.bindings[row.mac] : undefined;
    const nd = row.mac ? netdevs.find((n) => n.mac === row.mac && n.bdf) : undefined;
    const bdf = nd?.bdf ?? rec?.bdf ?? "";
    const pci = bdf ? await readPciDevice(host, bdf) : undefined;
    const driver = pci?.driver ?? "";
    const node = pci ? ((await deviceNodeFor(host, bdf, driver)) ?? "") : "";
    const lastDev = last?.devices?.find((d) => d.mac === row.mac || d.name === row.name);
    const wantDpdk = cfg ? cfg.dpdk.enabled : !!rec;
    let st: StatusDevice["state"];
    let detail = "";
    if (!pci || (!nd && rec && !isDpdkDriver(driver))) {
      st = "missing";
      detail = !row.mac
        ? "no ENI recorded yet (run apply)"
        : pci && !driver
          ? `no NIC with MAC ${row.mac}: ${bdf}, where it was bound, is on no driver; ${driverlessHint(bdf)}`
          : `no NIC with MAC ${row.mac} on this host`;
    } else if (isDpdkDriver(driver)) {
      st = node ? "bound" : "failed";
      if (!node) detail = `on ${driver} but no device node`;
    } else if (wantDpdk) {
      st = lastDev?.state === "failed" ? "failed" : "unbound";
      detail =
        lastDev?.error ??
        (rec
          ? "recorded as bound but on a kernel driver (reboot without eni-dpdk-early?)"
          : "not bound yet");
    } else {
      st = "kernel";
    }
    if (row.mac) seenMacs.add(row.mac);
    devices.push({
      name: row.name,
      eniId: eni?.eniId ?? rec?.eniId ?? "",
      deviceIndex: eni?.deviceIndex ?? cfg?.device_index ?? null,
      networkCardIndex: eni?.networkCardIndex ?? cfg?.network_card_index ?? null,
      mac: row.mac,
      bdf,
      vendor: pci?.vendor ?? rec?.vendor ?? "",
      device: pci?.device ?? rec?.device ?? "",
      ifname: nd?.ifname ?? "",
      driver,
      originalDriver: rec?.originalDriver ?? (driver && !isDpdkDriver(driver) ? driver : ""),
      deviceNode: node,
      resourceName:
        cfg?.dpdk.enabled && cfg.dpdk.resource_name
          ? fullResourceName(cfg.dpdk.resource_name, config.sriov.resource_prefix)
          : (lastDev?.resourceName ?? ""),
      state: st,
      detail,
    });
  }

  const managedBdfs = new Set(devices.map((d) => d.bdf).filter(Boolean));
  const otherDevices: OtherDevice[] = [];
  for (const bdf of await listPciDevices(host)) {
    if (managedBdfs.has(bdf)) continue;
    const cls = (await host.attr(`/sys/bus/pci/devices/${bdf}/class`)) ?? "";
    if (!cls.startsWith("0x02")) continue;
    const pci = (await readPciDevice(host, bdf))!;
    const nd = netdevs.find((n) => n.bdf === bdf);
    otherDevices.push({
      bdf,
      vendor: pci.vendor,
      device: pci.device,
      driver: pci.driver ?? "",
      ifname: nd?.ifname ?? "",
      mac: nd?.mac ?? "",
      active: nd ? routeReasons(routes, nd.ifname) : [],
    });
  }

  const k = await readKernelFacts(host);
  const all = [...devices, ...otherDevices];
  const onVfio = all.filter((d) => d.driver === "vfio-pci");
  // the apply's own check, so that its Status line and this document say the same
  const hugepageIssue =
    opts.hugepageProblem !== undefined
      ? (opts.hugepageProblem ?? undefined)
      : await hugepageProblem(host, {
          dpdkDevices: new Set(all.filter((d) => isDpdkDriver(d.driver)).map((d) => d.bdf)).size,
        });
  const sriovPath = state.sriov.configPath ?? config.sriov.config_path;
  let sriov: StatusDoc["host"]["sriov"] = { configPath: sriovPath, warnings: [] };
  try {
    const r = await inspectSriov(host, sriovPath, config.sriov.resource_prefix);
    sriov = { configPath: sriovPath, exists: r.exists, valid: r.valid, warnings: r.warnings };
    if (r.exists)
      sriov.check =
        opts.sriovCheck?.path === sriovPath
          ? opts.sriovCheck
          : await checkSriov(host, sriovPath, { owned: ownedIn(state, sriovPath) });
  } catch (e) {
    sriov.warnings.push(`could not inspect: ${errorMessage(e)}`);
  }
  return {
    generatedAt: isoTime(),
    host: {
      noiommu: k.noiommu,
      iommuPresent: k.iommuPresent,
      vfioLoaded: k.vfioLoaded,
      dpdkDrivers: k.dpdkDrivers,
      hugepages: await readHugepages(host, hugepageWants(config.dpdk)),
      hugetlbfs: await hugetlbfsMounts(host),
      ...(hugepageIssue ? { hugepageProblem: hugepageIssue } : {}),
      writeCombining: await writeCombiningReport(host, onVfio),
      sriov,
      maxPods: await maxPodsStatus(host, last?.apply?.maxPods),
    },
    devices,
    otherDevices,
    ...(last
      ? {
          lastApply: {
            startedAt: last.apply?.startedAt,
            ok: last.apply?.ok,
            summary: last.apply?.summary,
            ...(last.apply?.unchangedSince ? { unchangedSince: last.apply.unchangedSince } : {}),
            // a status file of another version may hold anything there
            ...(Array.isArray(last.apply?.warnings) && last.apply.warnings.length
              ? { warnings: last.apply.warnings.filter((w) => typeof w === "string") }
              : {}),
          },
        }
      : {}),
    configProblems: opts.configProblems ?? [],
  };
}

async function maxPodsStatus(
  host: Host,
  last: Partial<MaxPodsResult> | undefined,
): Promise<StatusDoc["host"]["maxPods"]> {
  const d = await readDropins(host);
  const base = {
    path: MAX_PODS_DROPIN,
    ...(last?.nodeadmMaxPods !== undefined ? { nodeadmMaxPods: last.nodeadmMaxPods } : {}),
  };
  if (d.ours === "ours") {
    // the drop-in says why, in its comment lines
    const why = (d.ourText ?? "")
      .split("\n")
      .slice(1)
      .filter((l) => l.startsWith("# ") && !l.startsWith("# Opt out"))
      .map((l) => l.slice(2))
      .join(" ");
    const n = ourMaxPods(d.ourText);
    return { ...base, dropIn: "ours", ...(n !== undefined ? { maxPods: n } : {}), detail: why };
  }
  if (d.ours === "foreign")
    return {
      ...base,
      dropIn: "foreign",
      detail: last?.reason ?? "the file there is not eni-dpdk's",
    };
  return {
    ...base,
    dropIn: d.dir ? "none" : "no-dir",
    detail:
      last?.reason ?? (d.dir ? "no apply recorded yet" : `${NODEADM_DROPIN_DIR} does not exist`),
  };
}

export interface LastApplyFile {
  devices?: {
    mac?: string;
    name?: string;
    state?: string;
    error?: string;
    resourceName?: string;
  }[];
  apply?: {
    startedAt?: string;
    ok?: boolean;
    summary?: string;
    /** set by an apply that found every input unchanged (commands/unchanged.ts) */
    unchangedSince?: string;
    devices?: LastApplyFile["devices"];
    maxPods?: Partial<MaxPodsResult>;
    warnings?: string[];
  };
}

async function readLastApply(host: Host): Promise<LastApplyFile | undefined> {
  const raw = await host.read(STATUS_PATH);
  if (!raw) return undefined;
  try {
    const doc = JSON.parse(raw) as LastApplyFile;
    // apply writes its own outcome under `apply`; the device results there are the apply's view
    return { ...doc, devices: doc.apply?.devices ?? [] };
  } catch {
    return undefined;
  }
}
