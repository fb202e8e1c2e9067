// Living with AL2023's systemd-networkd and nodeadm (docs/host-binding.md explains the choice):
// - a `.network` file that sorts before nodeadm's 70-eks-* and net-utils' 80-ec2, matching the ENI's
//   permanent MAC with Unmanaged=yes, so networkd never configures a DPDK ENI;
// - nodeadm's udev-net-manager cache entry for the ENI's interface name says a manager other than
//   networkd, so nodeadm's boot hook never waits for a link that vfio-pci took away.
import { type Host } from "./host.js";
import { run } from "../core/process.js";
import type { Logger } from "../core/log.js";
import type { Action } from "../core/action.js";
import type { State } from "./state.js";

export const NETWORKD_DIR = "/etc/systemd/network";
export const NODEADM_CACHE_DIR = "/etc/eks/nodeadm/udev-net-manager";
/** Manager name we put in nodeadm's cache; anything but "io.systemd.Network" means "not networkd". */
export const NODEADM_MANAGER = "eni-dpdk";
const HEADER = "# Written by eni-dpdk";

export function networkdPath(eniName: string): string {
  return `${NETWORKD_DIR}/00-eni-dpdk-${eniName}.network`;
}

export function renderNetworkd(eniName: string, mac: string): string {
  return [
    `${HEADER} for ENI "${eniName}", which is bound to a DPDK driver: systemd-networkd must leave it alone.`,
    "# Sorts before nodeadm's 70-eks-*.network and amazon-ec2-net-utils' 80-ec2.network; the first match wins.",
    "# `eni-dpdk reset` removes this file.",
    "[Match]",
    `PermanentMACAddress=${mac.toLowerCase()}`,
    "",
    "[Link]",
    "Unmanaged=yes",
    "",
  ].join("\n");
}

export async function planNetworkd(
  host: Host,
  enis: { name: string; mac: string }[],
): Promise<Action[]> {
  const out: Action[] = [];
  for (const e of enis) {
    const p = networkdPath(e.name);
    if ((await host.read(p)) !== renderNetworkd(e.name, e.mac)) {
      out.push({
        stage: "host",
        kind: "write-networkd",
        target: p,
        detail: `Unmanaged=yes for ${e.mac.toLowerCase()} (keeps networkd and nodeadm's boot hook off it)`,
      });
    }
  }
  return out;
}

/** Write (if changed) the networkd file for one DPDK ENI and record it in the state. */
export async function ensureNetworkdFile(
  host: Host,
  state: State,
  eniName: string,
  mac: string,
): Promise<boolean> {
  const p = networkdPath(eniName);
  const changed = await host.writeFileAtomic(p, renderNetworkd(eniName, mac));
  if (!state.networkdFiles.includes(p)) state.networkdFiles.push(p);
  return changed;
}

/**
 * Ask a running systemd-networkd to re-read its .network files, so a file written for a NIC that
 * is about to appear takes effect. Only on the real root with networkd running; failures are logged.
 */
export async function reloadNetworkd(host: Host, log: Logger): Promise<void> {
  if (host.root !== "/" || !(await host.exists("/run/systemd/netif"))) return;
  const r = await run(["networkctl", "reload"], { timeoutMs: 10_000 }).catch((e: Error) => ({
    code: -1,
    stdout: "",
    stderr: e.message,
  }));
  if (r.code !== 0)
    log.warn("networkctl reload failed", {
      error: r.stderr.trim(),
      next: "the ENI may be configured by networkd until the next boot; check `networkctl status`",
    });
}

/**
 * Record in nodeadm's udev-net-manager cache that `ifname` is not networkd's, so neither
 * udev-net-manager (which reads the cache first) nor the boot hook (which waits up to 60 s for every
 * networkd-managed cached link) treats it as networkd's on a later boot. Only on hosts with nodeadm.
 * Keeps the cache's format: JSON {mac, manager} in newer nodeadm, a bare manager name in older.
 */
export async function markNodeadmUnmanaged(
  host: Host,
  state: State,
  instanceId: string | undefined,
  ifname: string,
  mac: string,
  log: Logger,
): Promise<string | undefined> {
  if (!instanceId || !(await host.exists(NODEADM_CACHE_DIR))) return undefined;
  const p = `${NODEADM_CACHE_DIR}/${instanceId}/${ifname}`;
  const cur = (await host.read(p))?.trim();
  const json = cur?.startsWith("{");
  const want = json
    ? JSON.stringify({ mac: mac.toLowerCase(), manager: NODEADM_MANAGER })
    : NODEADM_MANAGER;
  if (cur !== want) {
    await host.writeFileAtomic(p, want);
    log.info("nodeadm udev-net-manager cache: interface is not networkd's", {
      path: p,
      was: cur ?? "absent",
    });
  }
  if (!state.networkdFiles.includes(p)) state.networkdFiles.push(p);
  return p;
}

/**
 * Remove the files we wrote (recorded in the state) whose content is still ours; leave anything an
 * operator or nodeadm rewrote. `keep` lists paths to leave in place.
 */
export async function removeOwnedNetworkFiles(
  host: Host,
  state: State,
  log: Logger,
  keep: Set<string> = new Set(),
): Promise<string[]> {
  const removed: string[] = [];
  const remaining: string[] = [];
  for (const p of state.networkdFiles) {
    if (keep.has(p)) {
      remaining.push(p);
      continue;
    }
    const cur = await host.read(p);
    const ours =
      cur === undefined ||
      cur.startsWith(HEADER) ||
      cur.trim() === NODEADM_MANAGER ||
      isOurJson(cur);
    if (!ours) {
      log.warn("leaving a file eni-dpdk once wrote: its content changed since", { path: p });
      continue;
    }
    if (await host.remove(p)) removed.push(p);
  }
  state.networkdFiles = remaining;
  if (removed.length) log.info("removed eni-dpdk's network files", { files: removed });
  return removed;
}

function isOurJson(s: string): boolean {
  try {
    return (JSON.parse(s) as { manager?: string }).manager === NODEADM_MANAGER;
  } catch {
    return false;
  }
}
