// A device a process has open is never unbound: vfio-pci's unbind waits in the kernel until the app
// lets go (the simulated kernel keeps such an unbind pending too), so every path that would unbind a
// device on a DPDK driver (unbind, reset, DPDK switched off, a move to another DPDK driver, a
// rollback's restore) asks who holds it first, and refuses with nothing written.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import t, { type Test } from "tap";
import { OpError } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";
import { applyHost, planHost } from "../../../src/reconcile/host.js";
import { JOURNAL_PATH, loadState, saveState } from "../../../src/host/state.js";
import { bindCommand, resetCommand, unbindCommand } from "../../../src/commands/device.js";
import { statusCommand } from "../../../src/commands/status.js";
import type { StatusDoc } from "../../../src/reconcile/status.js";
import { deviceHolders, IN_USE_HINT, restoreDriver } from "../../../src/host/pci.js";
import type { SimKernel } from "../../../src/sim/kernel.js";
import {
  captureLog,
  DATA1,
  DATA2,
  node,
  PRIMARY,
  stageCtx,
  target,
  cmdCtx,
} from "../../support/fixture.js";

/** data1 and data2 bound to vfio-pci by the host stage, as an apply leaves them. */
async function bound(t: Test): Promise<SimKernel> {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
  await applyHost(ctx, targets, await planHost(ctx, targets));
  t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
  t.equal(sim.driverOf(DATA2.bdf), "vfio-pci");
  await sim.settle();
  return sim;
}

const nodeOf = (sim: SimKernel, bdf: string) => {
  const g = fs
    .readlinkSync(sim.p(`/sys/bus/pci/devices/${bdf}/iommu_group`))
    .split("/")
    .pop();
  return `/dev/vfio/noiommu-${g}`;
};

/** The writes naming the device since `from` (its sysfs files, or its BDF written elsewhere). */
const writesOf = (sim: SimKernel, bdf: string, from: number) =>
  sim.writes.slice(from).filter((w) => w.path.includes(bdf) || w.value === bdf);

t.test(
  "the simulated kernel: a vfio-pci unbind completes only once the holder lets go",
  async (t) => {
    const sim = await bound(t);
    const release = sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd" });
    fs.writeFileSync(sim.p("/sys/bus/pci/drivers/vfio-pci/unbind"), DATA1.bdf);
    await sim.settle(100);
    t.equal(sim.driverOf(DATA1.bdf), "vfio-pci", "still bound while held");
    release();
    await sim.settle(100);
    t.equal(sim.driverOf(DATA1.bdf), undefined, "unbound once released");
    t.same(sim.errors, []);
  },
);

t.test("unbind refuses a device in use, names the process, writes nothing", async (t) => {
  const sim = await bound(t);
  const node = nodeOf(sim, DATA1.bdf);
  const release = sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd", fd: 17 });
  const before = sim.writes.length;
  const stateBefore = fs.readFileSync(sim.p("/var/lib/eni-dpdk/state.json"), "utf8");
  const err = await unbindCommand(cmdCtx(sim), { target: DATA1.bdf }).catch((e: unknown) => e);
  t.type(err, OpError);
  t.match((err as OpError).message, `in use: pid 4242 (dpdk-testpmd) has ${node} open`);
  t.equal((err as OpError).hint, IN_USE_HINT);
  await sim.settle();
  t.same(writesOf(sim, DATA1.bdf, before), [], "no sysfs write names the device");
  t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
  t.equal(
    fs.readFileSync(sim.p("/var/lib/eni-dpdk/state.json"), "utf8"),
    stateBefore,
    "state file unchanged",
  );
  t.notOk(fs.existsSync(sim.p(JOURNAL_PATH)), "nothing journalled");
  // the other device is nobody's: it unbinds as ever
  t.equal(await unbindCommand(cmdCtx(sim), { target: DATA2.bdf }), 0);
  t.equal(sim.driverOf(DATA2.bdf), "ena");
  release();
  const c = cmdCtx(sim);
  t.equal(await unbindCommand(c, { target: DATA1.bdf }), 0, "once released, it unbinds");
  t.match(c.output.join(""), /returned 0000:00:06\.0 to ena \(netdev eth1\)/);
  t.same(sim.errors, []);
});

t.test("reset returns the free devices, keeps the one in use and its record", async (t) => {
  const sim = await bound(t);
  sim.holdDevice(DATA2.bdf, { pid: 777, comm: "vpp_main" });
  const before = sim.writes.length;
  const c = cmdCtx(sim);
  const err = await resetCommand(c, {}).catch((e: unknown) => e);
  t.type(err, OpError);
  t.match(
    (err as OpError).message,
    `reset incomplete: ${DATA2.bdf}: in use: pid 777 (vpp_main) has ${nodeOf(sim, DATA2.bdf)} open`,
  );
  t.match((err as OpError).hint, /a device in use was left as it is: stop what holds it/);
  t.equal(sim.driverOf(DATA1.bdf), "ena", "the free one is returned");
  t.equal(sim.driverOf(DATA2.bdf), "vfio-pci", "the one in use stays");
  await sim.settle();
  t.same(writesOf(sim, DATA2.bdf, before), [], "no sysfs write names the device in use");
  const st = await loadState(new Host(sim.root));
  t.same(Object.keys(st.bindings), [DATA2.mac], "its binding stays on record");
});

t.test("apply with DPDK switched off: the device in use stays, with the reason", async (t) => {
  const sim = await bound(t);
  const release = sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd" });
  const ctx = stageCtx(sim, { state: await loadState(new Host(sim.root)) });
  const off = [target("data1", DATA1.mac, { dpdk: { enabled: false } })];
  const before = sim.writes.length;
  const plan = await planHost(ctx, off);
  t.match(plan.actions, [
    {
      kind: "unbind",
      target: DATA1.bdf,
      detail:
        /return from vfio-pci to ena; in use: pid 4242 \(dpdk-testpmd\) has \/dev\/vfio\/noiommu-\d+ open, and apply leaves it until then$/,
    },
  ]);
  const [r] = await applyHost(ctx, off, plan);
  t.match(r.error, /returning 0000:00:06\.0 to ena: in use: pid 4242 \(dpdk-testpmd\)/);
  t.equal(r.changed, false, "nothing changed");
  await sim.settle();
  t.same(writesOf(sim, DATA1.bdf, before), [], "no sysfs write names the device");
  t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
  t.ok(ctx.state.bindings[DATA1.mac], "still on record");
  release();
  const [again] = await applyHost(ctx, off, await planHost(ctx, off));
  t.match(again, { state: "kernel", driver: "ena", ifname: "eth1" });
  t.notOk(again.error);
});

t.test("a move to another DPDK driver is refused while the device is in use", async (t) => {
  const sim = await bound(t);
  // what every apply records, so that the offline commands know the primary
  const host = new Host(sim.root);
  const st = await loadState(host);
  st.primary = { mac: PRIMARY.mac, bdf: PRIMARY.bdf, deviceZeroMacs: [PRIMARY.mac] };
  await saveState(host, st);
  sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd" });
  const before = sim.writes.length;
  const modprobes = sim.modprobeCalls().length;
  const err = await bindCommand(cmdCtx(sim), {
    target: DATA1.bdf,
    driver: "uio_pci_generic",
    force: true,
  }).catch((e: unknown) => e);
  t.type(err, OpError);
  t.match(
    (err as OpError).message,
    /refusing to move 0000:00:06\.0 from vfio-pci to uio_pci_generic: in use: pid 4242 \(dpdk-testpmd\)/,
  );
  await sim.settle();
  t.same(sim.writes.slice(before), [], "no sysfs write at all");
  t.equal(sim.modprobeCalls().length, modprobes, "no module loaded for the refused move");
  t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
});

t.test("holders are found by path, by device number, and through the vfio cdev", async (t) => {
  const sim = await bound(t);
  const host = new Host(sim.root);
  t.same(await deviceHolders(host, DATA1.bdf, "vfio-pci"), [], "nobody at first");
  // sockets, pipes and other files are no holder
  fs.mkdirSync(sim.p("/proc/100/fd"), { recursive: true });
  fs.writeFileSync(sim.p("/proc/100/comm"), "kubelet\n");
  fs.symlinkSync("socket:[12345]", sim.p("/proc/100/fd/0"));
  fs.symlinkSync("/var/log/kubelet.log", sim.p("/proc/100/fd/1"));
  t.same(await deviceHolders(host, DATA1.bdf, "vfio-pci"), []);

  // A container may see the node under another name: the device number decides. The node is
  // made a character device here by pointing it at /dev/null, as is the process's fd.
  const node = nodeOf(sim, DATA1.bdf);
  fs.rmSync(sim.p(node));
  fs.symlinkSync("/dev/null", sim.p(node));
  fs.mkdirSync(sim.p("/proc/200/fd"), { recursive: true });
  fs.writeFileSync(sim.p("/proc/200/comm"), "l3fwd\n");
  fs.symlinkSync("/dev/null", sim.p("/proc/200/fd/5"));
  t.same(await deviceHolders(host, DATA1.bdf, "vfio-pci"), [{ pid: 200, comm: "l3fwd", node }]);
  t.same(await deviceHolders(host, DATA2.bdf, "vfio-pci"), [], "another device's holders are not");
  fs.rmSync(sim.p("/proc/200"), { recursive: true });

  // iommufd's per-device node
  fs.mkdirSync(sim.p(`/sys/bus/pci/devices/${DATA2.bdf}/vfio-dev/vfio3`), { recursive: true });
  fs.mkdirSync(sim.p("/dev/vfio/devices"), { recursive: true });
  fs.writeFileSync(sim.p("/dev/vfio/devices/vfio3"), "");
  fs.mkdirSync(sim.p("/proc/300/fd"), { recursive: true });
  fs.writeFileSync(sim.p("/proc/300/comm"), "dpdk-testpmd\n");
  fs.symlinkSync("/dev/vfio/devices/vfio3", sim.p("/proc/300/fd/9"));
  t.same(await deviceHolders(host, DATA2.bdf, "vfio-pci"), [
    { pid: 300, comm: "dpdk-testpmd", node: "/dev/vfio/devices/vfio3" },
  ]);
});

t.test("a rollback's restore is refused as well, and says so", async (t) => {
  const sim = await bound(t);
  sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd" });
  const { log } = captureLog();
  const host = new Host(sim.root);
  const before = sim.writes.length;
  const rb = await restoreDriver(host, DATA1.bdf, "ena", { log, mac: DATA1.mac });
  t.match(rb, { ok: false, driver: "vfio-pci", holders: [{ pid: 4242, comm: "dpdk-testpmd" }] });
  t.match(rb.problem, /^in use: pid 4242/);
  await sim.settle();
  t.same(writesOf(sim, DATA1.bdf, before), []);
  t.notOk(fs.existsSync(sim.p(JOURNAL_PATH)), "nothing journalled");
});

t.test("status names who has each bound device open", async (t) => {
  const sim = await bound(t);
  const node = nodeOf(sim, DATA1.bdf);
  const release = sim.holdDevice(DATA1.bdf, { pid: 4242, comm: "dpdk-testpmd" });
  const text = cmdCtx(sim);
  t.equal(await statusCommand(text, { json: false }), 0);
  t.match(text.output.join(""), `\n  data1: in use: pid 4242 (dpdk-testpmd) has ${node} open\n`);
  t.notMatch(text.output.join(""), /data2: in use/, "the free device is not said to be");
  const json = cmdCtx(sim);
  t.equal(await statusCommand(json, { json: true }), 0);
  const doc = JSON.parse(json.output.join("")) as StatusDoc;
  t.same(doc.devices.find((d) => d.name === "data1")?.holders, [
    { pid: 4242, comm: "dpdk-testpmd", node },
  ]);
  t.notOk(doc.devices.find((d) => d.name === "data2")?.holders);
  release();
  const after = cmdCtx(sim);
  await statusCommand(after, { json: false });
  t.notMatch(after.output.join(""), /in use/, "released: nothing said");
});

t.test(
  "the real /proc: another user's holder is seen with CAP_SYS_PTRACE (the units grant it); without it, it is counted unreadable",
  { skip: process.geteuid?.() !== 0 ? "needs root (setpriv drops a capability)" : false },
  async (t) => {
    // a process of another user with /dev/null open (its stdin)
    const holder = spawn(
      "setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"],
      {
        stdio: ["ignore", "ignore", "ignore"],
      },
    );
    t.teardown(() => holder.kill());
    await new Promise((r) => setTimeout(r, 300));
    const repo = path.resolve(import.meta.dirname, "../../..");
    const probe = path.join(
      fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-holders-")),
      "probe.mts",
    );
    fs.writeFileSync(
      probe,
      `import { Host } from ${JSON.stringify(path.join(repo, "src/host/host.ts"))};
import { processesHolding } from ${JSON.stringify(path.join(repo, "src/host/pci.ts"))};
try {
  const r = await processesHolding(new Host("/"), new Map([["/dev/null", undefined]]));
  console.log(JSON.stringify({ held: r.held.map((x) => x.pid), unreadable: r.unreadable }));
} catch (e) { console.log("ERR " + (e as Error).message); }
`,
    );
    const tsx = path.join(repo, "node_modules/tsx/dist/esm/index.mjs");
    const run = (argv: string[]) =>
      new Promise<string>((resolve) =>
        execFile(argv[0], argv.slice(1), (_e, stdout) => resolve(stdout.trim())),
      );
    type Seen = { held: number[]; unreadable: number[] };
    const withCap = JSON.parse(await run([process.execPath, "--import", tsx, probe])) as Seen;
    t.ok(
      withCap.held.includes(holder.pid!),
      `root with CAP_SYS_PTRACE sees pid ${holder.pid} (nobody) holding /dev/null`,
    );
    const without = JSON.parse(
      await run([
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--",
        process.execPath,
        "--import",
        tsx,
        probe,
      ]),
    ) as Seen;
    t.notOk(without.held.includes(holder.pid!), "without it, nobody's fds cannot be read");
    t.ok(without.unreadable.includes(holder.pid!), "and that process is counted as unreadable");
  },
);
