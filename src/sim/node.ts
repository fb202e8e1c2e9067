// A simulated node for ENI tests and benchmarks: its own IMDS (ImdsEmulator over HTTP, or an
// in-process Imds for the fleet), its own fake root with sysfs netdevs, registered as an instance in
// a shared Ec2Emulator whose hot-plug hook makes the NIC appear (netdev + PCI device + IMDS macs entry).
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildConfig, ec2BucketOf, type Config } from "../config/model.js";
import { Ec2Pacer, lazyEc2, type Ec2Api, type Ec2Factory } from "../cloud/ec2.js";
import { Host } from "../host/host.js";
import { Deadline, type BucketSize } from "../core/deadline.js";
import { ImdsClient, readInstance, readNics, type Imds } from "../cloud/imds.js";
import { silentLogger, type Logger } from "../core/log.js";
import type { StageContext } from "../reconcile/stage.js";
import { loadPacing, loadState, savePacing } from "../host/state.js";
import type { AtLaunchSpec, AttachedEvent, Ec2Emulator, Ec2Seed, EmuEni } from "./ec2.js";
import { ImdsEmulator, defaultInstance, type ImdsInstance, type ImdsNic } from "./imds.js";
import { modalias } from "./kernel.js";

export const VPC = "vpc-0a1b2c3d4e5f60718";
export const AZ = "us-west-2a";
export const SUBNET_A = "subnet-0aaaaaaaaaaaaaaa1";
export const SUBNET_A2 = "subnet-0aaaaaaaaaaaaaaa2";
export const SUBNET_B = "subnet-0bbbbbbbbbbbbbbb1";
export const SUBNET_DUP1 = "subnet-0ddddddddddddddd1";
export const SUBNET_DUP2 = "subnet-0ddddddddddddddd2";
export const SUBNET_PRIMARY = "subnet-0a1b2c3d4e5f60718";
export const SG = "sg-0a1b2c3d4e5f60718";
export const SG_DPDK = "sg-0dddddddddddddddd";
export const INSTANCE_TYPE = "c6in.4xlarge";

/** A VPC with subnets in two AZs (one name in both AZs, one name twice in the same AZ) and SGs. */
export function standardSeed(over: Partial<Ec2Seed> = {}): Ec2Seed {
  return {
    subnets: [
      { subnetId: SUBNET_PRIMARY, vpcId: VPC, az: AZ, cidr: "10.0.1.0/24", name: "nodes" },
      { subnetId: SUBNET_A, vpcId: VPC, az: AZ, cidr: "10.0.16.0/20", name: "data" },
      { subnetId: SUBNET_A2, vpcId: VPC, az: AZ, cidr: "10.0.32.0/20", name: "data2" },
      { subnetId: SUBNET_B, vpcId: VPC, az: "us-west-2b", cidr: "10.0.48.0/20", name: "data-b" },
      { subnetId: SUBNET_DUP1, vpcId: VPC, az: AZ, cidr: "10.0.64.0/20", name: "dup" },
      { subnetId: SUBNET_DUP2, vpcId: VPC, az: AZ, cidr: "10.0.80.0/20", name: "dup" },
    ],
    securityGroups: [
      { groupId: SG, groupName: "nodes", vpcId: VPC },
      { groupId: SG_DPDK, groupName: "dpdk-data", vpcId: VPC, tags: { Name: "dpdk" } },
    ],
    instanceTypes: [
      {
        instanceType: INSTANCE_TYPE,
        maxEnis: 8,
        cards: [8],
        enaQueues: { default: 8, maxPerInterface: 16, max: 64 },
      },
      // no flexible ENA queues, no ENA Express: what the pre-flight checks refuse
      { instanceType: "c6in.large", maxEnis: 3, cards: [3], enaSrd: false },
      { instanceType: "c6in.16xlarge", maxEnis: 15, cards: [15] },
    ],
    ...over,
  };
}

/** `n` ENIs named data1..dataN at device indexes 1..n in SUBNET_A. */
export function eniConfigs(
  n: number,
  over: Record<string, unknown> = {},
): Record<string, unknown>[] {
  const dropUndefined = (o: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return Array.from({ length: n }, (_, i) =>
    dropUndefined({
      name: `data${i + 1}`,
      device_index: i + 1,
      subnet_id: SUBNET_A,
      security_group_ids: [SG_DPDK],
      dpdk: { resource_name: `amazon.com/ena_dpdk_${i + 1}` },
      ...over,
    }),
  );
}

/** Per-emulator hot-plug dispatch by instance id. */
const hotplugs = new WeakMap<Ec2Emulator, Map<string, (ev: AttachedEvent) => Promise<void>>>();
function registerHotplug(
  emu: Ec2Emulator,
  instanceId: string,
  fn: (ev: AttachedEvent) => Promise<void>,
): void {
  let m = hotplugs.get(emu);
  if (!m) {
    const map = (m = new Map());
    hotplugs.set(emu, map);
    const prior = emu.onAttached;
    emu.onAttached = async (ev) => {
      await prior?.(ev);
      await map.get(ev.instanceId)?.(ev);
    };
  }
  m.set(instanceId, fn);
}

/** An in-process IMDS over the same data the ImdsEmulator serves (the fleet uses it: no socket per node). */
export class MemoryImds implements Imds {
  requests = 0;
  /** never started: only its lookup is used */
  private readonly tree: ImdsEmulator;
  constructor(readonly instance: ImdsInstance) {
    this.tree = new ImdsEmulator(instance);
  }
  addNic(nic: ImdsNic): void {
    this.tree.addNic(nic);
  }
  async get(p: string): Promise<string | undefined> {
    this.requests++;
    return this.tree.lookup(p.replace(/^\/?(latest\/)?/, ""))?.toString();
  }
  async getBytes(): Promise<Buffer | undefined> {
    return undefined;
  }
}

export interface SimNodeOptions {
  instanceId: string;
  primaryMac: string;
  primaryEniId: string;
  enis: Record<string, unknown>[];
  /** "http" (default): an ImdsEmulator; "memory": MemoryImds */
  imds?: "http" | "memory";
  instanceType?: string;
  az?: string;
  /** ms between "attached" in EC2 and the NIC appearing (netdev, PCI device, IMDS entry) */
  hotplugDelayMs?: number;
  /** hot-plug settling: IMDS device-number reads 0 this many times for a new NIC */
  deviceNumberZeroReads?: number;
  deadlineMs?: number;
  log?: Logger;
  root?: string;
  /**
   * How the node's EC2 client meets throttling: "own" (the product's: one attempt per call, paced
   * by Ec2Pacer), "sdk" (the SDK's retryMode "adaptive", no pacer), "both". Default "own".
   */
  client?: "own" | "sdk" | "both";
  /**
   * The node's node-level config tables, as a TOML document holds them (e.g. `{ ec2: { limits: {
   * mutating: { capacity: 100, refill_per_sec: 100 } } } }`), merged with the ENIs. The pacer paces
   * by its [ec2.limits], as the product's session does.
   */
  config?: Record<string, unknown>;
  /** the bucket sizes the pacer paces by, in place of the config's (default: EC2's documented sizes) */
  paceBuckets?: (key: string) => BucketSize;
  /** SDK attempts per call in "sdk"/"both" (default 10) */
  sdkAttempts?: number;
}

export class SimNode {
  readonly host: Host;
  imdsEmu?: ImdsEmulator;
  memImds?: MemoryImds;
  readonly ec2: Ec2Factory;
  /** how often the stage asked for the EC2 client */
  ec2FactoryCalls = 0;
  /** the pacer of the current process (context), when the client has one */
  pacer?: Ec2Pacer;
  /** set by kill(): every later EC2 call fails at once, as if the process were gone */
  killed = false;
  private inner: Ec2Factory;
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    readonly emu: Ec2Emulator,
    readonly opts: SimNodeOptions,
    readonly root: string,
    readonly instance: ImdsInstance,
  ) {
    this.host = new Host(root);
    this.inner = this.newProcess(new Deadline(opts.deadlineMs ?? 30_000), this.config([]));
    this.ec2 = () => {
      this.ec2FactoryCalls++;
      if (this.killed) return Promise.reject(new Error(`node ${opts.instanceId} is gone`));
      return this.inner();
    };
  }

  /** The node's config, validated as the product validates it (an InputError when it is bad). */
  config(enis: Record<string, unknown>[] = this.opts.enis): Config {
    return buildConfig([{ source: "test", data: { ...this.opts.config, eni: enis } }]).config;
  }

  /** A new process on this node: its own EC2 client and pacer (which reads what /run kept). */
  private newProcess(deadline: Deadline, config: Config): Ec2Factory {
    const mode = this.opts.client ?? "own";
    const host = this.host;
    this.pacer =
      mode === "sdk"
        ? undefined
        : new Ec2Pacer({
            identity: async () => this.opts.instanceId,
            bucketOf: this.opts.paceBuckets ?? ec2BucketOf(config.ec2),
            load: () => loadPacing(host),
            save: (s) => savePacing(host, s),
            log: this.opts.log,
          });
    const inner = lazyEc2({
      region: this.instance.region,
      endpoint: this.emu.url,
      logger: this.opts.log,
      pacer: this.pacer,
      deadline,
      ...(mode === "own" ? {} : { sdkAdaptiveAttempts: this.opts.sdkAttempts ?? 10 }),
    });
    return async () => guarded(await inner(), () => this.killed, this.opts.instanceId);
  }

  /** The node dies (its instance terminated): no further EC2 call leaves it. */
  kill(): void {
    this.killed = true;
    for (const t of this.timers) clearTimeout(t);
  }

  static async create(emu: Ec2Emulator, opts: SimNodeOptions): Promise<SimNode> {
    const root = opts.root ?? (await fs.mkdtemp(path.join(os.tmpdir(), "eni-dpdk-node-")));
    const az = opts.az ?? AZ;
    const instance = defaultInstance({
      instanceId: opts.instanceId,
      instanceType: opts.instanceType ?? INSTANCE_TYPE,
      az,
      mac: opts.primaryMac,
    });
    instance.nics[0].interfaceId = opts.primaryEniId;
    instance.nics[0].subnetId = SUBNET_PRIMARY;
    instance.nics[0].vpcId = VPC;
    emu.addInstance({
      instanceId: opts.instanceId,
      instanceType: instance.instanceType,
      az,
      vpcId: VPC,
      subnetId: SUBNET_PRIMARY,
      primaryEniId: opts.primaryEniId,
      primaryMac: opts.primaryMac,
    });
    const node = new SimNode(emu, opts, root, instance);
    if (opts.imds === "memory") node.memImds = new MemoryImds(instance);
    else node.imdsEmu = await new ImdsEmulator(instance).start();
    await node.plugNetdev("eth0", opts.primaryMac, 5);
    registerHotplug(emu, opts.instanceId, (ev) => node.hotplug(ev));
    return node;
  }

  get imds(): Imds {
    return (
      this.memImds ??
      new ImdsClient({ endpoint: this.imdsEmu!.url, deadline: new Deadline(10_000) })
    );
  }

  /** A fresh StageContext, as a new process would build it: IMDS read now, state loaded from disk. */
  async context(
    opts: { dryRun?: boolean; deadlineMs?: number; enis?: Record<string, unknown>[] } = {},
  ): Promise<StageContext> {
    const imds = this.imds;
    const config = this.config(opts.enis);
    const deadline = new Deadline(opts.deadlineMs ?? this.opts.deadlineMs ?? 30_000);
    this.inner = this.newProcess(deadline, config);
    return {
      host: this.host,
      imds,
      ec2: this.ec2,
      log: this.opts.log ?? silentLogger,
      deadline,
      config,
      instance: await readInstance(imds),
      imdsNics: await readNics(imds),
      state: await loadState(this.host),
      dryRun: !!opts.dryRun,
    };
  }

  /** What the hot-plug hook does for this node: netdev + PCI device in the fake root, NIC in IMDS. */
  async hotplug(ev: AttachedEvent): Promise<void> {
    const go = async () => {
      const nic = imdsNicOf(ev);
      await this.plugNetdev(
        `eth${ev.networkCardIndex * 32 + ev.deviceIndex}`,
        ev.eni.mac,
        5 + ev.networkCardIndex * 32 + ev.deviceIndex,
      );
      if (this.opts.deviceNumberZeroReads && this.imdsEmu)
        this.imdsEmu.faults.deviceNumberZeroReads[nic.mac] = this.opts.deviceNumberZeroReads;
      (this.imdsEmu ?? this.memImds)!.addNic(nic);
    };
    const d = this.opts.hotplugDelayMs ?? 0;
    if (!d) return go();
    const t = setTimeout(() => {
      this.timers.delete(t);
      void go();
    }, d);
    this.timers.add(t);
  }

  /**
   * An ENI attached as the launch template does: at launch, DeleteOnTermination set, its NIC in
   * sysfs and IMDS before eni-dpdk runs (cold-plugged), with no EC2 request and no hot-plug event.
   */
  async attachAtLaunch(spec: AtLaunchSpec): Promise<EmuEni> {
    const eni = this.emu.attachAtLaunch(this.opts.instanceId, spec);
    await this.coldplug(eni);
    return eni;
  }

  /** Every interface of a stored launch template, attached at launch and cold-plugged. */
  async launchFromTemplate(templateName: string): Promise<EmuEni[]> {
    const enis = this.emu.launchFromTemplate(this.opts.instanceId, templateName);
    for (const eni of enis) await this.coldplug(eni);
    return enis;
  }

  private async coldplug(eni: EmuEni): Promise<void> {
    const a = eni.attachment!;
    const ev = {
      eni,
      instanceId: a.instanceId,
      deviceIndex: a.deviceIndex,
      networkCardIndex: a.networkCardIndex,
    };
    const slot = 5 + a.networkCardIndex * 32 + a.deviceIndex;
    await this.plugNetdev(`eth${slot - 5}`, eni.mac, slot);
    (this.imdsEmu ?? this.memImds)!.addNic(imdsNicOf(ev));
  }

  /** A netdev and its ENA PCI device in the fake sysfs, linked the way the kernel links them. */
  async plugNetdev(ifname: string, mac: string, slot: number): Promise<void> {
    const bdf = `0000:00:${slot.toString(16).padStart(2, "0")}.0`;
    const devDir = this.host.path(`/sys/devices/pci0000:00/${bdf}`);
    await fs.mkdir(path.join(devDir, "net", ifname), { recursive: true });
    await fs.writeFile(path.join(devDir, "vendor"), "0x1d0f\n");
    await fs.writeFile(path.join(devDir, "device"), "0xec20\n");
    await fs.writeFile(path.join(devDir, "class"), "0x020000\n");
    await fs.writeFile(path.join(devDir, "modalias"), modalias("1d0f", "ec20", "0x020000"));
    await fs.writeFile(path.join(devDir, "net", ifname, "address"), mac + "\n");
    await fs.writeFile(path.join(devDir, "net", ifname, "type"), "1\n");
    for (const [link, target] of [
      [`/sys/class/net/${ifname}`, path.join(devDir, "net", ifname)],
      [`/sys/bus/pci/devices/${bdf}`, devDir],
    ] as const) {
      const at = this.host.path(link);
      await fs.mkdir(path.dirname(at), { recursive: true });
      await fs.rm(at, { force: true });
      await fs.symlink(target, at);
    }
  }

  async close(removeRoot = true): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await this.imdsEmu?.close();
    if (removeRoot) await fs.rm(this.root, { recursive: true, force: true });
  }
}

/** The same client, failing every call once `dead()`: a killed node sends nothing more. */
function guarded(api: Ec2Api, dead: () => boolean, who: string): Ec2Api {
  const out: Record<string, unknown> = { ...api };
  for (const [name, fn] of Object.entries(api)) {
    if (typeof fn !== "function") continue;
    out[name] = (input: unknown) =>
      dead()
        ? Promise.reject(new Error(`node ${who} is gone`))
        : (fn as (i: unknown) => Promise<unknown>).call(api, input);
  }
  return out as unknown as Ec2Api;
}

/** The IMDS macs-tree entry of an ENI that EC2 just attached. */
export function imdsNicOf(ev: AttachedEvent): ImdsNic {
  return {
    mac: ev.eni.mac,
    deviceNumber: ev.deviceIndex,
    networkCard: ev.networkCardIndex,
    interfaceId: ev.eni.id,
    subnetId: ev.eni.subnetId,
    vpcId: ev.eni.vpcId,
    securityGroupIds: ev.eni.groups,
    localIpv4s: [ev.eni.privateIp],
    subnetCidr: "10.0.16.0/20",
  };
}

/** The SDK's default chain reads these first; the emulator ignores signatures. */
export function useDummyCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID ??= "AKIDEMULATOR";
  process.env.AWS_SECRET_ACCESS_KEY ??= "emulator-secret";
  delete process.env.AWS_PROFILE;
}
