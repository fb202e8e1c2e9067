// PCI devices by MAC, the safety guards, and binding with rollback. Everything follows the kernel's
// sysfs semantics (domain.md "PCI binding"): driver_override, unbind, drivers_probe, then verify by
// reading sysfs. Never new_id: every ENA shares one vendor:device pair, the primary included.
import { OpError } from "../core/errors.js";
import { type Host } from "./host.js";
import { sleep } from "../core/deadline.js";
import { run } from "../core/process.js";
import type { Logger } from "../core/log.js";
import { journalBegin, journalEnd, journalPending, JOURNAL_PATH, saveState, type InflightOp, type State } from "../core/state.js";

export const PCI_DEVICES = "/sys/bus/pci/devices";
export const DRIVERS_PROBE = "/sys/bus/pci/drivers_probe";
export const ENA_VENDOR = "1d0f";
/** The device ids the DPDK ENA PMD accepts (the kernel ena driver claims more). */
export const ENA_DPDK_DEVICE_IDS = ["ec20", "ec21"];
export const IMDS_IPV4 = "169.254.169.254";
export const IMDS_IPV6 = "fd00:ec2::254";
const BDF_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
export const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

// ---- discovery -----------------------------------------------------------------------------------

export interface Netdev {
  ifname: string;
  mac: string;
  /** PCI address from the `device` link; undefined for virtual interfaces */
  bdf?: string;
}

export async function listNetdevs(host: Host): Promise<Netdev[]> {
  const out: Netdev[] = [];
  for (const ifname of await host.list("/sys/class/net")) {
    const mac = (await host.attr(`/sys/class/net/${ifname}/address`))?.toLowerCase();
    if (!mac) continue;
    const link = await host.linkName(`/sys/class/net/${ifname}/device`);
    out.push({ ifname, mac, bdf: link && BDF_RE.test(link) ? link : undefined });
  }
  return out;
}

/** The PCI netdev carrying this MAC (MAC → netdev → `device` link → BDF). */
export async function netdevByMac(host: Host, mac: string): Promise<Netdev | undefined> {
  const m = mac.toLowerCase();
  return (await listNetdevs(host)).find((n) => n.mac === m && n.bdf);
}

export interface PciDevice {
  bdf: string;
  /** lower-case hex without 0x */
  vendor: string;
  device: string;
  driver?: string;
  /** driver_override, undefined when unset ("(null)") */
  override?: string;
  /** netdev names under the device */
  netdevs: string[];
  iommuGroup?: string;
}

export async function readPciDevice(host: Host, bdf: string): Promise<PciDevice | undefined> {
  const dir = `${PCI_DEVICES}/${bdf}`;
  if (!BDF_RE.test(bdf) || !(await host.exists(dir))) return undefined;
  const hex = async (f: string) => ((await host.attr(`${dir}/${f}`)) ?? "").replace(/^0x/, "").toLowerCase();
  const ov = await host.attr(`${dir}/driver_override`);
  return {
    bdf,
    vendor: await hex("vendor"),
    device: await hex("device"),
    driver: await host.linkName(`${dir}/driver`),
    override: ov && ov !== "(null)" ? ov : undefined,
    netdevs: await host.list(`${dir}/net`),
    iommuGroup: await host.linkName(`${dir}/iommu_group`),
  };
}

export async function listPciDevices(host: Host): Promise<string[]> {
  return (await host.list(PCI_DEVICES)).filter((b) => BDF_RE.test(b));
}

/** The user-space device node a DPDK driver exposes, if present: /dev/vfio/noiommu-N, /dev/vfio/N or /dev/uioN. */
export async function deviceNodeFor(host: Host, bdf: string, driver: string | undefined): Promise<string | undefined> {
  const dir = `${PCI_DEVICES}/${bdf}`;
  if (driver === "vfio-pci") {
    const g = await host.linkName(`${dir}/iommu_group`);
    if (!g) return undefined;
    const noiommu = (await host.attr(`/sys/kernel/iommu_groups/${g}/name`)) === "vfio-noiommu";
    const node = noiommu ? `/dev/vfio/noiommu-${g}` : `/dev/vfio/${g}`;
    return (await host.exists(node)) ? node : undefined;
  }
  if (driver === "uio_pci_generic" || driver === "igb_uio") {
    const u = (await host.list(`${dir}/uio`))[0];
    return u && (await host.exists(`/dev/${u}`)) ? `/dev/${u}` : undefined;
  }
  return undefined;
}

// ---- guards --------------------------------------------------------------------------------------

export interface RouteFacts {
  defaultV4: Set<string>;
  defaultV6: Set<string>;
  /** interfaces with a main-table route covering IMDS (169.254.169.254 or fd00:ec2::254), default routes included */
  imds: Set<string>;
}

/** Main-table routes from /proc/net/route and /proc/net/ipv6_route (what dpdk-devbind looks at too). */
export async function readRoutes(host: Host): Promise<RouteFacts> {
  const facts: RouteFacts = { defaultV4: new Set(), defaultV6: new Set(), imds: new Set() };
  const v4 = (await host.read("/proc/net/route")) ?? "";
  const imds4 = leU32(IMDS_IPV4);
  for (const line of v4.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, , flags, , , , mask] = f as [string, string, string, string, string, string, string, string];
    const fl = parseInt(flags, 16);
    if (!(fl & 0x1) || fl & 0x200) continue; // not RTF_UP, or RTF_REJECT
    const d = parseInt(dest, 16) >>> 0;
    const m = parseInt(mask, 16) >>> 0;
    if (d === 0 && m === 0) facts.defaultV4.add(iface);
    if (((imds4 & m) >>> 0) === ((d & m) >>> 0)) facts.imds.add(iface);
  }
  const v6 = (await host.read("/proc/net/ipv6_route")) ?? "";
  const imds6 = expandV6(IMDS_IPV6);
  for (const line of v6.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest, plenHex, , , , , , , flags, iface] = f as string[];
    const fl = parseInt(flags!, 16);
    if (iface === "lo" || fl & 0x200) continue;
    const plen = parseInt(plenHex!, 16);
    if (plen === 0) facts.defaultV6.add(iface!);
    if (prefixMatch(imds6, dest!, plen)) facts.imds.add(iface!);
  }
  return facts;
}

function leU32(ip: string): number {
  const o = ip.split(".").map(Number);
  return (o[0]! | (o[1]! << 8) | (o[2]! << 16) | (o[3]! << 24)) >>> 0;
}

function expandV6(addr: string): string {
  const [head, tail] = addr.includes("::") ? addr.split("::") : [addr, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = tail !== undefined ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t].map((g) => g.padStart(4, "0")).join("");
}

function prefixMatch(a: string, b: string, plen: number): boolean {
  const bits = (hex: string) => [...hex].map((c) => parseInt(c, 16).toString(2).padStart(4, "0")).join("");
  return bits(a).slice(0, plen) === bits(b.toLowerCase()).slice(0, plen);
}

/**
 * The one guard every bind path applies (apply, run, early, bind, the binding script). Facts come
 * from IMDS when online and from the state file's primary record offline, so both refuse the same NICs.
 */
export interface GuardFacts {
  /** the primary ENI: IMDS meta-data/mac, the state's record of it, and every device-number-0 MAC */
  primaryMacs: Set<string>;
  /** the primary's PCI address, as recorded at the last apply */
  primaryBdfs: Set<string>;
  routes: RouteFacts;
  /** MACs of ENIs eni-dpdk manages (config, state) */
  ownedMacs: Set<string>;
}

export function guardFacts(a: {
  primaryMac?: string;
  deviceZeroMacs?: Iterable<string>;
  primary?: { mac: string; bdf?: string; deviceZeroMacs: string[] };
  routes: RouteFacts;
  ownedMacs: Iterable<string>;
}): GuardFacts {
  const primaryMacs = new Set<string>();
  const add = (m?: string) => m && primaryMacs.add(m.toLowerCase());
  add(a.primaryMac);
  for (const m of a.deviceZeroMacs ?? []) add(m);
  add(a.primary?.mac);
  for (const m of a.primary?.deviceZeroMacs ?? []) add(m);
  const owned = new Set([...a.ownedMacs].map((m) => m.toLowerCase()));
  for (const m of primaryMacs) owned.delete(m);
  return { primaryMacs, primaryBdfs: new Set(a.primary?.bdf ? [a.primary.bdf] : []), routes: a.routes, ownedMacs: owned };
}

export interface GuardVerdict {
  /** never bound, whatever the flags: the primary */
  never: string[];
  /** refused unless --force: routes, and a NIC no managed ENI owns */
  unlessForced: string[];
}

/** Why this NIC must not be bound; both lists empty when it may be. */
export function guardViolations(g: GuardFacts, nic: { mac?: string; bdf?: string; ifname?: string }): GuardVerdict {
  const v: GuardVerdict = { never: [], unlessForced: [] };
  const mac = nic.mac?.toLowerCase();
  if (mac && g.primaryMacs.has(mac)) v.never.push(`${mac} is the primary ENI (IMDS meta-data/mac or device-number 0)`);
  if (nic.bdf && g.primaryBdfs.has(nic.bdf)) v.never.push(`${nic.bdf} is the primary ENI's device (recorded at the last apply)`);
  if (nic.ifname) {
    if (g.routes.defaultV4.has(nic.ifname)) v.unlessForced.push(`${nic.ifname} carries an IPv4 default route`);
    if (g.routes.defaultV6.has(nic.ifname)) v.unlessForced.push(`${nic.ifname} carries an IPv6 default route`);
    if (g.routes.imds.has(nic.ifname)) v.unlessForced.push(`${nic.ifname} carries the route to IMDS`);
  }
  if (!mac) v.unlessForced.push(`${nic.bdf ?? "the device"} has no netdev and no state record, so its ENI cannot be verified by MAC`);
  else if (!g.ownedMacs.has(mac)) v.unlessForced.push("no managed ENI owns it");
  return v;
}

// ---- binding -------------------------------------------------------------------------------------

export interface BindOptions {
  log: Logger;
  /** dpdk-devbind.py (or compatible) to run instead of the native sysfs steps */
  script?: string;
  /** the ENI's MAC: the device's netdev must carry it before the first write, and come back after a rollback */
  mac?: string;
  /** the one guard's facts; checked before the first write */
  guard: GuardFacts;
  /** override the route and ownership guards (never the primary) */
  force?: boolean;
  /** the ENI, recorded in the intent journal so a crash's recovery can finish the binding record */
  eni?: { name: string; id?: string };
}

export interface BindResult {
  changed: boolean;
  driver: string;
  originalDriver?: string;
  deviceNode?: string;
  /** the netdev the device had before binding */
  ifname?: string;
}

/** The netdevs under a PCI device and their MACs (sysfs `<dev>/net/<if>/address`). */
export async function deviceNetdevs(host: Host, bdf: string): Promise<{ ifname: string; mac: string }[]> {
  const dir = `${PCI_DEVICES}/${bdf}/net`;
  const out: { ifname: string; mac: string }[] = [];
  for (const ifname of await host.list(dir)) {
    const mac = (await host.attr(`${dir}/${ifname}/address`))?.toLowerCase();
    if (mac) out.push({ ifname, mac });
  }
  return out;
}

/**
 * Bind one device to a DPDK driver, verifying every step in sysfs. Already bound with its device
 * node present → no write at all. Before the first write: the device's netdev must carry the ENI's
 * MAC, the guard must allow it, and the intent is journalled. On failure the original driver is
 * restored (and the netdev's return verified), then an OpError says what happened to both.
 */
export async function bindDevice(host: Host, bdf: string, target: string, opts: BindOptions): Promise<BindResult> {
  const dev = await readPciDevice(host, bdf);
  if (!dev) throw new OpError(`PCI device ${bdf} does not exist`, "run `eni-dpdk status` to see the devices eni-dpdk knows", { bdf });
  if (dev.driver === target) {
    const node = await deviceNodeFor(host, bdf, target);
    if (node) return { changed: false, driver: target, deviceNode: node };
    throw new OpError(`${bdf} is bound to ${target} but its device node is missing`, `check \`ls -l /dev/vfio\` and the iommu group of ${bdf}; \`eni-dpdk unbind ${bdf}\` then \`eni-dpdk bind ${bdf}\` retries`, { bdf });
  }
  const mac = opts.mac?.toLowerCase();
  const netdevs = await deviceNetdevs(host, bdf);
  if (mac && netdevs.length && !netdevs.some((n) => n.mac === mac)) {
    throw new OpError(
      `refusing to bind ${bdf}: its netdev ${netdevs.map((n) => `${n.ifname} (${n.mac})`).join(", ")} does not carry the ENI's MAC ${mac}`,
      "nothing was changed; a PCI address is only used once verified against the ENI's MAC: run `eni-dpdk status`",
      { bdf, mac },
    );
  }
  if (mac && !netdevs.length && dev.driver) {
    throw new OpError(`refusing to bind ${bdf}: it is on ${dev.driver} without a netdev, so its MAC cannot be verified`, "nothing was changed; see `eni-dpdk status`", { bdf });
  }
  const ifname = netdevs.find((n) => n.mac === mac)?.ifname ?? netdevs[0]?.ifname;
  const verdict = guardViolations(opts.guard, { mac: mac ?? netdevs[0]?.mac, bdf, ifname });
  if (verdict.never.length) {
    throw new OpError(`refusing to bind ${bdf}${ifname ? ` (${ifname})` : ""}: ${verdict.never.join("; ")}; eni-dpdk never binds the primary ENI, not even with --force`, "nothing was changed", { bdf });
  }
  if (verdict.unlessForced.length && !opts.force) {
    throw new OpError(
      `refusing to bind ${bdf}${ifname ? ` (${ifname})` : ""}: ${verdict.unlessForced.join("; ")}`,
      "nothing was changed; remove the routes (or let eni-dpdk's networkd file keep networkd off it from the next boot), or `eni-dpdk bind --force` if you are sure",
      { bdf },
    );
  }
  if (verdict.unlessForced.length) opts.log.warn("--force: binding despite the guards", { bdf, reasons: verdict.unlessForced });

  const original = dev.driver;
  const log = opts.log.child({ bdf, driver: target, original_driver: original ?? "none" });
  await journalBegin(host, {
    op: "bind",
    bdf,
    vendor: dev.vendor,
    device: dev.device,
    ...(mac ? { mac } : {}),
    from: original ?? "",
    to: target,
    ...(opts.eni ? { eniName: opts.eni.name, ...(opts.eni.id ? { eniId: opts.eni.id } : {}) } : {}),
    ...(ifname ? { ifname } : {}),
  });
  try {
    if (opts.script) await bindWithScript(host, dev, target, opts.script, log);
    else await bindNative(host, dev, target, log);
    const node = await verifyBound(host, bdf, target);
    await journalEnd(host, bdf);
    log.info("bound", { device_node: node });
    return { changed: true, driver: target, originalDriver: original, deviceNode: node, ...(ifname ? { ifname } : {}) };
  } catch (e) {
    const why = (e as Error).message;
    log.error("bind failed; restoring the original driver", { error: why });
    const rb = await restoreDriver(host, bdf, original, { log, mac, journal: false });
    if (rb.ok) await journalEnd(host, bdf);
    throw new OpError(
      `binding ${bdf} to ${target} failed: ${why}; ${rb.ok ? `restored to ${rb.driver ?? "no driver"}${rb.ifname ? ` (netdev ${rb.ifname} is back)` : ""}` : `ROLLBACK INCOMPLETE: ${rb.problem}`}`,
      rb.ok
        ? `see \`dmesg | tail\` for the probe error; \`eni-dpdk status\` shows the host's NOIOMMU and driver state`
        : `the next eni-dpdk run retries the rollback (it is in ${JOURNAL_PATH}); by hand: \`echo > ${PCI_DEVICES}/${bdf}/driver_override; echo ${bdf} > ${DRIVERS_PROBE}\` and check \`dmesg\``,
      { bdf, target, original_driver: original, rolled_back: rb.ok },
    );
  }
}

async function bindNative(host: Host, dev: PciDevice, target: string, log: Logger): Promise<void> {
  const dir = `${PCI_DEVICES}/${dev.bdf}`;
  // 1. the override keeps a later reprobe from handing the device back to its kernel driver
  if (dev.override !== target) {
    await host.writeAttr(`${dir}/driver_override`, target);
    const ok = await host.settled(async () => (await host.attr(`${dir}/driver_override`)) === target);
    if (!ok) throw new Error(`driver_override did not take "${target}"`);
  }
  // 2. unbind from the current driver
  if (dev.driver) {
    log.debug("unbinding from the current driver");
    await host.writeAttr(`${dir}/driver/unbind`, dev.bdf);
    const gone = await host.settled(async () => !(await host.linkName(`${dir}/driver`)));
    if (!gone) throw new Error(`still bound to ${dev.driver} after writing ${dir}/driver/unbind`);
  }
  // 3. probe: the kernel picks the override
  await host.writeAttr(DRIVERS_PROBE, dev.bdf);
  const bound = await host.settled(async () => (await host.linkName(`${dir}/driver`)) === target);
  if (!bound) {
    const now = await host.linkName(`${dir}/driver`);
    throw new Error(`probe did not bind ${target} (driver now: ${now ?? "none"}${target === "vfio-pci" ? "; without an IOMMU, vfio-pci needs NOIOMMU" : ""})`);
  }
}

/** dpdk-devbind.py exits 0 on refusals and failed binds; its exit status is logged, sysfs decides. */
async function bindWithScript(host: Host, dev: PciDevice, target: string, script: string, log: Logger): Promise<void> {
  // --force: our own guards have already decided; devbind would refuse any NIC with a route.
  const argv = [script, "--force", "--bind", target, dev.bdf];
  const r = await run(argv, { timeoutMs: 60_000 });
  log.info("binding script ran", { argv, exit: r.code, stdout: r.stdout.trim().slice(0, 400), stderr: r.stderr.trim().slice(0, 400) });
  const dir = `${PCI_DEVICES}/${dev.bdf}`;
  const bound = await host.settled(async () => (await host.linkName(`${dir}/driver`)) === target);
  if (!bound) {
    const now = await host.linkName(`${dir}/driver`);
    throw new Error(`${script} exited ${r.code} but ${dev.bdf} is bound to ${now ?? "no driver"}, not ${target}`);
  }
  // devbind clears the override after binding; set it again so a reprobe keeps the device.
  if ((await host.attr(`${dir}/driver_override`)) !== target) await host.writeAttr(`${dir}/driver_override`, target);
}

async function verifyBound(host: Host, bdf: string, target: string): Promise<string> {
  if (target === "vfio-pci" && !(await host.settled(() => host.linkName(`${PCI_DEVICES}/${bdf}/iommu_group`)))) {
    throw new Error(`bound to vfio-pci but ${bdf} has no iommu_group`);
  }
  const node = await host.settled(() => deviceNodeFor(host, bdf, target));
  if (!node) throw new Error(`bound to ${target} but no device node appeared (/dev/vfio/… or /dev/uio…)`);
  return node;
}

export interface RestoreResult {
  ok: boolean;
  driver?: string;
  ifname?: string;
  problem?: string;
}

/**
 * Return a device to its kernel driver: clear the override, unbind from whatever holds it, reprobe,
 * and verify the driver and (when `mac` is given) that the netdev with that MAC came back.
 * `original` undefined → whichever driver the kernel picks by id.
 */
export async function restoreDriver(
  host: Host,
  bdf: string,
  original: string | undefined,
  opts: { log: Logger; mac?: string; journal?: boolean },
): Promise<RestoreResult> {
  const dir = `${PCI_DEVICES}/${bdf}`;
  if (opts.journal !== false) {
    const dev = await readPciDevice(host, bdf);
    if (dev) {
      await journalBegin(host, { op: "restore", bdf, vendor: dev.vendor, device: dev.device, ...(opts.mac ? { mac: opts.mac.toLowerCase() } : {}), from: dev.driver ?? "", to: original ?? "" });
    }
  }
  const r = await restoreSteps(host, bdf, original, dir, opts);
  if (r.ok && opts.journal !== false) await journalEnd(host, bdf);
  return r;
}

async function restoreSteps(host: Host, bdf: string, original: string | undefined, dir: string, opts: { log: Logger; mac?: string }): Promise<RestoreResult> {
  try {
    const ov = await host.attr(`${dir}/driver_override`);
    if (ov && ov !== "(null)") {
      await host.writeAttr(`${dir}/driver_override`, "\n");
      await host.settled(async () => ["(null)", ""].includes((await host.attr(`${dir}/driver_override`)) ?? ""));
    }
    const cur = await host.linkName(`${dir}/driver`);
    if (cur && cur !== original) {
      await host.writeAttr(`/sys/bus/pci/drivers/${cur}/unbind`, bdf);
      const gone = await host.settled(async () => !(await host.linkName(`${dir}/driver`)));
      if (!gone) return { ok: false, driver: cur, problem: `still bound to ${cur} after unbind` };
    }
    if (!cur || cur !== original) {
      await host.writeAttr(DRIVERS_PROBE, bdf);
      const drv = await host.settled(async () => {
        const d = await host.linkName(`${dir}/driver`);
        return d && (!original || d === original) ? d : undefined;
      });
      if (!drv) return { ok: false, driver: await host.linkName(`${dir}/driver`), problem: `reprobe did not bind ${original ?? "a kernel driver"}` };
    }
    const driver = await host.linkName(`${dir}/driver`);
    if (opts.mac) {
      const mac = opts.mac.toLowerCase();
      const nd = await host.settled(async () => {
        for (const ifname of await host.list(`${dir}/net`)) {
          if ((await host.attr(`${dir}/net/${ifname}/address`))?.toLowerCase() === mac) return ifname;
        }
        return undefined;
      });
      if (!nd) return { ok: false, driver, problem: `${driver ?? "no driver"} is bound but no netdev with MAC ${mac} appeared` };
      opts.log.info("restored to the kernel driver", { bdf, driver, ifname: nd });
      return { ok: true, driver, ifname: nd };
    }
    opts.log.info("restored to the kernel driver", { bdf, driver });
    return { ok: true, driver };
  } catch (e) {
    return { ok: false, problem: (e as Error).message };
  }
}

// ---- crash recovery --------------------------------------------------------------------------------

export interface RecoveryResult {
  bdf: string;
  op: InflightOp["op"] | "driverless";
  outcome: "finished" | "rolled-back" | "forgotten" | "failed";
  detail: string;
}

/**
 * Before anything else, under the lock: finish or roll back every operation a killed process left
 * in the journal, and give back to its kernel driver any recorded device that sits driverless with
 * our override (a crash between unbind and probe). A bind found complete is recorded in the state;
 * anything else is rolled back, and the caller's normal flow binds it again with every guard.
 */
export async function recoverInflight(host: Host, state: State, log: Logger): Promise<RecoveryResult[]> {
  const out: RecoveryResult[] = [];
  let stateChanged = false;
  for (const op of await journalPending(host)) {
    const dlog = log.child({ bdf: op.bdf, op: op.op, started_at: op.startedAt, pid: op.pid });
    const dev = await readPciDevice(host, op.bdf);
    if (!dev || dev.vendor !== op.vendor || dev.device !== op.device) {
      await journalEnd(host, op.bdf);
      out.push({ bdf: op.bdf, op: op.op, outcome: "forgotten", detail: dev ? `now ${dev.vendor}:${dev.device}, journalled ${op.vendor}:${op.device}` : "the device is gone" });
      dlog.warn("forgot an interrupted operation: the device changed", { detail: out.at(-1)!.detail });
      continue;
    }
    if (op.op === "bind" && dev.driver === op.to && (await deviceNodeFor(host, op.bdf, op.to))) {
      if (op.mac && op.eniName !== undefined) {
        state.bindings[op.mac] = {
          mac: op.mac,
          bdf: op.bdf,
          vendor: op.vendor,
          device: op.device,
          originalDriver: op.from,
          driver: op.to,
          eniName: op.eniName,
          ...(op.eniId ? { eniId: op.eniId } : {}),
          boundAt: op.startedAt,
          ...(op.ifname ? { ifname: op.ifname } : {}),
        };
        stateChanged = true;
      }
      await journalEnd(host, op.bdf);
      out.push({ bdf: op.bdf, op: op.op, outcome: "finished", detail: `was already on ${op.to}; recorded` });
      dlog.warn("an interrupted bind had completed; recorded it", { driver: op.to });
      continue;
    }
    // bind not complete → back to where it came from; restore → finish going back
    const back = op.op === "bind" ? op.from || undefined : op.to || undefined;
    const rb = await restoreDriver(host, op.bdf, back, { log: dlog, mac: op.mac, journal: false });
    if (!rb.ok) {
      out.push({ bdf: op.bdf, op: op.op, outcome: "failed", detail: rb.problem ?? "restore failed" });
      dlog.error("could not recover an interrupted operation; it stays in the journal", { error: rb.problem, next: `see dmesg; eni-dpdk retries at its next run` });
      continue;
    }
    if (op.op === "restore" && op.mac && state.bindings[op.mac]) {
      delete state.bindings[op.mac];
      stateChanged = true;
    }
    await journalEnd(host, op.bdf);
    out.push({ bdf: op.bdf, op: op.op, outcome: op.op === "bind" ? "rolled-back" : "finished", detail: `on ${rb.driver ?? "no driver"}${rb.ifname ? ` (${rb.ifname})` : ""}` });
    dlog.warn(op.op === "bind" ? "rolled back an interrupted bind" : "finished an interrupted restore", { driver: rb.driver, ifname: rb.ifname });
  }
  // Without a journal entry (an older version, or a hand-made override): a recorded device left
  // driverless with our override on it would otherwise keep its netdev away for good.
  for (const rec of Object.values(state.bindings)) {
    const dev = await readPciDevice(host, rec.bdf);
    if (!dev || dev.driver || dev.vendor !== rec.vendor || dev.device !== rec.device || dev.override !== rec.driver) continue;
    const rb = await restoreDriver(host, rec.bdf, rec.originalDriver || undefined, { log, mac: rec.mac });
    out.push({ bdf: rec.bdf, op: "driverless", outcome: rb.ok ? "rolled-back" : "failed", detail: rb.ok ? `on ${rb.driver}` : rb.problem ?? "" });
    if (rb.ok) log.warn("gave a driverless recorded device back to its kernel driver", { bdf: rec.bdf, driver: rb.driver });
  }
  if (stateChanged) await saveState(host, state);
  return out;
}
