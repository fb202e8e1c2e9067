// ENI attributes through the ENI stage: ENA Express (and its UDP switch) and EnaQueueCount on the
// attach, SourceDestCheck and later ENA Express changes by ModifyNetworkInterfaceAttribute, as the
// wire carried them (the EC2 emulator's request log), and idempotence: a second apply sends no
// Modify when Describe (or the state record) shows the attributes already hold.
import t from "tap";
import { applyEnis, planEnis } from "../../../src/reconcile/eni.js";
import { InputError } from "../../../src/core/errors.js";
import { STATE_PATH } from "../../../src/host/state.js";
import { Ec2Emulator } from "../../../src/sim/ec2.js";
import {
  SimNode,
  eniConfigs,
  standardSeed,
  useDummyCredentials,
  type SimNodeOptions,
} from "../../../src/sim/node.js";

useDummyCredentials();

let seq = 0x200;
async function world(
  t: { teardown(fn: () => unknown): void },
  opts: Partial<SimNodeOptions> & { seed?: Parameters<typeof standardSeed>[0] } = {},
) {
  const emu = await new Ec2Emulator(standardSeed(opts.seed)).start();
  seq++;
  const node = await SimNode.create(emu, {
    instanceId: `i-0${seq.toString(16).padStart(16, "0")}`,
    primaryMac: `02:00:00:00:${(seq >> 8).toString(16).padStart(2, "0")}:${(seq & 255).toString(16).padStart(2, "0")}`,
    primaryEniId: `eni-0${seq.toString(16).padStart(16, "a")}`,
    enis: eniConfigs(1),
    ...opts,
  });
  t.teardown(async () => {
    await node.close();
    await emu.close();
  });
  return { emu, node };
}

async function run(node: SimNode, opts: Parameters<SimNode["context"]>[0] = {}) {
  const ctx = await node.context(opts);
  const plan = await planEnis(ctx, node.ec2);
  const records = await applyEnis(ctx, node.ec2, plan);
  return { ctx, plan, records };
}

const kinds = (plan: { actions: { kind: string }[] }) => plan.actions.map((a) => a.kind);
const wire = (emu: Ec2Emulator, action: string) =>
  emu.requests
    .filter((r) => r.action === action && r.status === 200)
    .map((r) =>
      Object.fromEntries(
        Object.entries(r.params).filter(([k]) => !["Action", "Version"].includes(k)),
      ),
    );

t.test(
  "ENA Express, its UDP switch and the queue count ride on the attach; source/dest check off by one Modify; NetworkCardIndex on every attach",
  async (t) => {
    const all = {
      ena_express: true,
      ena_express_udp: true,
      ena_queue_count: 4,
      source_dest_check: false,
    };
    const { emu, node } = await world(t, { enis: eniConfigs(2, all) });
    const { plan } = await run(node);
    t.same(kinds(plan).slice(0, 5), [
      "create",
      "attach",
      "set-delete-on-termination",
      "set-source-dest-check",
      "wait-nic",
    ]);
    const attaches = wire(emu, "AttachNetworkInterface");
    t.equal(attaches.length, 2);
    for (const a of attaches) {
      t.equal(a.NetworkCardIndex, "0", "NetworkCardIndex sent explicitly");
      t.equal(a["EnaSrdSpecification.EnaSrdEnabled"], "true");
      t.equal(a["EnaSrdSpecification.EnaSrdUdpSpecification.EnaSrdUdpEnabled"], "true");
      t.equal(a.EnaQueueCount, "4");
    }
    const modifies = wire(emu, "ModifyNetworkInterfaceAttribute");
    t.same(
      // the two ENIs' steps run at once, so their Modify calls interleave in any order
      modifies.map((m) => Object.keys(m).sort().join(" ")).sort(),
      [
        "Attachment.AttachmentId Attachment.DeleteOnTermination NetworkInterfaceId",
        "Attachment.AttachmentId Attachment.DeleteOnTermination NetworkInterfaceId",
        "NetworkInterfaceId SourceDestCheck.Value",
        "NetworkInterfaceId SourceDestCheck.Value",
      ],
      "one attribute per Modify, as EC2 requires",
    );
    t.ok(modifies.filter((m) => m["SourceDestCheck.Value"] === "false").length === 2);
    for (const e of emu.attachedTo(node.opts.instanceId).slice(1)) {
      t.same(e.attachment!.enaSrd, { enabled: true, udp: true });
      t.equal(e.attachment!.enaQueueCount, 4);
      t.equal(e.sourceDestCheck, false);
    }
    t.equal(emu.mutatingCalls({ accepted: true }), 8, "4 mutating calls per ENI");

    const calls = emu.totalCalls();
    t.same((await run(node)).plan.actions, [], "second apply: nothing to do");
    t.equal(emu.totalCalls(), calls, "proven by IMDS and the state record: no EC2 call");

    await node.host.remove(STATE_PATH);
    const lost = await run(node);
    t.same(lost.plan.actions, [], "state lost: Describe shows every attribute holds");
    t.same(
      emu.requests
        .slice(calls)
        .map((r) => r.action)
        .sort(),
      ["DescribeInstances", "DescribeNetworkInterfaces"],
      "the instance's attachments and the ENIs tagged ours: two describes, no Modify",
    );
    t.equal(emu.mutatingCalls({ accepted: true }), 8);
  },
);

t.test("a network card other than 0 is passed as such", async (t) => {
  const { emu, node } = await world(t, {
    seed: { instanceTypes: [{ instanceType: "c6in.4xlarge", maxEnis: 8, cards: [4, 4] }] },
    enis: eniConfigs(1, { network_card_index: 1 }),
  });
  await run(node);
  t.equal(wire(emu, "AttachNetworkInterface")[0].NetworkCardIndex, "1");
});

t.test(
  "ENA Express and source/dest check set later converge by Modify, without re-attaching",
  async (t) => {
    const { emu, node } = await world(t);
    await run(node);
    const before = emu.mutatingCalls({ accepted: true });
    const enis = eniConfigs(1, { ena_express: true, source_dest_check: false });
    const dry = await planEnis(await node.context({ dryRun: true, enis }), node.ec2);
    t.same(kinds(dry), ["set-ena-express", "set-source-dest-check"]);
    t.match(
      dry.actions[0].detail,
      /EnaSrdSpecification EnaSrdEnabled=true \(now false, UDP false\)/,
    );
    t.match(dry.actions[1].detail, /SourceDestCheck=false \(now true\)/);
    await run(node, { enis });
    t.equal(emu.mutatingCalls({ accepted: true }) - before, 2, "two Modify calls");
    t.same(
      wire(emu, "ModifyNetworkInterfaceAttribute")
        .slice(-2)
        .map((m) => m["EnaSrdSpecification.EnaSrdEnabled"] ?? m["SourceDestCheck.Value"]),
      ["true", "false"],
    );
    t.equal(emu.callsPerAction().AttachNetworkInterface, 1, "not attached again");
    const calls = emu.totalCalls();
    t.same((await run(node, { enis })).plan.actions, []);
    t.equal(emu.totalCalls(), calls, "then converged with no EC2 call");

    // Taken back: false is a value to converge to, not "leave it".
    const off = eniConfigs(1, { ena_express: false });
    t.same(kinds(await planEnis(await node.context({ enis: off }), node.ec2)), ["set-ena-express"]);
  },
);

t.test("a queue count other than the attached ENI's is reported, never changed", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(1, { ena_queue_count: 4 }) });
  await run(node);
  const before = emu.mutatingCalls();
  const err = await run(node, { enis: eniConfigs(1, { ena_queue_count: 8 }) }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, InputError);
  t.match(
    (err as Error).message,
    /eni\.data1\.ena_queue_count: is 8, but eni-\w+ is attached with 4 ENA queues; EC2 sets the queue count at attach or launch only/,
  );
  t.equal(emu.mutatingCalls(), before, "no mutating call");
});

t.test("pre-flight: what the instance type cannot do is refused before any change", async (t) => {
  const cases = [
    {
      name: "ENA Express on a type without it",
      instanceType: "c6in.large",
      enis: eniConfigs(1, { ena_express: true }),
      error: /eni\.data1\.ena_express: c6in\.large does not support ENA Express/,
    },
    {
      name: "a queue count on a type without flexible ENA queues",
      instanceType: "c6in.large",
      enis: eniConfigs(1, { ena_queue_count: 2 }),
      error: /eni\.data1\.ena_queue_count: c6in\.large does not support flexible ENA queues/,
    },
    {
      name: "a queue count above the per-interface maximum",
      enis: eniConfigs(1, { ena_queue_count: 32 }),
      error:
        /eni\.data1\.ena_queue_count: 32 exceeds c6in\.4xlarge's maximum of 16 ENA queues per interface/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const { emu, node } = await world(t, { enis: c.enis, instanceType: c.instanceType });
      const err = await run(node).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.type(err, InputError);
      t.match((err as Error).message, c.error);
      t.equal(emu.mutatingCalls(), 0);
      t.equal(node.host.writes, 0);
    });
  }
});
