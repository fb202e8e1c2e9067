// PCI devices by MAC, the safety guards, and binding with rollback. Everything follows the kernel's
// sysfs semantics (domain.md "PCI binding"): driver_override, unbind, drivers_probe, then verify by
// reading sysfs. Never new_id: every ENA shares one vendor:device pair, the primary included.
import path from "node:path";
import { OpError } from "../core/errors.js";
import { type Host } from "./host.js";
import { run } from "../core/process.js";
import type { Logger } from "../core/log.js";
import { type BindingRecord, journalBegin, journalEnd, JOURNAL_PATH } from "./state.js";
import { BDF_RE, isDpdkDriver } from "../config/facts.js";
import { type GuardFacts, guardViolations } from "./guard.js";

export const PCI_DEVICES = "/sys/bus/pci/devices";
export const DRIVERS_PROBE = "/sys/bus/pci/drivers_probe";

// ---- discovery -----------------------------------------------------------------------------------

export interface Netdev {
  ifname: string;
  mac: string;
  /** PCI address from the `device` link; undefined for virtual interfaces */
  bdf?: string;
}

/** A virtio device under its PCI function (virtio-net's netdev hangs off it, not off the PCI device). */
const VIRTIO_CHILD_RE = /^virtio\d+$/;

export async function listNetdevs(host: Host): Promise<Netdev[]> {
  const out: Netdev[] = [];
  for (const ifname of await host.list("/sys/class/net")) {
    const mac = (await host.attr(`/sys/class/net/${ifname}/address`))?.toLowerCase();
    if (!mac) continue;
    out.push({ ifname, mac, bdf: await netdevBdf(host, ifname) });
  }
  return out;
}

/**
 * The PCI address behind a netdev: the `device` link's target, or for virtio-net (whose link names
 * `virtioN`) that virtio device's parent. Nothing further up: a USB NIC is not its controller.
 */
async function netdevBdf(host: Host, ifname: string): Promise<string | undefined> {
  const link = `/sys/class/net/${ifname}/device`;
  const name = await host.linkName(link);
  if (!name) return undefined;
  if (BDF_RE.test(name)) return name;
  if (!VIRTIO_CHILD_RE.test(name)) return undefined;
  const real = await host.resolve(link);
  const parent = real ? path.posix.basename(path.posix.dirname(real)) : "";
  return BDF_RE.test(parent) ? parent : undefined;
}

/** The directories holding a PCI device's netdevs: `<dev>/net`, and `<dev>/virtioN/net` for virtio. */
async function netDirs(host: Host, bdf: string): Promise<string[]> {
  const dir = `${PCI_DEVICES}/${bdf}`;
  const virtio = (await host.list(dir)).filter((d) => VIRTIO_CHILD_RE.test(d));
  return [`${dir}/net`, ...virtio.map((v) => `${dir}/${v}/net`)];
}

/**
 * Why a recorded device sits on no driver, and where to look: its kernel driver's probe failed (or
 * never ran), so no netdev shows its MAC, and nothing may bind it until one does.
 */
export function driverlessHint(bdf: string): string {
  return `its kernel driver did not take it (see \`dmesg | grep ${bdf}\`); nothing is bound there until a netdev shows its MAC`;
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
  const hex = async (f: string) =>
    ((await host.attr(`${dir}/${f}`)) ?? "").replace(/^0x/, "").toLowerCase();
  const ov = await host.attr(`${dir}/driver_override`);
  return {
    bdf,
    vendor: await hex("vendor"),
    device: await hex("device"),
    driver: await host.linkName(`${dir}/driver`),
    override: ov && ov !== "(null)" ? ov : undefined,
    netdevs: (await deviceNetdevs(host, bdf, { withoutMac: true })).map((n) => n.ifname),
    iommuGroup: await host.linkName(`${dir}/iommu_group`),
  };
}

export async function listPciDevices(host: Host): Promise<string[]> {
  return (await host.list(PCI_DEVICES)).filter((b) => BDF_RE.test(b));
}

/** Every PCI device bound to a DPDK driver now, ours or not. */
export async function devicesOnDpdkDrivers(host: Host): Promise<string[]> {
  const out: string[] = [];
  for (const bdf of await listPciDevices(host))
    if (isDpdkDriver(await host.linkName(`${PCI_DEVICES}/${bdf}/driver`))) out.push(bdf);
  return out;
}

/** The user-space device node a DPDK driver exposes, if present: /dev/vfio/noiommu-N, /dev/vfio/N or /dev/uioN. */
export async function deviceNodeFor(
  host: Host,
  bdf: string,
  driver: string | undefined,
): Promise<string | undefined> {
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

/** A process with a DPDK-bound device's user-space node open: a DPDK app, in a pod or not. */
export interface DeviceHolder {
  pid: number;
  comm: string;
  node: string;
}

/**
 * Who has the device's user-space nodes open: its vfio group (/dev/vfio/N, /dev/vfio/noiommu-N),
 * its vfio cdev (/dev/vfio/devices/vfioX) or its /dev/uioN, found in every process's fd links by
 * the path or, for a node seen under another name in a container, by the device number.
 * A vfio-pci unbind of a device in use waits in the kernel until the app lets go, and the writer
 * cannot be killed meanwhile; so nothing unbinds a device on a DPDK driver without asking this.
 */
export async function deviceHolders(
  host: Host,
  bdf: string,
  driver: string | undefined,
): Promise<DeviceHolder[]> {
  return (await devicesHolders(host, [{ bdf, driver }])).get(bdf) ?? [];
}

/** deviceHolders of several devices, from one pass over /proc (status asks for every bound one). */
export async function devicesHolders(
  host: Host,
  devices: { bdf: string; driver: string | undefined }[],
): Promise<Map<string, DeviceHolder[]>> {
  const nodes = new Map<string, string | undefined>(); // path → its device number
  const bdfOf = new Map<string, string>(); // path → its device
  const add = async (bdf: string, node: string | undefined) => {
    if (!node) return;
    nodes.set(node, await host.charDevice(node));
    bdfOf.set(node, bdf);
  };
  for (const { bdf, driver } of devices) {
    await add(bdf, await deviceNodeFor(host, bdf, driver));
    if (driver === "vfio-pci")
      for (const d of await host.list(`${PCI_DEVICES}/${bdf}/vfio-dev`))
        await add(bdf, `/dev/vfio/devices/${d}`);
  }
  const out = new Map<string, DeviceHolder[]>();
  if (!nodes.size) return out;
  for (const h of (await processesHolding(host, nodes)).held) {
    const bdf = bdfOf.get(h.node)!;
    const list = out.get(bdf) ?? [];
    // one entry per process and device, though it may hold both the group and the cdev
    if (!list.some((x) => x.pid === h.pid)) list.push(h);
    out.set(bdf, list);
  }
  return out;
}

/**
 * The processes with any of `nodes` (path → its device number) open, from every /proc/<pid>/fd:
 * one entry per process and node.
 * Reading another user's fd links takes CAP_SYS_PTRACE (the units grant it). A process whose links
 * still cannot be read (an LSM's, another namespace's init) is skipped and counted in `unreadable`:
 * refusing every unbind for it would leave no way to undo a bind.
 */
export async function processesHolding(
  host: Host,
  nodes: ReadonlyMap<string, string | undefined>,
): Promise<{ held: DeviceHolder[]; unreadable: number[] }> {
  const numbers = new Map([...nodes].filter(([, n]) => n).map(([p, n]) => [n!, p]));
  const held: DeviceHolder[] = [];
  const unreadable: number[] = [];
  for (const pid of (await host.list("/proc")).filter((d) => /^\d+$/.test(d))) {
    const dir = `/proc/${pid}/fd`;
    try {
      for (const fd of await host.list(dir)) {
        const link = `${dir}/${fd}`;
        const target = await host.linkTarget(link);
        // sockets, pipes and anon inodes are no device node
        if (!target?.startsWith("/")) continue;
        const node = nodes.has(target)
          ? target
          : numbers.size
            ? numbers.get((await host.charDevice(link)) ?? "")
            : undefined;
        if (!node || held.some((h) => h.pid === Number(pid) && h.node === node)) continue;
        held.push({ pid: Number(pid), comm: (await host.attr(`/proc/${pid}/comm`)) ?? "?", node });
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EACCES" && code !== "EPERM") throw e;
      unreadable.push(Number(pid));
    }
  }
  return { held, unreadable };
}

/** "pid 4242 (dpdk-testpmd) has /dev/vfio/noiommu-17 open", for each holder. */
export function inUseBy(holders: DeviceHolder[]): string {
  return `in use: ${holders.map((h) => `pid ${h.pid} (${h.comm}) has ${h.node} open`).join(", ")}`;
}

/** A device on a DPDK driver that a process holds is not moved to `target`: an OpError, nothing written. */
export async function refuseMoveInUse(
  host: Host,
  bdf: string,
  driver: string | undefined,
  target: string,
): Promise<void> {
  if (!isDpdkDriver(driver) || driver === target) return;
  const holders = await deviceHolders(host, bdf, driver);
  if (holders.length)
    throw new OpError(
      `refusing to move ${bdf} from ${driver} to ${target}: ${inUseBy(holders)}`,
      IN_USE_HINT,
      { bdf, holders: holders.map((h) => h.pid) },
    );
}

/** What to do about a device in use. */
export const IN_USE_HINT =
  "nothing was changed: stop that process first (for a pod, delete it or scale its workload down), then run eni-dpdk again; eni-dpdk never unbinds a device in use, because the kernel's vfio-pci unbind waits for the app to let go, with the writer stuck";

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
  /**
   * Keep the binding on record (the state file), once the device is verified bound (or found bound
   * already) and before the journal forgets the bind: with no netdev left, the record is all a
   * later run can find it by. When it throws after a bind, the bind is rolled back.
   */
  record?: (bound: BindResult) => Promise<void>;
  /**
   * The device's binding as the state file holds it. When it describes this very bind (the same
   * device and MAC, from its driver now to `target`), it is the intent a crash is recovered from
   * (recoverInflight's pass over the records), and the journal is not written: at every reboot's
   * rebind, two fsync'd writes fewer.
   */
  recorded?: BindingRecord;
}

export interface BindResult {
  changed: boolean;
  driver: string;
  originalDriver?: string;
  deviceNode?: string;
  /** the netdev the device had before binding */
  ifname?: string;
}

/** The netdevs under a PCI device and their MACs (sysfs `<dev>/net/<if>/address`, virtio's one level down). */
export async function deviceNetdevs(
  host: Host,
  bdf: string,
  opts: { withoutMac?: boolean } = {},
): Promise<{ ifname: string; mac: string }[]> {
  const out: { ifname: string; mac: string }[] = [];
  for (const dir of await netDirs(host, bdf)) {
    for (const ifname of await host.list(dir)) {
      const mac = (await host.attr(`${dir}/${ifname}/address`))?.toLowerCase() ?? "";
      if (mac || opts.withoutMac) out.push({ ifname, mac });
    }
  }
  return out;
}

/**
 * Bind one device to a DPDK driver, verifying every step in sysfs. Already bound with its device
 * node present → no write at all. Before the first write: the device's netdev must carry the ENI's
 * MAC, the guard must allow it, and the intent is journalled. On failure the original driver is
 * restored (and the netdev's return verified), then an OpError says what happened to both.
 */
export async function bindDevice(
  host: Host,
  bdf: string,
  target: string,
  opts: BindOptions,
): Promise<BindResult> {
  const dev = await readPciDevice(host, bdf);
  if (!dev)
    throw new OpError(
      `PCI device ${bdf} does not exist`,
      "run `eni-dpdk status` to see the devices eni-dpdk knows",
      { bdf },
    );
  if (dev.driver === target) {
    const node = await deviceNodeFor(host, bdf, target);
    if (node) {
      const already: BindResult = { changed: false, driver: target, deviceNode: node };
      await opts.record?.(already);
      return already;
    }
    throw new OpError(
      `${bdf} is bound to ${target} but its device node is missing`,
      `check \`ls -l /dev/vfio\` and the iommu group of ${bdf}; \`eni-dpdk unbind ${bdf}\` then \`eni-dpdk bind ${bdf}\` retries`,
      { bdf },
    );
  }
  await refuseMoveInUse(host, bdf, dev.driver, target);
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
    throw new OpError(
      `refusing to bind ${bdf}: it is on ${dev.driver} without a netdev, so its MAC cannot be verified`,
      "nothing was changed; see `eni-dpdk status`",
      { bdf },
    );
  }
  const ifname = netdevs.find((n) => n.mac === mac)?.ifname ?? netdevs[0]?.ifname;
  const verdict = guardViolations(opts.guard, { mac: mac ?? netdevs[0]?.mac, bdf, ifname });
  if (verdict.never.length) {
    throw new OpError(
      `refusing to bind ${bdf}${ifname ? ` (${ifname})` : ""}: ${verdict.never.join("; ")}; eni-dpdk never binds the primary ENI, not even with --force`,
      "nothing was changed",
      { bdf },
    );
  }
  if (verdict.unlessForced.length && !opts.force) {
    throw new OpError(
      `refusing to bind ${bdf}${ifname ? ` (${ifname})` : ""}: ${verdict.unlessForced.join("; ")}`,
      "nothing was changed; remove the routes (or let eni-dpdk's networkd file keep networkd off it from the next boot), or `eni-dpdk bind --force` if you are sure",
      { bdf },
    );
  }
  if (verdict.unlessForced.length)
    opts.log.warn("--force: binding despite the guards", { bdf, reasons: verdict.unlessForced });

  const original = dev.driver;
  const log = opts.log.child({ bdf, driver: target, original_driver: original ?? "none" });
  const intent = {
    op: "bind" as const,
    bdf,
    vendor: dev.vendor,
    device: dev.device,
    ...(mac ? { mac } : {}),
    from: original ?? "",
    to: target,
    ...(opts.eni ? { eniName: opts.eni.name, ...(opts.eni.id ? { eniId: opts.eni.id } : {}) } : {}),
    ...(ifname ? { ifname } : {}),
  };
  const onRecord = !opts.script && describesBind(opts.recorded, dev, target, mac);
  if (!onRecord) await journalBegin(host, intent);
  try {
    if (opts.script) await bindWithScript(host, dev, target, opts.script, log);
    else await bindNative(host, dev, target, log);
    const node = await verifyBound(host, bdf, target);
    const bound: BindResult = {
      changed: true,
      driver: target,
      originalDriver: original,
      deviceNode: node,
      ...(ifname ? { ifname } : {}),
    };
    await opts.record?.(bound);
    if (!onRecord) await journalEnd(host, bdf);
    log.info("bound", { device_node: node });
    return bound;
  } catch (e) {
    const why = (e as Error).message;
    log.error("bind failed; restoring the original driver", { error: why });
    const rb = await restoreDriver(host, bdf, original, { log, mac, journal: false });
    if (rb.ok && !onRecord) await journalEnd(host, bdf);
    // A rollback left unfinished, with our override already taken back, is more than the record
    // can tell the next run: it goes into the journal, whose recovery retries it.
    if (!rb.ok && onRecord) await journalBegin(host, intent);
    throw new OpError(
      `binding ${bdf} to ${target} failed: ${why}; ${rb.ok ? `restored to ${rb.driver ?? "no driver"}${rb.ifname ? ` (netdev ${rb.ifname} is back)` : ""}` : `ROLLBACK INCOMPLETE: ${rb.problem}`}`,
      rb.ok
        ? `see \`dmesg | tail\` for the probe error; \`eni-dpdk status\` shows the host's NOIOMMU and driver state`
        : `the next eni-dpdk run retries the rollback (it is in ${JOURNAL_PATH}); by hand: \`echo > ${PCI_DEVICES}/${bdf}/driver_override; echo ${bdf} > ${DRIVERS_PROBE}\` and check \`dmesg\``,
      { bdf, target, original_driver: original, rolled_back: rb.ok },
      { cause: e },
    );
  }
}

/** The record names this device (ids, MAC) bound from the driver it has now to `target`. */
function describesBind(
  rec: BindingRecord | undefined,
  dev: PciDevice,
  target: string,
  mac: string | undefined,
): boolean {
  return (
    rec !== undefined &&
    rec.bdf === dev.bdf &&
    rec.vendor === dev.vendor &&
    rec.device === dev.device &&
    rec.mac === mac &&
    rec.driver === target &&
    rec.originalDriver === (dev.driver ?? "")
  );
}

async function bindNative(host: Host, dev: PciDevice, target: string, log: Logger): Promise<void> {
  const dir = `${PCI_DEVICES}/${dev.bdf}`;
  // 1. the override keeps a later reprobe from handing the device back to its kernel driver
  if (dev.override !== target) {
    await host.writeAttr(`${dir}/driver_override`, target);
    const ok = await host.settled(
      async () => (await host.attr(`${dir}/driver_override`)) === target,
    );
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
    throw new Error(
      `probe did not bind ${target} (driver now: ${now ?? "none"}${target === "vfio-pci" ? "; without an IOMMU, vfio-pci needs NOIOMMU" : ""})`,
    );
  }
}

/** dpdk-devbind.py exits 0 on refusals and failed binds; its exit status is logged, sysfs decides. */
async function bindWithScript(
  host: Host,
  dev: PciDevice,
  target: string,
  script: string,
  log: Logger,
): Promise<void> {
  // --force: our own guards have already decided; devbind would refuse any NIC with a route.
  const argv = [script, "--force", "--bind", target, dev.bdf];
  const r = await run(argv, { timeoutMs: 60_000 });
  log.info("binding script ran", {
    argv,
    exit: r.code,
    stdout: r.stdout.trim().slice(0, 400),
    stderr: r.stderr.trim().slice(0, 400),
  });
  const dir = `${PCI_DEVICES}/${dev.bdf}`;
  const bound = await host.settled(async () => (await host.linkName(`${dir}/driver`)) === target);
  if (!bound) {
    const now = await host.linkName(`${dir}/driver`);
    throw new Error(
      `${script} exited ${r.code} but ${dev.bdf} is bound to ${now ?? "no driver"}, not ${target}`,
    );
  }
  // devbind clears the override after binding; set it again so a reprobe keeps the device.
  if ((await host.attr(`${dir}/driver_override`)) !== target)
    await host.writeAttr(`${dir}/driver_override`, target);
}

async function verifyBound(host: Host, bdf: string, target: string): Promise<string> {
  if (
    target === "vfio-pci" &&
    !(await host.settled(() => host.linkName(`${PCI_DEVICES}/${bdf}/iommu_group`)))
  ) {
    throw new Error(`bound to vfio-pci but ${bdf} has no iommu_group`);
  }
  const node = await host.settled(() => deviceNodeFor(host, bdf, target));
  if (!node)
    throw new Error(`bound to ${target} but no device node appeared (/dev/vfio/… or /dev/uio…)`);
  return node;
}

export interface RestoreResult {
  ok: boolean;
  driver?: string;
  ifname?: string;
  problem?: string;
  /** the processes that have the device open: nothing was written (see deviceHolders) */
  holders?: DeviceHolder[];
}

/** The hint for a failed restore: about its holders when it was refused for them, else `otherwise`. */
export function restoreHint(rb: RestoreResult, otherwise: string): string {
  return rb.holders?.length ? IN_USE_HINT : otherwise;
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
  const cur = await host.linkName(`${dir}/driver`);
  if (cur !== original && isDpdkDriver(cur)) {
    let holders: DeviceHolder[];
    try {
      holders = await deviceHolders(host, bdf, cur);
    } catch (e) {
      return {
        ok: false,
        driver: cur,
        problem: `cannot tell who holds it: ${(e as Error).message}`,
      };
    }
    if (holders.length) return { ok: false, driver: cur, holders, problem: inUseBy(holders) };
  }
  if (opts.journal !== false) {
    const dev = await readPciDevice(host, bdf);
    if (dev) {
      await journalBegin(host, {
        op: "restore",
        bdf,
        vendor: dev.vendor,
        device: dev.device,
        ...(opts.mac ? { mac: opts.mac.toLowerCase() } : {}),
        from: dev.driver ?? "",
        to: original ?? "",
      });
    }
  }
  const r = await restoreSteps(host, bdf, original, dir, opts);
  if (r.ok && opts.journal !== false) await journalEnd(host, bdf);
  return r;
}

async function restoreSteps(
  host: Host,
  bdf: string,
  original: string | undefined,
  dir: string,
  opts: { log: Logger; mac?: string },
): Promise<RestoreResult> {
  try {
    const ov = await host.attr(`${dir}/driver_override`);
    if (ov && ov !== "(null)") {
      await host.writeAttr(`${dir}/driver_override`, "\n");
      await host.settled(async () =>
        ["(null)", ""].includes((await host.attr(`${dir}/driver_override`)) ?? ""),
      );
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
      if (!drv)
        return {
          ok: false,
          driver: await host.linkName(`${dir}/driver`),
          problem: `reprobe did not bind ${original ?? "a kernel driver"}`,
        };
    }
    const driver = await host.linkName(`${dir}/driver`);
    if (opts.mac) {
      const mac = opts.mac.toLowerCase();
      const nd = await host.settled(
        async () => (await deviceNetdevs(host, bdf)).find((n) => n.mac === mac)?.ifname,
      );
      if (!nd)
        return {
          ok: false,
          driver,
          problem: `${driver ?? "no driver"} is bound but no netdev with MAC ${mac} appeared`,
        };
      opts.log.info("restored to the kernel driver", { bdf, driver, ifname: nd });
      return { ok: true, driver, ifname: nd };
    }
    opts.log.info("restored to the kernel driver", { bdf, driver });
    return { ok: true, driver };
  } catch (e) {
    return { ok: false, problem: (e as Error).message };
  }
}
