// A typical node on the simulated kernel: the primary ENI (eth0, default and IMDS routes) and two
// data ENIs, plus a StageContext for the host stage.
import { buildConfig, type Config } from "../../src/config/model.js";
import type { HostTarget } from "../../src/reconcile/host.js";
import { Host } from "../../src/host/host.js";
import { Deadline } from "../../src/core/deadline.js";
import { Logger, type LogSink } from "../../src/core/log.js";
import type { StageContext } from "../../src/reconcile/stage.js";
import type { CommandContext } from "../../src/commands/context.js";
import { emptyState, type State } from "../../src/host/state.js";
import { SimKernel, type SimKernelOptions } from "../../src/sim/kernel.js";
import { type Ec2Factory } from "../../src/cloud/ec2.js";

export const PRIMARY = { bdf: "0000:00:05.0", mac: "02:00:00:00:00:01", ifname: "eth0" };
export const DATA1 = { bdf: "0000:00:06.0", mac: "02:00:00:00:00:02", ifname: "eth1" };
export const DATA2 = { bdf: "0000:00:07.0", mac: "02:00:00:00:00:03", ifname: "eth2" };
export const INSTANCE_ID = "i-0123456789abcdef0";

export function node(opts: SimKernelOptions = {}): SimKernel {
  const sim = SimKernel.create({ ...opts });
  sim.addNic({ ...PRIMARY, up: true });
  sim.addRoute({ iface: "eth0", dest: "0.0.0.0/0", gateway: "10.0.1.1" });
  sim.addRoute({ iface: "eth0", dest: "10.0.1.0/24" });
  sim.addRoute({ iface: "eth0", dest: "::/0", gateway: "fe80::1" });
  sim.addNic(DATA1);
  sim.addNic(DATA2);
  return sim;
}

/** The host layer over the simulated kernel; a short settle, since its reactor answers in milliseconds. */
export function simHost(sim: SimKernel): Host {
  return new Host(sim.root, { settleMs: 600 });
}

/** For stages that must not reach EC2 here: any call is a test failure. */
export const noEc2: Ec2Factory = () => Promise.reject(new Error("test: no EC2 in this test"));

/** A logger whose lines tests can read. */
export function captureLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink: LogSink = { write: (l) => void lines.push(l) };
  return { log: new Logger("debug", "text", sink), lines };
}

export function config(data: Record<string, unknown> = {}): Config {
  return buildConfig([{ source: "test", data }]).config;
}

export function stageCtx(
  sim: SimKernel,
  over: Partial<StageContext> = {},
): StageContext & { lines: string[] } {
  const { log, lines } = captureLog();
  const state: State = { ...emptyState(), instanceId: INSTANCE_ID };
  return {
    host: simHost(sim),
    imds: undefined as never,
    ec2: noEc2,
    log,
    deadline: new Deadline(20_000),
    config: config(),
    instance: {
      instanceId: INSTANCE_ID,
      instanceType: "c6in.4xlarge",
      region: "us-west-2",
      az: "us-west-2a",
      primaryMac: PRIMARY.mac,
      localHostname: "ip-10-0-1-10",
    },
    imdsNics: [
      { mac: PRIMARY.mac, deviceNumber: 0, networkCard: 0 },
      { mac: DATA1.mac, deviceNumber: 1, networkCard: 0 },
      { mac: DATA2.mac, deviceNumber: 2, networkCard: 0 },
    ],
    state,
    dryRun: false,
    lines,
    ...over,
  };
}

export function target(
  name: string,
  mac: string,
  over: Partial<Omit<HostTarget, "dpdk">> & { dpdk?: Partial<HostTarget["dpdk"]> } = {},
): HostTarget {
  return {
    name,
    eniId: `eni-0${mac.replace(/:/g, "").slice(-6)}0000000000`,
    mac,
    mtu: 9001,
    ...over,
    dpdk: {
      enabled: true,
      driver: "vfio-pci",
      resource_name: `amazon.com/${name.replace(/-/g, "_")}`,
      pci_address: "",
      ...over.dpdk,
    },
  };
}

/** A command's context on the simulated node: what it prints (`output`) and logs (`lines`). */
export function cmdCtx(sim: SimKernel): CommandContext & { output: string[]; lines: string[] } {
  const { log, lines } = captureLog();
  const output: string[] = [];
  return {
    host: new Host(sim.root),
    log,
    out: (s) => void output.push(s),
    output,
    lines,
    configPath: undefined,
    env: {},
  };
}
