// The state file <root>/var/lib/eni-dpdk/state.json: what eni-dpdk created and bound, so a reboot
// (when bound devices have no netdev) and `reset` know what is ours. Written atomically under the lock.
import type { Host } from "./host.js";

export const STATE_PATH = "/var/lib/eni-dpdk/state.json";

/** An ENI as the ENI stage left it. */
export interface EniRecord {
  name: string;
  eniId: string;
  mac: string;
  deviceIndex: number;
  networkCardIndex: number;
  subnetId: string;
  attachmentId?: string;
  createdByUs: boolean;
  /** DeleteOnTermination as last set or observed; the IMDS-only fast path needs it to match config. */
  deleteOnTermination?: boolean;
  /** subnet_name the subnet was resolved from, so a renamed subnet_name is not taken as converged. */
  subnetName?: string;
}

/** A device as the host stage bound it; keyed by MAC, the ENI's identity (a BDF is not). */
export interface BindingRecord {
  mac: string;
  bdf: string;
  vendor: string;
  device: string;
  originalDriver: string;
  driver: string;
  eniName: string;
  eniId?: string;
  boundAt: string;
  /** the kernel netdev name before binding; nodeadm's cache is keyed by it (host stage) */
  ifname?: string;
}

export interface State {
  version: 1;
  instanceId?: string;
  enis: Record<string, EniRecord>;
  bindings: Record<string, BindingRecord>;
  /** SR-IOV resourceList entries we own, by full name `prefix/name`, and the file they live in. */
  sriov: { configPath?: string; owned: string[] };
  /** networkd `.network` files we wrote (host paths). */
  networkdFiles: string[];
  /** Last NodeENI set applied successfully (for API outages at boot). */
  nodeeni?: { fetchedAt: string; items: unknown[] };
}

export function emptyState(): State {
  return { version: 1, enis: {}, bindings: {}, sriov: { owned: [] }, networkdFiles: [] };
}

export async function loadState(host: Host): Promise<State> {
  const raw = await host.read(STATE_PATH);
  if (raw === undefined) return emptyState();
  try {
    const parsed = JSON.parse(raw) as Partial<State>;
    return { ...emptyState(), ...parsed, sriov: { owned: [], ...parsed.sriov } } as State;
  } catch (e) {
    throw new Error(`state file ${host.path(STATE_PATH)} is not valid JSON (${(e as Error).message}); move it aside to start over`);
  }
}

/** Read-modify-write the state file. Call with the host lock held. */
export async function updateState(host: Host, mutate: (s: State) => void): Promise<State> {
  const s = await loadState(host);
  mutate(s);
  await saveState(host, s);
  return s;
}

/** Persist the in-memory state of this apply. Stages call it after each step that must survive a crash. */
export async function saveState(host: Host, s: State): Promise<void> {
  await host.writeFileAtomic(STATE_PATH, serialize(s), 0o600);
}

/**
 * Keys sorted at every level, so the file's bytes depend only on its content: writeFileAtomic skips
 * unchanged content, and a load/save round trip must not reorder keys into a spurious write.
 */
function serialize(s: State): string {
  const sortKeys = (_k: string, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v;
  return JSON.stringify(s, sortKeys, 2) + "\n";
}
