// The node's wall clock, moved with libfaketime (LD_PRELOAD) on the real bundle.
// - A step while it waits (chrony's makestep at boot, an operator's `date -s`): waits run on the
//   monotonic clock, so a step forward does not end them at once, a step back does not stretch
//   them, and `run`'s watchdog keeps pinging through a pass that is waiting.
// - A clock off from EC2's by more than EC2's 15 minutes: the emulator refuses the signature as EC2
//   does (RequestExpired), the SDK takes EC2's time from the answer, and the call is retried.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t, { type Test } from "tap";
import { SG_DPDK, SUBNET_A, type World } from "../../src/sim/world.js";
import { NotifySocket } from "../support/notify.js";
import {
  baseToml,
  externalEniToml,
  lastError,
  runCli,
  startCli,
  world,
} from "../support/harness.js";

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const BDF = "0000:00:06.0";

const toml = (timeoutSeconds: number, eni = true) => `[service]
sources = ["file", "user-data", "tags"]
reconcile_interval_seconds = 0
timeout_seconds = ${timeoutSeconds}
${eni ? externalEniToml() : ""}`;

/** A clock off by `offset` (libfaketime's "+1h", "-1h") from the start. */
const offClock = (offset: string): NodeJS.ProcessEnv => {
  if (!existsSync(LIBFAKETIME))
    throw new Error(`${LIBFAKETIME} is missing: apt-get install libfaketime`);
  return { LD_PRELOAD: LIBFAKETIME, FAKETIME: offset, DONT_FAKE_MONOTONIC: "1" };
};

/** The environment that puts the child on a wall clock the test steps (FAKETIME_TIMESTAMP_FILE). */
function steppedClock(t: Test): { env: NodeJS.ProcessEnv; step(offset: string): void } {
  if (!existsSync(LIBFAKETIME))
    throw new Error(`${LIBFAKETIME} is missing: apt-get install libfaketime`);
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-clock-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "offset");
  writeFileSync(file, "+0\n");
  return {
    env: {
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: file,
      // read the file at every call, so a step takes effect at once; the monotonic clock is left real
      FAKETIME_NO_CACHE: "1",
      DONT_FAKE_MONOTONIC: "1",
    },
    step: (offset) => writeFileSync(file, `${offset}\n`),
  };
}

const after = (ms: number, f: () => void) => new Promise<void>((r) => setTimeout(() => r(f()), ms));
const attach = (w: World) =>
  w.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] });

t.test(
  "the clock steps an hour forward while apply waits for an external ENI: it waits on and binds it",
  async (t) => {
    const w = await world(t, { configToml: toml(20) });
    const clock = steppedClock(t);
    const started = performance.now();
    const run = runCli(w, ["apply"], { env: clock.env });
    await after(1000, () => clock.step("+1h"));
    await after(1500, () => attach(w));
    const r = await run;
    const took = performance.now() - started;
    t.equal(r.code, 0, lastError(r));
    t.equal(w.sim.driverOf(BDF), "vfio-pci", "bound once it appeared");
    const appeared = r.log.find((l) => l.msg === "external ENI appeared");
    t.ok(appeared, "the wait saw it appear");
    const waited = Number(appeared?.ms);
    t.ok(waited >= 2000 && waited < took, `waited ${waited} ms as measured, not the hour`);
    t.match(r.stderr, /msg="ready: 1 ENI attached, 1 bound to vfio-pci/);
    t.ok(took < 15_000, `the apply took ${took.toFixed(0)} ms`);
  },
);

t.test(
  "the clock steps an hour back while apply waits: it still gives up at its own bound",
  async (t) => {
    const w = await world(t, { configToml: toml(10) });
    const clock = steppedClock(t);
    const started = performance.now();
    const run = runCli(w, ["apply"], { env: clock.env, timeoutMs: 30_000 });
    await after(1000, () => clock.step("-1h"));
    const r = await run;
    const took = performance.now() - started;
    t.equal(r.code, 1, lastError(r));
    t.ok(took < 20_000, `exited ${took.toFixed(0)} ms after it started (timeout_seconds = 10)`);
    t.match(lastError(r), /^timed out after [6-8]\.\d s waiting for the external ENI "data1"/);
    t.equal(w.sim.driverOf(BDF), undefined, "nothing there, nothing bound");
    t.same(w.ec2.requests, [], "no EC2 call for an external ENI");
  },
);

t.test(
  "run: the clock steps an hour forward during a pass: the watchdog pings on, the pass ends well",
  async (t) => {
    const w = await world(t, { configToml: toml(20, false) });
    const notify = await NotifySocket.open();
    t.teardown(() => notify.close());
    const clock = steppedClock(t);
    const p = startCli(w, ["run"], {
      env: { ...clock.env, NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: "1000000" },
    });
    t.teardown(() => p.signal("SIGKILL"));
    await notify.waitFor((f) => f.READY === "1", 20_000);

    // a reload that adds an ENI not attached yet: the pass waits for it
    w.writeConfig(toml(20));
    p.signal("SIGHUP");
    await p.waitForLog((l) => l.msg === "sources done" && l.enis === "1", 10_000);
    clock.step("+1h");
    const atStep = notify.messages.length;
    await after(2500, () => attach(w));
    const pingsWhileWaiting = notify.messages
      .slice(atStep)
      .filter((m) => m.fields.WATCHDOG === "1").length;
    t.ok(
      pingsWhileWaiting >= 3,
      `${pingsWhileWaiting} watchdog pings in the 2.5 s after the step (every 0.5 s)`,
    );
    const done = await notify.waitFor(
      (f) => /^ready: 1 ENI attached, 1 bound/.test(f.STATUS ?? ""),
      15_000,
    );
    t.ok(done, done.STATUS);
    t.equal(w.sim.driverOf(BDF), "vfio-pci");
    t.notMatch(p.stderr(), /timed out|reconcile failed/);
    p.signal("SIGTERM");
    t.equal((await p.exit).code, 0, p.stderr().slice(-800));
  },
);

for (const [offset, words] of [
  ["+1h", "an hour ahead of"],
  ["-1h", "an hour behind"],
] as const) {
  t.test(
    `a first boot whose clock is ${words} EC2's: signed with EC2's time, it converges`,
    async (t) => {
      const w = await world(t, { configToml: baseToml() });
      const r = await runCli(w, ["apply"], { env: offClock(offset) });
      t.equal(r.code, 0, lastError(r));
      const refused = w.ec2.requests.filter((q) => q.code === "RequestExpired");
      t.ok(refused.length >= 1, `${refused.length} requests refused as expired, as EC2 would`);
      t.ok(
        w.ec2.requests
          .slice(w.ec2.requests.lastIndexOf(refused.at(-1)!) + 1)
          .every((q) => q.status === 200),
        "every request after the correction is accepted",
      );
      t.equal(
        w.ec2.requests.filter((q) => q.action === "CreateNetworkInterface").length,
        2,
        "no create refused, none twice",
      );
      t.equal(w.ec2.enisByState().attached, 3, "the primary and both ENIs");
      t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci", "data1 bound");
      const warned = r.log.filter((l) => l.msg?.startsWith("the node's clock is off from EC2's"));
      t.equal(warned.length, 1, "one warning");
      const off = Number(warned[0]?.off_by_s);
      t.ok(
        Math.abs(Math.abs(off) - 3600) < 30 && Math.sign(off) === (offset[0] === "+" ? 1 : -1),
        `off by ${off} s`,
      );
    },
  );
}

t.test(
  "a RequestExpired that gives no time to correct by fails at once and names the clock",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    // EC2's answer with the right time in Date: the SDK learns no offset, so nothing is corrected
    w.ec2.faults.errors.DescribeNetworkInterfaces = {
      status: 400,
      code: "RequestExpired",
      message: "Request has expired.",
      count: Infinity,
    };
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(lastError(r), /DescribeNetworkInterfaces failed: RequestExpired/);
    t.match(
      r.stderr,
      /the node's clock may be more than 15 minutes off AWS's \(check `chronyc tracking`/,
    );
    t.equal(w.ec2.requests.filter((q) => q.code === "RequestExpired").length, 1, "not retried");
    t.equal(w.ec2.mutatingCalls({ accepted: true }), 0, "nothing took effect");
  },
);
