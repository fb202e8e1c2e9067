// Kernel setup for DPDK: modules (modprobe with argv), NOIOMMU verified in sysfs, hugepages verified
// against what the kernel really allocated, and a write-combining report for ENA's LLQ BAR.
import { ENA_DPDK_DEVICE_IDS, ENA_VENDOR, type DpdkDriver, isDpdkDriver } from "../config/facts.js";
import { OpError } from "../core/errors.js";
import { type Host } from "./host.js";
import { run } from "../core/process.js";
import type { Logger } from "../core/log.js";
import type { Action } from "../core/action.js";
import { PCI_DEVICES } from "./pci.js";

export const NOIOMMU_PARAM = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";
export const HUGEPAGES_DIR = "/sys/kernel/mm/hugepages";
export const WC_FIX_URL =
  "https://github.com/amzn/amzn-drivers/tree/master/userspace/dpdk/enav2-vfio-patch";

export interface KernelFacts {
  iommuPresent: boolean;
  /** sys/module/vfio exists (loaded or built in) */
  vfioLoaded: boolean;
  /** "Y"/"N" as the parameter reads, "absent" when vfio is loaded without it, "not-loaded" */
  noiommu: "Y" | "N" | "absent" | "not-loaded";
  /** PCI drivers registered (sys/bus/pci/drivers) among the DPDK ones */
  dpdkDrivers: string[];
}

export async function readKernelFacts(host: Host): Promise<KernelFacts> {
  const vfioLoaded = await host.exists("/sys/module/vfio");
  const param = await host.attr(NOIOMMU_PARAM);
  const drivers = await host.list("/sys/bus/pci/drivers");
  return {
    iommuPresent: (await host.list("/sys/class/iommu")).length > 0,
    vfioLoaded,
    noiommu: param === "Y" || param === "N" ? param : vfioLoaded ? "absent" : "not-loaded",
    dpdkDrivers: drivers.filter(isDpdkDriver),
  };
}

/** NOIOMMU is needed with "on", and with "auto" when the host has no IOMMU. */
export function needsNoiommu(mode: "auto" | "on" | "off", iommuPresent: boolean): boolean {
  return mode === "on" || (mode === "auto" && !iommuPresent);
}

const MODULE_OF: Record<DpdkDriver, string> = {
  "vfio-pci": "vfio-pci",
  uio_pci_generic: "uio_pci_generic",
  igb_uio: "igb_uio",
};

/** What setupKernel would do, as actions; empty when the kernel is ready. */
export async function planKernel(
  host: Host,
  drivers: DpdkDriver[],
  noiommu: "auto" | "on" | "off",
): Promise<Action[]> {
  const f = await readKernelFacts(host);
  const out: Action[] = [];
  for (const d of new Set(drivers)) {
    if (!f.dpdkDrivers.includes(d))
      out.push({
        stage: "host",
        kind: "load-module",
        target: MODULE_OF[d],
        detail: `modprobe ${MODULE_OF[d]}${d === "igb_uio" ? " wc_activate=1" : ""}`,
      });
    if (d === "vfio-pci" && needsNoiommu(noiommu, f.iommuPresent) && f.noiommu !== "Y") {
      out.push({
        stage: "host",
        kind: "enable-noiommu",
        target: NOIOMMU_PARAM,
        detail: `no IOMMU on this host (noiommu = "${noiommu}"): vfio NOIOMMU mode, verified to read Y`,
      });
    }
  }
  return out;
}

export interface KernelSetupResult {
  changed: boolean;
  noiommu: boolean;
  iommuPresent: boolean;
}

let securityNoticeLogged = false;

/**
 * Load the modules the drivers need and enable NOIOMMU when required, verifying in sysfs. Throws an
 * OpError before any device is touched when the kernel cannot do it (e.g. built without NOIOMMU:
 * modprobe then exits 0 and silently ignores the option).
 */
export async function setupKernel(
  host: Host,
  opts: { drivers: DpdkDriver[]; noiommu: "auto" | "on" | "off"; log: Logger },
): Promise<KernelSetupResult> {
  const modprobe = [host.program("modprobe")];
  const log = opts.log;
  let changed = false;
  let f = await readKernelFacts(host);
  const wantNoiommu =
    opts.drivers.includes("vfio-pci") && needsNoiommu(opts.noiommu, f.iommuPresent);
  if (opts.drivers.includes("vfio-pci") && opts.noiommu === "off" && !f.iommuPresent) {
    throw new OpError(
      'no IOMMU on this host (/sys/class/iommu is empty) and [dpdk].noiommu = "off": vfio-pci cannot bind',
      'set [dpdk].noiommu = "auto" (NOIOMMU mode) or use an instance type with an IOMMU',
    );
  }
  const load = async (args: string[]) => {
    const argv = [...modprobe, ...args];
    const r = await run(argv, { timeoutMs: 30_000 }).catch((e: Error) => ({
      code: 127,
      stdout: "",
      stderr: e.message,
    }));
    log.debug("modprobe", { argv, exit: r.code });
    if (r.code !== 0) {
      throw new OpError(
        `${argv.join(" ")} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
        args[0] === "igb_uio"
          ? "igb_uio is out of tree: build it from dpdk-kmods for this kernel, or use vfio-pci"
          : `install the kernel modules for $(uname -r) (e.g. kernel-modules-extra) and retry`,
        { argv },
      );
    }
    changed = true;
  };

  for (const d of new Set(opts.drivers)) {
    if (d === "vfio-pci") {
      if (!f.vfioLoaded)
        await load(wantNoiommu ? ["vfio", "enable_unsafe_noiommu_mode=1"] : ["vfio"]);
      if (!f.dpdkDrivers.includes("vfio-pci")) await load(["vfio-pci"]);
      const ready = await host.settled(
        async () =>
          (await host.exists("/sys/module/vfio")) &&
          (await host.exists("/sys/bus/pci/drivers/vfio-pci")),
      );
      if (!ready)
        throw new OpError(
          "vfio-pci is not registered after modprobe (no /sys/bus/pci/drivers/vfio-pci)",
          "check `dmesg` and `modinfo vfio-pci`",
          {},
        );
      if (wantNoiommu) {
        // the option is applied only when vfio loads; a loaded vfio takes the write instead
        let v = await host.settled(() => host.attr(NOIOMMU_PARAM), 300);
        if (v === undefined) {
          throw new OpError(
            `this kernel lacks NOIOMMU: ${NOIOMMU_PARAM} does not exist after loading vfio (CONFIG_VFIO_NOIOMMU is not set; modprobe ignores the option and exits 0)`,
            'use a kernel built with CONFIG_VFIO_NOIOMMU=y, or an instance type with an IOMMU (metal) and [dpdk].noiommu = "off"; no device was touched',
            { parameter: NOIOMMU_PARAM },
          );
        }
        if (v !== "Y") {
          await host.writeAttr(NOIOMMU_PARAM, "1");
          changed = true;
          v = await host.settled(async () =>
            (await host.attr(NOIOMMU_PARAM)) === "Y" ? "Y" : undefined,
          );
          if (v !== "Y")
            throw new OpError(
              `${NOIOMMU_PARAM} does not read Y after writing 1`,
              "check `dmesg`; no device was touched",
              {},
            );
        }
        if (!securityNoticeLogged) {
          securityNoticeLogged = true;
          log.warn(
            "vfio NOIOMMU mode is on: DPDK processes get DMA access to all memory without IOMMU isolation (kernel taint bit 64); this is the norm on EC2 instances without an IOMMU",
            { parameter: NOIOMMU_PARAM },
          );
        }
      }
    } else {
      if (!f.dpdkDrivers.includes(d))
        await load(d === "igb_uio" ? ["igb_uio", "wc_activate=1"] : [d]);
      const ready = await host.settled(() => host.exists(`/sys/bus/pci/drivers/${d}`));
      if (!ready)
        throw new OpError(
          `${d} is not registered after modprobe (no /sys/bus/pci/drivers/${d})`,
          "check `dmesg`",
          {},
        );
    }
    f = await readKernelFacts(host);
  }
  return { changed, noiommu: wantNoiommu, iommuPresent: f.iommuPresent };
}

// ---- hugepages -----------------------------------------------------------------------------------

/** Per NUMA node pools: node<N>/hugepages/hugepages-<size>kB. */
export const NUMA_NODES_DIR = "/sys/devices/system/node";

export interface HugepageInfo {
  sizeKb: number;
  total: number;
  free: number;
  /** what [dpdk] asks for of this size (0 when it asks for none) */
  requested: number;
  /** the pool on each NUMA node (the kernel spreads a global request over them) */
  nodes: { node: number; total: number; free: number }[];
}

const count = async (host: Host, file: string) => Number((await host.attr(file)) ?? 0) || 0;

export async function readHugepages(
  host: Host,
  requested: HugepageWant[] = [],
): Promise<HugepageInfo[]> {
  const numa = (await host.list(NUMA_NODES_DIR))
    .map((d) => /^node(\d+)$/.exec(d)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  const out: HugepageInfo[] = [];
  for (const d of await host.list(HUGEPAGES_DIR)) {
    const m = /^hugepages-(\d+)kB$/.exec(d);
    if (!m) continue;
    const sizeKb = Number(m[1]);
    const nodes: HugepageInfo["nodes"] = [];
    for (const node of numa) {
      const dir = `${NUMA_NODES_DIR}/node${node}/hugepages/${d}`;
      if (!(await host.exists(dir))) continue;
      nodes.push({
        node,
        total: await count(host, `${dir}/nr_hugepages`),
        free: await count(host, `${dir}/free_hugepages`),
      });
    }
    out.push({
      sizeKb,
      total: await count(host, `${HUGEPAGES_DIR}/${d}/nr_hugepages`),
      free: await count(host, `${HUGEPAGES_DIR}/${d}/free_hugepages`),
      requested: requested.find((w) => w.sizeKb === sizeKb)?.pages ?? 0,
      nodes,
    });
  }
  return out.sort((a, b) => a.sizeKb - b.sizeKb);
}

/** "node0 512, node1 188": where the kernel put a pool's pages. */
export function perNode(p: Pick<HugepageInfo, "nodes">): string {
  return p.nodes.map((n) => `node${n.node} ${n.total}`).join(", ");
}

/** hugetlbfs mount points from /proc/mounts: without one, reserved pages cannot be mapped. */
export async function hugetlbfsMounts(host: Host): Promise<string[]> {
  const text = (await host.read("/proc/mounts")) ?? "";
  return text
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === "hugetlbfs" && f[1])
    .map((f) => f[1].replace(/\\040/g, " "));
}

/**
 * Why a DPDK app on this host cannot get hugepages, or undefined when it can. The message starts
 * with "no hugepages" whatever the cause, so one grep finds it in the log, the status and STATUS=.
 */
export interface HugepageProblem {
  /** the clause the Status line carries */
  short: "none reserved" | "no hugetlbfs mounted";
  message: string;
  fix: string;
}

export async function hugepageProblem(
  host: Host,
  opts: {
    /** devices on a DPDK driver (or about to be, in a dry run) */
    dpdkDevices: number;
    /** pages a dry run would reserve: counted as reserved */
    planned?: HugepageWant[];
  },
): Promise<HugepageProblem | undefined> {
  if (opts.dpdkDevices === 0) return undefined;
  const pools = await readHugepages(host);
  const reserved = (kb: number) =>
    Math.max(
      pools.find((p) => p.sizeKb === kb)?.total ?? 0,
      opts.planned?.find((w) => w.sizeKb === kb)?.pages ?? 0,
    );
  const sizes = [...new Set([2048, 1048576, ...pools.map((p) => p.sizeKb)])].sort((a, b) => a - b);
  const devices = `${opts.dpdkDevices} device${opts.dpdkDevices === 1 ? " is" : "s are"} on a DPDK driver`;
  if (sizes.every((kb) => reserved(kb) === 0)) {
    return {
      short: "none reserved",
      message: `no hugepages: none are reserved (${sizes.map((kb) => `${label(kb)}: 0`).join(", ")}) while ${devices}; a DPDK app stops with "No free 2048 kB hugepages reported"`,
      fix: "set [dpdk].hugepages_2m (e.g. 1024 = 2 GiB) or hugepages_1g and apply before kubelet starts (it reads hugepage capacity only then: reboot, or restart kubelet after `eni-dpdk apply`); 1G pages are reliable only from the kernel command line (the AMI's packer variable hugepages_1g)",
    };
  }
  if ((await hugetlbfsMounts(host)).length === 0) {
    return {
      short: "no hugetlbfs mounted",
      message: `no hugepages usable: no hugetlbfs is mounted (none in /proc/mounts) while ${devices}; a DPDK app cannot map the reserved pages ("Cannot init EAL")`,
      fix: "systemctl start dev-hugepages.mount (or: mount -t hugetlbfs nodev /dev/hugepages)",
    };
  }
  return undefined;
}

export interface HugepageWant {
  sizeKb: number;
  pages: number;
}

export function hugepageWants(dpdk: {
  hugepages_2m: number;
  hugepages_1g: number;
}): HugepageWant[] {
  return [
    { sizeKb: 2048, pages: dpdk.hugepages_2m },
    { sizeKb: 1048576, pages: dpdk.hugepages_1g },
  ].filter((w) => w.pages > 0);
}

export async function planHugepages(host: Host, wants: HugepageWant[]): Promise<Action[]> {
  const have = await readHugepages(host);
  return wants
    .filter((w) => (have.find((h) => h.sizeKb === w.sizeKb)?.total ?? 0) < w.pages)
    .map((w) => ({
      stage: "host" as const,
      kind: "hugepages",
      target: `${HUGEPAGES_DIR}/hugepages-${w.sizeKb}kB/nr_hugepages`,
      detail: `reserve ${w.pages} × ${label(w.sizeKb)} pages (now ${have.find((h) => h.sizeKb === w.sizeKb)?.total ?? "unsupported"})`,
    }));
}

export interface HugepageResult {
  sizeKb: number;
  wanted: number;
  got: number;
  changed: boolean;
  /** warning text when the kernel allocated fewer than asked or lacks the size */
  warning?: string;
}

/**
 * Raise the persistent hugepage pools to at least the configured counts (never shrink: another user
 * of the pool may hold pages), then read back what the kernel really allocated and warn with figures.
 */
export async function applyHugepages(
  host: Host,
  wants: HugepageWant[],
  log: Logger,
): Promise<HugepageResult[]> {
  const out: HugepageResult[] = [];
  for (const w of wants) {
    const file = `${HUGEPAGES_DIR}/hugepages-${w.sizeKb}kB/nr_hugepages`;
    const before = await host.attr(file);
    if (before === undefined) {
      const warning = `the kernel does not support ${label(w.sizeKb)} hugepages (no ${file}); ${w.pages} pages not reserved`;
      log.warn(warning, { size_kb: w.sizeKb });
      out.push({ sizeKb: w.sizeKb, wanted: w.pages, got: 0, changed: false, warning });
      continue;
    }
    if (Number(before) >= w.pages) {
      out.push({ sizeKb: w.sizeKb, wanted: w.pages, got: Number(before), changed: false });
      continue;
    }
    const freeFile = `${HUGEPAGES_DIR}/hugepages-${w.sizeKb}kB/free_hugepages`;
    const freeBefore = await host.attr(freeFile);
    await host.writeAttr(file, String(w.pages));
    // the kernel answers at once on a real host; a short allocation never reaches the target
    let got = Number(
      (await host.settled(async () => {
        const v = await host.attr(file);
        return v !== undefined && /^\d+$/.test(v) && v !== before ? v : undefined;
      }, 500)) ??
        (await host.attr(file)) ??
        0,
    );
    // New pages are free as soon as they are counted: on a real kernel before the write returns, on
    // the simulated one a moment later (which then also rewrites nr_hugepages with what it got).
    if (got > Number(before)) {
      await host.settled(async () =>
        (await host.attr(freeFile)) !== freeBefore ? true : undefined,
      );
      got = Number((await host.attr(file)) ?? got);
    }
    const r: HugepageResult = { sizeKb: w.sizeKb, wanted: w.pages, got, changed: true };
    if (got < w.pages) {
      const pool = (await readHugepages(host)).find((p) => p.sizeKb === w.sizeKb);
      const where = pool?.nodes.length ? `, per NUMA node ${perNode(pool)}` : "";
      r.warning = `the kernel allocated ${got} of ${w.pages} ${label(w.sizeKb)} hugepages (${mib(got * w.sizeKb)} of ${mib(w.pages * w.sizeKb)})${where}: memory is fragmented or short; reserve them at boot (kernel command line hugepages=) for the full count`;
      log.warn(r.warning, { size_kb: w.sizeKb, wanted: w.pages, got });
    } else {
      log.info("hugepages reserved", { size_kb: w.sizeKb, pages: got });
    }
    out.push(r);
  }
  return out;
}

export function label(kb: number): string {
  return kb >= 1048576 ? `${kb / 1048576}G` : `${kb / 1024}M`;
}
function mib(kb: number): string {
  return `${Math.round(kb / 1024)} MiB`;
}

// ---- write-combining ------------------------------------------------------------------------------

export const PAT_LIST = "/sys/kernel/debug/x86/pat_memtype_list";
export const OSRELEASE = "/proc/sys/kernel/osrelease";

export interface WcReport {
  /**
   * write-combining / uncached: seen in the PAT list while a process maps the LLQ BAR;
   * expected: what this kernel (or an out-of-tree vfio-pci) is known to do, not yet observed;
   * unknown: no evidence either way (`check` says how to get it); n/a: no ENA device on vfio-pci.
   */
  state: "write-combining" | "uncached" | "expected" | "unknown" | "n/a";
  detail: string;
  /** the exact command that settles it, while a DPDK app runs */
  check?: string;
  /** only where it applies: the patch script is not offered on AL2023, where it does not work */
  fix?: string;
}

/**
 * Amazon Linux 2023's 6.1 kernels map ENA's prefetchable BAR write-combining in vfio-pci
 * (amazonlinux/linux drivers/vfio/pci/vfio_pci_core.c, vfio_pci_core_mmap: pci_match_id(ena_pci_tbl)
 * and IORESOURCE_PREFETCH → pgprot_writecombine). Read in that source for 6.1; 6.12 and 6.18 are
 * not verified, so they are not claimed.
 */
function knownWc(osrelease: string): string | undefined {
  if (/\.amzn2023\./.test(osrelease) && /^6\.1\./.test(osrelease))
    return `Amazon Linux 2023's ${osrelease.split("-")[0]} kernel maps ENA's prefetchable BAR write-combining in vfio-pci`;
  return undefined;
}

/**
 * Whether vfio-pci maps ENA's prefetchable (LLQ) BAR write-combining, from the best evidence there
 * is: the x86 PAT list while a DPDK process maps the BAR (status runs fine beside the app), then
 * what the running kernel or an out-of-tree module is known to do, else "unknown" with the command
 * that settles it.
 */
export async function writeCombiningReport(
  host: Host,
  vfio: { bdf: string; vendor: string; device: string }[],
): Promise<WcReport> {
  const ena = vfio.filter((d) => d.vendor === ENA_VENDOR && ENA_DPDK_DEVICE_IDS.includes(d.device));
  if (ena.length === 0)
    return {
      state: "n/a",
      detail: vfio.length
        ? "no ENA device on vfio-pci (write-combining matters for ENA's LLQ)"
        : "no device is bound to vfio-pci",
    };
  const osrelease = (await host.attr(OSRELEASE)) ?? "";
  const al2023 = /\.amzn2023\./.test(osrelease);
  const bars = (
    await Promise.all(
      ena.map(async (d) =>
        (await prefetchableBars(host, d.bdf)).map((b) => ({ ...b, bdf: d.bdf })),
      ),
    )
  ).flat();
  const pat = await host.read(PAT_LIST).catch(() => undefined);
  if (pat !== undefined) {
    const ranges = parsePat(pat);
    const seen: { bar: (typeof bars)[number]; type: string }[] = [];
    for (const bar of bars)
      for (const r of ranges)
        if (r.start <= bar.end && r.end > bar.start) seen.push({ bar, type: r.type });
    if (seen.length) {
      const detail = `PAT: ${seen.map((x) => `${x.bar.bdf} BAR ${hex(x.bar.start)}: ${x.type}`).join("; ")}`;
      if (seen.every((x) => x.type === "write-combining"))
        return { state: "write-combining", detail };
      return {
        state: "uncached",
        detail: `${detail}; ENA's LLQ runs slow (high CPU) without write-combining`,
        fix: al2023
          ? "AWS's get-vfio-with-wc.sh does not build on AL2023 (amzn-drivers #348, PR #370): boot a kernel whose vfio-pci maps ENA's BAR write-combining (Amazon Linux 2023's 6.1 kernels do)"
          : `rebuild vfio-pci with write-combining: ${WC_FIX_URL} (get-vfio-with-wc.sh)`,
      };
    }
  }
  const check =
    (pat === undefined && (await host.list("/sys/kernel/debug").catch(() => ["?"])).length === 0
      ? "mount -t debugfs none /sys/kernel/debug; "
      : "") +
    `grep ${bars.map((b) => `-e '[mem ${hex(b.start)}-'`).join(" ")} ${PAT_LIST}` +
    ` (as root, while a DPDK app runs: "write-combining" or "uncached-minus")`;
  const known = knownWc(osrelease);
  if (known)
    return {
      state: "expected",
      detail: `${known}; expected, not yet observed (no live mapping in the PAT list)`,
      check,
    };
  const taints = [
    (await host.attr("/sys/module/vfio_pci/taint")) ?? "",
    (await host.attr("/sys/module/vfio_pci_core/taint")) ?? "",
  ].join("");
  if (taints.includes("O")) {
    return {
      state: "expected",
      detail:
        "vfio-pci is an out-of-tree build (module taint O), as the write-combining patch produces; expected, not yet observed (no live mapping in the PAT list)",
      check,
    };
  }
  return {
    state: "unknown",
    detail: `${pat === undefined ? "the PAT list is not readable" : "no live mapping of the LLQ BAR in the PAT list"}, and nothing is known of ${osrelease ? `kernel ${osrelease}` : "this kernel"}'s vfio-pci (upstream maps BARs uncached)`,
    check,
  };
}

const hex = (n: bigint) => `0x${n.toString(16).padStart(16, "0")}`;

function parsePat(text: string): { start: bigint; end: bigint; type: string }[] {
  const out: { start: bigint; end: bigint; type: string }[] = [];
  for (const m of text.matchAll(/\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]\s+([a-z-]+)/gi)) {
    out.push({ start: BigInt(m[1]), end: BigInt(m[2]), type: m[3] });
  }
  return out;
}

async function prefetchableBars(
  host: Host,
  bdf: string,
): Promise<{ start: bigint; end: bigint }[]> {
  const text = (await host.read(`${PCI_DEVICES}/${bdf}/resource`)) ?? "";
  const out: { start: bigint; end: bigint }[] = [];
  for (const line of text.split("\n").slice(0, 6)) {
    const [s, e, fl] = line.trim().split(/\s+/);
    if (!s || !e || !fl) continue;
    const flags = BigInt(fl);
    // IORESOURCE_MEM 0x200, IORESOURCE_PREFETCH 0x2000
    if ((flags & 0x200n) !== 0n && (flags & 0x2000n) !== 0n && BigInt(e) > BigInt(s))
      out.push({ start: BigInt(s), end: BigInt(e) });
  }
  return out;
}
