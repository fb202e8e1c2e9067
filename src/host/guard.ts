// The one guard every bind path applies, and the route facts it rests on: never the primary ENI
// (by MAC, device-number 0, or the BDF recorded for it), never a NIC the node needs for its own
// traffic (a default route, the route to IMDS) unless --force, never a NIC no managed ENI owns.
import type { Host } from "./host.js";

export const IMDS_IPV4 = "169.254.169.254";
export const IMDS_IPV6 = "fd00:ec2::254";

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
    const [iface, dest, , flags, , , , mask] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const fl = parseInt(flags, 16);
    if (!(fl & 0x1) || fl & 0x200) continue; // not RTF_UP, or RTF_REJECT
    const d = parseInt(dest, 16) >>> 0;
    const m = parseInt(mask, 16) >>> 0;
    if (d === 0 && m === 0) facts.defaultV4.add(iface);
    if ((imds4 & m) >>> 0 === (d & m) >>> 0) facts.imds.add(iface);
  }
  const v6 = (await host.read("/proc/net/ipv6_route")) ?? "";
  const imds6 = expandV6(IMDS_IPV6);
  for (const line of v6.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest, plenHex, , , , , , , flags, iface] = f;
    const fl = parseInt(flags, 16);
    if (iface === "lo" || fl & 0x200) continue;
    const plen = parseInt(plenHex, 16);
    if (plen === 0) facts.defaultV6.add(iface);
    if (prefixMatch(imds6, dest, plen)) facts.imds.add(iface);
  }
  return facts;
}

function leU32(ip: string): number {
  const o = ip.split(".").map(Number);
  return (o[0] | (o[1] << 8) | (o[2] << 16) | (o[3] << 24)) >>> 0;
}

function expandV6(addr: string): string {
  const [head, tail] = addr.includes("::") ? addr.split("::") : [addr, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = tail !== undefined ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t].map((g) => g.padStart(4, "0")).join("");
}

function prefixMatch(a: string, b: string, plen: number): boolean {
  const bits = (hex: string) =>
    [...hex].map((c) => parseInt(c, 16).toString(2).padStart(4, "0")).join("");
  return bits(a).slice(0, plen) === bits(b.toLowerCase()).slice(0, plen);
}

/**
 * The one guard every bind path applies (apply, run, early, bind, the binding script). Facts come
 * from IMDS when online and from the state file's primary record offline, so both refuse the same NICs.
 */
/** The routes that make a NIC one the node needs: what `status` marks *Active* and the guard refuses. */
export function routeReasons(routes: RouteFacts, ifname: string): string[] {
  const out: string[] = [];
  if (routes.defaultV4.has(ifname)) out.push("an IPv4 default route");
  if (routes.defaultV6.has(ifname)) out.push("an IPv6 default route");
  if (routes.imds.has(ifname)) out.push("the route to IMDS");
  return out;
}

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
  return {
    primaryMacs,
    primaryBdfs: new Set(a.primary?.bdf ? [a.primary.bdf] : []),
    routes: a.routes,
    ownedMacs: owned,
  };
}

export interface GuardVerdict {
  /** never bound, whatever the flags: the primary */
  never: string[];
  /** refused unless --force: routes, and a NIC no managed ENI owns */
  unlessForced: string[];
}

/** Why this NIC must not be bound; both lists empty when it may be. */
export function guardViolations(
  g: GuardFacts,
  nic: { mac?: string; bdf?: string; ifname?: string },
): GuardVerdict {
  const v: GuardVerdict = { never: [], unlessForced: [] };
  const mac = nic.mac?.toLowerCase();
  if (mac && g.primaryMacs.has(mac))
    v.never.push(`${mac} is the primary ENI (IMDS meta-data/mac or device-number 0)`);
  if (nic.bdf && g.primaryBdfs.has(nic.bdf))
    v.never.push(`${nic.bdf} is the primary ENI's device (recorded at the last apply)`);
  if (nic.ifname)
    for (const r of routeReasons(g.routes, nic.ifname))
      v.unlessForced.push(`${nic.ifname} carries ${r}`);
  if (!mac)
    v.unlessForced.push(
      `${nic.bdf ?? "the device"} has no netdev and no state record, so its ENI cannot be verified by MAC`,
    );
  else if (!g.ownedMacs.has(mac)) v.unlessForced.push("no managed ENI owns it");
  return v;
}
