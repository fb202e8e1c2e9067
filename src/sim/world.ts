// A whole simulated node for the demo, the service tests and the boot benchmark: a simulated kernel
// with the primary NIC (default routes), an IMDSv2 emulator, and an EC2 emulator whose attach hook
// hot-plugs the ENI's NIC into the simulated kernel and the IMDS macs tree. The real CLI runs against
// it as a separate process, configured only through the environment it would see on EC2.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { SimKernel } from "./kernel.js";
import { Ec2Emulator, type AtLaunchSpec, type AttachedEvent, type EmuEni } from "./ec2.js";
import { AZ, INSTANCE_TYPE, SUBNET_PRIMARY, VPC, imdsNicOf, standardSeed } from "./node.js";
import { ImdsEmulator, defaultInstance } from "./imds.js";

export const WORLD_PRIMARY = {
  bdf: "0000:00:05.0",
  mac: "02:00:00:00:00:01",
  ifname: "eth0",
  eniId: "eni-0000000000000000a",
};
export const WORLD_INSTANCE = "i-0123456789abcdef0";
export { SUBNET_A, SG_DPDK } from "./node.js";

export interface WorldOptions {
  /** per-action EC2 latency in ms, e.g. { CreateNetworkInterface: 300 } */
  latency?: Record<string, number>;
  /** ms from attaching to attached */
  attachDelayMs?: number;
  /** ms from attached to the NIC appearing in sysfs and IMDS */
  hotplugDelayMs?: number;
  /** the config file written to <root>/etc/eni-dpdk/config.toml */
  configToml?: string;
  /** an EKS AL2023 node: nodeadm installed, with its drop-in directory /etc/eks/nodeadm.d */
  nodeadm?: boolean;
}

/** The modules a boot loads before eni-dpdk runs, and their modprobe.d options. */
export interface ModulesLoad {
  modules: string[];
  options: Record<string, string[]>;
}

/**
 * Read a modules-load.d file (one module per line) and a modprobe.d file (`options <module> <args>`)
 * as systemd-modules-load and modprobe do; `#` starts a comment.
 */
export function modulesLoadOf(modulesLoadD: string, modprobeD: string): ModulesLoad {
  const lines = (text: string) =>
    text
      .split("\n")
      .map((l) => l.replace(/#.*/, "").trim())
      .filter(Boolean);
  const options: Record<string, string[]> = {};
  for (const l of lines(modprobeD)) {
    const [word, mod, ...args] = l.split(/\s+/);
    if (word === "options" && mod) (options[mod.replace(/-/g, "_")] ??= []).push(...args);
  }
  return { modules: lines(modulesLoadD), options };
}

export class World {
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    readonly sim: SimKernel,
    readonly imds: ImdsEmulator,
    readonly ec2: Ec2Emulator,
    private readonly opts: WorldOptions,
  ) {}

  static async start(opts: WorldOptions = {}): Promise<World> {
    const sim = SimKernel.create();
    sim.addNic({
      bdf: WORLD_PRIMARY.bdf,
      mac: WORLD_PRIMARY.mac,
      ifname: WORLD_PRIMARY.ifname,
      up: true,
    });
    const instance = defaultInstance({
      instanceId: WORLD_INSTANCE,
      instanceType: INSTANCE_TYPE,
      az: AZ,
      mac: WORLD_PRIMARY.mac,
    });
    Object.assign(instance.nics[0], {
      interfaceId: WORLD_PRIMARY.eniId,
      subnetId: SUBNET_PRIMARY,
      vpcId: VPC,
    });
    const imds = await new ImdsEmulator(instance).start();
    const ec2 = new Ec2Emulator(standardSeed());
    ec2.addInstance({
      instanceId: WORLD_INSTANCE,
      instanceType: INSTANCE_TYPE,
      az: AZ,
      vpcId: VPC,
      subnetId: SUBNET_PRIMARY,
      primaryEniId: WORLD_PRIMARY.eniId,
      primaryMac: WORLD_PRIMARY.mac,
    });
    ec2.latency = opts.latency ?? {};
    ec2.attachDelayMs = opts.attachDelayMs ?? 0;
    await ec2.start();
    const world = new World(sim, imds, ec2, opts);
    world.primaryRoutes();
    ec2.onAttached = (ev) => world.hotplug(ev);
    ec2.onDetached = (ev) => world.unplug(ev);
    if (opts.configToml !== undefined) world.writeConfig(opts.configToml);
    if (opts.nodeadm) {
      mkdirSync(sim.p("/etc/eks/nodeadm.d"), { recursive: true });
      mkdirSync(sim.p("/usr/bin"), { recursive: true });
      writeFileSync(
        sim.p("/usr/bin/nodeadm"),
        "#!/bin/sh\n# stand-in: eni-dpdk only looks for it\n",
        {
          mode: 0o755,
        },
      );
    }
    return world;
  }

  get root(): string {
    return this.sim.root;
  }

  writeConfig(toml: string): void {
    const file = path.join(this.root, "etc/eni-dpdk/config.toml");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, toml);
  }

  /** The environment the CLI sees: IMDS and EC2 endpoints, dummy credentials, the fake root. */
  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      AWS_EC2_METADATA_SERVICE_ENDPOINT: this.imds.url,
      AWS_ENDPOINT_URL_EC2: this.ec2.url,
      AWS_ACCESS_KEY_ID: "AKIDEMULATOR",
      AWS_SECRET_ACCESS_KEY: "emulator-secret",
      ENI_DPDK_ROOT: this.root,
      ...extra,
    };
  }

  /**
   * An ENI attached as the launch template does: at launch, with DeleteOnTermination, its NIC
   * present in sysfs and IMDS from the start (cold-plugged); no EC2 request, no hot-plug event.
   */
  attachAtLaunch(spec: AtLaunchSpec): EmuEni {
    const eni = this.ec2.attachAtLaunch(WORLD_INSTANCE, spec);
    const a = eni.attachment!;
    this.plug({
      eni,
      instanceId: WORLD_INSTANCE,
      deviceIndex: a.deviceIndex,
      networkCardIndex: a.networkCardIndex,
    });
    return eni;
  }

  /** The NIC of an attached ENI in sysfs (on ena) and in the IMDS macs tree. */
  private plug(ev: AttachedEvent): void {
    // The PCI slot follows the device index, as EC2's does, so concurrent attaches land deterministically.
    const slot = 5 + ev.networkCardIndex * 32 + ev.deviceIndex;
    this.sim.addNic({
      bdf: `0000:00:${slot.toString(16).padStart(2, "0")}.0`,
      mac: ev.eni.mac,
      ifname: `eth${ev.deviceIndex}`,
    });
    this.imds.addNic(imdsNicOf(ev));
  }

  /** The detach hook: the NIC leaves sysfs and the IMDS macs tree at once. */
  private unplug(ev: AttachedEvent): void {
    const bdf = this.sim.bdfOfMac(ev.eni.mac);
    if (bdf) this.sim.removeNic(bdf);
    this.imds.removeNic(ev.eni.mac);
  }

  /** The attach hook: after a delay the NIC appears in sysfs (on ena) and in the IMDS macs tree. */
  private hotplug(ev: AttachedEvent): void {
    const go = () => this.plug(ev);
    const d = this.opts.hotplugDelayMs ?? 0;
    if (!d) return go();
    const t = setTimeout(() => {
      this.timers.delete(t);
      go();
    }, d);
    this.timers.add(t);
  }

  /**
   * Simulate a reboot: every NIC comes back on its kernel driver with a netdev (the kernel forgets
   * driver_override), /run is emptied; /etc, /var/lib and EC2's attachments persist. `modulesLoad`
   * is the boot's systemd-modules-load: on the AMI, etc/modules-load.d loads vfio-pci with the
   * options of etc/modprobe.d before eni-dpdk starts (see modulesLoadOf).
   */
  reboot(opts: { modulesLoad?: ModulesLoad } = {}): void {
    this.sim.reboot();
    if (opts.modulesLoad) this.sim.loadAtBoot(opts.modulesLoad.modules, opts.modulesLoad.options);
    this.primaryRoutes();
  }

  private primaryRoutes(): void {
    this.sim.addRoute({ iface: "eth0", dest: "0.0.0.0/0", gateway: "10.0.1.1" });
    this.sim.addRoute({ iface: "eth0", dest: "10.0.1.0/24" });
    this.sim.addRoute({ iface: "eth0", dest: "::/0", gateway: "fe80::1" });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await this.ec2.close();
    await this.imds.close();
    this.sim.close();
  }
}

/** The demo's sample node: two DPDK ENIs sharing one resource and a kernel ENI with jumbo frames. */
export function sampleConfig(opts: { reconcileSeconds?: number } = {}): string {
  return `# eni-dpdk demo config: 2 DPDK ENIs sharing one SR-IOV resource, 1 kernel ENI with MTU 9001
[service]
sources = ["file", "user-data", "tags"]
reconcile_interval_seconds = ${opts.reconcileSeconds ?? 60}

[dpdk]
driver = "vfio-pci"
noiommu = "auto"
hugepages_2m = 512

[[eni]]
name = "n3"
device_index = 1
subnet_name = "data"
security_group_names = ["dpdk-data"]
description = "5G user plane N3"
  [eni.dpdk]
  resource_name = "amazon.com/ena_dpdk"

[[eni]]
name = "n6"
device_index = 2
subnet_name = "data"
security_group_names = ["dpdk-data"]
description = "5G user plane N6"
  [eni.dpdk]
  resource_name = "amazon.com/ena_dpdk"

[[eni]]
name = "mgmt"
device_index = 3
subnet_name = "data2"
security_group_names = ["dpdk-data"]
mtu = 9001
  [eni.dpdk]
  enabled = false
`;
}
