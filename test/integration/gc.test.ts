// `eni-dpdk gc` as a real process (the built bundle) against the EC2 and IMDS emulators: the dry run
// lists and changes nothing, the real pass deletes exactly the leaked ENI, bad [gc] input is exit 2.
import t from "tap";
import {
  baseToml,
  diffSnapshots,
  expectRejected,
  runCli,
  snapshotRoot,
  world,
} from "../support/harness.js";
import { SG_DPDK, SUBNET_A, WORLD_INSTANCE, type World } from "../../src/sim/world.js";
import { SUBNET_PRIMARY, VPC } from "../../src/sim/node.js";

const DEAD = "i-0dddddddddddddd01";
const ago = (min: number) => new Date(Date.now() - min * 60_000).toISOString();

function seedLeaks(w: World) {
  w.ec2.addInstance({
    instanceId: DEAD,
    instanceType: "c6in.4xlarge",
    az: "us-west-2a",
    vpcId: VPC,
    subnetId: SUBNET_PRIMARY,
    primaryEniId: "eni-0d0d0d0d0d0d0d0d1",
    primaryMac: "02:00:00:00:0d:01",
  });
  w.ec2.terminateInstance(DEAD);
  const tags = (owner: string, minutes: number) => ({
    "eni-dpdk:instance-id": owner,
    "eni-dpdk:name": "data1",
    "node.k8s.amazonaws.com/no_manage": "true",
    "eni-dpdk:created-at": ago(minutes),
  });
  const add = (t: Record<string, string>) =>
    w.ec2.addEni({ subnetId: SUBNET_A, groups: [SG_DPDK], createdByApi: true, tags: t });
  return {
    leaked: add(tags(DEAD, 30)),
    young: add(tags(DEAD, 1)),
    mine: add(tags(WORLD_INSTANCE, 30)),
    foreign: add({ owner: "someone", "eni-dpdk:instance-id": "not-an-instance" }),
  };
}

t.test(
  "gc --dry-run lists what it would delete and why the rest stays; changes nothing",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const e = seedLeaks(w);
    const before = snapshotRoot(w.root);
    const r = await runCli(w, ["gc", "--dry-run"]);
    t.equal(r.code, 0, r.stderr);
    t.match(
      r.stdout,
      new RegExp(`would delete ${e.leaked.id}: eni-dpdk's "data1" for ${DEAD} \\(terminated\\)`),
    );
    t.match(r.stdout, new RegExp(`keep ${e.young.id}: created \\d+ s ago, inside the 5 min grace`));
    t.match(r.stdout, new RegExp(`keep ${e.mine.id}: created for this instance`));
    t.match(r.stdout, new RegExp(`keep ${e.foreign.id}: its eni-dpdk:instance-id tag`));
    t.match(r.stdout, /1 to delete \(dry run: nothing deleted\), 3 kept, 0 left for a later pass/);
    t.equal(w.ec2.mutatingCalls(), 0, "no mutating EC2 call");
    t.same(diffSnapshots(before, snapshotRoot(w.root)), [], "the root is byte-identical");

    const real = await runCli(w, ["gc", "--json"]);
    t.equal(real.code, 0, real.stderr);
    const doc = JSON.parse(real.stdout) as { deleted: { eniId: string }[]; kept: unknown[] };
    t.same(
      doc.deleted.map((d) => d.eniId),
      [e.leaked.id],
    );
    t.equal(doc.kept.length, 3);
    t.notOk(w.ec2.enis.has(e.leaked.id), "deleted in EC2");
    for (const k of [e.young, e.mine, e.foreign]) t.ok(w.ec2.enis.has(k.id), `${k.id} kept`);
    t.equal(w.ec2.mutatingCalls({ accepted: true }), 1, "one DeleteNetworkInterface, nothing else");
  },
);

t.test("bad [gc] input is rejected before any EC2 call, naming source and key", async (t) => {
  const w = await world(t, { configToml: baseToml("\n[gc]\nmax_deletes = 0\n") });
  seedLeaks(w);
  await expectRejected(t, w, ["gc"], {
    source: /\/etc\/eni-dpdk\/config\.toml:\d+:\d+/,
    key: "gc.max_deletes",
    message: /expected 1\.\.1000 deletes per pass, got 0/,
  });
  t.equal(w.ec2.totalCalls(), 0, "not even a describe");
});
