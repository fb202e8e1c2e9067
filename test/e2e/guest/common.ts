// What the guest scenarios share: this boot's plan, the eni-dpdk config they write, and the checks
// of NIC state, the SR-IOV file and `status --json` against the real sysfs.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { bdfOf, SG_ID, SUBNET_ID, type BootPlan, type NicSpec } from "../topology.js";
import {
  cli,
  CONFIG,
  findObjects,
  fmtNic,
  hasValue,
  parseJson,
  PCIDP,
  read,
  stateOf,
  Step,
  type NicState,
} from "./lib.js";

export const plan = JSON.parse(readFileSync("/opt/e2e/plan.json", "utf8")) as BootPlan;
export const nic = (name: string): NicSpec => plan.nics.find((n) => n.name === name)!;

// ---- the emulated instance ------------------------------------------------------------------------

export interface EniSpec {
  name: string;
  /** "external": attached by the launch template; eni-dpdk binds it and makes no EC2 call */
  attach?: "external";
  index: number;
  dpdk: boolean;
  mtu?: number;
  resource?: string;
  pci?: string;
}

export function configToml(enis: EniSpec[], dpdk: Record<string, string | number> = {}): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [
    "# written by the e2e guest program",
    "[service]",
    'sources = ["file"]',
    "timeout_seconds = 150",
    "[dpdk]",
    'driver = "vfio-pci"',
    'noiommu = "auto"',
    ...Object.entries(dpdk).map(([k, v]) => `${k} = ${typeof v === "number" ? v : q(v)}`),
    "[sriov]",
    `config_path = ${q(PCIDP)}`,
    'resource_prefix = "amazon.com"',
  ];
  for (const e of enis) {
    lines.push(
      "",
      "[[eni]]",
      `name = ${q(e.name)}`,
      ...(e.attach ? [`attach = ${q(e.attach)}`] : []),
      `device_index = ${e.index}`,
      `subnet_id = ${q(SUBNET_ID)}`,
      `security_group_ids = [${q(SG_ID)}]`,
    );
    if (e.mtu) lines.push(`mtu = ${e.mtu}`);
    lines.push("[eni.dpdk]", `enabled = ${e.dpdk}`);
    if (e.dpdk) lines.push(`resource_name = ${q(e.resource ?? "amazon.com/e2e_dpdk")}`);
    if (e.pci) lines.push(`pci_address = ${q(e.pci)}`);
  }
  return lines.join("\n") + "\n";
}

export function writeConfig(toml: string): void {
  mkdirSync("/etc/eni-dpdk", { recursive: true });
  writeFileSync(CONFIG, toml);
}

// ---- shared checks ---------------------------------------------------------------------------------

export const S1_ENIS: EniSpec[] = [
  { name: "dpdk1", index: 1, dpdk: true },
  { name: "dpdk2", index: 2, dpdk: true },
  { name: "kern1", index: 3, dpdk: false, mtu: 8500 },
];

export function snapshot(): Record<string, NicState> {
  return Object.fromEntries(plan.nics.map((n) => [n.name, stateOf(n)]));
}

export function sameNic(a: NicState, b: NicState): boolean {
  return (
    a.driver === b.driver &&
    a.override === b.override &&
    a.netdev === b.netdev &&
    a.mtu === b.mtu &&
    a.up === b.up &&
    a.vfioNode === b.vfioNode
  );
}

export function checkBoundVfio(st: Step, n: NicSpec): void {
  const s = stateOf(n);
  st.note(fmtNic(n.name, s));
  st.check(
    s.driver === "vfio-pci" && !s.netdev,
    `${n.name} (${n.model}) is on vfio-pci with no netdev`,
  );
  st.check(
    !!s.vfioNode?.startsWith("/dev/vfio/noiommu-") && s.groupName === "vfio-noiommu",
    `${n.name} has ${s.vfioNode ?? "no node"} (iommu group name ${s.groupName})`,
  );
}

export function checkSriov(st: Step, dpdk: NicSpec[], resource = "e2e_dpdk"): void {
  const doc = parseJson(read(PCIDP)) as { resourceList?: Record<string, unknown>[] } | undefined;
  const entries = (doc?.resourceList ?? []).filter((e) => e.resourceName === resource);
  st.note(`${PCIDP}: ${JSON.stringify(entries).slice(0, 600)}`);
  st.check(
    entries.length === 1 && entries[0].resourcePrefix === "amazon.com",
    `one resourceList entry amazon.com/${resource}`,
  );
  const selectors = entries.flatMap((e) =>
    Array.isArray(e.selectors) ? e.selectors : [e.selectors],
  ) as Record<string, string[] | undefined>[];
  for (const n of dpdk) {
    const bdf = bdfOf(n);
    const ok = selectors.some(
      (s) =>
        s.pciAddresses?.includes(bdf) &&
        s.vendors?.includes(n.vendor) &&
        s.devices?.includes(n.device) &&
        s.drivers?.includes("vfio-pci"),
    );
    st.check(
      ok,
      `SR-IOV selector lists ${bdf} with vendor ${n.vendor}, device ${n.device}, driver vfio-pci`,
    );
  }
}

export async function checkStatusAgrees(
  st: Step,
  bound: NicSpec[],
  notBound: NicSpec[],
): Promise<void> {
  const r = await cli("status", "--json");
  const doc = parseJson(r.stdout);
  st.check(
    r.code === 0 && doc !== undefined,
    `status --json exits 0 with JSON (exit ${r.code}, ${r.ms} ms)`,
  );
  for (const n of bound) {
    const objs = findObjects(doc, (o) => hasValue(o, bdfOf(n)) && hasValue(o, "vfio-pci"));
    st.check(
      objs.length > 0,
      `status --json shows ${bdfOf(n)} on vfio-pci: ${JSON.stringify(objs[0] ?? null).slice(0, 300)}`,
    );
  }
  for (const n of notBound) {
    const wrong = findObjects(
      doc,
      (o) =>
        (hasValue(o, bdfOf(n)) || hasValue(o, n.mac)) &&
        hasValue(o, "vfio-pci") &&
        !("originalDriver" in o && o.originalDriver === "vfio-pci"),
    );
    st.check(
      wrong.length === 0,
      `status --json does not claim ${n.name} (${bdfOf(n)}) is on vfio-pci`,
    );
  }
}
