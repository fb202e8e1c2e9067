// The stand-alone device commands: bind, unbind, reset, early. None of them needs EC2; each takes the
// host lock once, at the top, and first finishes or rolls back what a killed run left half-done.
import { BDF_RE, DPDK_DRIVERS, type DpdkDriver, isDpdkDriver, MAC_RE } from "../config/facts.js";
import { errorMessage, InputError, OpError } from "../core/errors.js";
import path from "node:path";
import { type Host, type LockRecord } from "../host/host.js";
import { Deadline, isoTime } from "../core/deadline.js";
import {
  ensureNetworkdFile,
  markNodeadmUnmanaged,
  removeOwnedNetworkFiles,
} from "../host/networkd.js";
import {
  bindDevice,
  deviceNodeFor,
  listNetdevs,
  readPciDevice,
  refuseMoveInUse,
  restoreDriver,
  restoreHint,
  type BindResult,
  type PciDevice,
} from "../host/pci.js";
import { guardFacts, guardViolations, readRoutes } from "../host/guard.js";
import { prepareHost } from "../host/recovery.js";
import { rebindFromState } from "../reconcile/early.js";
import { type BindingRecord, saveState, type State } from "../host/state.js";
import { setupKernel } from "../host/kernel.js";
import { type CommandContext, localConfig } from "./context.js";
import { ImdsClient } from "../cloud/imds.js";
import { removeOwnedSriov } from "../host/sriov-file.js";
import {
  MAX_PODS_DROPIN,
  NODEADM_DROPIN_DIR,
  removeMaxPodsDropin,
} from "../host/nodeadm-dropin.js";

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
    return {
      bdf,
      pci,
      mac,
      ifname: nd?.ifname,
      record,
      eniName: eni?.name ?? record?.eniName,
      eniId: eni?.eniId ?? record?.eniId,
    };
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
    const eni =
      Object.values(state.enis).find((e) => e.eniId === t) ??
      Object.values(state.bindings).find((b) => b.eniId === t);
    if (eni) r = await byMac(eni.mac.toLowerCase());
  } else {
    const nd = netdevs.find((n) => n.ifname === target.trim() && n.bdf);
    if (nd) r = await byMac(nd.mac);
    else if (state.enis[t]) r = await byMac(state.enis[t].mac.toLowerCase());
    else {
      const b = Object.values(state.bindings).find(
        (x) => x.eniName === t || x.ifname === target.trim(),
      );
      if (b) r = await byMac(b.mac);
    }
  }
  if (!r) {
    throw new InputError(
      [
        {
          source: "command line",
          key: "target",
          message: `"${target}" matches no PCI device, interface, ENI id, MAC or ENI name on this host; expected e.g. 0000:00:06.0, eth1, eni-0123456789abcdef0 or 02:00:00:00:00:02`,
        },
      ],
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
    const mac = await new ImdsClient({ deadline: new Deadline(2000), timeoutMs: 1000 })
      .get("meta-data/mac")
      .catch(() => undefined);
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

export async function bindCommand(
  ctx: CommandContext,
  opts: { target: string; driver?: string; force: boolean },
): Promise<number> {
  const { config } = await localConfig(ctx, { strict: true });
  if (opts.driver !== undefined && !(DPDK_DRIVERS as readonly string[]).includes(opts.driver)) {
    throw new InputError([
      {
        source: "command line",
        key: "--driver",
        message: `expected one of ${DPDK_DRIVERS.join(", ")}, got "${opts.driver}"`,
      },
    ]);
  }
  return ctx.host.withLock(
    async () => {
      const { host, log } = ctx;
      const state = await prepareHost(host, log, {
        tempDirs: [path.posix.dirname(config.sriov.config_path)],
      });
      const r = await resolveTarget(host, state, opts.target);
      const cfgEni = r.eniName ? config.eni.find((e) => e.name === r.eniName) : undefined;
      const driver = (opts.driver ?? cfgEni?.dpdk.driver ?? config.dpdk.driver) as DpdkDriver;
      if (r.pci.driver === driver) {
        ctx.out(
          `${r.bdf} is already bound to ${driver} (${(await deviceNodeFor(host, r.bdf, driver)) ?? "no device node"}); nothing to do\n`,
        );
        return 0;
      }
      const guard = await offlineGuard(host, state, log);
      // The guard again here, before the kernel setup and the networkd file: a refusal changes nothing.
      const verdict = guardViolations(guard, { mac: r.mac, bdf: r.bdf, ifname: r.ifname });
      if (verdict.never.length) {
        throw new OpError(
          `refusing to bind ${r.bdf}${r.ifname ? ` (${r.ifname})` : ""}: ${verdict.never.join("; ")}; eni-dpdk never binds the primary ENI, not even with --force`,
          "nothing was changed",
          { bdf: r.bdf },
        );
      }
      if (verdict.unlessForced.length && !opts.force) {
        throw new OpError(
          `refusing to bind ${r.bdf}${r.ifname ? ` (${r.ifname})` : ""}: ${verdict.unlessForced.join("; ")}`,
          "nothing was changed; `--force` overrides the route and ownership guards (never the primary) if you are sure this NIC carries nothing the node needs",
          { bdf: r.bdf },
        );
      }
      // and the device's holders: a move between DPDK drivers unbinds it
      await refuseMoveInUse(host, r.bdf, r.pci.driver, driver);
      await setupKernel(host, { drivers: [driver], noiommu: config.dpdk.noiommu, log });
      if (r.mac && r.eniName) {
        await ensureNetworkdFile(host, state, r.eniName, r.mac);
        if (r.ifname)
          await markNodeadmUnmanaged(host, state, state.instanceId, r.ifname, r.mac, log);
      }
      // on record before the journal forgets the bind (see BindOptions.record)
      const record = async (b: BindResult) => {
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
            boundAt: isoTime(),
            ...(r.ifname ? { ifname: r.ifname } : {}),
          };
        } else {
          log.warn(
            "bound a device without a MAC; it is not recorded, so reboots will not rebind it",
            {
              bdf: r.bdf,
            },
          );
        }
        await saveState(host, state);
      };
      const b = await bindDevice(host, r.bdf, driver, {
        log,
        script: config.dpdk.binding_script || undefined,
        mac: r.mac,
        guard,
        force: opts.force,
        eni: { name: r.eniName ?? "", ...(r.eniId ? { id: r.eniId } : {}) },
        record,
      });
      ctx.out(`bound ${r.bdf}${r.mac ? ` (${r.mac})` : ""} to ${driver}: ${b.deviceNode}\n`);
      return 0;
    },
    { log: ctx.log },
  );
}

export async function unbindCommand(
  ctx: CommandContext,
  opts: { target: string },
): Promise<number> {
  return ctx.host.withLock(
    async ({ before }) => {
      const { host, log } = ctx;
      const state = await prepareHost(host, log);
      const r = await resolveTarget(host, state, opts.target);
      if (!r.pci.driver || !isDpdkDriver(r.pci.driver)) {
        ctx.out(
          `${r.bdf} is on ${r.pci.driver ?? "no driver"}, not a DPDK driver; nothing to do\n`,
        );
        return 0;
      }
      const rb = await restoreDriver(host, r.bdf, r.record?.originalDriver || undefined, {
        log,
        mac: r.mac,
      });
      if (!rb.ok) {
        throw new OpError(
          `returning ${r.bdf} to ${r.record?.originalDriver || "its kernel driver"} failed: ${rb.problem}`,
          restoreHint(rb, "see `dmesg`; `eni-dpdk status` shows where the device is now"),
          { bdf: r.bdf },
        );
      }
      if (r.mac) delete state.bindings[r.mac];
      await saveState(host, state);
      ctx.out(`returned ${r.bdf} to ${rb.driver}${rb.ifname ? ` (netdev ${rb.ifname})` : ""}\n`);
      serviceWillUndo(ctx, before, "unbind");
      return 0;
    },
    { log: ctx.log },
  );
}

/**
 * After a reset or an unbind: the service, if it is serving (the lock's last taker before this
 * command was a live `eni-dpdk run`), binds the devices again at its next pass. Say so, and how to
 * make it last.
 */
function serviceWillUndo(
  ctx: CommandContext,
  before: LockRecord | undefined,
  what: "reset" | "unbind",
): void {
  if (!before || before.holder.pid === process.pid || !/^run\b/.test(before.holder.command)) return;
  ctx.log.warn(`the service binds the devices again at its next pass, undoing this ${what}`, {
    service: `pid ${before.holder.pid} (eni-dpdk run)`,
    next: `systemctl stop eni-dpdk, then ${what} again, for one that lasts (systemctl start eni-dpdk binds them again)`,
  });
}

/** Unbind every managed device, remove our networkd/nodeadm files, our SR-IOV entries and our maxPods drop-in; nothing else. */
export async function resetCommand(
  ctx: CommandContext,
  _opts: Record<string, never> | object = {},
): Promise<number> {
  const { config } = await localConfig(ctx);
  return ctx.host.withLock(
    async ({ before }) => {
      const { host, log } = ctx;
      const state = await prepareHost(host, log, {
        tempDirs: [path.posix.dirname(config.sriov.config_path), NODEADM_DROPIN_DIR],
      });
      const failures: string[] = [];
      let inUse = false;
      for (const rec of Object.values(state.bindings)) {
        const pci = await readPciDevice(host, rec.bdf);
        if (!pci || pci.vendor !== rec.vendor || pci.device !== rec.device) {
          log.warn("recorded device is gone or changed; forgetting it", {
            bdf: rec.bdf,
            mac: rec.mac,
          });
          delete state.bindings[rec.mac];
          continue;
        }
        if (pci.driver && isDpdkDriver(pci.driver)) {
          const rb = await restoreDriver(host, rec.bdf, rec.originalDriver || undefined, {
            log,
            mac: rec.mac,
          });
          if (!rb.ok) {
            failures.push(`${rec.bdf}: ${rb.problem}`);
            inUse ||= !!rb.holders?.length;
            continue;
          }
          ctx.out(
            `returned ${rec.bdf} to ${rb.driver}${rb.ifname ? ` (netdev ${rb.ifname})` : ""}\n`,
          );
        }
        delete state.bindings[rec.mac];
      }
      await saveState(host, state);
      for (const p of await removeOwnedNetworkFiles(host, state, log)) ctx.out(`removed ${p}\n`);
      await saveState(host, state);
      try {
        if (await removeOwnedSriov(host, config, state, log))
          ctx.out(
            `removed eni-dpdk's entries from ${state.sriov.configPath ?? config.sriov.config_path}\n`,
          );
      } catch (e) {
        failures.push(`SR-IOV config: ${errorMessage(e)}`);
      }
      await saveState(host, state);
      try {
        if (await removeMaxPodsDropin(host)) ctx.out(`removed ${MAX_PODS_DROPIN}\n`);
      } catch (e) {
        failures.push(`kubelet maxPods drop-in: ${errorMessage(e)}`);
      }
      if (failures.length) {
        throw new OpError(
          `reset incomplete: ${failures.join("; ")}`,
          inUse
            ? "a device in use was left as it is: stop what holds it (for a pod, delete it or scale its workload down), then rerun `eni-dpdk reset`"
            : "see `dmesg` and `eni-dpdk status`; rerun `eni-dpdk reset`",
          {},
        );
      }
      // reset is host-side only: no ENI is ever detached or deleted, external ones least of all.
      for (const e of Object.values(state.enis).filter((x) => x.attach === "external"))
        ctx.out(
          `left external ENI ${e.eniId} (${e.name}) attached: the launch template or lifecycle hook that attached it owns it\n`,
        );
      ctx.out(
        "reset done: eni-dpdk's bindings, networkd files, SR-IOV entries and kubelet maxPods drop-in are gone; everything else is untouched\n",
      );
      serviceWillUndo(ctx, before, "reset");
      return 0;
    },
    { log: ctx.log },
  );
}

/** eni-dpdk-early.service: rebind recorded devices at boot, offline (no IMDS, no EC2). */
export async function earlyCommand(
  ctx: CommandContext,
  _opts: Record<string, never> | object = {},
): Promise<number> {
  const { config, problems } = await localConfig(ctx);
  for (const p of problems)
    ctx.log.warn("config problem; early rebind uses the defaults for [dpdk]", { problem: p });
  return ctx.host.withLock(
    async () => {
      const state = await prepareHost(ctx.host, ctx.log, {
        tempDirs: [path.posix.dirname(config.sriov.config_path)],
      });
      if (Object.keys(state.bindings).length === 0) {
        ctx.log.info("no recorded bindings; nothing to rebind");
        return 0;
      }
      const results = await rebindFromState(ctx.host, state, config.dpdk, ctx.log);
      for (const r of results)
        ctx.out(`${r.state.padEnd(7)} ${r.bdf} ${r.mac} ${r.eniName}: ${r.detail}\n`);
      return results.some((r) => r.state === "failed") ? 1 : 0;
    },
    { log: ctx.log },
  );
}
