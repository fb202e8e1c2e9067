// The host stage: find each ENI's PCI device by MAC, check the guards, set up the kernel, bind DPDK
// ENIs (with rollback), bring kernel-driver ENIs up with their MTU, and keep networkd/nodeadm off
// DPDK ENIs. Never takes the host lock (the orchestrator holds it). Also the offline reboot rebind.
import { type Config, type EniConfig } from "../config/model.js";
import {
  ENA_DPDK_DEVICE_IDS,
  ENA_VENDOR,
  fullResourceName,
  isDpdkDriver,
} from "../config/facts.js";
import { InputError, OpError, type Problem } from "../core/errors.js";
import { isoTime, pollUntil } from "../core/deadline.js";
import { allSettledOrThrow } from "../core/turns.js";
import { type Host } from "../host/host.js";
import type { Logger } from "../core/log.js";
import { ensureNetworkdFile, markNodeadmUnmanaged, planNetworkd } from "../host/networkd.js";
import { type HostDeviceResult, type Stage, type StageContext, type StagePlan } from "./stage.js";
import { type Action } from "../core/action.js";
import {
  bindDevice,
  listPciDevices,
  netdevByMac,
  readPciDevice,
  deviceHolders,
  inUseBy,
  restoreDriver,
  restoreHint,
  type BindResult,
  driverlessHint,
  type PciDevice,
} from "../host/pci.js";
import { guardFacts, guardViolations, readRoutes, type GuardFacts } from "../host/guard.js";
import { type BindingRecord, type EniRecord, saveState, type State } from "../host/state.js";
import {
  applyHugepages,
  hugepageWants,
  planHugepages,
  planKernel,
  setupKernel,
} from "../host/kernel.js";

/** A configured ENI with what EC2 gave it (its MAC and id): the host stage's input. */
export type HostTarget = Pick<EniConfig, "name" | "dpdk" | "mtu"> & { mac: string; eniId?: string };

/** The configured ENIs that are attached, each with its record. */
export function hostTargets(config: Config, enis: EniRecord[]): HostTarget[] {
  return config.eni.flatMap((e) => {
    const rec = enis.find((r) => r.name === e.name);
    return rec ? [{ name: e.name, dpdk: e.dpdk, mtu: e.mtu, mac: rec.mac, eniId: rec.eniId }] : [];
  });
}

/** Where a target's device was found. */
export interface LocatedDevice {
  target: HostTarget;
  /** netdev: by MAC now; state: bound earlier (no netdev), re-verified against the state record */
  via: "netdev" | "state" | "missing";
  bdf?: string;
  ifname?: string;
  pci?: PciDevice;
  /** why the state record could not be re-verified */
  problem?: string;
}

export interface HostPlan {
  actions: Action[];
  located: LocatedDevice[];
}

/** Find the target's PCI device: by its MAC's netdev, else (bound, no netdev) by the state record, re-verified. */
export async function locate(host: Host, state: State, t: HostTarget): Promise<LocatedDevice> {
  const mac = t.mac.toLowerCase();
  const nd = await netdevByMac(host, mac);
  if (nd?.bdf)
    return {
      target: t,
      via: "netdev",
      bdf: nd.bdf,
      ifname: nd.ifname,
      pci: await readPciDevice(host, nd.bdf),
    };
  const rec = state.bindings[mac];
  if (rec) {
    const pci = await readPciDevice(host, rec.bdf);
    const problem = !pci
      ? `recorded device ${rec.bdf} no longer exists`
      : pci.vendor !== rec.vendor || pci.device !== rec.device
        ? `${rec.bdf} is ${pci.vendor}:${pci.device}, the state file recorded ${rec.vendor}:${rec.device}`
        : !pci.driver
          ? `${rec.bdf} has no netdev with ${mac} and is on no driver: ${driverlessHint(rec.bdf)}`
          : !isDpdkDriver(pci.driver)
            ? `${rec.bdf} has no netdev with ${mac} and is on ${pci.driver}, not a DPDK driver`
            : undefined;
    return {
      target: t,
      via: problem ? "missing" : "state",
      bdf: rec.bdf,
      pci,
      ifname: rec.ifname,
      problem,
    };
  }
  return { target: t, via: "missing" };
}

/**
 * PCI devices on a DPDK driver that no binding record names: bound outside eni-dpdk (by hand with
 * dpdk-devbind.py, by an older tool). With no netdev their MAC cannot be read, so none is ever
 * taken for an ENI. `certain`: a missing ENI's NIC is one of them, so waiting for it is in vain:
 * every attached ENI (IMDS) has its ENA device, and each ENA device without a netdev is one of them.
 */
async function unrecordedOnDpdk(
  ctx: StageContext,
  located: LocatedDevice[],
): Promise<{ bdfs: string[]; certain: boolean }> {
  const missing = located.filter((l) => l.via === "missing" && !l.problem);
  if (!missing.length) return { bdfs: [], certain: false };
  const recorded = new Set(Object.values(ctx.state.bindings).map((b) => b.bdf));
  const ena: PciDevice[] = [];
  for (const bdf of await listPciDevices(ctx.host)) {
    const pci = await readPciDevice(ctx.host, bdf);
    if (pci?.vendor === ENA_VENDOR && ENA_DPDK_DEVICE_IDS.includes(pci.device)) ena.push(pci);
  }
  const bdfs = ena.filter((d) => isDpdkDriver(d.driver) && !recorded.has(d.bdf)).map((d) => d.bdf);
  const attached = (mac: string) => ctx.imdsNics.some((n) => n.mac.toLowerCase() === mac);
  const certain =
    bdfs.length > 0 &&
    ena.length >= ctx.imdsNics.length &&
    missing.every((l) => attached(l.target.mac.toLowerCase())) &&
    ena.every((d) => d.netdevs.length > 0 || bdfs.includes(d.bdf));
  return { bdfs, certain };
}

function strayProblem(l: LocatedDevice, strays: string[]): string {
  const t = l.target;
  const list = strays.join(", ");
  return `no NIC carries ENI ${t.eniId ?? t.name}'s MAC ${t.mac.toLowerCase()}; ${list} ${strays.length > 1 ? "are" : "is"} on a DPDK driver with no record of eni-dpdk's (bound by hand or by another tool?), and a MAC can only be verified on the kernel driver: stop what uses ${strays.length > 1 ? "them" : "it"}, then \`eni-dpdk unbind ${strays[0]}\` and apply again`;
}

/** Problems that reject the whole stage before any mutation (bad input or an unsafe target). */
/** Bad input is exit 2 and an unsafe target exit 1, both before any write. */
function refuseInvalid(ctx: StageContext, located: LocatedDevice[]): void {
  const { input, unsafe } = validate(ctx, located);
  if (input.length) throw new InputError(input, "fix the config");
  if (unsafe.length)
    throw new OpError(
      unsafe.join("; "),
      "remove these ENIs from the DPDK config; nothing was changed",
    );
}

function validate(
  ctx: StageContext,
  located: LocatedDevice[],
): { input: Problem[]; unsafe: string[] } {
  const input: Problem[] = [];
  const unsafe: string[] = [];
  const byBdf = new Map<string, string>();
  for (const l of located) {
    const t = l.target;
    if (t.dpdk.enabled && t.dpdk.pci_address && l.bdf && t.dpdk.pci_address !== l.bdf) {
      input.push({
        source: "config",
        key: `eni.${t.name}.dpdk.pci_address`,
        message: `is ${t.dpdk.pci_address}, but the ENI's MAC ${t.mac} is on ${l.bdf}; remove pci_address (the device is found by MAC) or set it to ${l.bdf}`,
      });
    }
    if (l.bdf) {
      const other = byBdf.get(l.bdf);
      if (other) unsafe.push(`ENIs "${other}" and "${t.name}" resolve to the same device ${l.bdf}`);
      byBdf.set(l.bdf, t.name);
    }
    if (!t.dpdk.enabled) continue;
    const mac = t.mac.toLowerCase();
    if (ctx.instance.primaryMac && mac === ctx.instance.primaryMac.toLowerCase())
      unsafe.push(`ENI "${t.name}" (${mac}) is the primary ENI; eni-dpdk never binds it`);
    if (ctx.imdsNics.some((n) => n.mac.toLowerCase() === mac && n.deviceNumber === 0))
      unsafe.push(`ENI "${t.name}" (${mac}) has device-number 0; eni-dpdk never binds it`);
  }
  return { input, unsafe };
}

export async function planHost(ctx: StageContext, targets: HostTarget[]): Promise<HostPlan> {
  const located = await Promise.all(targets.map((t) => locate(ctx.host, ctx.state, t)));
  refuseInvalid(ctx, located);
  const actions: Action[] = [];
  const dpdk = located.filter((l) => l.target.dpdk.enabled);
  const drivers = [...new Set(dpdk.map((l) => l.target.dpdk.driver))];
  if (drivers.length)
    actions.push(...(await planKernel(ctx.host, drivers, ctx.config.dpdk.noiommu)));
  actions.push(...(await planHugepages(ctx.host, hugepageWants(ctx.config.dpdk))));
  actions.push(
    ...(await planNetworkd(
      ctx.host,
      dpdk.map((l) => ({ name: l.target.name, mac: l.target.mac })),
    )),
  );
  for (const l of located) {
    const t = l.target;
    if (l.via === "missing") {
      actions.push({
        stage: "host",
        kind: t.dpdk.enabled ? "bind" : "set-mtu",
        target: t.name,
        detail: l.problem ?? `wait for the NIC with MAC ${t.mac} to appear`,
      });
      continue;
    }
    const drv = l.pci?.driver;
    // a plan that would unbind a device from a DPDK driver says who holds it (apply refuses then)
    const holders = async () => {
      const h = isDpdkDriver(drv) ? await deviceHolders(ctx.host, l.bdf!, drv) : [];
      return h.length ? `; ${inUseBy(h)}, and apply leaves it until then` : "";
    };
    if (t.dpdk.enabled) {
      if (drv !== t.dpdk.driver) {
        actions.push({
          stage: "host",
          kind: "bind",
          target: l.bdf!,
          detail: `${t.name} ${t.mac} ${l.pci?.vendor}:${l.pci?.device} ${drv ?? "no driver"} → ${t.dpdk.driver}${await holders()}`,
        });
      }
      continue;
    }
    if (drv && isDpdkDriver(drv)) {
      actions.push({
        stage: "host",
        kind: "unbind",
        target: l.bdf!,
        detail: `${t.name}: DPDK disabled; return from ${drv} to ${ctx.state.bindings[t.mac.toLowerCase()]?.originalDriver ?? "its kernel driver"}${await holders()}`,
      });
    } else if (l.ifname) {
      const mtu = Number(await ctx.host.attr(`/sys/class/net/${l.ifname}/mtu`));
      if (mtu !== t.mtu)
        actions.push({
          stage: "host",
          kind: "set-mtu",
          target: l.ifname,
          detail: `${t.name}: MTU ${mtu} → ${t.mtu}`,
        });
      const flags = parseInt((await ctx.host.attr(`/sys/class/net/${l.ifname}/flags`)) ?? "0", 16);
      if (!(flags & 1))
        actions.push({
          stage: "host",
          kind: "link-up",
          target: l.ifname,
          detail: `${t.name}: bring the link up`,
        });
    }
  }
  return { actions, located };
}

/**
 * Apply the host plan. Validation and kernel setup happen before any device is touched; then each
 * device on its own: a failure restores that device and the others continue.
 */
export async function applyHost(
  ctx: StageContext,
  targets: HostTarget[],
  plan: HostPlan,
): Promise<HostDeviceResult[]> {
  const { host, log, state } = ctx;
  // What the plan observed a moment ago, nothing written since (a target it did not observe is
  // located now). A just-attached ENI's NIC appears a moment later: wait for it (bounded by the
  // apply deadline).
  let located = await Promise.all(
    targets.map(async (t) => plan.located.find((l) => l.target === t) ?? locate(host, state, t)),
  );
  const strays = await unrecordedOnDpdk(ctx, located);
  const nameStrays = () =>
    (located = located.map((l) =>
      l.via === "missing" && !l.problem ? { ...l, problem: strayProblem(l, strays.bdfs) } : l,
    ));
  if (strays.certain) nameStrays();
  if (located.some((l) => l.via === "missing" && !l.problem)) {
    const until = Math.min(ctx.deadline.remaining(), 60_000);
    await pollUntil(
      async () => {
        located = await Promise.all(targets.map((t) => locate(host, state, t)));
        return !located.some((l) => l.via === "missing" && !l.problem);
      },
      { within: until, deadline: ctx.deadline, backoff: { firstMs: 20, maxMs: 250 } },
    );
  }
  if (strays.bdfs.length) nameStrays();
  refuseInvalid(ctx, located);

  const dpdkTargets = located.filter((l) => l.target.dpdk.enabled && l.via !== "missing");
  const drivers = [...new Set(dpdkTargets.map((l) => l.target.dpdk.driver))];
  if (drivers.length) await setupKernel(host, { drivers, noiommu: ctx.config.dpdk.noiommu, log });
  await applyHugepages(host, hugepageWants(ctx.config.dpdk), log);

  const guards = guardFacts({
    primaryMac: ctx.instance.primaryMac,
    deviceZeroMacs: ctx.imdsNics.filter((n) => n.deviceNumber === 0).map((n) => n.mac),
    primary: state.primary,
    routes: await readRoutes(host),
    ownedMacs: targets.map((t) => t.mac),
  });
  // The files each device needs, one device at a time (the state lists them in the config's
  // order); then the devices at once, each waiting on its own sysfs effects. A failure restores
  // that device only, and every device is done before this returns.
  const steps: (() => Promise<HostDeviceResult>)[] = [];
  for (const l of located)
    steps.push(
      l.target.dpdk.enabled
        ? await prepareDpdkDevice(ctx, l, guards)
        : () => applyKernelDevice(ctx, l),
    );
  const results = await allSettledOrThrow(steps.map((step) => step()));
  await saveState(host, state);
  return results;
}

/** The same binding, but perhaps for when it was made (the file's key order is not the code's). */
function sameBinding(a: BindingRecord, b: BindingRecord): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  keys.delete("boundAt");
  return [...keys].every((k) => a[k as keyof BindingRecord] === b[k as keyof BindingRecord]);
}

function baseResult(ctx: StageContext, l: LocatedDevice): HostDeviceResult {
  const t = l.target;
  return {
    name: t.name,
    eniId: t.eniId,
    mac: t.mac.toLowerCase(),
    bdf: l.bdf ?? "",
    vendor: l.pci?.vendor ?? "",
    device: l.pci?.device ?? "",
    driver: l.pci?.driver ?? "",
    originalDriver: ctx.state.bindings[t.mac.toLowerCase()]?.originalDriver ?? l.pci?.driver ?? "",
    deviceNode: "",
    resourceName:
      t.dpdk.enabled && t.dpdk.resource_name
        ? fullResourceName(t.dpdk.resource_name, ctx.config.sriov.resource_prefix)
        : "",
    state: "failed",
    ifname: l.ifname,
    changed: false,
  };
}

/**
 * A DPDK device's files and guard checks; returns its bind, to run alongside the other devices'
 * (or its result, when it is not to be bound).
 */
async function prepareDpdkDevice(
  ctx: StageContext,
  l: LocatedDevice,
  guards: GuardFacts,
): Promise<() => Promise<HostDeviceResult>> {
  const { host, log, state } = ctx;
  const t = l.target;
  const mac = t.mac.toLowerCase();
  const r = baseResult(ctx, l);
  const dlog = log.child({ eni: t.name, mac });
  const done = async () => r;
  if (l.via === "missing" || !l.bdf || !l.pci) {
    r.error =
      l.problem ?? `no NIC with MAC ${mac} appeared (is ENI ${t.eniId ?? t.name} attached?)`;
    dlog.error("device not found", { error: r.error });
    return done;
  }
  // networkd and nodeadm must leave this ENI alone from the next boot on, whatever happens below
  r.changed = (await ensureNetworkdFile(host, state, t.name, mac)) || r.changed;
  const ifname = l.ifname ?? state.bindings[mac]?.ifname;
  if (ifname)
    await markNodeadmUnmanaged(
      host,
      state,
      ctx.instance.instanceId ?? state.instanceId,
      ifname,
      mac,
      dlog,
    );

  if (l.via === "netdev") {
    const v = guardViolations(guards, { mac, bdf: l.bdf, ifname: l.ifname });
    const why = [...v.never, ...v.unlessForced];
    if (why.length) {
      r.error = `refusing to bind ${l.bdf} (${l.ifname}): ${why.join("; ")}`;
      dlog.error("guard refused the bind; device untouched", {
        bdf: l.bdf,
        reasons: why,
        hint: `eni-dpdk wrote ${"00-eni-dpdk-" + t.name}.network so networkd leaves it unconfigured from the next boot; or remove its routes, or \`eni-dpdk bind ${l.bdf} --force\``,
      });
      return done;
    }
  }
  if (l.pci.vendor !== ENA_VENDOR || !ENA_DPDK_DEVICE_IDS.includes(l.pci.device)) {
    dlog.warn(
      "not an ENA device the DPDK ENA PMD accepts (1d0f:ec20/ec21); binding anyway, it is the ENI's own device",
      { vendor: l.pci.vendor, device: l.pci.device },
    );
  }
  const { bdf, pci } = l;
  return async () => {
    const prev = state.bindings[mac];
    let rec: BindingRecord | undefined;
    const record = async (b: BindResult) => {
      // unknown ("") when the device was already on the DPDK driver the first time we saw it
      const originalDriver =
        (b.changed ? b.originalDriver : undefined) ?? prev?.originalDriver ?? "";
      rec = {
        mac,
        bdf,
        vendor: pci.vendor,
        device: pci.device,
        originalDriver,
        driver: t.dpdk.driver,
        eniName: t.name,
        ...(t.eniId ? { eniId: t.eniId } : {}),
        boundAt: prev && !b.changed ? prev.boundAt : isoTime(),
        ...(ifname ? { ifname } : {}),
      };
      // The same binding again (a reboot's rebind) keeps its record, time and all, as `early`'s
      // does: nothing to write, and it was on file before the bind began.
      if (prev && sameBinding(prev, rec)) {
        rec = prev;
        return;
      }
      state.bindings[mac] = rec;
      await saveState(host, state);
    };
    try {
      const b = await bindDevice(host, bdf, t.dpdk.driver, {
        log: dlog,
        script: ctx.config.dpdk.binding_script || undefined,
        mac,
        guard: guards,
        eni: { name: t.name, ...(t.eniId ? { id: t.eniId } : {}) },
        record,
        ...(prev ? { recorded: prev } : {}),
      });
      return {
        ...r,
        driver: t.dpdk.driver,
        originalDriver: rec!.originalDriver,
        deviceNode: b.deviceNode ?? "",
        state: "bound",
        changed: r.changed || b.changed,
      };
    } catch (e) {
      r.error = (e as Error).message;
      r.driver = (await host.linkName(`/sys/bus/pci/devices/${bdf}/driver`)) ?? "";
      r.changed = true;
      return r;
    }
  };
}

async function applyKernelDevice(ctx: StageContext, l: LocatedDevice): Promise<HostDeviceResult> {
  const { host, log, state } = ctx;
  const t = l.target;
  const mac = t.mac.toLowerCase();
  const r = baseResult(ctx, l);
  const dlog = log.child({ eni: t.name, mac });
  try {
    // DPDK turned off for an ENI we bound: give it back to its kernel driver first
    if (l.via === "state" && l.bdf) {
      const rec = state.bindings[mac];
      const rb = await restoreDriver(host, l.bdf, rec.originalDriver || undefined, {
        log: dlog,
        mac,
      });
      r.changed = !rb.holders?.length;
      if (!rb.ok)
        throw new OpError(
          `returning ${l.bdf} to ${rec.originalDriver}: ${rb.problem}`,
          restoreHint(rb, "see `dmesg`; `eni-dpdk status` shows where the device is"),
          { bdf: l.bdf },
        );
      delete state.bindings[mac];
      await saveState(host, state);
      l = await locate(host, state, t);
      Object.assign(r, { ifname: l.ifname, driver: l.pci?.driver ?? "" });
    }
    if (!l.ifname)
      throw new Error(
        l.problem ?? `no NIC with MAC ${mac} appeared (is ENI ${t.eniId ?? t.name} attached?)`,
      );
    r.changed = (await configureKernelLink(host, l.ifname, t.mtu, dlog)) || r.changed;
    return { ...r, state: "kernel", driver: l.pci?.driver ?? r.driver };
  } catch (e) {
    r.error = (e as Error).message;
    dlog.error("kernel-driver ENI setup failed", { error: r.error });
    return r;
  }
}

/**
 * MTU and IFF_UP through sysfs (`mtu` and `flags` are writable by root; the kernel applies them as
 * `ip link set` would), then verified. Returns true when something was written.
 */
export async function configureKernelLink(
  host: Host,
  ifname: string,
  mtu: number,
  log: Logger,
): Promise<boolean> {
  const dir = `/sys/class/net/${ifname}`;
  let changed = false;
  if (Number(await host.attr(`${dir}/mtu`)) !== mtu) {
    await host.writeAttr(`${dir}/mtu`, String(mtu));
    changed = true;
    const ok = await host.settled(async () => Number(await host.attr(`${dir}/mtu`)) === mtu);
    if (!ok)
      throw new Error(
        `${ifname}: MTU did not become ${mtu} (reads ${await host.attr(`${dir}/mtu`)}); the ENA driver or the instance type may not allow it`,
      );
    log.info("MTU set", { ifname, mtu });
  }
  const flags = parseInt((await host.attr(`${dir}/flags`)) ?? "0", 16);
  if (!(flags & 1)) {
    await host.writeAttr(`${dir}/flags`, `0x${(flags | 1).toString(16)}`);
    changed = true;
    // A boolean, not the bit: settled stops at any value but undefined/false, and 0 is a value.
    const ok = await host.settled(
      async () => (parseInt((await host.attr(`${dir}/flags`)) ?? "0", 16) & 1) === 1,
    );
    if (!ok)
      throw new Error(`${ifname}: link did not come up (flags ${await host.attr(`${dir}/flags`)})`);
    log.info("link up", { ifname });
  }
  return changed;
}

// ---- the stage ----------------------------------------------------------------------------------

/**
 * What a dry run hands the SR-IOV stage: the DPDK ENIs as the state records them bound (a reboot
 * rebinds exactly these), since a dry run binds nothing.
 */
function recordedDevices(ctx: StageContext): HostDeviceResult[] {
  return Object.values(ctx.state.bindings).flatMap((b) => {
    const eni = ctx.config.eni.find((e) => e.name === b.eniName && e.dpdk.enabled);
    if (!eni) return [];
    return [
      {
        name: eni.name,
        ...(b.eniId ? { eniId: b.eniId } : {}),
        mac: b.mac,
        bdf: b.bdf,
        vendor: b.vendor,
        device: b.device,
        driver: eni.dpdk.driver,
        originalDriver: b.originalDriver,
        deviceNode: "",
        resourceName: fullResourceName(eni.dpdk.resource_name, ctx.config.sriov.resource_prefix),
        state: "bound" as const,
        changed: false,
      },
    ];
  });
}

export const hostStage: Stage<HostPlan & StagePlan & { targets: HostTarget[] }> = {
  name: "host",
  enabled: () => true,
  async plan(ctx, up) {
    const targets = hostTargets(ctx.config, up.enis);
    const p = await planHost(ctx, targets);
    // ENIs not attached yet (a first boot's dry run): their kernel setup and binds come after the attach.
    const pending = ctx.config.eni.filter((e) => !targets.some((t) => t.name === e.name));
    const pendingDrivers = [
      ...new Set(pending.filter((e) => e.dpdk.enabled).map((e) => e.dpdk.driver)),
    ];
    if (pendingDrivers.length && !targets.some((t) => t.dpdk.enabled))
      p.actions.push(...(await planKernel(ctx.host, pendingDrivers, ctx.config.dpdk.noiommu)));
    for (const e of pending) {
      p.actions.push({
        stage: "host",
        kind: e.dpdk.enabled ? "bind" : "set-mtu",
        target: e.name,
        detail: "after the ENI is attached and its NIC appears",
      });
    }
    return { ...p, targets, expected: { devices: recordedDevices(ctx) } };
  },
  async apply(ctx, plan) {
    return { devices: await applyHost(ctx, plan.targets, plan) };
  },
};
