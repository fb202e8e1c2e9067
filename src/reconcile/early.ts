// The early rebind (eni-dpdk-early.service): at boot, before systemd-networkd and nodeadm's boot
// hook, every device recorded in the state file comes back on its kernel driver with a netdev;
// verify BDF, vendor:device and MAC against the record, apply the one guard, bind it again.
// No IMDS, no EC2: the primary is known from the record every apply keeps.
import { type DpdkConfig } from "../config/model.js";
import { type DpdkDriver } from "../config/facts.js";
import { type Host } from "../host/host.js";
import type { Logger } from "../core/log.js";
import { markNodeadmUnmanaged } from "../host/networkd.js";
import {
  bindDevice,
  deviceNetdevs,
  deviceNodeFor,
  driverlessHint,
  readPciDevice,
} from "../host/pci.js";
import { guardFacts, guardViolations, readRoutes } from "../host/guard.js";
import { saveState, type State } from "../host/state.js";
import { setupKernel } from "../host/kernel.js";
import { allSettledOrThrow } from "../core/turns.js";

export interface EarlyResult {
  mac: string;
  bdf: string;
  eniName: string;
  state: "bound" | "failed" | "skipped";
  changed: boolean;
  detail: string;
}

/**
 * At boot, before systemd-networkd and nodeadm's boot hook: every device recorded in the state file
 * comes up on its kernel driver with a netdev; verify BDF, vendor:device and the netdev's MAC against
 * the record, then bind it again. No IMDS, no EC2. Kernel setup failures abort before any device.
 */
export async function rebindFromState(
  host: Host,
  state: State,
  dpdk: Pick<DpdkConfig, "noiommu" | "binding_script">,
  log: Logger,
  opts: { waitMs?: number } = {},
): Promise<EarlyResult[]> {
  const out: EarlyResult[] = [];
  let recs = Object.values(state.bindings);
  if (recs.length === 0) return [];
  if (!state.primary) {
    // Offline, the primary is known only from the record every apply writes; without it, no bind.
    log.warn(
      "the state file has no record of the primary ENI yet; the early rebind is left to the full apply",
      {
        next: "nothing to do: eni-dpdk.service binds these devices, and records the primary for later boots",
      },
    );
    return recs.map((rec) => ({
      mac: rec.mac,
      bdf: rec.bdf,
      eniName: rec.eniName,
      state: "skipped" as const,
      changed: false,
      detail: "no primary ENI record in the state file; left for the full apply",
    }));
  }
  // The state-only half of the guard first: a record naming the primary fails before any write.
  const guards = guardFacts({
    primary: state.primary,
    routes: await readRoutes(host),
    ownedMacs: [...recs.map((r) => r.mac), ...Object.values(state.enis).map((e) => e.mac)],
  });
  recs = recs.filter((rec) => {
    const never = guardViolations(guards, { mac: rec.mac, bdf: rec.bdf }).never;
    if (!never.length) return true;
    log.error("the state file records the primary ENI as a DPDK device; refusing it", {
      mac: rec.mac,
      bdf: rec.bdf,
      reasons: never,
      next: "the state file was edited or is corrupt: eni-dpdk reset, then eni-dpdk apply",
    });
    out.push({
      mac: rec.mac,
      bdf: rec.bdf,
      eniName: rec.eniName,
      state: "failed",
      changed: false,
      detail: `refused: ${never.join("; ")}`,
    });
    return false;
  });
  if (recs.length === 0) return out;
  const drivers = [...new Set(recs.map((r) => r.driver as DpdkDriver))];
  await setupKernel(host, { drivers, noiommu: dpdk.noiommu, log });
  // every device at once: each waits for its own NIC (the kernel may still be probing) and bind
  const rebind = async (rec: (typeof recs)[number]): Promise<EarlyResult> => {
    const base = { mac: rec.mac, bdf: rec.bdf, eniName: rec.eniName };
    const dlog = log.child({ eni: rec.eniName, mac: rec.mac, bdf: rec.bdf });
    // The kernel enumerates PCI before userspace starts: a device absent now does not come (its ENI
    // was detached). Nothing to wait for or fail on; the full apply attaches it again if it is still
    // configured, and forgets the record if not.
    if (!(await readPciDevice(host, rec.bdf))) {
      return {
        ...base,
        state: "skipped",
        changed: false,
        detail: `no PCI device at ${rec.bdf}: its ENI is not attached to this instance; left for the full apply`,
      };
    }
    // the kernel driver may still be probing this early: wait for its driver and netdev
    const seen = await host.settled(async () => {
      const pci = await readPciDevice(host, rec.bdf);
      if (!pci) return undefined;
      if (pci.driver === rec.driver) return { pci, ifname: undefined as string | undefined };
      const nd = (await deviceNetdevs(host, rec.bdf))[0];
      return nd ? { pci, ifname: nd.ifname, mac: nd.mac } : undefined;
    }, opts.waitMs ?? 10_000);
    if (!seen) {
      const driver = (await readPciDevice(host, rec.bdf))?.driver;
      return {
        ...base,
        state: "failed",
        changed: false,
        detail: `${rec.bdf} did not appear with a netdev (driver ${driver ?? "none"})${driver ? "" : `: ${driverlessHint(rec.bdf)}`}`,
      };
    }
    const { pci } = seen;
    if (pci.vendor !== rec.vendor || pci.device !== rec.device) {
      return {
        ...base,
        state: "skipped",
        changed: false,
        detail: `${rec.bdf} is ${pci.vendor}:${pci.device}, recorded ${rec.vendor}:${rec.device}; left alone`,
      };
    }
    if (pci.driver === rec.driver) {
      const node = await deviceNodeFor(host, rec.bdf, rec.driver);
      return {
        ...base,
        state: node ? "bound" : "failed",
        changed: false,
        detail: node
          ? `already on ${rec.driver} (${node})`
          : `on ${rec.driver} without a device node`,
      };
    }
    const mac = "mac" in seen ? seen.mac : undefined;
    if (mac !== rec.mac) {
      return {
        ...base,
        state: "skipped",
        changed: false,
        detail: `${rec.bdf} carries MAC ${mac}, not ${rec.mac}: another ENI sits there now; left alone for the full apply`,
      };
    }
    const verdict = guardViolations(guards, { mac, bdf: rec.bdf, ifname: seen.ifname });
    if (verdict.never.length || verdict.unlessForced.length) {
      return {
        ...base,
        state: verdict.never.length ? "failed" : "skipped",
        changed: false,
        detail: `refused: ${[...verdict.never, ...verdict.unlessForced].join("; ")}; left alone`,
      };
    }
    try {
      if (seen.ifname) {
        // before the netdev vanishes: nodeadm must not wait for it on this boot or later ones
        await markNodeadmUnmanaged(host, state, state.instanceId, seen.ifname, rec.mac, dlog);
        rec.ifname = seen.ifname;
      }
      const b = await bindDevice(host, rec.bdf, rec.driver, {
        log: dlog,
        script: dpdk.binding_script || undefined,
        mac: rec.mac,
        guard: guards,
        eni: { name: rec.eniName, ...(rec.eniId ? { id: rec.eniId } : {}) },
        record: () => saveState(host, state),
        recorded: rec,
      });
      return {
        ...base,
        state: "bound",
        changed: b.changed,
        detail: `bound to ${rec.driver} (${b.deviceNode})`,
      };
    } catch (e) {
      return { ...base, state: "failed", changed: true, detail: (e as Error).message };
    }
  };
  out.push(...(await allSettledOrThrow(recs.map(rebind))));
  return out;
}
