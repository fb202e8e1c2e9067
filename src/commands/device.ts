// The status document (what is bound, how the host is set up) and the stand-alone device commands:
// status, bind, unbind, reset, early. None of them needs IMDS or EC2; the commands that change the
// host take the host lock once, at the top.
import { buildConfig, defaults, type Config } from "../config/model.js";
import { DPDK_DRIVERS, type DpdkDriver, fullResourceName, isDpdkDriver, MAC_RE } from "../config/facts.js";
import { errorMessage, InputError, OpError } from "../core/errors.js";
import path from "node:path";
import { type Host } from "../host/host.js";
import { Deadline } from "../core/deadline.js";
import { ensureNetworkdFile, markNodeadmUnmanaged, removeOwnedNetworkFiles } from "../host/networkd.js";
import type { CommandContext } from "../reconcile/stage.js";
import { bindDevice, deviceNodeFor, listNetdevs, listPciDevices, readPciDevice, restoreDriver, type PciDevice } from "../host/pci.js";
import { guardFacts, guardViolations, readRoutes, routeReasons } from "../host/guard.js";
import { prepareHost, rebindFromState } from "../reconcile/host.js";
import { type BindingRecord, loadState, saveState, type State, STATUS_PATH } from "../core/state.js";
import { readHugepages, readKernelFacts, setupKernel, writeCombiningReport, type HugepageInfo, type KernelFacts, type WcReport } from "../host/kernel.js";

const BDF_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

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
  host: {
    noiommu: KernelFacts["noiommu"];
    iommuPresent: boolean;
    vfioLoaded: boolean;
    dpdkDrivers: string[];
    hugepages: HugepageInfo[];
    writeCombining: WcReport;
    sriov: { configPath: string; exists?: boolean; valid?: boolean; warnings: string[] };
  };
  devices: StatusDevice[];
  otherDevices: OtherDevice[];
  /** from /run/eni-dpdk/status.json when an apply wrote one */
  lastApply?: { startedAt?: string; ok?: boolean; summary?: string };
  configProblems: string[];
}

/** Load the file config (+ env) without IMDS. Lenient: problems are returned, defaults used. */
export async function loadLocalConfig(ctx: Pick<CommandContext, "host" | "configPath">, strict = false): Promise<{ config: Config; problems: string[] }> {
  try {
    const { fileLayers } = await import("../sources/file.js"); const { envLayers } = await import("../sources/env.js");
    return { config: buildConfig([...(await fileLayers(ctx.host, ctx.configPath)), ...envLayers(process.env)]).config, problems: [] };
  } catch (e) {
    if (strict || !(e instanceof InputError)) throw e;
    return { config: defaults(), problems: e.message.split("\n") };
  }
}

/** The status document: state file + sysfs (+ config, + the last apply's status file). No IMDS. */
export async function collectStatus(host: Host, opts: { config?: Config; state?: State; configProblems?: string[] } = {}): Promise<StatusDoc> {
  const config = opts.config ?? defaults();
  const state = opts.state ?? (await loadState(host));
  const last = await readLastApply(host);
  const routes = await readRoutes(host);
  const netdevs = await listNetdevs(host);
  const devices: StatusDevice[] = [];
  const seenMacs = new Set<string>();
  const rows: { name: string; mac: string }[] = [];
  for (const e of Object.values(state.enis)) rows.push({ name: e.name, mac: e.mac.toLowerCase() });
  for (const b of Object.values(state.bindings)) if (!rows.some((r) => r.mac === b.mac)) rows.push({ name: b.eniName, mac: b.mac });
  for (const e of config.eni) if (!rows.some((r) => r.name === e.name)) rows.push({ name: e.name, mac: "" });

  for (const row of rows) {
    const eni = Object.values(state.enis).find((e) => e.mac.toLowerCase() === row.mac && row.mac) ?? state.enis[row.name];
    const cfg = config.eni.find((e) => e.name === row.name);
    const rec: BindingRecord | undefined = row.mac ? state.bindings[row.mac] : undefined;
    const nd = row.mac ? netdevs.find((n) => n.mac === row.mac && n.bdf) : undefined;
    const bdf = nd?.bdf ?? rec?.bdf ?? "";
    const pci = bdf ? await readPciDevice(host, bdf) : undefined;
    const driver = pci?.driver ?? "";
    const node = pci ? (await deviceNodeFor(host, bdf, driver)) ?? "" : "";
    const lastDev = last?.devices?.find((d) => d.mac === row.mac || d.name === row.name);
    const wantDpdk = cfg ? cfg.dpdk.enabled : !!rec;
    let st: StatusDevice["state"];
    let detail = "";
    if (!pci || (!nd && rec && !isDpdkDriver(driver))) {
      st = "missing";
      detail = !row.mac ? "no ENI recorded yet (run apply)" : `no NIC with MAC ${row.mac} on this host`;
    } else if (isDpdkDriver(driver)) {
      st = node ? "bound" : "failed";
      if (!node) detail = `on ${driver} but no device node`;
    } else if (wantDpdk) {
      st = lastDev?.state === "failed" ? "failed" : "unbound";
      detail = lastDev?.error ?? (rec ? "recorded as bound but on a kernel driver (reboot without eni-dpdk-early?)" : "not bound yet");
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
      resourceName: cfg?.dpdk.enabled && cfg.dpdk.resource_name ? fullResourceName(cfg.dpdk.resource_name, config.sriov.resource_prefix) : lastDev?.resourceName ?? "",
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
    otherDevices.push({ bdf, vendor: pci.vendor, device: pci.device, driver: pci.driver ?? "", ifname: nd?.ifname ?? "", mac: nd?.mac ?? "", active: nd ? routeReasons(routes, nd.ifname) : [] });
  }

  const k = await readKernelFacts(host);
  const vfioBdfs = [...devices, ...otherDevices].filter((d) => d.driver === "vfio-pci").map((d) => d.bdf);
  const sriovPath = state.sriov.configPath ?? config.sriov.config_path;
  let sriov: StatusDoc["host"]["sriov"] = { configPath: sriovPath, warnings: [] };
  try {
    const { inspectSriov } = await import("../host/sriov-file.js");
    const r = await inspectSriov(host, sriovPath, config.sriov.resource_prefix);
    sriov = { configPath: sriovPath, exists: r.exists, valid: r.valid, warnings: r.warnings };
  } catch (e) {
    sriov.warnings.push(`could not inspect: ${errorMessage(e)}`);
  }
  return {
    generatedAt: new Date().toISOString(),
    host: {
      noiommu: k.noiommu,
      iommuPresent: k.iommuPresent,
      vfioLoaded: k.vfioLoaded,
      dpdkDrivers: k.dpdkDrivers,
      hugepages: await readHugepages(host),
      writeCombining: await writeCombiningReport(host, vfioBdfs),
      sriov,
    },
    devices,
    otherDevices,
    ...(last ? { lastApply: { startedAt: last.apply?.startedAt, ok: last.apply?.ok, summary: last.apply?.summary } } : {}),
    configProblems: opts.configProblems ?? [],
  };
}

interface LastApplyFile {
  devices?: { mac?: string; name?: string; state?: string; error?: string; resourceName?: string }[];
  apply?: { startedAt?: string; ok?: boolean; summary?: string; devices?: LastApplyFile["devices"] };
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



/** Text like `dpdk-devbind.py --status`: managed devices, other NICs, host readiness. */
export function renderStatus(doc: StatusDoc): string {
  const out: string[] = [];
  const section = (t: string) => out.push("", t, "=".repeat(t.length));
  section("ENIs managed by eni-dpdk");
  if (doc.devices.length === 0) out.push("<none>");
  else {
    const head = ["NAME", "ENI", "IDX", "MAC", "BDF", "VEN:DEV", "DRIVER", "ORIGINAL", "DEVICE NODE", "RESOURCE", "STATE"];
    const rows = doc.devices.map((d) => [
      d.name,
      d.eniId || "-",
      d.deviceIndex === null ? "-" : `${d.networkCardIndex ?? 0}/${d.deviceIndex}`,
      d.mac || "-",
      d.bdf || "-",
      d.vendor ? `${d.vendor}:${d.device}` : "-",
      d.driver || "-",
      d.originalDriver || "-",
      d.deviceNode || (d.ifname ? `if=${d.ifname}` : "-"),
      d.resourceName || "-",
      d.state,
    ]);
    out.push(...table([head, ...rows]));
    for (const d of doc.devices.filter((d) => d.detail)) out.push(`  ${d.name}: ${d.detail}`);
  }
  section("Other network devices");
  if (doc.otherDevices.length === 0) out.push("<none>");
  for (const d of doc.otherDevices) {
    out.push(`${d.bdf} '${d.vendor}:${d.device}'${d.ifname ? ` if=${d.ifname}` : ""} drv=${d.driver || "none"}${d.mac ? ` mac=${d.mac}` : ""}${d.active.length ? ` *Active* (${d.active.join(", ")})` : ""}`);
  }
  section("Host");
  const h = doc.host;
  const hp = h.hugepages.map((p) => `${p.sizeKb >= 1048576 ? `${p.sizeKb / 1048576}G` : `${p.sizeKb / 1024}M`}: ${p.total} total, ${p.free} free`).join("; ") || "not supported";
  const noiommu = { Y: "enabled", N: "disabled", absent: "not supported by this kernel (CONFIG_VFIO_NOIOMMU unset)", "not-loaded": "vfio not loaded" }[h.noiommu];
  out.push(
    ...table([
      ["NOIOMMU:", noiommu],
      ["IOMMU present:", h.iommuPresent ? "yes" : "no"],
      ["DPDK drivers:", h.dpdkDrivers.join(", ") || "none loaded"],
      ["Hugepages:", hp],
      ["Write-combining:", `${h.writeCombining.state}: ${h.writeCombining.detail}`],
      ["SR-IOV config:", `${h.sriov.configPath} (${h.sriov.exists === undefined ? "unknown" : h.sriov.exists ? (h.sriov.valid ? "valid" : "INVALID") : "absent"})`],
    ]),
  );
  if (h.writeCombining.fix) out.push(`  fix: ${h.writeCombining.fix}`);
  for (const w of h.sriov.warnings) out.push(`  sriov: ${w}`);
  if (doc.lastApply) out.push("", `Last apply: ${doc.lastApply.startedAt ?? "?"} ${doc.lastApply.summary ?? ""}`.trimEnd());
  for (const p of doc.configProblems) out.push(`config: ${p}`);
  return out.slice(1).join("\n") + "\n";
}

function table(rows: string[][]): string[] {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join("  "));
}

// ---- commands ------------------------------------------------------------------------------------

export async function statusCommand(ctx: CommandContext, opts: { json: boolean }): Promise<number> {
  const { config, problems } = await loadLocalConfig(ctx);
  const doc = await collectStatus(ctx.host, { config, configProblems: problems });
  ctx.out(opts.json ? JSON.stringify(doc, null, 2) + "\n" : renderStatus(doc));
  return 0;
}

interface Resolved {
  bdf: string;
  pci: PciDevice;
  mac?: string;
  ifname?: string;
  record?: BindingRecord;
  eniName?: string;
  eniId?: string;
}

/** bdf | ifname | eni-id | MAC | ENI name → the device, using sysfs and the state file. */
async function resolveTarget(host: Host, state: State, target: string): Promise<Resolved> {
  const t = target.trim().toLowerCase();
  const netdevs = await listNetdevs(host);
  const byMac = async (mac: string): Promise<Resolved | undefined> => {
    const nd = netdevs.find((n) => n.mac === mac && n.bdf);
    const record = state.bindings[mac];
    const bdf = nd?.bdf ?? record?.bdf;
    const pci = bdf ? await readPciDevice(host, bdf) : undefined;
    if (!bdf || !pci) return undefined;
    const eni = Object.values(state.enis).find((e) => e.mac.toLowerCase() === mac);
    return { bdf, pci, mac, ifname: nd?.ifname, record, eniName: eni?.name ?? record?.eniName, eniId: eni?.eniId ?? record?.eniId };
  };
  let r: Resolved | undefined;
  if (BDF_RE.test(t)) {
    const pci = await readPciDevice(host, t);
    if (pci) {
      const nd = netdevs.find((n) => n.bdf === t);
      const record = Object.values(state.bindings).find((b) => b.bdf === t);
      const mac = nd?.mac ?? record?.mac;
      r = (mac && (await byMac(mac))) || { bdf: t, pci, mac, ifname: nd?.ifname, record };
    }
  } else if (MAC_RE.test(t)) {
    r = await byMac(t);
  } else if (/^eni-[0-9a-f]+$/.test(t)) {
    const eni = Object.values(state.enis).find((e) => e.eniId === t) ?? Object.values(state.bindings).find((b) => b.eniId === t);
    if (eni) r = await byMac(eni.mac.toLowerCase());
  } else {
    const nd = netdevs.find((n) => n.ifname === target.trim() && n.bdf);
    if (nd) r = await byMac(nd.mac);
    else if (state.enis[t]) r = await byMac(state.enis[t].mac.toLowerCase());
    else {
      const b = Object.values(state.bindings).find((x) => x.eniName === t || x.ifname === target.trim());
      if (b) r = await byMac(b.mac);
    }
  }
  if (!r) {
    throw new InputError(
      [{ source: "command line", key: "target", message: `"${target}" matches no PCI device, interface, ENI id, MAC or ENI name on this host; expected e.g. 0000:00:06.0, eth1, eni-0123456789abcdef0 or 02:00:00:00:00:02` }],
      "run `eni-dpdk status` to list the devices",
    );
  }
  return r;
}

/**
 * The guard's facts offline: the primary as the last apply recorded it, else IMDS meta-data/mac
 * (briefly). Without either, no NIC is bound: the primary is never guessed.
 */
async function offlineGuard(host: Host, state: State, log: CommandContext["log"]) {
  let primary = state.primary;
  if (!primary) {
    const { ImdsClient } = await import("../cloud/imds.js");
    const mac = await new ImdsClient({ deadline: new Deadline(2000), timeoutMs: 1000 }).get("meta-data/mac").catch(() => undefined);
    if (!mac?.trim()) {
      throw new OpError(
        "cannot tell which NIC is the primary ENI: the state file has no record of it and IMDS did not answer meta-data/mac",
        "nothing was changed; run `eni-dpdk apply` once (it records the primary), then bind again",
      );
    }
    log.debug("primary ENI from IMDS", { mac: mac.trim() });
    primary = { mac: mac.trim().toLowerCase(), deviceZeroMacs: [] };
  }
  const owned = [...Object.values(state.enis).map((e) => e.mac), ...Object.keys(state.bindings)];
  return guardFacts({ primary, routes: await readRoutes(host), ownedMacs: owned });
}

export async function bindCommand(ctx: CommandContext, opts: { target: string; driver?: string; force: boolean }): Promise<number> {
  const { config } = await loadLocalConfig(ctx, true);
  if (opts.driver !== undefined && !(DPDK_DRIVERS as readonly string[]).includes(opts.driver)) {
    throw new InputError([{ source: "command line", key: "--driver", message: `expected one of ${DPDK_DRIVERS.join(", ")}, got "${opts.driver}"` }]);
  }
  return ctx.host.withLock(async () => {
    const { host, log } = ctx;
    const state = await prepareHost(host, log, { tempDirs: [path.posix.dirname(config.sriov.config_path)] });
    const r = await resolveTarget(host, state, opts.target);
    const cfgEni = r.eniName ? config.eni.find((e) => e.name === r.eniName) : undefined;
    const driver = (opts.driver ?? cfgEni?.dpdk.driver ?? config.dpdk.driver) as DpdkDriver;
    if (r.pci.driver === driver) {
      ctx.out(`${r.bdf} is already bound to ${driver} (${(await deviceNodeFor(host, r.bdf, driver)) ?? "no device node"}); nothing to do\n`);
      return 0;
    }
    const guard = await offlineGuard(host, state, log);
    // The guard again here, before the kernel setup and the networkd file: a refusal changes nothing.
    const verdict = guardViolations(guard, { mac: r.mac, bdf: r.bdf, ifname: r.ifname });
    if (verdict.never.length) {
      throw new OpError(`refusing to bind ${r.bdf}${r.ifname ? ` (${r.ifname})` : ""}: ${verdict.never.join("; ")}; eni-dpdk never binds the primary ENI, not even with --force`, "nothing was changed", { bdf: r.bdf });
    }
    if (verdict.unlessForced.length && !opts.force) {
      throw new OpError(`refusing to bind ${r.bdf}${r.ifname ? ` (${r.ifname})` : ""}: ${verdict.unlessForced.join("; ")}`, "nothing was changed; `--force` overrides the route and ownership guards (never the primary) if you are sure this NIC carries nothing the node needs", { bdf: r.bdf });
    }
    await setupKernel(host, { drivers: [driver], noiommu: config.dpdk.noiommu, log });
    if (r.mac && r.eniName) {
      await ensureNetworkdFile(host, state, r.eniName, r.mac);
      if (r.ifname) await markNodeadmUnmanaged(host, state, state.instanceId, r.ifname, r.mac, log);
    }
    const b = await bindDevice(host, r.bdf, driver, {
      log,
      script: config.dpdk.binding_script || undefined,
      mac: r.mac,
      guard,
      force: opts.force,
      eni: { name: r.eniName ?? "", ...(r.eniId ? { id: r.eniId } : {}) },
    });
    if (r.mac) {
      state.bindings[r.mac] = {
        mac: r.mac,
        bdf: r.bdf,
        vendor: r.pci.vendor,
        device: r.pci.device,
        originalDriver: b.originalDriver ?? r.record?.originalDriver ?? "",
        driver,
        eniName: r.eniName ?? "",
        ...(r.eniId ? { eniId: r.eniId } : {}),
        boundAt: new Date().toISOString(),
        ...(r.ifname ? { ifname: r.ifname } : {}),
      };
    } else {
      log.warn("bound a device without a MAC; it is not recorded, so reboots will not rebind it", { bdf: r.bdf });
    }
    await saveState(host, state);
    ctx.out(`bound ${r.bdf}${r.mac ? ` (${r.mac})` : ""} to ${driver}: ${b.deviceNode}\n`);
    return 0;
  });
}

export async function unbindCommand(ctx: CommandContext, opts: { target: string }): Promise<number> {
  return ctx.host.withLock(async () => {
    const { host, log } = ctx;
    const state = await prepareHost(host, log);
    const r = await resolveTarget(host, state, opts.target);
    if (!r.pci.driver || !isDpdkDriver(r.pci.driver)) {
      ctx.out(`${r.bdf} is on ${r.pci.driver ?? "no driver"}, not a DPDK driver; nothing to do\n`);
      return 0;
    }
    const rb = await restoreDriver(host, r.bdf, r.record?.originalDriver || undefined, { log, mac: r.mac });
    if (!rb.ok) {
      throw new OpError(`returning ${r.bdf} to ${r.record?.originalDriver || "its kernel driver"} failed: ${rb.problem}`, "see `dmesg`; `eni-dpdk status` shows where the device is now", { bdf: r.bdf });
    }
    if (r.mac) delete state.bindings[r.mac];
    await saveState(host, state);
    ctx.out(`returned ${r.bdf} to ${rb.driver}${rb.ifname ? ` (netdev ${rb.ifname})` : ""}\n`);
    return 0;
  });
}

/** Unbind every managed device, remove our networkd/nodeadm files and our SR-IOV entries; nothing else. */
export async function resetCommand(ctx: CommandContext, _opts: Record<string, never> | object = {}): Promise<number> {
  const { config } = await loadLocalConfig(ctx);
  return ctx.host.withLock(async () => {
    const { host, log } = ctx;
    const state = await prepareHost(host, log, { tempDirs: [path.posix.dirname(config.sriov.config_path)] });
    const failures: string[] = [];
    for (const rec of Object.values(state.bindings)) {
      const pci = await readPciDevice(host, rec.bdf);
      if (!pci || pci.vendor !== rec.vendor || pci.device !== rec.device) {
        log.warn("recorded device is gone or changed; forgetting it", { bdf: rec.bdf, mac: rec.mac });
        delete state.bindings[rec.mac];
        continue;
      }
      if (pci.driver && isDpdkDriver(pci.driver)) {
        const rb = await restoreDriver(host, rec.bdf, rec.originalDriver || undefined, { log, mac: rec.mac });
        if (!rb.ok) {
          failures.push(`${rec.bdf}: ${rb.problem}`);
          continue;
        }
        ctx.out(`returned ${rec.bdf} to ${rb.driver}${rb.ifname ? ` (netdev ${rb.ifname})` : ""}\n`);
      }
      delete state.bindings[rec.mac];
    }
    await saveState(host, state);
    for (const p of await removeOwnedNetworkFiles(host, state, log)) ctx.out(`removed ${p}\n`);
    await saveState(host, state);
    try {
      const { removeOwnedSriov } = await import("../host/sriov-file.js");
      if (await removeOwnedSriov(host, config, state, log)) ctx.out(`removed eni-dpdk's entries from ${state.sriov.configPath ?? config.sriov.config_path}\n`);
    } catch (e) {
      failures.push(`SR-IOV config: ${errorMessage(e)}`);
    }
    await saveState(host, state);
    if (failures.length) {
      throw new OpError(`reset incomplete: ${failures.join("; ")}`, "see `dmesg` and `eni-dpdk status`; rerun `eni-dpdk reset`", {});
    }
    ctx.out("reset done: eni-dpdk's bindings, networkd files and SR-IOV entries are gone; everything else is untouched\n");
    return 0;
  });
}

/** eni-dpdk-early.service: rebind recorded devices at boot, offline (no IMDS, no EC2). */
export async function earlyCommand(ctx: CommandContext, _opts: Record<string, never> | object = {}): Promise<number> {
  const { config, problems } = await loadLocalConfig(ctx);
  for (const p of problems) ctx.log.warn("config problem; early rebind uses the defaults for [dpdk]", { problem: p });
  return ctx.host.withLock(async () => {
    const state = await prepareHost(ctx.host, ctx.log, { tempDirs: [path.posix.dirname(config.sriov.config_path)] });
    if (Object.keys(state.bindings).length === 0) {
      ctx.log.info("no recorded bindings; nothing to rebind");
      return 0;
    }
    const results = await rebindFromState(ctx.host, state, config.dpdk, ctx.log);
    for (const r of results) ctx.out(`${r.state.padEnd(7)} ${r.bdf} ${r.mac} ${r.eniName}: ${r.detail}\n`);
    return results.some((r) => r.state === "failed") ? 1 : 0;
  });
}


