// Area: crash. `apply` killed with SIGKILL at each rename and unlink of eni-dpdk's files (strace
// kills it at the syscall); the next run converges (test/support/crash.ts says what that means and
// holds the crash points).
import t from "tap";
import { Host } from "../../../src/host/host.js";
import { JOURNAL_PATH, loadState } from "../../../src/host/state.js";
import { lastError, runCli, world, baseToml } from "../../support/harness.js";
import {
  assertConverged,
  CRASH_POINTS,
  crashPointTests,
  crashRun,
  DATA1_BDF,
} from "../../support/crash.js";

crashPointTests(CRASH_POINTS.filter((p) => p.syscall && p.syscall.call !== "write"));

t.test(
  "crash: the binding is on record before the journal forgets the bind; killed between, the next apply is quick",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const killed = await crashRun(w, ["apply"], {
      name: "at the journal's unlink",
      syscall: { call: "unlink", path: JOURNAL_PATH },
    });
    t.equal(killed.signal, "SIGKILL");
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "killed after the bind");
    // with no netdev left, the state's record is all that finds the device again
    const state = await loadState(new Host(w.root));
    t.match(
      Object.values(state.bindings).find((b) => b.bdf === DATA1_BDF),
      { driver: "vfio-pci", originalDriver: "ena", eniName: "data1" },
      "the state already records the binding",
    );
    const t0 = Date.now();
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.ok(Date.now() - t0 < 15_000, `converged in ${Date.now() - t0} ms, not after a NIC wait`);
    await assertConverged(t, w);
  },
);
