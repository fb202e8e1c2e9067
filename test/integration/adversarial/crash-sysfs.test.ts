// Area: crash. `apply` killed with SIGKILL at each sysfs write (strace), and the device commands
// killed mid-restore; the next run converges (test/support/crash.ts says what that means and holds
// the crash points).
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import type { World } from "../../../src/sim/world.js";
import { Host } from "../../../src/host/host.js";
import { JOURNAL_PATH, loadState, STATE_PATH } from "../../../src/host/state.js";
import { assertNoneDriverless, baseToml, lastError, runCli, world } from "../../support/harness.js";
import {
  assertConverged,
  CRASH_POINTS,
  crashPointTests,
  crashRun,
  DATA1_BDF,
  KERN1_BDF,
  tempFiles,
} from "../../support/crash.js";

crashPointTests(CRASH_POINTS.filter((p) => p.syscall?.call === "write"));

/** A node converged by one apply, then rebooted: its devices back on ena, the state kept. */
async function rebooted(t: Test, configToml: string): Promise<World> {
  const w = await world(t, { configToml });
  t.equal((await runCli(w, ["apply"])).code, 0);
  w.reboot();
  return w;
}

t.test(
  "crash: killed between unbind and probe, then the node reboots; early and apply converge",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const killed = await crashRun(w, ["apply"], {
      name: "probe",
      syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
    });
    t.equal(killed.signal, "SIGKILL");
    t.equal(
      w.sim.driverOf(DATA1_BDF),
      undefined,
      "the crash left data1 driverless (the window is real)",
    );
    // early runs before the network: it must not wait for a netdev that never comes
    const t0 = Date.now();
    const early = await runCli(w, ["early"]);
    t.ok(
      Date.now() - t0 < 15_000,
      `early finished in ${Date.now() - t0} ms, not after a whole deadline`,
    );
    t.equal(early.code, 0, lastError(early));
    t.ok(w.sim.driverOf(DATA1_BDF), "early gave data1 a driver back");
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    await assertConverged(t, w);
  },
);

t.test(
  "crash: a second apply after the crash does not wait its deadline for the driverless NIC",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 0\ntimeout_seconds = 60",
      ),
    });
    await crashRun(w, ["apply"], {
      name: "probe",
      syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
    });
    const plan = await runCli(w, ["plan"]);
    t.match(
      plan.stdout,
      new RegExp(`host +recover +${DATA1_BDF} +finish or roll back the bind \\(ena → vfio-pci\\)`),
      "plan shows the journal's interrupted bind",
    );
    t.equal(w.sim.driverOf(DATA1_BDF), undefined, "and leaves it as it is");
    const t0 = Date.now();
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.ok(Date.now() - t0 < 20_000, `converged in ${Date.now() - t0} ms`);
    t.ok(
      r.log.some((l) => l.msg === "rolled back an interrupted bind" && l.bdf === DATA1_BDF),
      "the log says what recovery did",
    );
  },
);

t.test(
  "crash: `eni-dpdk unbind` killed between unbind and probe; the next command finishes the restore",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    t.equal((await runCli(w, ["apply"])).code, 0);
    const killed = await crashRun(w, ["unbind", "data1"], {
      name: "probe",
      syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
    });
    t.equal(killed.signal, "SIGKILL");
    t.equal(w.sim.driverOf(DATA1_BDF), undefined, "driverless after the crash");
    const st = await runCli(w, ["status", "--json"]);
    t.equal(st.code, 0);
    const again = await runCli(w, ["unbind", "data1"]);
    t.equal(again.code, 0, lastError(again));
    t.equal(w.sim.driverOf(DATA1_BDF), "ena", "back on ena");
    t.ok(w.sim.netdevOf(DATA1_BDF), "with its netdev");
    const state = await loadState(new Host(w.root));
    t.notOk(
      Object.values(state.bindings).some((b) => b.eniName === "data1"),
      "the binding record is gone",
    );
    assertNoneDriverless(t, w);
  },
);

t.test(
  "crash: `eni-dpdk early` killed between unbind and probe at boot; the full apply converges",
  async (t) => {
    const w = await rebooted(t, baseToml());
    const killed = await crashRun(w, ["early"], {
      name: "probe",
      syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
    });
    t.equal(killed.signal, "SIGKILL");
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    await assertConverged(t, w);
  },
);

t.test("crash: `eni-dpdk reset` killed mid-restore; a second reset completes it", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  t.equal((await runCli(w, ["apply"])).code, 0);
  const killed = await crashRun(w, ["reset"], {
    name: "probe",
    syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
  });
  t.equal(killed.signal, "SIGKILL");
  const r = await runCli(w, ["reset"]);
  t.equal(r.code, 0, lastError(r));
  t.equal(w.sim.driverOf(DATA1_BDF), "ena");
  assertNoneDriverless(t, w);
  const sriov = JSON.parse(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8")) as {
    resourceList: unknown[];
  };
  t.same(sriov.resourceList, [], "our SR-IOV entry is gone");
  t.same(tempFiles(w.root), [], "no temp file left");
});

t.test(
  "crash: temp files of a killed state write are cleaned by the next run, a live writer's are not",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await crashRun(
      w,
      ["apply"],
      { name: "state", syscall: { call: "rename", path: STATE_PATH } },
      t,
    );
    const left = tempFiles(w.root);
    t.ok(
      left.some((f) => f.startsWith("var/lib/eni-dpdk/.state.json.")),
      `the crash left its temp file (${left.join(", ")})`,
    );
    // a temp file of a process that is alive (this test) must survive
    const live = w.sim.p(`/var/lib/eni-dpdk/.state.json.${process.pid}.1.tmp`);
    (await import("node:fs")).writeFileSync(live, "{}");
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.same(
      tempFiles(w.root),
      [path.relative(w.root, live)],
      "only the live writer's temp file remains",
    );
    t.ok(statSync(live).isFile());
  },
);

t.test(
  "crash: two devices bound at once, killed at the second probe; the next apply finishes both",
  async (t) => {
    // kern1 as a second DPDK ENI: both are bound in the same apply, at once
    const twoDpdk = baseToml().replace(
      "  [eni.dpdk]\n  enabled = false",
      '  [eni.dpdk]\n  resource_name = "amazon.com/ena_dpdk"',
    );
    t.not(twoDpdk, baseToml(), "the config has two DPDK ENIs");
    const w = await rebooted(t, twoDpdk);
    const before = w.sim.writes.length;
    const killed = await crashRun(w, ["apply"], {
      name: "second probe",
      syscall: { call: "write", path: "/sys/bus/pci/drivers_probe", when: 2 },
    });
    t.equal(killed.signal, "SIGKILL");
    await w.sim.settle();
    const probes = w.sim.writes
      .slice(before)
      .filter((x) => x.path === "/sys/bus/pci/drivers_probe");
    t.same(
      probes.map((x) => x.value),
      [probes[0]?.value],
      "killed before its second probe: one device was probed",
    );
    const left = [DATA1_BDF, KERN1_BDF].filter((bdf) => !w.sim.driverOf(bdf));
    t.equal(left.length, 1, `the other is driverless (${left.join(", ")})`);
    // a reboot's rebinds are what their records describe: those are the intents, no journal
    t.throws(() => statSync(w.sim.p(JOURNAL_PATH)), "no journal was written");
    const recorded = await loadState(new Host(w.root));
    t.ok(
      Object.values(recorded.bindings).some((b) => b.bdf === left[0] && b.driver === "vfio-pci"),
      "the driverless device's binding is on record",
    );
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.ok(
      r.log.some(
        (l) =>
          l.msg === "rolled back an interrupted bind of a recorded device" &&
          l.bdf === left[0] &&
          l.was === "driverless",
      ),
      "recovery gave it back to ena from its record, and says so",
    );
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "data1 is bound");
    t.equal(w.sim.driverOf(KERN1_BDF), "vfio-pci", "and kern1");
    assertNoneDriverless(t, w);
    t.same(tempFiles(w.root), [], "no temp file left");
    t.throws(() => statSync(w.sim.p("/var/lib/eni-dpdk/inflight.json")), "the journal is empty");
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    t.match(again.stderr, /actions=0/, "a further apply changes nothing");
  },
);

t.test(
  "crash: after a reboot, killed at ena's unbind (the override written, no journal); the next apply takes the override back and binds",
  async (t) => {
    const w = await rebooted(t, baseToml());
    const killed = await crashRun(w, ["apply"], {
      name: "unbind after a reboot",
      syscall: { call: "write", path: "/sys/bus/pci/drivers/ena/unbind" },
    });
    t.equal(killed.signal, "SIGKILL");
    await w.sim.settle();
    t.equal(w.sim.driverOf(DATA1_BDF), "ena", "still on ena");
    t.equal(
      readFileSync(w.sim.p(`/sys/bus/pci/devices/${DATA1_BDF}/driver_override`), "utf8").trim(),
      "vfio-pci",
      "with our override on it: the window is real",
    );
    t.throws(() => statSync(w.sim.p(JOURNAL_PATH)), "no journal: the record is the intent");
    const plan = await runCli(w, ["plan"]);
    t.match(
      plan.stdout,
      new RegExp(
        `host +recover +${DATA1_BDF} +roll back the interrupted bind of data1 \\(on ena with the override vfio-pci\\) to ena, then bind it again`,
      ),
      "plan shows what recovery will do",
    );
    t.equal(
      readFileSync(w.sim.p(`/sys/bus/pci/devices/${DATA1_BDF}/driver_override`), "utf8").trim(),
      "vfio-pci",
      "and plan did not do it",
    );
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.ok(
      r.log.some(
        (l) =>
          l.msg === "rolled back an interrupted bind of a recorded device" &&
          l.bdf === DATA1_BDF &&
          l.was === "on ena with the override vfio-pci",
      ),
      "recovery took the override back, and says so",
    );
    await assertConverged(t, w);
  },
);
