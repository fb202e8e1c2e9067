// One QEMU guest under TCG (no KVM on these machines): q35, -nodefaults, serial console to a file,
// a 9p share for results, NICs on QEMU user networking with restrict=on (no traffic leaves QEMU),
// and a QMP socket for hot-plug.
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import type { NicSpec } from "./topology.js";

export interface VmOptions {
  name: string;
  kernel: string;
  initrd: string;
  /** extra kernel command line */
  append: string;
  dir: string;
  nics: NicSpec[];
  /** guestfwd rules for the primary NIC's user network, e.g. tcp:10.0.2.100:80-tcp:127.0.0.1:1234 */
  guestfwd?: string[];
  /** pcie-root-ports to pre-create for hot-plug, by id */
  rootPorts?: string[];
  /** netdev ids to pre-create for hot-plugged NICs */
  spareNetdevs?: string[];
  /** NICs (by name) on one QEMU hub instead of user networking: each receives what the others send */
  hub?: string[];
  /** a raw disk image as virtio-blk /dev/vda */
  disk?: string;
  memoryMb?: number;
  timeoutMs: number;
}

export class Vm {
  readonly serialPath: string;
  readonly outDir: string;
  private proc?: ChildProcess;
  private exited?: Promise<number | null>;
  private qmpPath: string;
  private qmpSock?: net.Socket;
  private qmpBuf = "";
  private qmpWaiters: ((msg: Record<string, unknown>) => void)[] = [];
  readonly qmpEvents: Record<string, unknown>[] = [];
  startedAt = 0;

  constructor(readonly opts: VmOptions) {
    this.serialPath = path.join(opts.dir, "serial.log");
    this.outDir = path.join(opts.dir, "out");
    this.qmpPath = path.join(opts.dir, "qmp.sock");
  }

  args(): string[] {
    const o = this.opts;
    const a = [
      "-machine",
      "q35,accel=tcg",
      "-cpu",
      "max",
      "-m",
      String(o.memoryMb ?? 1024),
      "-smp",
      "1",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-no-reboot",
      "-monitor",
      "none",
      "-serial",
      `file:${this.serialPath}`,
      "-qmp",
      `unix:${this.qmpPath},server=on,wait=off`,
      "-kernel",
      o.kernel,
      "-initrd",
      o.initrd,
      "-append",
      `console=ttyS0 panic=-1 quiet loglevel=4 ${o.append}`.trim(),
      "-fsdev",
      `local,id=out,path=${this.outDir},security_model=none`,
      "-device",
      "virtio-9p-pci,fsdev=out,mount_tag=out,addr=0x2",
    ];
    o.nics.forEach((n, i) => {
      const fwd =
        i === 0 && o.guestfwd?.length ? o.guestfwd.map((g) => `,guestfwd=${g}`).join("") : "";
      const onHub = o.hub?.includes(n.name) ?? false;
      // Only the primary's network has IPv6: slirp's router advertisements would otherwise give every
      // ENI an IPv6 default route, and eni-dpdk rightly refuses to bind a NIC that carries one.
      a.push(
        "-netdev",
        onHub
          ? `hubport,id=net-${n.name},hubid=0`
          : `user,id=net-${n.name},restrict=on${i === 0 ? "" : ",ipv6=off"}${fwd}`,
      );
      // With QEMU's autonegotiation DPDK's e1000 driver reports the 82540EM's link down (it still
      // forwards); off, it reports up. e1000e has no such property and reports up anyway.
      const link = onHub && n.model === "e1000" ? ",autonegotiation=off" : "";
      a.push(
        "-device",
        `${n.model},netdev=net-${n.name},mac=${n.mac},addr=0x${n.slot.toString(16)},id=${n.name},romfile=${link}`,
      );
    });
    (o.rootPorts ?? []).forEach((id, i) =>
      a.push(
        "-device",
        `pcie-root-port,id=${id},chassis=${i + 1},slot=${i + 1},addr=0x${(0x10 + i).toString(16)}`,
      ),
    );
    for (const id of o.spareNetdevs ?? []) a.push("-netdev", `user,id=${id},restrict=on,ipv6=off`);
    if (o.disk)
      a.push(
        "-drive",
        `file=${o.disk},format=raw,if=none,id=disk0,cache=unsafe`,
        "-device",
        "virtio-blk-pci,drive=disk0,addr=0x1e",
      );
    return a;
  }

  async start(): Promise<void> {
    await fs.mkdir(this.outDir, { recursive: true });
    await fs.rm(this.serialPath, { force: true });
    await fs.rm(this.qmpPath, { force: true });
    this.startedAt = Date.now();
    const p = spawn("qemu-system-x86_64", this.args(), { stdio: ["ignore", "inherit", "pipe"] });
    this.proc = p;
    let stderr = "";
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    this.exited = new Promise((resolve) =>
      p.on("exit", (code) => {
        if (stderr.trim()) void fs.appendFile(this.serialPath, `\n[qemu stderr] ${stderr}`);
        resolve(code);
      }),
    );
  }

  /** Wait for the guest to power off (or kill it at the timeout). Returns QEMU's exit code or "timeout". */
  async wait(): Promise<number | null | "timeout"> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">(
      (r) => (timer = setTimeout(() => r("timeout"), this.opts.timeoutMs)),
    );
    const r = await Promise.race([this.exited!, timeout]);
    clearTimeout(timer);
    if (r === "timeout") {
      this.proc?.kill("SIGKILL");
      await this.exited;
    }
    this.qmpSock?.destroy();
    return r;
  }

  async serial(): Promise<string> {
    return fs.readFile(this.serialPath, "utf8").catch(() => "");
  }

  /** Poll the serial log until `re` matches (or the VM exits / the timeout passes). */
  async waitSerial(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray | undefined> {
    const end = Date.now() + timeoutMs;
    let done = false;
    void this.exited!.then(() => (done = true));
    while (Date.now() < end) {
      const m = (await this.serial()).match(re);
      if (m) return m;
      if (done) return undefined;
      await new Promise((r) => setTimeout(r, 250));
    }
    return undefined;
  }

  // ---- QMP ---------------------------------------------------------------------------------------

  private async qmpConnect(): Promise<void> {
    if (this.qmpSock) return;
    for (let i = 0; i < 100; i++) {
      try {
        await new Promise<void>((resolve, reject) => {
          const s = net.createConnection(this.qmpPath, () => {
            this.qmpSock = s;
            resolve();
          });
          s.on("error", reject);
          s.on("data", (d) => this.onQmpData(d.toString()));
        });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (!this.qmpSock) throw new Error(`QMP socket ${this.qmpPath} did not open`);
    await this.qmpRead(); // greeting
    await this.qmp("qmp_capabilities");
  }

  private onQmpData(s: string): void {
    this.qmpBuf += s;
    let i: number;
    while ((i = this.qmpBuf.indexOf("\n")) >= 0) {
      const line = this.qmpBuf.slice(0, i).trim();
      this.qmpBuf = this.qmpBuf.slice(i + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if (msg.event) {
        this.qmpEvents.push(msg);
        continue;
      }
      this.qmpWaiters.shift()?.(msg);
    }
  }

  private qmpRead(): Promise<Record<string, unknown>> {
    return new Promise((r) => this.qmpWaiters.push(r));
  }

  async qmp(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (!this.qmpSock) await this.qmpConnect();
    const reply = this.qmpRead();
    this.qmpSock!.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + "\n");
    const msg = await reply;
    if (msg.error) throw new Error(`QMP ${execute}: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  /** Hot-plug a NIC with this MAC onto a pre-created root port; returns the QEMU device id. */
  async hotplugNic(nic: NicSpec, bus: string, netdev: string): Promise<string> {
    await this.qmp("device_add", {
      driver: nic.model,
      id: nic.name,
      netdev,
      mac: nic.mac,
      bus,
      romfile: "",
    });
    return nic.name;
  }
}
