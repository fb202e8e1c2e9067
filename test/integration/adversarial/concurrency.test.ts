// Area: concurrency (and signals). Two copies of eni-dpdk at once, an apply during the service's
// first boot, signals at every moment of start-up: the runs must never fight, never wait a deadline
// for what the other already did, and a Type=notify service must stay up until SIGTERM.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import t, { type Test } from "tap";
import { Host } from "../../../src/host/host.js";
import { loadState } from "../../../src/host/state.js";
import { SG_DPDK, SUBNET_A, type World } from "../../../src/sim/world.js";
import { NotifySocket } from "../../support/notify.js";
import {
  assertNoneDriverless,
  assertPrimaryUntouched,
  baseToml,
  BUNDLE,
  externalEniToml,
  lastError,
  runCli,
  startCli,
  world,
} from "../../support/harness.js";

const INSTANCE = "i-0123456789abcdef0";
const DATA1_BDF = "0000:00:06.0";

function enisNamed(w: World, name: string) {
  return [...w.ec2.enis.values()].filter(
    (e) => e.tags["eni-dpdk:name"] === name && e.tags["eni-dpdk:instance-id"] === INSTANCE,
  );
}

async function assertOneOfEach(t: Test, w: World): Promise<void> {
  for (const n of ["data1", "kern1"]) t.equal(enisNamed(w, n).length, 1, `one ENI named ${n}`);
  t.same(w.ec2.leakedEnis(), [], "nothing leaked");
  t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "data1 bound once");
  assertNoneDriverless(t, w);
  assertPrimaryUntouched(t, w);
  const state = await loadState(new Host(w.root));
  t.equal(Object.keys(state.bindings).length, 1, "one binding recorded");
}

t.test(
  "concurrency: two applies at once on a first boot; neither waits its deadline, nothing is duplicated",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml("").replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 0\ntimeout_seconds = 60",
      ),
      attachDelayMs: 200,
    });
    const t0 = Date.now();
    const [a, b] = await Promise.all([runCli(w, ["apply"]), runCli(w, ["apply"])]);
    t.equal(a.code, 0, lastError(a));
    t.equal(b.code, 0, lastError(b));
    t.ok(Date.now() - t0 < 25_000, `both done in ${Date.now() - t0} ms`);
    t.equal(
      w.ec2.callsPerAction().CreateNetworkInterface,
      2,
      "two creates in all, by the first run",
    );
    await assertOneOfEach(t, w);
  },
);

t.test(
  "concurrency: three applies at once after a reboot rebind once, with no EC2 call",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    t.equal((await runCli(w, ["apply"])).code, 0);
    w.reboot();
    const calls = w.ec2.totalCalls();
    const writes0 = w.sim.writes.length;
    const rs = await Promise.all([0, 1, 2].map(() => runCli(w, ["apply"])));
    for (const r of rs) t.equal(r.code, 0, lastError(r));
    t.equal(w.ec2.totalCalls(), calls, "IMDS and the state prove it: no EC2 call");
    const binds = w.sim.writes
      .slice(writes0)
      .filter((x) => x.path.endsWith("/drivers_probe") && x.value.trim() === DATA1_BDF);
    t.equal(binds.length, 1, "data1 probed once after the reboot");
    await assertOneOfEach(t, w);
  },
);

t.test(
  "concurrency: an apply during the service's first boot waits for it and changes nothing more",
  async (t) => {
    const w = await world(t, { configToml: baseToml(), attachDelayMs: 300 });
    const svc = startCli(w, ["run"]);
    t.teardown(() => svc.signal("SIGKILL"));
    await svc.waitForLog((l) => l.msg === "created ENI");
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    await svc.waitForLog((l) => /^ready: /.test(l.msg ?? ""));
    t.equal(w.ec2.callsPerAction().CreateNetworkInterface, 2);
    await assertOneOfEach(t, w);
    svc.signal("SIGTERM");
    t.equal((await svc.exit).code, 0);
  },
);

t.test("concurrency: early and apply at once after a reboot", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  t.equal((await runCli(w, ["apply"])).code, 0);
  w.reboot();
  const [e, a] = await Promise.all([runCli(w, ["early"]), runCli(w, ["apply"])]);
  t.equal(e.code, 0, lastError(e));
  t.equal(a.code, 0, lastError(a));
  await assertOneOfEach(t, w);
});

t.test("concurrency: two binds of the same device at once bind it once", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  t.equal((await runCli(w, ["apply"])).code, 0);
  t.equal((await runCli(w, ["unbind", "data1"])).code, 0);
  const rs = await Promise.all([runCli(w, ["bind", "data1"]), runCli(w, ["bind", "data1"])]);
  for (const r of rs) t.equal(r.code, 0, lastError(r));
  t.equal(rs.filter((r) => /already bound/.test(r.stdout)).length, 1, "the second found it bound");
  t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci");
  assertNoneDriverless(t, w);
});

t.test("concurrency: reset and apply at once leave one consistent end state", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  t.equal((await runCli(w, ["apply"])).code, 0);
  const [reset, apply] = await Promise.all([runCli(w, ["reset"]), runCli(w, ["apply"])]);
  t.equal(reset.code, 0, lastError(reset));
  t.equal(apply.code, 0, lastError(apply));
  const drv = w.sim.driverOf(DATA1_BDF);
  const state = await loadState(new Host(w.root));
  const recorded = Object.values(state.bindings).some((b) => b.bdf === DATA1_BDF);
  t.ok(
    (drv === "vfio-pci" && recorded) || (drv === "ena" && !recorded),
    `the state agrees with sysfs (driver ${drv}, recorded ${recorded})`,
  );
  assertNoneDriverless(t, w);
  assertPrimaryUntouched(t, w);
});

t.test(
  "concurrency: a held host lock keeps apply from observing or changing anything until released",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const lockFile = w.sim.p("/run/eni-dpdk.lock");
    const holder = spawn("flock", ["--exclusive", lockFile, "sleep", "2"], { stdio: "ignore" });
    await new Promise((r) => setTimeout(r, 200));
    const writes0 = w.sim.writes.length;
    const p = runCli(w, ["apply"]);
    await new Promise((r) => setTimeout(r, 1200));
    t.equal(w.ec2.mutatingCalls(), 0, "no EC2 mutation while the lock is held");
    t.equal(w.sim.writes.length, writes0, "no sysfs write while the lock is held");
    t.notOk(
      w.imds.requests.some((q) => q.path.includes("network/interfaces/macs")),
      "the NICs are not observed before the lock is held",
    );
    const r = await p;
    holder.kill();
    t.equal(r.code, 0, lastError(r));
    await assertOneOfEach(t, w);
  },
);

// ---- signals ----------------------------------------------------------------------------------------

/**
 * Until Node runs our first line, SIGHUP has the kernel's default action; no program can change
 * that. From the moment /proc shows the signal caught, it must never be fatal.
 */
async function caught(pid: number, signo: number, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // Until exec, the child is a copy of this test process, handlers and all: wait for our program.
    const execd = readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(BUNDLE);
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    if (execd && m && (BigInt(`0x${m[1]}`) >> BigInt(signo - 1)) & 1n) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`pid ${pid} never caught signal ${signo}`);
}

for (const delay of [0, 30, 80, 150, 400]) {
  t.test(
    `concurrency/signals: SIGHUP ${delay} ms after the service catches it (module loading, first apply) is a reload, never its death`,
    async (t) => {
      const w = await world(t, { configToml: baseToml() });
      const notify = await NotifySocket.open();
      t.teardown(() => notify.close());
      const svc = startCli(w, ["run"], { env: { NOTIFY_SOCKET: notify.path } });
      t.teardown(() => svc.signal("SIGKILL"));
      await caught(svc.pid, 1);
      await new Promise((r) => setTimeout(r, delay));
      svc.signal("SIGHUP");
      const ready = await notify.waitFor((f) => f.READY === "1");
      t.match(ready.STATUS, /^ready: 2 ENIs attached, 1 bound to vfio-pci/);
      t.ok(svc.running(), "still running after the SIGHUP");
      await svc.waitForLog((l) => l.msg === "SIGHUP: re-reading the sources");
      svc.signal("SIGTERM");
      t.equal((await svc.exit).code, 0, "a clean stop");
    },
  );
}

t.test(
  "concurrency/signals: with reconcile_interval_seconds = 0 and no watchdog, the service stays up until SIGTERM",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const notify = await NotifySocket.open();
    t.teardown(() => notify.close());
    const svc = startCli(w, ["run"], { env: { NOTIFY_SOCKET: notify.path } });
    t.teardown(() => svc.signal("SIGKILL"));
    await notify.waitFor((f) => f.READY === "1");
    await new Promise((r) => setTimeout(r, 2000));
    t.ok(svc.running(), "still running 2 s after READY, with nothing scheduled");
    svc.signal("SIGTERM");
    t.equal((await svc.exit).code, 0);
    await notify.waitFor((f) => f.STOPPING === "1", 5000);
  },
);

t.test(
  "concurrency/signals: SIGTERM during the first boot stops promptly, and the next start converges",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 0\ntimeout_seconds = 120",
      ),
    });
    w.ec2.faults.stuckAttach = true;
    const notify = await NotifySocket.open();
    t.teardown(() => notify.close());
    const svc = startCli(w, ["run"], { env: { NOTIFY_SOCKET: notify.path } });
    t.teardown(() => svc.signal("SIGKILL"));
    await svc.waitForLog((l) => l.msg === "attaching ENI");
    const t0 = Date.now();
    svc.signal("SIGTERM");
    const exit = await svc.exit;
    t.equal(exit.code, 0, `stopped with 0: ${svc.stderr().slice(-400)}`);
    t.ok(
      Date.now() - t0 < 10_000,
      `stopped ${Date.now() - t0} ms after SIGTERM, not after the 120 s deadline`,
    );
    t.notOk(
      notify.messages.some((m) => m.fields.READY === "1"),
      "never said READY",
    );
    w.ec2.faults.stuckAttach = false;
    w.ec2.completeAttachments();
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    await assertOneOfEach(t, w);
  },
);

t.test(
  "concurrency/signals: a second `run` while one serves converges without fighting",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const a = startCli(w, ["run"]);
    const b = startCli(w, ["run"]);
    t.teardown(() => (a.signal("SIGKILL"), b.signal("SIGKILL")));
    await a.waitForLog((l) => /^ready: /.test(l.msg ?? ""));
    await b.waitForLog((l) => /^ready: /.test(l.msg ?? ""));
    await assertOneOfEach(t, w);
    a.signal("SIGTERM");
    b.signal("SIGTERM");
    t.equal((await a.exit).code, 0);
    t.equal((await b.exit).code, 0);
    t.ok(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8").includes(DATA1_BDF));
  },
);

t.test(
  "concurrency: status during a pass names it; a second apply says whom it waits for; a killed holder is named by neither",
  async (t) => {
    const external = (index: number) =>
      externalEniToml({
        name: `ext${index}`,
        deviceIndex: index,
        resourceName: `amazon.com/ena_dpdk_ext${index}`,
      });
    const config = (...externals: number[]) =>
      baseToml().replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 0\ntimeout_seconds = 30",
      ) + externals.map(external).join("");
    const w = await world(t, { configToml: config(4) });
    const first = startCli(w, ["apply"]);
    t.teardown(() => first.signal("SIGKILL"));
    await first.waitForLog((l) => l.msg === "observe done"); // it holds the lock, waiting for ext4

    const status = await runCli(w, ["status"]);
    t.equal(status.code, 0, lastError(status));
    t.match(
      status.stdout,
      new RegExp(
        `^A pass is running: pid ${first.pid} \\(eni-dpdk apply\\) since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z holds the host lock`,
      ),
    );
    const json = JSON.parse((await runCli(w, ["status", "--json"])).stdout);
    t.match(json.running, { pid: first.pid, command: "apply" });

    const second = runCli(w, ["apply"]);
    await new Promise((r) => setTimeout(r, 1500));
    w.attachAtLaunch({ deviceIndex: 4, subnetId: SUBNET_A, groups: [SG_DPDK] });
    t.equal((await first.exit).code, 0, first.stderr().slice(-800));
    const s = await second;
    t.equal(s.code, 0, lastError(s));
    const waited = s.log.find((l) => l.msg === "waiting for the host lock");
    t.match(waited?.held_by, new RegExp(`^pid ${first.pid} \\(eni-dpdk apply\\) since `));
    t.notMatch((await runCli(w, ["status"])).stdout, /A pass is running/, "none after both");
    t.equal(JSON.parse((await runCli(w, ["status", "--json"])).stdout).running, undefined);

    // killed while it holds the lock: its record stays in the lock file, naming a dead pid
    w.writeConfig(config(4, 5));
    const killed = startCli(w, ["apply"]);
    await killed.waitForLog((l) => l.msg === "observe done");
    killed.signal("SIGKILL");
    await killed.exit;
    t.notMatch(
      (await runCli(w, ["status"])).stdout,
      /A pass is running/,
      "a dead holder is not named",
    );
    w.writeConfig(config(4));
    const after = await runCli(w, ["apply"]);
    t.equal(after.code, 0, lastError(after));
    t.notOk(
      after.log.some((l) => l.msg === "waiting for the host lock"),
      "the lock was free at once",
    );
  },
);

t.test(
  "concurrency: a reset or an unbind while run serves says the service will undo it, naming it; after the service stops, neither warns",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 1",
      ),
    });
    const service = startCli(w, ["run"]);
    t.teardown(() => service.signal("SIGKILL"));
    await service.waitForLog((l) => /^ready: /.test(l.msg ?? ""), 20_000);
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci");
    const undoes = (r: { log: Record<string, string>[] }) =>
      r.log.find((l) => l.level === "warn" && /^the service binds the devices again/.test(l.msg));

    const reset = await runCli(w, ["reset"]);
    t.equal(reset.code, 0, lastError(reset));
    t.match(undoes(reset)?.service, `pid ${service.pid} (eni-dpdk run)`);
    t.match(undoes(reset)?.next, /^systemctl stop eni-dpdk, then reset again/);
    await service.waitForLog((l) => l.msg === "repaired drift", 10_000);
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "as it said: bound again by its next pass");

    const unbind = await runCli(w, ["unbind", DATA1_BDF]);
    t.equal(unbind.code, 0, lastError(unbind));
    t.ok(undoes(unbind), "unbind says so too");

    service.signal("SIGTERM");
    t.equal((await service.exit).code, 0);
    const quiet = await runCli(w, ["reset"]);
    t.equal(quiet.code, 0, lastError(quiet));
    t.notOk(undoes(quiet), "no service: no warning");
    t.not(w.sim.driverOf(DATA1_BDF), "vfio-pci", "and the reset lasts");
  },
);
