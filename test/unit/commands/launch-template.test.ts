// `eni-dpdk launch-template`: the block is checked against the real SDK's own shapes (its schema's
// member names), sent through the real SDK's CreateLaunchTemplate serializer to the EC2 emulator,
// which must decode exactly what was emitted (the SDK silently drops members it does not know), and
// a node launched from that template gets its ENIs at launch and is bound with zero EC2 calls.
import t from "tap";
import * as sdk from "@aws-sdk/client-ec2";
import { buildConfig } from "../../../src/config/model.js";
import { InputError } from "../../../src/core/errors.js";
import {
  launchTemplateBlock,
  TAG_ATTACH,
  type LaunchTemplateOptions,
} from "../../../src/commands/launch-template.js";
import { applyEnis, planEnis, TAG_NO_MANAGE } from "../../../src/reconcile/eni.js";
import { Ec2Emulator } from "../../../src/sim/ec2.js";
import {
  SG,
  SG_DPDK,
  SUBNET_A,
  SUBNET_A2,
  SimNode,
  standardSeed,
  useDummyCredentials,
} from "../../../src/sim/node.js";

useDummyCredentials();
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";

const ENIS = [
  {
    name: "n3",
    attach: "external",
    device_index: 1,
    subnet_id: SUBNET_A,
    security_group_ids: [SG_DPDK],
    description: "5G N3",
    ena_express: true,
    ena_express_udp: true,
    ena_queue_count: 4,
    tags: { team: "upf" },
    dpdk: { resource_name: "amazon.com/ena_dpdk" },
  },
  {
    name: "n6",
    attach: "external",
    device_index: 2,
    subnet_id: SUBNET_A2,
    security_group_ids: [SG_DPDK, SG],
    dpdk: { resource_name: "amazon.com/ena_dpdk" },
  },
];
const config = (enis: Record<string, unknown>[] = ENIS) =>
  buildConfig([{ source: "test.toml", data: { eni: enis } }]).config;
const opts = (o: Partial<LaunchTemplateOptions> = {}): LaunchTemplateOptions => ({
  primaryGroups: [SG],
  managedNodeGroup: false,
  ...o,
});

/** Member names of an SDK schema ([kind, namespace, name, traits, members, schemas]). */
const members = (name: string) =>
  (sdk as unknown as Record<string, unknown[]>)[name][4] as string[];

t.test(
  "the block: device index 0 first, then each ENI; one tag set for every interface",
  async (t) => {
    const { block, notes } = launchTemplateBlock(config(), opts());
    t.same(
      block.NetworkInterfaces.map((n) => [n.DeviceIndex, n.NetworkCardIndex, n.SubnetId, n.Groups]),
      [
        [0, 0, undefined, [SG]],
        [1, 0, SUBNET_A, [SG_DPDK]],
        [2, 0, SUBNET_A2, [SG_DPDK, SG]],
      ],
    );
    t.ok(block.NetworkInterfaces.every((n) => n.DeleteOnTermination === true));
    t.match(block.NetworkInterfaces[0].Description, /must list device index 0/);
    t.same(block.NetworkInterfaces[1].EnaSrdSpecification, {
      EnaSrdEnabled: true,
      EnaSrdUdpSpecification: { EnaSrdUdpEnabled: true },
    });
    t.equal(block.NetworkInterfaces[1].EnaQueueCount, 4);
    t.equal(block.NetworkInterfaces[1].Description, "5G N3");
    t.equal(block.NetworkInterfaces[2].Description, "eni-dpdk n6");
    t.same(block.TagSpecifications, [
      {
        ResourceType: "network-interface",
        Tags: [
          { Key: TAG_NO_MANAGE, Value: "true" },
          { Key: TAG_ATTACH, Value: "launch-template" },
          { Key: "team", Value: "upf" },
        ],
      },
    ]);
    t.notOk(
      JSON.stringify(block).includes("eni-dpdk:instance-id"),
      "never the tag that says eni-dpdk created it (gc's mark)",
    );
    t.match(notes.join("\n"), /pins the node group to that subnet's AZ/);

    const mng = launchTemplateBlock(config(), opts({ managedNodeGroup: true, primaryGroups: [] }));
    t.ok(
      mng.block.NetworkInterfaces.every((n) => n.SubnetId === undefined),
      "no SubnetId for EKS",
    );
    t.equal(mng.block.NetworkInterfaces[0].Groups, undefined);
    t.match(mng.notes.join("\n"), /--primary-security-group-ids/);
  },
);

t.test("every field is a member of the SDK's launch template shapes", async (t) => {
  const { block } = launchTemplateBlock(config(), opts());
  const ni = members("LaunchTemplateInstanceNetworkInterfaceSpecificationRequest$");
  for (const n of block.NetworkInterfaces) {
    for (const k of Object.keys(n)) t.ok(ni.includes(k), `NetworkInterfaces[].${k}`);
    for (const k of Object.keys(n.EnaSrdSpecification ?? {}))
      t.ok(members("EnaSrdSpecificationRequest$").includes(k), `EnaSrdSpecification.${k}`);
    for (const k of Object.keys(n.EnaSrdSpecification?.EnaSrdUdpSpecification ?? {}))
      t.ok(members("EnaSrdUdpSpecificationRequest$").includes(k), `EnaSrdUdpSpecification.${k}`);
  }
  for (const ts of block.TagSpecifications) {
    for (const k of Object.keys(ts))
      t.ok(
        members("LaunchTemplateTagSpecificationRequest$").includes(k),
        `TagSpecifications[].${k}`,
      );
    for (const tag of ts.Tags) t.same(Object.keys(tag), members("Tag$"));
  }
  const data = members("RequestLaunchTemplateData$");
  for (const k of Object.keys(block)) t.ok(data.includes(k), `LaunchTemplateData.${k}`);
});

t.test(
  "CreateLaunchTemplate through the real SDK: the emulator decodes exactly the block; a node launched from it binds with zero EC2 calls",
  async (t) => {
    const emu = await new Ec2Emulator(standardSeed()).start();
    const node = await SimNode.create(emu, {
      instanceId: "i-0000000000000a001",
      primaryMac: "02:00:00:00:0a:01",
      primaryEniId: "eni-0aaaaaaaaaaaa0a01",
      enis: ENIS,
    });
    t.teardown(async () => {
      await node.close();
      await emu.close();
    });
    const { block } = launchTemplateBlock(config(), opts());
    const client = new sdk.EC2Client({ region: "us-west-2", endpoint: emu.url, maxAttempts: 1 });
    t.teardown(() => client.destroy());
    const out = await client.send(
      new sdk.CreateLaunchTemplateCommand({
        LaunchTemplateName: "dpdk-nodes",
        LaunchTemplateData: block,
      }),
    );
    t.match(out.LaunchTemplate?.LaunchTemplateId, /^lt-[0-9a-f]{17}$/);
    const stored = emu.launchTemplates.get("dpdk-nodes")!;
    t.same(stored.networkInterfaces, block.NetworkInterfaces, "every interface field arrived");
    t.same(stored.tagSpecifications, block.TagSpecifications, "and every tag");

    const enis = await node.launchFromTemplate("dpdk-nodes");
    t.same(
      enis.map((e) => [e.attachment!.deviceIndex, e.attachment!.deleteOnTermination, e.subnetId]),
      [
        [1, true, SUBNET_A],
        [2, true, SUBNET_A2],
      ],
    );
    t.equal(enis[0].tags[TAG_NO_MANAGE], "true");
    t.same(enis[0].attachment!.enaSrd, { enabled: true, udp: true });
    t.equal(enis[0].attachment!.enaQueueCount, 4);
    const before = emu.requests.length;
    const ctx = await node.context();
    const records = await applyEnis(ctx, node.ec2, await planEnis(ctx, node.ec2));
    t.same(
      records.map((r) => [r.name, r.eniId, r.attach]),
      [
        ["n3", enis[0].id, "external"],
        ["n6", enis[1].id, "external"],
      ],
    );
    t.equal(emu.requests.length, before, "zero EC2 calls at boot");
  },
);

t.test("what a launch template cannot carry is refused, every problem at once", async (t) => {
  const bad = [
    { ...ENIS[0], subnet_id: undefined, subnet_name: "data", attach: "eni-dpdk" },
    {
      ...ENIS[1],
      security_group_ids: [],
      security_group_names: ["dpdk"],
      attach: "eni-dpdk",
    },
    {
      name: "n9",
      device_index: 3,
      attach: "external",
      tags: { team: "core" },
      dpdk: { resource_name: "amazon.com/x" },
    },
  ].map((e) => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)));
  const err = t.throws(() =>
    launchTemplateBlock(config(bad), opts({ primaryGroups: ["sg-nope"] })),
  ) as InputError;
  t.type(err, InputError);
  t.same(
    err.problems.map((p) => `${p.source}: ${p.key}`).sort(),
    [
      "command line: --primary-security-group-ids",
      "launch-template: eni.n3.subnet_name",
      "launch-template: eni.n6.security_group_names",
      "launch-template: eni.n9.security_group_ids",
      "launch-template: eni.n9.subnet_id",
      "launch-template: eni.n9.tags",
    ].sort(),
  );
  t.match(
    err.problems.find((p) => p.key === "eni.n9.tags")!.message,
    /"team" = "core", but ENI "n3" sets "upf": a launch template tags every network interface of the instance alike/,
  );
});
