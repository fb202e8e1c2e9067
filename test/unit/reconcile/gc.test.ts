// The leaked-ENI collection against the EC2 emulator with the real SDK: what it deletes (ENIs of
// ours whose instance is gone, past the grace period, within the bound), and every ENI it must
// never touch: in use, foreign, forged tags, too young, its owner alive, this node's own.
import t from "tap";
import { runGc } from "../../../src/reconcile/gc.js";
import {
  applyEnis,
  planEnis,
  TAG_CREATED_AT,
  TAG_INSTANCE,
  TAG_NAME,
  TAG_NO_MANAGE,
} from "../../../src/reconcile/eni.js";
import { buildConfig, type GcConfig } from "../../../src/config/model.js";
import { Deadline } from "../../../src/core/deadline.js";
import { silentLogger } from "../../../src/core/log.js";
import { lazyEc2 } from "../../../src/cloud/ec2.js";
import { EC2_THROTTLE, Ec2Emulator, type EmuEni } from "../../../src/sim/ec2.js";
import {
  SG_DPDK,
  SUBNET_A,
  SUBNET_PRIMARY,
  SimNode,
  VPC,
  eniConfigs,
  standardSeed,
  useDummyCredentials,
} from "../../../src/sim/node.js";
import { isGcDescribe } from "../../support/ec2-requests.js";

useDummyCredentials();

const SELF = "i-0aaaaaaaaaaaaaaa1";
const DEAD = "i-0dddddddddddddd01";
const GONE = "i-0dddddddddddddd02";
const ALIVE = "i-0bbbbbbbbbbbbbbb1";
const defaults = (over: Partial<GcConfig> = {}): GcConfig => ({
  ...buildConfig([]).config.gc,
  ...over,
});
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

function instance(id: string, n: number) {
  return {
    instanceId: id,
    instanceType: "c6in.4xlarge",
    az: "us-west-2a",
    vpcId: VPC,
    subnetId: SUBNET_PRIMARY,
    primaryEniId: `eni-0a0a0a0a0a0a0a0${n}`,
    primaryMac: `02:00:00:00:0a:0${n}`,
  };
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const emu = await new Ec2Emulator({
    ...standardSeed(),
    instances: [instance(SELF, 1), instance(DEAD, 2), instance(GONE, 3), instance(ALIVE, 4)],
  }).start();
  t.teardown(() => emu.close());
  emu.terminateInstance(DEAD);
  emu.forgetInstance(GONE);
  const ec2 = lazyEc2({ region: "us-west-2", endpoint: emu.url });
  const ctx = { instance: { instanceId: SELF }, log: silentLogger, deadline: new Deadline(20_000) };
  return { emu, ec2, ctx };
}

/** An "available" ENI carrying eni-dpdk's creation tags (or `tags` in their place). */
function ours(emu: Ec2Emulator, owner: string, over: Partial<EmuEni> = {}): EmuEni {
  return emu.addEni({
    subnetId: SUBNET_A,
    groups: [SG_DPDK],
    createdByApi: true,
    tags: {
      [TAG_INSTANCE]: owner,
      [TAG_NAME]: "data1",
      [TAG_NO_MANAGE]: "true",
      [TAG_CREATED_AT]: minutesAgo(30),
    },
    ...over,
  });
}

t.test("deletes ours whose instance is terminated or gone; keeps every other ENI", async (t) => {
  const { emu, ec2, ctx } = await setup(t);
  const dead = ours(emu, DEAD);
  const gone = ours(emu, GONE);
  const young = ours(emu, DEAD, {
    tags: { ...dead.tags, [TAG_CREATED_AT]: minutesAgo(2) },
  });
  const future = ours(emu, DEAD, {
    tags: { ...dead.tags, [TAG_CREATED_AT]: new Date(Date.now() + 86_400_000).toISOString() },
  });
  const garbageTime = ours(emu, DEAD, { tags: { ...dead.tags, [TAG_CREATED_AT]: "yesterday" } });
  const noTime = ours(emu, DEAD, {
    tags: { [TAG_INSTANCE]: DEAD, [TAG_NAME]: "data1", [TAG_NO_MANAGE]: "true" },
  });
  const alive = ours(emu, ALIVE);
  const mine = ours(emu, SELF);
  // hostile: someone else's ENIs wearing some of our tags
  const forgedOwner = ours(emu, "i-*", { tags: { ...dead.tags, [TAG_INSTANCE]: "i-*" } });
  const noName = ours(emu, DEAD, {
    tags: { [TAG_INSTANCE]: DEAD, [TAG_NO_MANAGE]: "true", [TAG_CREATED_AT]: minutesAgo(30) },
  });
  const noNoManage = ours(emu, DEAD, {
    tags: { [TAG_INSTANCE]: DEAD, [TAG_NAME]: "data1", [TAG_CREATED_AT]: minutesAgo(30) },
  });
  const foreign = emu.addEni({ subnetId: SUBNET_A, tags: { team: "other" } });
  // in use, with every one of our tags forged, its instance terminated: never deleted
  const inUse = ours(emu, DEAD);
  inUse.attachment = {
    attachmentId: "eni-attach-0ccccccccccccccc1",
    instanceId: ALIVE,
    deviceIndex: 3,
    networkCardIndex: 0,
    status: "attached",
    deleteOnTermination: false,
    attachTime: new Date().toISOString(),
  };

  const dry = await runGc(ctx, ec2, { config: defaults(), dryRun: true });
  t.same(dry.wouldDelete.map((e) => e.eniId).sort(), [dead.id, gone.id].sort());
  t.same(dry.deleted, [], "a dry run deletes nothing");
  t.equal(emu.mutatingCalls(), 0, "and sends no mutating call");
  const reason = (id: string) => dry.kept.find((k) => k.eniId === id)?.reason ?? "(not kept)";
  t.match(reason(young.id), /inside the 5 min grace period/);
  t.match(reason(future.id), /inside the 5 min grace period/, "a future creation time: kept");
  t.match(reason(garbageTime.id), /no valid eni-dpdk:created-at/);
  t.match(reason(noTime.id), /no valid eni-dpdk:created-at/);
  t.match(reason(alive.id), new RegExp(`its instance ${ALIVE} is running`));
  t.match(reason(mine.id), /created for this instance/);
  t.match(reason(forgedOwner.id), /is not an instance id/);
  t.match(reason(noName.id), /no valid eni-dpdk:name/);
  t.match(reason(noNoManage.id), /no node.k8s.amazonaws.com\/no_manage=true/);
  t.notOk(
    [...dry.kept, ...dry.wouldDelete].some((k) => k.eniId === foreign.id || k.eniId === inUse.id),
    "ENIs without our tag key or in use are not even listed",
  );

  const real = await runGc(ctx, ec2, { config: defaults(), dryRun: false });
  t.same(real.deleted.map((e) => e.eniId).sort(), [dead.id, gone.id].sort());
  t.same(
    real.deleted.map((e) => e.ownerState).sort(),
    ["not found", "terminated"],
    "why each could go",
  );
  for (const e of [young, future, garbageTime, noTime, alive, mine, forgedOwner, noName])
    t.ok(emu.enis.has(e.id), `${e.id} still there`);
  for (const e of [noNoManage, foreign, inUse]) t.ok(emu.enis.has(e.id));
  t.equal(emu.mutatingCalls({ accepted: true }), 2, "two deletes, nothing else");
  t.same(
    (await runGc(ctx, ec2, { config: defaults(), dryRun: false })).deleted,
    [],
    "a second pass finds nothing more",
  );
});

t.test("bounded per pass; a pass at the same time as another deletes each once", async (t) => {
  const { emu, ec2, ctx } = await setup(t);
  const leaked = Array.from({ length: 7 }, () => ours(emu, DEAD));
  const first = await runGc(ctx, ec2, { config: defaults({ max_deletes: 3 }), dryRun: false });
  t.equal(first.deleted.length, 3, "max_deletes");
  t.equal(first.deferred, 4, "the rest left for a later pass");
  const [a, b] = await Promise.all([
    runGc(ctx, ec2, { config: defaults(), dryRun: false, random: () => 0.1 }),
    runGc(ctx, ec2, { config: defaults(), dryRun: false, random: () => 0.1 }),
  ]);
  t.equal(a.deleted.length + b.deleted.length, 4, "each ENI deleted once");
  t.equal(a.alreadyGone.length + b.alreadyGone.length, 4, "the other pass saw it gone");
  t.same([...a.errors, ...b.errors], []);
  t.notOk(
    leaked.some((e) => emu.enis.has(e.id)),
    "all gone",
  );
});

t.test("EC2 answering in pages of two: every leaked ENI and every owner is read", async (t) => {
  const { emu, ec2, ctx } = await setup(t);
  emu.pageSize = 2;
  const leaked = [...Array.from({ length: 3 }, () => ours(emu, DEAD)), ours(emu, GONE)];
  const kept = ours(emu, ALIVE);
  const from = emu.requests.length;
  const gc = await runGc(ctx, ec2, { config: defaults(), dryRun: false });
  t.same(gc.deleted.map((d) => d.eniId).sort(), leaked.map((e) => e.id).sort());
  t.ok(emu.enis.has(kept.id), "the live owner's ENI is kept");
  const pages = emu.requests.slice(from).filter((r) => r.action === "DescribeNetworkInterfaces");
  t.equal(pages.length, 3, "five ENIs in pages of two");
});

// The e2e reboot check allows this one read after READY, and only it (test/e2e/systemd.ts).
t.test("a gc pass's reads are told apart from the ENI stage's describes", async (t) => {
  const { emu, ec2, ctx } = await setup(t);
  ours(emu, DEAD);
  const from = emu.requests.length;
  await runGc(ctx, ec2, { config: defaults(), dryRun: false });
  const reads = emu.requests.slice(from).filter((r) => r.action === "DescribeNetworkInterfaces");
  t.ok(reads.length >= 1, "the pass read the ENIs");
  t.ok(
    reads.every((r) => isGcDescribe(r.params)),
    "each of its DescribeNetworkInterfaces is recognised",
  );
  const api = await ec2();
  const at = emu.requests.length;
  await api.describeNetworkInterfaces({
    Filters: [{ Name: "tag-key", Values: [TAG_INSTANCE] }],
  });
  await api.describeNetworkInterfaces({ NetworkInterfaceIds: [[...emu.enis.keys()][0]] });
  t.same(
    emu.requests.slice(at).map((r) => isGcDescribe(r.params)),
    [false, false],
    "a describe with other filters, or by id, is not",
  );
});

t.test("deletes are paced by the DeleteNetworkInterface bucket, not retried blind", async (t) => {
  const { emu, ctx } = await setup(t);
  const bucket = { capacity: 2, refillPerSec: 10 };
  emu.setThrottle({ ...EC2_THROTTLE, override: { DeleteNetworkInterface: bucket } });
  const { Ec2Pacer } = await import("../../../src/cloud/ec2.js");
  const pacer = new Ec2Pacer({
    identity: async () => SELF,
    bucketOf: (k) =>
      k === "DeleteNetworkInterface" ? bucket : { capacity: 100, refillPerSec: 20 },
  });
  const ec2 = lazyEc2({ region: "us-west-2", endpoint: emu.url, pacer, deadline: ctx.deadline });
  for (let i = 0; i < 6; i++) ours(emu, DEAD);
  const r = await runGc(ctx, ec2, { config: defaults(), dryRun: false });
  t.equal(r.deleted.length, 6);
  const deletes = emu.requests.filter((q) => q.action === "DeleteNetworkInterface");
  const throttled = deletes.filter((q) => q.code === "RequestLimitExceeded").length;
  t.ok(
    deletes.length <= 9,
    `${throttled} throttled of ${deletes.length} sent for 6 deletes: at most 1.5 sent per delete`,
  );
  // every throttled delete was followed by at least a token's wait (0.1 s at 10/s)
  for (let i = 0; i < deletes.length - 1; i++)
    if (deletes[i].code === "RequestLimitExceeded")
      t.ok(deletes[i + 1].at - deletes[i].at >= 95, "no blind retry");
});

t.test("a node terminated mid-boot leaks; a later boot's pass cleans it up", async (t) => {
  const emu = await new Ec2Emulator(standardSeed()).start();
  t.teardown(() => emu.close());
  const mk = (id: string, n: number) =>
    SimNode.create(emu, {
      instanceId: id,
      primaryMac: `02:00:00:00:0b:0${n}`,
      primaryEniId: `eni-0b0b0b0b0b0b0b0${n}`,
      enis: eniConfigs(2),
      imds: "memory",
    });
  const victim = await mk(DEAD, 1);
  const later = await mk(ALIVE, 2);
  t.teardown(() => Promise.all([victim.close(), later.close()]));
  // the victim is terminated right after its creates, before any attach
  let creates = 0;
  emu.afterDispatch = (action) => {
    if (action === "CreateNetworkInterface" && ++creates === 2) {
      emu.terminateInstance(DEAD);
      victim.kill();
    }
  };
  const ctx = await victim.context();
  await t.rejects(applyEnis(ctx, victim.ec2, await planEnis(ctx, victim.ec2)));
  emu.afterDispatch = undefined;
  t.equal(emu.leakedEnis().length, 2, "created, never attached: leaked");

  const lctx = await later.context();
  const soon = await runGc(lctx, later.ec2, { config: defaults(), dryRun: false });
  t.equal(soon.deleted.length, 0, "inside the grace period: kept");
  const past = await runGc(lctx, later.ec2, {
    config: defaults(),
    dryRun: false,
    now: () => Date.now() + 6 * 60_000,
  });
  t.equal(past.deleted.length, 2, "six minutes later: deleted");
  t.equal(emu.leakedEnis().length, 0);
});
