// The EC2 client's pacing (Ec2Pacer + pacedEc2 + withEc2Retry), with the real SDK over HTTP
// against the EC2 emulator's per-action buckets: what is sent after a throttle, when, and what a
// restarted process remembers.
import t from "tap";
import {
  Ec2Error,
  Ec2Pacer,
  lazyEc2,
  slotOf,
  withEc2Retry,
  type Ec2Api,
} from "../../../src/cloud/ec2.js";
import { Deadline, type PaceState } from "../../../src/core/deadline.js";
import { EC2_THROTTLE, Ec2Emulator } from "../../../src/sim/ec2.js";
import { SG_DPDK, SUBNET_A, standardSeed, useDummyCredentials } from "../../../src/sim/node.js";

useDummyCredentials();

async function setup(
  t: { teardown(fn: () => unknown): void },
  buckets: Record<string, { capacity: number; refillPerSec: number }>,
  opts: { deadlineMs?: number; now?: () => number } = {},
) {
  const emu = await new Ec2Emulator(standardSeed()).start();
  t.teardown(() => emu.close());
  emu.setThrottle({ ...EC2_THROTTLE, override: buckets });
  const saved: Record<string, { backlog: number; at: number }>[] = [];
  const pacer = new Ec2Pacer({
    identity: async () => "i-0aaaaaaaaaaaaaaa1",
    // the pacer is told the same (small) sizes, as it is told EC2's
    bucketOf: (k) => buckets[k] ?? { capacity: 100, refillPerSec: 20 },
    save: async (s) => void saved.push(s),
    now: opts.now,
  });
  // The pacer's waits end by the client's deadline (the pass's, in the product).
  let deadline = new Deadline(opts.deadlineMs ?? 20_000);
  const setDeadline = (d: Deadline) => (deadline = d);
  const ec2 = await lazyEc2({
    region: "us-west-2",
    endpoint: emu.url,
    pacer,
    deadline: () => deadline,
  })();
  return { emu, ec2, pacer, saved, deadline, setDeadline };
}

const create = (ec2: Ec2Api, deadline: Deadline) =>
  withEc2Retry(
    "CreateNetworkInterface",
    () => ec2.createNetworkInterface({ SubnetId: SUBNET_A, Groups: [SG_DPDK] }),
    { deadline },
  );

t.test("a slot is a stable hash of the identity, in [0, 1)", async (t) => {
  const a = slotOf("i-0aaaaaaaaaaaaaaa1");
  t.equal(slotOf("i-0aaaaaaaaaaaaaaa1"), a);
  t.not(slotOf("i-0aaaaaaaaaaaaaaa2"), a);
  const many = Array.from({ length: 200 }, (_, i) => slotOf(`i-${i}`));
  t.ok(many.every((s) => s >= 0 && s < 1));
  t.ok(many.filter((s) => s < 0.5).length > 70 && many.filter((s) => s >= 0.5).length > 70);
});

t.test(
  "in a storm (describes throttled too) a retry waits for this caller's slot, then is accepted",
  async (t) => {
    const buckets = {
      // slow enough that the second describe is throttled however loaded the machine is
      DescribeSubnets: { capacity: 1, refillPerSec: 2 },
      CreateNetworkInterface: { capacity: 2, refillPerSec: 4 },
    };
    const { emu, ec2, pacer, saved, deadline } = await setup(t, buckets);
    const describe = () =>
      withEc2Retry("DescribeSubnets", () => ec2.describeSubnets({}), { deadline });
    await describe();
    await describe();
    t.ok(pacer.stats.throttled >= 1, "a throttled describe: many nodes at once");
    const before = pacer.stats.throttled;
    await create(ec2, deadline);
    await create(ec2, deadline);
    const t0 = Date.now();
    await create(ec2, deadline);
    const took = Date.now() - t0;
    const creates = emu.requests.filter((r) => r.action === "CreateNetworkInterface");
    t.same(
      creates.map((r) => r.code ?? "ok"),
      ["ok", "ok", "RequestLimitExceeded", "ok"],
      "one throttle, then one paced retry that EC2 accepts: no blind retries",
    );
    // backlog 4 (two bucket-fulls) at refill 4/s: the retry comes slot x 1 s later, when the
    // bucket (a token every 0.25 s) has one again
    const slot = 0.05 + 0.95 * slotOf("i-0aaaaaaaaaaaaaaa1");
    t.ok(took >= slot * 1000 - 50, `waited for the slot (${took} ms, slot ${slot.toFixed(2)})`);
    t.equal(pacer.stats.throttled, before + 1);
    await new Promise((r) => setImmediate(r));
    t.equal(saved.length, 1, "a mutating call was sent: the learned state is saved for a restart");
    t.ok(saved[0].CreateNetworkInterface.backlog >= 3.9);
    t.ok(saved[0].storm, "and that it is a storm");
  },
);

t.test("a lone throttle (no describe throttled): half a bucket-full, a token's wait", async (t) => {
  const buckets = { CreateNetworkInterface: { capacity: 4, refillPerSec: 4 } };
  const { emu, ec2, pacer, deadline } = await setup(t, buckets);
  for (let i = 0; i < 4; i++) await create(ec2, deadline);
  const t0 = Date.now();
  await create(ec2, deadline);
  const took = Date.now() - t0;
  t.equal(pacer.stats.throttled, 1, "the retry came when the bucket had a token again");
  t.ok(took >= 250 && took < 1500, `waited a token's time, spread by the slot (${took} ms)`);
  t.ok(pacer.backlog("CreateNetworkInterface") <= 2, "half of the 4-token bucket, draining");
  t.same(
    emu.requests.filter((r) => r.action === "CreateNetworkInterface").map((r) => r.code ?? "ok"),
    ["ok", "ok", "ok", "ok", "RequestLimitExceeded", "ok"],
  );
});

t.test("a throttled describe raises the buckets still ahead, by calls per node", async (t) => {
  const buckets = {
    DescribeNetworkInterfaces: { capacity: 1, refillPerSec: 2 }, // slow: the second is throttled on a loaded machine too
    CreateNetworkInterface: { capacity: 10, refillPerSec: 5 },
  };
  // The pacer's clock stands still: what it learned does not drain while we look.
  const { ec2, pacer, saved, deadline } = await setup(t, buckets, { now: () => 1e12 });
  pacer.expect({ DescribeNetworkInterfaces: 2, CreateNetworkInterface: 4 });
  const describe = () =>
    withEc2Retry(
      "DescribeNetworkInterfaces",
      () => ec2.describeNetworkInterfaces({ Filters: [{ Name: "vpc-id", Values: ["x"] }] }),
      { deadline },
    );
  await describe();
  await describe();
  t.ok(pacer.stats.throttled >= 1);
  const dni = pacer.backlog("DescribeNetworkInterfaces");
  t.equal(dni, 2 * pacer.stats.throttled, "two bucket-fulls per throttle");
  t.equal(
    pacer.backlog("CreateNetworkInterface"),
    (dni / 2) * 4,
    "the creates ahead are seeded: per node, 2 describes become 4 creates",
  );
  t.equal(pacer.backlog("AttachNetworkInterface"), 0, "a bucket this node does not expect: left");
  t.equal(saved.length, 0, "only describes sent: nothing written (a rejected run writes nothing)");
});

t.test(
  "a slot past the deadline: wait the deadline out (no call), fail with the reason",
  async (t) => {
    const buckets = { AttachNetworkInterface: { capacity: 1, refillPerSec: 0.01 } };
    const { emu, ec2, pacer, setDeadline } = await setup(t, buckets);
    const attach = (deadline: Deadline) =>
      setDeadline(deadline) &&
      withEc2Retry(
        "AttachNetworkInterface",
        () =>
          ec2.attachNetworkInterface({
            NetworkInterfaceId: "eni-0000000000000dead",
            InstanceId: "i-0aaaaaaaaaaaaaaa1",
            DeviceIndex: 1,
            NetworkCardIndex: 0,
          }),
        { deadline },
      );
    // the first attach takes the only token (and fails: no such ENI), the second is throttled
    await attach(new Deadline(5000)).catch(() => {});
    const t0 = Date.now();
    const err = (await attach(new Deadline(600)).catch((e: unknown) => e)) as Ec2Error;
    const took = Date.now() - t0;
    t.type(err, Ec2Error);
    t.equal(err.code, "RequestLimitExceeded");
    t.match(err.message, /next try is due in \d+ s, after this run's deadline/);
    t.match(err.hint, /next start .* adopts what was created/);
    t.ok(took >= 550 && took < 2000, `it waited out its deadline, no longer (${took} ms)`);
    t.same(
      emu.requests.filter((r) => r.action === "AttachNetworkInterface").map((r) => r.code),
      ["InvalidNetworkInterfaceID.NotFound", "RequestLimitExceeded"],
      "no call sent while waiting: the throttled one was the last",
    );
    const left = pacer.backlog("AttachNetworkInterface");
    t.ok(Math.abs(left - 0.5) < 0.02, `a lone throttle: half a bucket-full (${left.toFixed(3)})`);

    const aborted = new Deadline(30_000);
    setTimeout(() => aborted.abort(), 100);
    const a0 = Date.now();
    await attach(aborted).catch(() => {});
    t.ok(Date.now() - a0 < 1500, "SIGTERM (abort) ends the pacer's wait at once");
  },
);

t.test("a restarted process goes on from what /run kept, drained since", async (t) => {
  const buckets = { CreateNetworkInterface: { capacity: 1, refillPerSec: 1 } };
  const learned = { CreateNetworkInterface: { backlog: 50, at: Date.now() - 10_000 } };
  const restarted = new Ec2Pacer({
    identity: async () => "i-0aaaaaaaaaaaaaaa1",
    bucketOf: () => buckets.CreateNetworkInterface,
    load: async () => learned,
  });
  const d = new Deadline(200);
  const err = await restarted.before("CreateNetworkInterface", "CreateNetworkInterface", d).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(
    Math.abs(restarted.backlog("CreateNetworkInterface") - 40) < 0.5,
    "50 learned 10 s ago at 1/s: 40 ahead",
  );
  t.type(err, Ec2Error, "its slot is seconds away: past a 0.2 s deadline");
  // The turn, on a clock the test moves: the run ends waiting, the next start comes 100 s later.
  let clock = Date.now();
  const kept = { CreateNetworkInterface: { backlog: 500, at: clock - 10_000 } };
  const ask = async (state: Record<string, PaceState>) => {
    const p = new Ec2Pacer({
      identity: async () => "i-0aaaaaaaaaaaaaaa1",
      bucketOf: () => buckets.CreateNetworkInterface,
      load: async () => state,
      now: () => clock,
    });
    const e = (await p
      .before("CreateNetworkInterface", "CreateNetworkInterface", new Deadline(100))
      .catch((e: unknown) => e)) as Ec2Error;
    return { message: e.message, state: p.snapshot() };
  };
  const slot = 0.05 + 0.95 * slotOf("i-0aaaaaaaaaaaaaaa1");
  const first = await ask(kept);
  const turn = clock - 10_000 + slot * 500 * 1000;
  t.match(first.message, `due in ${Math.round((turn - clock) / 1000)} s`);
  t.equal(first.state.CreateNetworkInterface.turn, turn, "the turn is kept as a time");
  clock += 100_000;
  const second = await ask(first.state);
  const left = Math.round((turn - clock) / 1000);
  const anew = Math.round(slot * 390);
  t.not(left, anew, "(the two readings differ for this slot)");
  t.match(
    second.message,
    `due in ${left} s`,
    `the next start keeps the turn (${left} s), not its slot of what is left anew (${anew} s)`,
  );
  const garbage = new Ec2Pacer({
    identity: async () => "i-0aaaaaaaaaaaaaaa1",
    load: async () => ({ CreateNetworkInterface: { backlog: "x", at: null } }) as never,
  });
  await garbage.before("CreateNetworkInterface", "CreateNetworkInterface", new Deadline(100));
  t.equal(garbage.backlog("CreateNetworkInterface"), 0, "a damaged file is ignored");
});

t.test(
  "a restarted process's describes, throttled again, do not count the storm twice",
  async (t) => {
    const storm = async (load?: () => Promise<Record<string, PaceState>>) => {
      const p = new Ec2Pacer({ identity: async () => "i-0aaaaaaaaaaaaaaa1", load });
      p.expect({ DescribeInstances: 1, CreateNetworkInterface: 2 });
      await p.before("DescribeInstances", "DescribeInstances", new Deadline(1000));
      const create = p.backlog("CreateNetworkInterface");
      p.throttled("DescribeInstances");
      return { before: create, after: p.backlog("CreateNetworkInterface") };
    };
    const fresh = await storm();
    t.ok(
      fresh.after > fresh.before,
      "a first start learns from its describes how crowded the creates are",
    );
    const learned = { CreateNetworkInterface: { backlog: 300, at: Date.now() } };
    const resumed = await storm(async () => learned);
    t.ok(
      Math.abs(resumed.after - resumed.before) < 1,
      `a restarted one keeps what its predecessor learned of the creates (${resumed.before.toFixed(0)} → ${resumed.after.toFixed(0)})`,
    );
  },
);
