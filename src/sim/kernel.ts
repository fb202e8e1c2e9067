// A simulated Linux kernel for unit tests: a fake root laid out like real sysfs/procfs (PCI devices
// with `driver` and `iommu_group` links, class/net, module parameters, hugepages, routes) plus a
// reactor that gives writes to the attribute files the kernel's effects. The reactor listens with
// fs.watch (inotify), and reads the write-only attributes as FIFOs, so it works when the code under
// test runs in another process (the CLI).
// Effects are applied synchronously inside one handler, so a poller never sees half a transition.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { BDF_RE } from "../config/facts.js";

/** Any PCI address (config/facts.ts's, unanchored), and a read made only of them. */
const BDF_G = new RegExp(BDF_RE.source.slice(1, -1), "g");
const BDFS_RE = new RegExp(`^(?:${BDF_RE.source.slice(1, -1)}\\n?)+$`);

export interface SimNicSpec {
  bdf: string;
  mac?: string;
  vendor?: string;
  device?: string;
  /** current driver; null = none. Default: the kernel driver matching vendor:device. */
  driver?: string | null;
  ifname?: string;
  mtu?: number;
  /** IFF_UP at start */
  up?: boolean;
  /** PCI class (default 0x020000, Ethernet) */
  pciClass?: string;
}

export interface SimKernelOptions {
  /** `/sys/class/iommu` is populated and devices have real iommu groups */
  iommu?: boolean;
  /** the kernel was built with CONFIG_VFIO_NOIOMMU (the parameter exists once vfio is loaded) */
  noiommuSupport?: boolean;
  /** modules loaded at start (ena is always in) */
  loaded?: string[];
  /** modules modprobe can find */
  available?: string[];
  /** hugepages the kernel can allocate per size in kB */
  hugepageCapacity?: Record<number, number>;
  /** sizes the kernel supports (kB); default 2048 and 1048576 */
  hugepageSizes?: number[];
  /** NUMA nodes (default 1); the kernel spreads a pool over them */
  numaNodes?: number;
  /** how long the pages of a raised nr_hugepages take to be counted (a loaded machine; default 0) */
  hugepageLagMs?: number;
  /** hugetlbfs mounted at /dev/hugepages, as systemd's dev-hugepages.mount does (default true) */
  hugetlbfs?: boolean;
  /** what /proc/sys/kernel/osrelease reads (default a Debian 6.1 kernel, as the e2e guest runs) */
  osrelease?: string;
}

export interface SimWrite {
  /** host path, e.g. /sys/bus/pci/drivers_probe */
  path: string;
  value: string;
}

interface SimDevice {
  bdf: string;
  mac: string;
  vendor: string;
  device: string;
  ifname: string;
  mtu: number;
  /** iommu group when an IOMMU is present (fixed); noiommu groups come and go */
  group?: number;
  /** virtio-net: the index N of its virtioN device (the netdev hangs off that) */
  virtio?: number;
}

/** Kernel drivers and the vendor:device pairs they claim. Override-only drivers have none. */
const ID_TABLES: Record<string, string[]> = {
  ena: ["1d0f:ec20", "1d0f:ec21", "1d0f:0ec2", "1d0f:1ec2", "1d0f:0051"],
  efa: ["1d0f:efa0", "1d0f:efa1", "1d0f:efa2"],
  e1000: ["8086:100e"],
  "virtio-pci": ["1af4:1000"],
  "vfio-pci": [],
  uio_pci_generic: [],
  igb_uio: [],
};
const NETDEV_DRIVERS = new Set(["ena", "e1000", "virtio-pci"]);
/** module name → the PCI driver it registers */
const MODULE_DRIVER: Record<string, string> = {
  vfio_pci: "vfio-pci",
  uio_pci_generic: "uio_pci_generic",
  igb_uio: "igb_uio",
  ena: "ena",
  efa: "efa",
  e1000: "e1000",
  virtio_pci: "virtio-pci",
};
const PCI_ROOT = "/sys/devices/pci0000:00";

/**
 * FIFOs made ahead, per directory that roots are made in, shared by every kernel of the process
 * and removed at its exit. Node cannot make a FIFO, and each mkfifo(1) is a fork of the test
 * process: a kernel needs 5 to 13 (606 forks in input.test, 1.2 s of its CPU with a pool per
 * kernel). One mkfifo makes 64 in a directory beside the roots, on their filesystem, and each is
 * renamed into place: its own inode.
 */
const fifoPools = new Map<string, { dir: string; take(): string }>();

function fifoPoolBeside(root: string): { take(): string } {
  const parent = path.dirname(root);
  let pool = fifoPools.get(parent);
  if (pool) return pool;
  if (!fifoPools.size)
    process.once("exit", () => {
      for (const p of fifoPools.values()) fs.rmSync(p.dir, { recursive: true, force: true });
    });
  const dir = fs.mkdtempSync(path.join(parent, ".eni-dpdk-sim-fifos-"));
  const free: string[] = [];
  let made = 0;
  pool = {
    dir,
    take() {
      if (!free.length) {
        const batch = Array.from({ length: 64 }, () => path.join(dir, String(made++)));
        execFileSync("mkfifo", ["-m", "200", ...batch]);
        free.push(...batch);
      }
      return free.pop()!;
    },
  };
  fifoPools.set(parent, pool);
  return pool;
}

/** The kernel's `modalias` line for a PCI device (upper-case hex; the subsystem ids repeat the ids). */
export function modalias(vendor: string, device: string, pciClass: string): string {
  const v = vendor.toUpperCase().padStart(8, "0");
  const d = device.toUpperCase().padStart(8, "0");
  const c = pciClass.replace(/^0x/, "").toUpperCase().padStart(6, "0");
  return `pci:v${v}d${d}sv${v}sd${d}bc${c.slice(0, 2)}sc${c.slice(2, 4)}i${c.slice(4, 6)}\n`;
}

export class SimKernel {
  readonly root: string;
  /** Every write the reactor saw, in order. */
  readonly writes: SimWrite[] = [];
  /** Errors inside the reactor (a test should assert this stays empty). */
  readonly errors: Error[] = [];
  readonly modprobePath: string;
  private readonly devices = new Map<string, SimDevice>();
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private readonly lastOwnContent = new Map<string, string>();
  private readonly actionReaders = new Map<string, net.Socket>();
  private readonly failProbe = new Map<string, number>();
  private readonly slowUnbind = new Map<string, number>();
  /** vfio-pci unbinds waiting for a device's holders to let go (holdDevice) */
  private readonly heldUnbind = new Map<string, () => void>();
  private noiommuSupport: boolean;
  private readonly iommu: boolean;
  private readonly capacity: Record<number, number>;
  private readonly numaNodes: number;
  private readonly mappedBars = new Map<string, string>();
  private modprobeLines = 0;
  private nextGroup = 0;
  private closed = false;

  private constructor(
    root: string,
    private readonly opts: SimKernelOptions,
  ) {
    this.root = root;
    this.iommu = !!opts.iommu;
    this.noiommuSupport = opts.noiommuSupport ?? true;
    this.capacity = { 2048: 1_000_000, 1048576: 64, ...opts.hugepageCapacity };
    this.numaNodes = Math.max(1, opts.numaNodes ?? 1);
    // where eni-dpdk looks for modprobe under a root (Host.program), so the fake is found as the real one is
    this.modprobePath = this.p("/usr/sbin/modprobe");
  }

  static create(opts: SimKernelOptions = {}): SimKernel {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-sim-"));
    const sim = new SimKernel(root, opts);
    sim.build();
    return sim;
  }

  /** Host path → path under the fake root. */
  p(abs: string): string {
    return path.join(this.root, abs);
  }

  // ---- builder ---------------------------------------------------------------------------------

  private build(): void {
    for (const d of [
      "/sys/bus/pci/devices",
      "/sys/bus/pci/drivers",
      "/sys/class/net",
      "/sys/class/iommu",
      "/sys/kernel/iommu_groups",
      "/sys/module",
      "/proc/net",
      "/dev",
      "/run",
      "/etc",
      "/var/lib",
      "/.sim",
      "/sys/devices/virtual/net",
      "/usr/sbin",
    ]) {
      fs.mkdirSync(this.p(d), { recursive: true });
    }
    if (this.iommu) fs.mkdirSync(this.p("/sys/class/iommu/dmar0"));
    this.actionAttr("/sys/bus/pci/drivers_probe", (bdf) => this.onDriversProbe(bdf));
    fs.writeFileSync(
      this.p("/proc/net/route"),
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       \n",
    );
    fs.writeFileSync(this.p("/proc/net/ipv6_route"), "");
    // loopback, as on every kernel
    this.addVirtualNetdev("lo", "00:00:00:00:00:00");
    this.addRoute({ iface: "lo", dest: "::1/128", v6RejectDefault: true });
    const sizes = this.opts.hugepageSizes ?? [2048, 1048576];
    for (const kb of sizes) {
      const dir = `/sys/kernel/mm/hugepages/hugepages-${kb}kB`;
      fs.mkdirSync(this.p(dir), { recursive: true });
      this.writeOwn(`${dir}/nr_hugepages`, "0\n");
      this.writeOwn(`${dir}/free_hugepages`, "0\n");
      this.watch(`${dir}/nr_hugepages`, (v) => this.onHugepages(kb, v));
      for (let n = 0; n < this.numaNodes; n++) {
        const nd = `/sys/devices/system/node/node${n}/hugepages/hugepages-${kb}kB`;
        fs.mkdirSync(this.p(nd), { recursive: true });
        this.writeOwn(`${nd}/nr_hugepages`, "0\n");
        this.writeOwn(`${nd}/free_hugepages`, "0\n");
      }
    }
    fs.mkdirSync(this.p("/proc/sys/kernel"), { recursive: true });
    fs.writeFileSync(
      this.p("/proc/sys/kernel/osrelease"),
      `${this.opts.osrelease ?? "6.1.0-57-amd64"}\n`,
    );
    this.setHugetlbfs(this.opts.hugetlbfs ?? true);
    for (const m of ["ena", ...(this.opts.loaded ?? [])]) this.loadModule(m);
    const available = new Set([
      "vfio",
      "vfio_pci",
      "vfio-pci",
      "uio_pci_generic",
      "uio",
      "ena",
      ...(this.opts.available ?? []),
    ]);
    fs.mkdirSync(this.p("/.sim/available"), { recursive: true });
    for (const m of available)
      fs.writeFileSync(this.p(`/.sim/available/${m.replace(/-/g, "_")}`), "");
    this.writeOwn("/.sim/modprobe.log", "");
    this.watch("/.sim/modprobe.log", () => this.onModprobeLog(), { raw: true });
    // A fake modprobe: records its argv; the reactor loads the module. Exits 1 for unknown modules.
    const script = [
      "#!/bin/sh",
      "# fake modprobe for the simulated kernel",
      `root='${this.root}'`,
      'for a in "$@"; do case "$a" in -*|*=*) ;; *) m=$(printf %s "$a" | tr - _); if [ ! -e "$root/.sim/available/$m" ]; then echo "modprobe: FATAL: Module $a not found in directory /lib/modules/sim" >&2; exit 1; fi;; esac; done',
      'printf "%s\\n" "$*" >> "$root/.sim/modprobe.log"',
      // what a root child inherits is a security fact: record the whole environment
      'env > "$root/.sim/modprobe.env"',
      "exit 0",
      "",
    ].join("\n");
    fs.writeFileSync(this.modprobePath, script, { mode: 0o755 });
  }

  /** Hot-plug a PCI NIC (also the EC2 emulator's attach hook). */
  addNic(spec: SimNicSpec): void {
    const vendor = spec.vendor ?? "1d0f";
    const device = spec.device ?? "ec20";
    const n = this.devices.size;
    const dev: SimDevice = {
      bdf: spec.bdf,
      mac: (spec.mac ?? `02:00:00:00:01:${n.toString(16).padStart(2, "0")}`).toLowerCase(),
      vendor,
      device,
      ifname: spec.ifname ?? `eth${n + 1}`,
      mtu: spec.mtu ?? 1500,
      ...(ID_TABLES["virtio-pci"].includes(`${vendor}:${device}`)
        ? { virtio: [...this.devices.values()].filter((d) => d.virtio !== undefined).length }
        : {}),
    };
    if (this.devices.has(dev.bdf)) throw new Error(`sim: ${dev.bdf} exists`);
    this.devices.set(dev.bdf, dev);
    const dir = `${PCI_ROOT}/${dev.bdf}`;
    fs.mkdirSync(this.p(dir), { recursive: true });
    this.writeOwn(`${dir}/vendor`, `0x${vendor}\n`);
    this.writeOwn(`${dir}/device`, `0x${device}\n`);
    this.writeOwn(`${dir}/class`, `${spec.pciClass ?? "0x020000"}\n`);
    this.writeOwn(`${dir}/modalias`, modalias(vendor, device, spec.pciClass ?? "0x020000"));
    this.writeOwn(`${dir}/driver_override`, "(null)\n");
    // BAR0 registers (non-prefetchable), BAR2 LLQ memory (prefetchable, 64-bit), as on ENA
    const base = 0xfe000000 + n * 0x100000;
    const hex = (x: number) => "0x" + x.toString(16).padStart(16, "0");
    const res = [
      `${hex(base)} ${hex(base + 0x3fff)} ${hex(0x40200)}`,
      `${hex(0)} ${hex(0)} ${hex(0)}`,
      `${hex(base + 0x80000)} ${hex(base + 0xfffff)} ${hex(0x14220c)}`,
      ...Array(10).fill(`${hex(0)} ${hex(0)} ${hex(0)}`),
    ];
    this.writeOwn(`${dir}/resource`, res.join("\n") + "\n");
    this.watch(`${dir}/driver_override`, (v) => this.onOverride(dev.bdf, v));
    this.symlink(`/sys/bus/pci/devices/${dev.bdf}`, dir);
    if (this.iommu) {
      dev.group = this.nextGroup++;
      this.makeGroup(dev.group, dev.bdf, undefined);
    }
    const driver = spec.driver === undefined ? this.matchById(dev) : spec.driver;
    if (driver) {
      this.attach(dev, driver);
      if (spec.up) this.setFlags(dev.ifname, 0x1003);
    }
  }

  /**
   * Hot-unplug a PCI NIC, as when its ENI is detached: the driver lets go (netdev, vfio group and
   * device node go with it) and the device leaves sysfs.
   */
  removeNic(bdf: string): void {
    const dev = this.devices.get(bdf);
    if (!dev) throw new Error(`sim: no device ${bdf}`);
    this.detach(dev);
    const dir = this.devDir(bdf);
    this.unwatch(`${dir}/driver_override`);
    if (dev.group !== undefined)
      fs.rmSync(this.p(`/sys/kernel/iommu_groups/${dev.group}`), { recursive: true, force: true });
    fs.rmSync(this.p(`/sys/bus/pci/devices/${bdf}`), { force: true });
    fs.rmSync(this.p(dir), { recursive: true, force: true });
    this.devices.delete(bdf);
  }

  /** The PCI address of the NIC with this MAC, if one is plugged in. */
  bdfOfMac(mac: string): string | undefined {
    const m = mac.toLowerCase();
    return [...this.devices.values()].find((d) => d.mac === m)?.bdf;
  }

  /**
   * A reboot: DPDK modules are gone (and with them NOIOMMU), every override is forgotten, each NIC
   * probes its kernel driver again and gets a netdev back, and /run is empty. /etc, /var/lib persist.
   */
  reboot(): void {
    for (const dev of this.devices.values()) {
      this.detach(dev);
      this.writeOwn(`${this.devDir(dev.bdf)}/driver_override`, "(null)\n");
    }
    for (const mod of ["vfio_pci", "vfio_pci_core", "vfio", "uio_pci_generic", "igb_uio", "uio"]) {
      const drv = MODULE_DRIVER[mod];
      if (drv && this.driverLoaded(drv)) {
        for (const f of ["bind", "unbind", "new_id", "remove_id"])
          this.unwatch(`/sys/bus/pci/drivers/${drv}/${f}`);
        fs.rmSync(this.p(`/sys/bus/pci/drivers/${drv}`), { recursive: true, force: true });
      }
      if (mod === "vfio") this.unwatch("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
      fs.rmSync(this.p(`/sys/module/${mod}`), { recursive: true, force: true });
    }
    fs.rmSync(this.p("/dev/vfio"), { recursive: true, force: true });
    fs.rmSync(this.p("/run"), { recursive: true, force: true });
    fs.mkdirSync(this.p("/run"), { recursive: true });
    for (const dev of this.devices.values()) {
      const drv = this.matchById(dev);
      // a probe at boot can fail as any other (failNextProbe): the device stays driverless
      if (drv) this.probe(dev, drv);
    }
  }

  /**
   * What systemd-modules-load does early at boot, before any eni-dpdk unit: modprobe each module a
   * modules-load.d file names, with the options modprobe.d gives it (module name → its options).
   */
  loadAtBoot(modules: string[], options: Readonly<Record<string, string[]>> = {}): void {
    for (const m of modules) this.loadModule(m, options[m.replace(/-/g, "_")] ?? []);
  }

  /** Simulate the kernel with or without CONFIG_VFIO_NOIOMMU (takes effect at the next vfio load). */
  setNoiommuSupport(supported: boolean): void {
    this.noiommuSupport = supported;
    if (!supported)
      fs.rmSync(this.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), { force: true });
    else if (
      fs.existsSync(this.p("/sys/module/vfio")) &&
      !fs.existsSync(this.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"))
    ) {
      this.makeNoiommuParam(false);
    }
  }

  /** The next unbind of this device takes `ms` to complete (a NIC driver's teardown). */
  delayNextUnbind(bdf: string, ms: number): void {
    this.slowUnbind.set(bdf, ms);
  }

  /**
   * A process opens a DPDK-bound device's user-space node, as a DPDK app does: /proc/<pid>/fd/<fd>
   * links to the node and /proc/<pid>/comm names the process. While any holds a vfio-pci device,
   * its unbind does not complete: the kernel waits for the app to let go, with the writer stuck.
   * Returns the release (the process closes the node, or exits).
   */
  holdDevice(bdf: string, proc: { pid: number; comm: string; fd?: number }): () => void {
    const node = this.userNodeOf(bdf);
    if (!node) throw new Error(`holdDevice: ${bdf} has no user-space device node`);
    const dir = `/proc/${proc.pid}`;
    fs.mkdirSync(this.p(`${dir}/fd`), { recursive: true });
    fs.writeFileSync(this.p(`${dir}/comm`), `${proc.comm}\n`);
    const link = this.p(`${dir}/fd/${proc.fd ?? 3}`);
    fs.symlinkSync(node, link); // absolute, as the kernel shows it: the node in the opener's view
    return () => {
      fs.rmSync(link, { force: true });
      if (!this.holders(bdf)) this.heldUnbind.get(bdf)?.();
    };
  }

  /** The device's /dev node now: /dev/vfio/<group>, /dev/vfio/noiommu-<group> or /dev/uio<N>. */
  private userNodeOf(bdf: string): string | undefined {
    const dir = this.devDir(bdf);
    const drv = this.currentDriver(bdf);
    if (drv === "vfio-pci") {
      const g = path.basename(fs.readlinkSync(this.p(`${dir}/iommu_group`)));
      return this.iommu ? `/dev/vfio/${g}` : `/dev/vfio/noiommu-${g}`;
    }
    if (fs.existsSync(this.p(`${dir}/uio`)))
      return `/dev/${fs.readdirSync(this.p(`${dir}/uio`))[0]}`;
    return undefined;
  }

  /** How many fds of the simulated processes name the device's node. */
  private holders(bdf: string): number {
    const node = this.userNodeOf(bdf);
    let n = 0;
    for (const pid of fs.readdirSync(this.p("/proc")).filter((d) => /^\d+$/.test(d)))
      for (const fd of fs.readdirSync(this.p(`/proc/${pid}/fd`)))
        if (fs.readlinkSync(this.p(`/proc/${pid}/fd/${fd}`)) === node) n++;
    return n;
  }

  /**
   * The next `times` probes of this device fail (as vfio-pci's without NOIOMMU, or ena's at a
   * reboot): it stays driverless. Twice fails a bind's probe and its rollback's.
   */
  failNextProbe(bdf: string, times = 1): void {
    this.failProbe.set(bdf, times);
  }

  /** A route in the main table. `dest` is CIDR (IPv4 or IPv6). */
  addRoute(r: {
    iface: string;
    dest: string;
    gateway?: string;
    metric?: number;
    v6RejectDefault?: boolean;
  }): void {
    const [addr, plen] = r.dest.split("/") as [string, string];
    if (addr.includes(":")) {
      const line = [
        r.v6RejectDefault ? "0".repeat(32) : v6hex(addr),
        Number(plen).toString(16).padStart(2, "0"),
        "0".repeat(32),
        "00",
        r.gateway ? v6hex(r.gateway) : "0".repeat(32),
        (r.metric ?? 1024).toString(16).padStart(8, "0"),
        "00000001",
        "00000000",
        r.v6RejectDefault ? "00200200" : r.gateway ? "00000003" : "00000001",
        r.iface.padStart(8, " "),
      ].join(" ");
      fs.appendFileSync(this.p("/proc/net/ipv6_route"), line + "\n");
      return;
    }
    const le = (ip: string) =>
      ip
        .split(".")
        .map((o) => Number(o).toString(16).padStart(2, "0").toUpperCase())
        .reverse()
        .join("");
    const mask =
      Number(plen) === 0 ? "0.0.0.0" : intToIp((0xffffffff << (32 - Number(plen))) >>> 0);
    const flags = r.gateway ? "0003" : "0001";
    const line = [
      r.iface,
      le(addr),
      le(r.gateway ?? "0.0.0.0"),
      flags,
      "0",
      "0",
      String(r.metric ?? 0),
      le(mask),
      "0",
      "0",
      "0",
    ].join("\t");
    fs.appendFileSync(this.p("/proc/net/route"), line + "\n");
  }

  /** Remove every route through an interface. */
  clearRoutes(iface: string): void {
    const f4 = this.p("/proc/net/route");
    const lines = fs.readFileSync(f4, "utf8").split("\n");
    fs.writeFileSync(f4, lines.filter((l, i) => i === 0 || l.split("\t")[0] !== iface).join("\n"));
    const f6 = this.p("/proc/net/ipv6_route");
    fs.writeFileSync(
      f6,
      fs
        .readFileSync(f6, "utf8")
        .split("\n")
        .filter((l) => l.trim().split(/\s+/)[9] !== iface)
        .join("\n"),
    );
  }

  setHugepageCapacity(kb: number, pages: number): void {
    this.capacity[kb] = pages;
  }

  /** Mount (or unmount) hugetlbfs at /dev/hugepages: what /proc/mounts lists. */
  setHugetlbfs(mounted: boolean): void {
    const lines = [
      "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
      "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
      "/dev/nvme0n1p1 / xfs rw,noatime,attr2,inode64,logbufs=8,logbsize=32k,noquota 0 0",
      ...(mounted ? ["hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0"] : []),
    ];
    fs.writeFileSync(this.p("/proc/mounts"), lines.join("\n") + "\n");
  }

  /** Mount a fake debugfs PAT list with one entry per line. */
  setPatMemtypes(lines: string[]): void {
    fs.mkdirSync(this.p("/sys/kernel/debug/x86"), { recursive: true });
    fs.writeFileSync(
      this.p("/sys/kernel/debug/x86/pat_memtype_list"),
      "PAT memtype list:\n" + lines.join("\n") + "\n",
    );
  }

  /**
   * A DPDK app maps a device's prefetchable BAR: while it does, the kernel's PAT list (debugfs)
   * tracks the range, printed as the kernel prints it (16 hex digits, end exclusive), beside the
   * boot-time entries every x86 host has. `undefined` unmaps it.
   */
  mapBar(bdf: string, type: "write-combining" | "uncached-minus" | undefined): void {
    if (type) this.mappedBars.set(bdf, type);
    else this.mappedBars.delete(bdf);
    const line = (s: bigint, e: bigint, t: string) =>
      `PAT: [mem 0x${s.toString(16).padStart(16, "0")}-0x${e.toString(16).padStart(16, "0")}] ${t}`;
    const entries = [
      line(0xa0000n, 0xc0000n, "uncached-minus"),
      line(0xfebf0000n, 0xfebf1000n, "uncached-minus"),
      ...[...this.mappedBars].map(([b, t]) => {
        const bar = this.prefetchableBar(b);
        return line(BigInt(bar.start), BigInt(bar.end), t);
      }),
    ];
    this.setPatMemtypes(entries);
  }

  /** Physical range of a device's prefetchable BAR (for PAT fixtures). */
  prefetchableBar(bdf: string): { start: string; end: string } {
    const line = fs.readFileSync(this.p(`${PCI_ROOT}/${bdf}/resource`), "utf8").split("\n")[2];
    const [s, e] = line.split(" ");
    return { start: s, end: "0x" + (BigInt(e) + 1n).toString(16).padStart(16, "0") };
  }

  modprobeCalls(): string[] {
    return fs.readFileSync(this.p("/.sim/modprobe.log"), "utf8").split("\n").filter(Boolean);
  }

  driverOf(bdf: string): string | undefined {
    try {
      return path.basename(fs.readlinkSync(this.p(`${PCI_ROOT}/${bdf}/driver`)));
    } catch {
      return undefined;
    }
  }

  netdevOf(bdf: string): string | undefined {
    try {
      const dev = this.devices.get(bdf);
      return dev ? fs.readdirSync(this.p(this.netParent(dev)))[0] : undefined;
    } catch {
      return undefined;
    }
  }

  /** Wait until the reactor has drained (inotify delivery is asynchronous). */
  async settle(ms = 50): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }

  close(opts: { keep?: boolean } = {}): void {
    this.closed = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    for (const r of this.actionReaders.values()) r.destroy();
    this.actionReaders.clear();
    if (!opts.keep && !process.env.SIM_KEEP) fs.rmSync(this.root, { recursive: true, force: true });
  }

  // ---- kernel model ------------------------------------------------------------------------------

  private matchById(dev: SimDevice): string | undefined {
    const id = `${dev.vendor}:${dev.device}`;
    return Object.entries(ID_TABLES).find(
      ([drv, ids]) => ids.includes(id) && this.driverLoaded(drv),
    )?.[0];
  }

  private driverLoaded(drv: string): boolean {
    return fs.existsSync(this.p(`/sys/bus/pci/drivers/${drv}`));
  }

  private loadModule(name: string, params: string[] = []): void {
    const mod = name.replace(/-/g, "_");
    if (mod === "vfio_pci") this.loadModule("vfio");
    if (mod === "uio_pci_generic" || mod === "igb_uio") this.loadModule("uio");
    const fresh = !fs.existsSync(this.p(`/sys/module/${mod}`));
    if (fresh) {
      fs.mkdirSync(this.p(`/sys/module/${mod}/parameters`), { recursive: true });
      if (mod === "vfio") {
        fs.mkdirSync(this.p("/dev/vfio"), { recursive: true });
        fs.writeFileSync(this.p("/dev/vfio/vfio"), "");
        // module options apply only at load time, as with real modprobe
        if (this.noiommuSupport)
          this.makeNoiommuParam(params.some((p) => /^enable_unsafe_noiommu_mode=(1|y|Y)$/.test(p)));
      }
      if (mod === "vfio_pci") fs.writeFileSync(this.p(`/sys/module/${mod}/taint`), "\n");
    }
    const drv = MODULE_DRIVER[mod];
    if (drv && !this.driverLoaded(drv)) {
      const dir = `/sys/bus/pci/drivers/${drv}`;
      fs.mkdirSync(this.p(dir), { recursive: true });
      for (const f of ["bind", "unbind", "new_id", "remove_id"]) {
        this.actionAttr(`${dir}/${f}`, (v) => this.onDriverFile(drv, f, v));
      }
    }
  }

  private makeNoiommuParam(on: boolean): void {
    const f = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";
    this.writeOwn(f, on ? "Y\n" : "N\n");
    this.watch(f, (v) => {
      const on = /^(1|y|Y)$/.test(v.trim());
      if (!/^(0|1|y|Y|n|N)$/.test(v.trim()))
        return this.fail(`invalid noiommu value "${v.trim()}"`);
      this.writeOwn(f, on ? "Y\n" : "N\n");
    });
  }

  private noiommuOn(): boolean {
    try {
      return (
        fs
          .readFileSync(this.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), "utf8")
          .trim() === "Y"
      );
    } catch {
      return false;
    }
  }

  private devDir(bdf: string): string {
    return `${PCI_ROOT}/${bdf}`;
  }

  private currentDriver(bdf: string): string | undefined {
    return this.driverOf(bdf);
  }

  private override(bdf: string): string | undefined {
    const v = fs.readFileSync(this.p(`${this.devDir(bdf)}/driver_override`), "utf8").trim();
    return v === "(null)" || v === "" ? undefined : v;
  }

  /** Try to bind `drv` to the device; returns false when the probe fails (device left driverless). */
  private probe(dev: SimDevice, drv: string): boolean {
    const failing = this.failProbe.get(dev.bdf) ?? 0;
    if (failing > 0) {
      if (failing === 1) this.failProbe.delete(dev.bdf);
      else this.failProbe.set(dev.bdf, failing - 1);
      return false;
    }
    if (drv === "vfio-pci" && !this.iommu && !this.noiommuOn()) return false; // -22 without NOIOMMU
    this.attach(dev, drv);
    return true;
  }

  private attach(dev: SimDevice, drv: string): void {
    // Effects first, the driver link last: a reader in another process that sees the link sees
    // a finished probe (on a real kernel the write returns only after the probe).
    const dir = this.devDir(dev.bdf);
    if (NETDEV_DRIVERS.has(drv)) this.addNetdev(dev);
    if (drv === "vfio-pci") {
      if (this.iommu) {
        fs.writeFileSync(this.p(`/dev/vfio/${dev.group}`), "");
      } else {
        const g = this.nextGroup++;
        this.makeGroup(g, dev.bdf, "vfio-noiommu");
        fs.writeFileSync(this.p(`/dev/vfio/noiommu-${g}`), "");
      }
    }
    if (drv === "uio_pci_generic" || drv === "igb_uio") {
      const n = fs.readdirSync(this.p("/dev")).filter((f) => f.startsWith("uio")).length;
      fs.mkdirSync(this.p(`${dir}/uio/uio${n}`), { recursive: true });
      fs.writeFileSync(this.p(`/dev/uio${n}`), "");
    }
    this.symlink(`/sys/bus/pci/drivers/${drv}/${dev.bdf}`, dir);
    this.symlink(`${dir}/driver`, `/sys/bus/pci/drivers/${drv}`);
  }

  private detach(dev: SimDevice): void {
    const drv = this.currentDriver(dev.bdf);
    if (!drv) return;
    const dir = this.devDir(dev.bdf);
    if (NETDEV_DRIVERS.has(drv)) this.removeNetdev(dev);
    if (drv === "vfio-pci") {
      if (this.iommu) fs.rmSync(this.p(`/dev/vfio/${dev.group}`), { force: true });
      else {
        const g = path.basename(fs.readlinkSync(this.p(`${dir}/iommu_group`)));
        fs.rmSync(this.p(`/dev/vfio/noiommu-${g}`), { force: true });
        fs.rmSync(this.p(`/sys/kernel/iommu_groups/${g}`), { recursive: true, force: true });
        fs.rmSync(this.p(`${dir}/iommu_group`), { force: true });
      }
    }
    if (fs.existsSync(this.p(`${dir}/uio`))) {
      for (const u of fs.readdirSync(this.p(`${dir}/uio`)))
        fs.rmSync(this.p(`/dev/${u}`), { force: true });
      fs.rmSync(this.p(`${dir}/uio`), { recursive: true, force: true });
    }
    fs.rmSync(this.p(`/sys/bus/pci/drivers/${drv}/${dev.bdf}`), { force: true });
    fs.rmSync(this.p(`${dir}/driver`), { force: true });
  }

  private makeGroup(g: number, bdf: string, name: string | undefined): void {
    const gdir = `/sys/kernel/iommu_groups/${g}`;
    fs.mkdirSync(this.p(`${gdir}/devices`), { recursive: true });
    if (name) fs.writeFileSync(this.p(`${gdir}/name`), name + "\n");
    this.symlink(`${gdir}/devices/${bdf}`, this.devDir(bdf));
    this.symlink(`${this.devDir(bdf)}/iommu_group`, gdir);
  }

  private addVirtualNetdev(ifname: string, mac: string): void {
    const dir = `/sys/devices/virtual/net/${ifname}`;
    fs.mkdirSync(this.p(dir), { recursive: true });
    this.writeOwn(`${dir}/address`, mac + "\n");
    this.writeOwn(`${dir}/mtu`, "65536\n");
    this.writeOwn(`${dir}/type`, "772\n"); // ARPHRD_LOOPBACK
    this.writeOwn(`${dir}/flags`, "0x9\n");
    this.writeOwn(`${dir}/operstate`, "unknown\n");
    this.symlink(`/sys/class/net/${ifname}`, dir);
  }

  /**
   * Where the device's netdev directory lives: `<dev>/net`, or for virtio-net `<dev>/virtioN/net`
   * (the kernel's virtio bus puts a virtio device between the PCI function and the netdev).
   */
  private netParent(dev: SimDevice): string {
    return dev.virtio === undefined
      ? `${this.devDir(dev.bdf)}/net`
      : `${this.devDir(dev.bdf)}/virtio${dev.virtio}/net`;
  }

  private addNetdev(dev: SimDevice): void {
    const dir = `${this.netParent(dev)}/${dev.ifname}`;
    fs.mkdirSync(this.p(dir), { recursive: true });
    this.writeOwn(`${dir}/address`, dev.mac + "\n");
    this.writeOwn(`${dir}/mtu`, `${dev.mtu}\n`);
    this.writeOwn(`${dir}/type`, "1\n"); // ARPHRD_ETHER
    this.writeOwn(`${dir}/flags`, "0x1002\n");
    this.writeOwn(`${dir}/operstate`, "down\n");
    // spelled as the kernel does: the PCI function, or the virtio device under it
    const parent = dev.virtio === undefined ? dev.bdf : `virtio${dev.virtio}`;
    fs.symlinkSync(`../../../${parent}`, this.p(`${dir}/device`));
    this.symlink(`/sys/class/net/${dev.ifname}`, dir);
    this.watch(`${dir}/mtu`, (v) => this.onMtu(dev, v));
    this.watch(`${dir}/flags`, (v) => this.onFlags(dev, v));
  }

  private removeNetdev(dev: SimDevice): void {
    const dir = `${this.netParent(dev)}/${dev.ifname}`;
    for (const f of ["mtu", "flags"]) this.unwatch(`${dir}/${f}`);
    fs.rmSync(this.p(`/sys/class/net/${dev.ifname}`), { force: true });
    // unbinding virtio-pci removes the virtio device along with its netdev
    const gone =
      dev.virtio === undefined
        ? this.netParent(dev)
        : `${this.devDir(dev.bdf)}/virtio${dev.virtio}`;
    fs.rmSync(this.p(gone), { recursive: true, force: true });
    this.clearRoutes(dev.ifname);
  }

  private setFlags(ifname: string, flags: number): void {
    const dir = fs.realpathSync(this.p(`/sys/class/net/${ifname}`)).slice(this.root.length);
    this.writeOwn(`${dir}/flags`, `0x${flags.toString(16)}\n`);
    this.writeOwn(`${dir}/operstate`, flags & 1 ? "up\n" : "down\n");
  }

  // ---- reactor ------------------------------------------------------------------------------------

  private onDriversProbe(bdf: string): void {
    const dev = this.devices.get(bdf);
    if (!dev) return this.fail(`drivers_probe: no device ${bdf}`);
    if (this.currentDriver(bdf)) return; // already bound: the kernel does nothing
    const ov = this.override(bdf);
    const drv = ov ?? this.matchById(dev);
    if (!drv || !this.driverLoaded(drv)) return;
    this.probe(dev, drv);
  }

  private onDriverFile(drv: string, file: string, value: string): void {
    if (file === "new_id" || file === "remove_id") return; // recorded in the journal; tests assert it never happens
    const dev = this.devices.get(value);
    if (!dev) return this.fail(`${drv}/${file}: no device ${value}`);
    if (file === "unbind") {
      if (this.currentDriver(value) !== drv)
        return this.fail(`${drv}/unbind: ${value} is not bound to ${drv} (ENODEV)`);
      if (drv === "vfio-pci" && this.holders(value)) {
        // vfio_unregister_group_dev: the unbind completes once the last holder closes the node
        this.heldUnbind.set(value, () => {
          this.heldUnbind.delete(value);
          if (!this.closed) this.detach(dev);
        });
        return;
      }
      const slow = this.slowUnbind.get(value);
      if (slow === undefined) this.detach(dev);
      else {
        this.slowUnbind.delete(value);
        setTimeout(() => this.closed || this.detach(dev), slow).unref();
      }
      return;
    }
    // bind: the kernel refuses when bound already or when the override names another driver
    if (this.currentDriver(value)) return this.fail(`${drv}/bind: ${value} already bound (EBUSY)`);
    const ov = this.override(value);
    if (ov && ov !== drv) return;
    if (!ov && !ID_TABLES[drv]?.includes(`${dev.vendor}:${dev.device}`)) return;
    this.probe(dev, drv);
  }

  private onOverride(bdf: string, v: string): void {
    const f = `${this.devDir(bdf)}/driver_override`;
    const t = v.trim();
    this.writeOwn(f, t === "" ? "(null)\n" : `${t}\n`);
  }

  private onMtu(dev: SimDevice, v: string): void {
    const mtu = Number(v.trim());
    const f = `${this.netParent(dev)}/${dev.ifname}/mtu`;
    if (!Number.isInteger(mtu) || mtu < 128 || mtu > 9216) {
      this.writeOwn(f, `${dev.mtu}\n`);
      return this.fail(`mtu ${v.trim()} rejected (EINVAL)`);
    }
    dev.mtu = mtu;
    this.writeOwn(f, `${mtu}\n`);
  }

  private onFlags(dev: SimDevice, v: string): void {
    const flags = Number(v.trim());
    if (!Number.isInteger(flags)) return this.fail(`flags ${v.trim()} rejected (EINVAL)`);
    this.setFlags(dev.ifname, flags);
  }

  private onHugepages(kb: number, v: string): void {
    const lag = this.opts.hugepageLagMs ?? 0;
    if (lag > 0) return void setTimeout(() => !this.closed && this.countHugepages(kb, v), lag);
    this.countHugepages(kb, v);
  }

  private countHugepages(kb: number, v: string): void {
    const want = Number(v.trim());
    const dir = `/sys/kernel/mm/hugepages/hugepages-${kb}kB`;
    const got = Number.isInteger(want) && want >= 0 ? Math.min(want, this.capacity[kb] ?? 0) : 0;
    // per node first: a reader that sees the global count sees the nodes that make it up
    for (let n = 0; n < this.numaNodes; n++) {
      const share = Math.floor(got / this.numaNodes) + (n < got % this.numaNodes ? 1 : 0);
      const nd = `/sys/devices/system/node/node${n}/hugepages/hugepages-${kb}kB`;
      this.writeOwn(`${nd}/nr_hugepages`, `${share}\n`);
      this.writeOwn(`${nd}/free_hugepages`, `${share}\n`);
    }
    this.writeOwn(`${dir}/nr_hugepages`, `${got}\n`);
    this.writeOwn(`${dir}/free_hugepages`, `${got}\n`);
  }

  private onModprobeLog(): void {
    const lines = fs.readFileSync(this.p("/.sim/modprobe.log"), "utf8").split("\n").filter(Boolean);
    for (const line of lines.slice(this.modprobeLines)) {
      const args = line.split(" ").filter((a) => !a.startsWith("-"));
      const [mod, ...params] = args;
      if (mod) this.loadModule(mod, params);
    }
    this.modprobeLines = lines.length;
  }

  // ---- plumbing -----------------------------------------------------------------------------------

  private writeOwn(abs: string, content: string, mode = 0o644): void {
    const f = this.p(abs);
    fs.writeFileSync(f, content, { mode });
    this.lastOwnContent.set(f, content);
  }

  /**
   * Watch an attribute file; `fn` runs for each write made by someone other than the sim. They are
   * told apart from our own normalised content (the product writes values without the trailing
   * newline the kernel shows).
   */
  private watch(abs: string, fn: (value: string) => void, o: { raw?: boolean } = {}): void {
    const f = this.p(abs);
    if (this.watchers.has(f)) return;
    const w = fs.watch(f, { persistent: false }, () => {
      if (this.closed) return;
      try {
        if (o.raw) return fn("");
        let v: string;
        try {
          v = fs.readFileSync(f, "utf8");
        } catch {
          return; // removed meanwhile (netdev gone)
        }
        if (v === "") return; // a writer's O_TRUNC (its data follows)
        if (v === this.lastOwnContent.get(f)) return; // our own write
        this.writes.push({ path: abs, value: v.replace(/\n$/, "") });
        fn(v);
      } catch (e) {
        this.errors.push(e as Error);
      }
    });
    this.watchers.set(f, w);
  }

  /**
   * A write-only attribute (bind, unbind, drivers_probe, new_id) is a FIFO: the kernel acts on each
   * write, and so does the reactor, even on two writes a moment apart (two binds at once). A plain
   * file would keep the last value only, and inotify merges the events of writes it has not yet
   * delivered.
   */
  private actionAttr(abs: string, fn: (value: string) => void): void {
    const f = this.p(abs);
    if (this.actionReaders.has(f)) return;
    fs.rmSync(f, { force: true });
    this.newFifo(f);
    // read-write: a writer's open never waits for a reader, and the reader never sees end-of-file
    const fd = fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const reader = new net.Socket({ fd, readable: true, writable: false });
    reader.unref();
    reader.on("error", (e) => this.errors.push(e));
    reader.on("data", (chunk: Buffer) => {
      if (this.closed) return;
      for (const value of splitWrites(chunk.toString("utf8"))) {
        this.writes.push({ path: abs, value });
        try {
          fn(value);
        } catch (e) {
          this.errors.push(e as Error);
        }
      }
    });
    this.actionReaders.set(f, reader);
  }

  /** A new FIFO (mode 0200) at `f`, from the pool beside the root (fifoPoolBeside). */
  private newFifo(f: string): void {
    fs.renameSync(fifoPoolBeside(this.root).take(), f);
  }

  private unwatch(abs: string): void {
    const f = this.p(abs);
    this.watchers.get(f)?.close();
    this.watchers.delete(f);
    this.actionReaders.get(f)?.destroy();
    this.actionReaders.delete(f);
  }

  private symlink(linkAbs: string, targetAbs: string): void {
    const l = this.p(linkAbs);
    fs.rmSync(l, { force: true });
    fs.symlinkSync(path.relative(path.dirname(l), this.p(targetAbs)), l);
  }

  private fail(msg: string): void {
    this.errors.push(new Error(`sim kernel: ${msg}`));
  }
}

/**
 * The writes a FIFO read returned: each is one value (a PCI address, or `vendor device`), and a read
 * may hold several; PCI addresses, having a fixed length, are split even without a newline.
 */
function splitWrites(data: string): string[] {
  const bdfs = BDFS_RE.test(data) ? data.match(BDF_G) : null;
  return bdfs ?? data.split("\n").filter((v) => v.trim() !== "");
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

/** Expand an IPv6 address to 32 hex digits. */
function v6hex(addr: string): string {
  const [head, tail] = addr.includes("::") ? addr.split("::") : [addr, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const fill = tail !== undefined ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t]
    .map((g) => g.padStart(4, "0"))
    .join("")
    .toLowerCase();
}

/** A test binding script (dpdk-devbind.py stand-in) that exits 0 whatever happens. */
export function writeFakeBindingScript(
  sim: SimKernel,
  behaviour: "nothing" | "unbind-only" | "works" | "dies-after-unbind",
): string {
  const file = sim.p(`/.sim/devbind-${behaviour}`);
  const r = sim.root;
  // argv: --force --bind DRIVER BDF
  const body: Record<typeof behaviour, string[]> = {
    nothing: ['echo "Warning: routing table indicates that interface is active. Not modifying"'],
    "unbind-only": [
      `d=$(readlink "${r}/sys/bus/pci/devices/$bdf/driver")`,
      `[ -n "$d" ] && printf %s "$bdf" > "${r}/sys/bus/pci/devices/$bdf/driver/unbind"`,
      "echo 'Error: bind failed'",
    ],
    works: [
      `d=$(readlink "${r}/sys/bus/pci/devices/$bdf/driver")`,
      `if [ -n "$d" ]; then printf %s "$bdf" > "${r}/sys/bus/pci/devices/$bdf/driver/unbind"; sleep 0.1; fi`,
      `printf %s "$drv" > "${r}/sys/bus/pci/devices/$bdf/driver_override"; sleep 0.1`,
      `printf %s "$bdf" > "${r}/sys/bus/pci/drivers_probe"; sleep 0.1`,
      `printf '\\n' > "${r}/sys/bus/pci/devices/$bdf/driver_override"`,
    ],
    // killed (as by the OOM killer) after its unbind and override, before its probe
    "dies-after-unbind": [
      `printf %s "$drv" > "${r}/sys/bus/pci/devices/$bdf/driver_override"; sleep 0.1`,
      `printf %s "$bdf" > "${r}/sys/bus/pci/devices/$bdf/driver/unbind"; sleep 0.1`,
      "kill -9 $$",
    ],
  };
  const script = [
    "#!/bin/sh",
    'drv=""; bdf=""',
    'while [ $# -gt 0 ]; do case "$1" in --bind) drv="$2"; shift;; -*) ;; *) bdf="$1";; esac; shift; done',
    `printf "%s %s\\n" "$drv" "$bdf" >> "${r}/.sim/devbind.log"`,
    ...body[behaviour],
    "exit 0",
    "",
  ].join("\n");
  fs.writeFileSync(file, script, { mode: 0o755 });
  return file;
}

/** Run a command synchronously in tests (helper for shell-free invocations). */
export function sh(argv: string[]): string {
  return execFileSync(argv[0], argv.slice(1), { encoding: "utf8" });
}
