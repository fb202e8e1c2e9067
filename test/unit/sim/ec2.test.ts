// The EC2 emulator as the real SDK sees it over HTTP: Query protocol in, XML out, EC2 error XML,
// ClientToken idempotency, attachment states, EC2-worded errors, throttling, faults, observer API.
// Also the EC2 seam itself: lazy loading, retry classification, describeInstanceTags.
import t from "tap";
import {
  Ec2Error,
  classifyEc2Error,
  describeInstanceTags,
  lazyEc2,
  withEc2Retry,
  type Ec2Api,
} from "../../../src/cloud/ec2.js";
import { Deadline, sleep } from "../../../src/core/deadline.js";
import { EC2_THROTTLE, Ec2Emulator } from "../../../src/sim/ec2.js";
import {
  SG,
  SG_DPDK,
  SUBNET_A,
  SUBNET_B,
  VPC,
  standardSeed,
  useDummyCredentials,
} from "../../../src/sim/node.js";

useDummyCredentials();

const INSTANCE = "i-0aaaaaaaaaaaaaaa1";
async function setup(t: { teardown(fn: () => unknown): void }) {
  const emu = await new Ec2Emulator({
    ...standardSeed(),
    instances: [
      {
        instanceId: INSTANCE,
        instanceType: "c6in.large",
        az: "us-west-2a",
        vpcId: VPC,
        subnetId: SUBNET_A,
        primaryEniId: "eni-0aaaaaaaaaaaaaaa1",
        primaryMac: "02:00:00:00:01:01",
        tags: { Name: "node-1", "eni-dpdk/with slash": "v 1" },
      },
    ],
  }).start();
  t.teardown(() => emu.close());
  const ec2 = await lazyEc2({ region: "us-west-2", endpoint: emu.url })();
  return { emu, ec2 };
}

async function code(
  p: Promise<unknown>,
): Promise<{ code: string; status?: number; message: string }> {
  try {
    await p;
  } catch (e) {
    const i = classifyEc2Error(e);
    return { code: i.code, status: i.status, message: i.message };
  }
  throw new Error("expected an EC2 error");
}

const create = (ec2: Ec2Api, token?: string, subnet = SUBNET_A) =>
  ec2.createNetworkInterface({
    SubnetId: subnet,
    Groups: [SG_DPDK],
    ClientToken: token,
    TagSpecifications: [{ ResourceType: "network-interface", Tags: [{ Key: "k", Value: "v" }] }],
  });

t.test("the SDK is loaded only on the first call, and loaded once", async (t) => {
  const factory = lazyEc2({ region: "us-west-2", endpoint: "http://127.0.0.1:9" });
  // Building the first client switches the SDK's Node-version warning off: nothing was built yet.
  t.equal(
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED,
    undefined,
    "creating the factory builds nothing",
  );
  const [a, b] = await Promise.all([factory(), factory()]);
  t.equal(a, b, "one client per factory");
  t.equal(
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED,
    "true",
    "the multi-line Node version warning is replaced by one log line",
  );
});

t.test(
  "CreateNetworkInterface: tags at creation, ClientToken idempotency, mismatch error",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    const a = await create(ec2, "tok-1");
    const b = await create(ec2, "tok-1");
    t.equal(
      a.NetworkInterface!.NetworkInterfaceId,
      b.NetworkInterface!.NetworkInterfaceId,
      "same token, same ENI",
    );
    t.same(a.NetworkInterface!.TagSet, [{ Key: "k", Value: "v" }]);
    t.match(a.NetworkInterface!.MacAddress, /^02:e0(:[0-9a-f]{2}){4}$/);
    t.equal(a.NetworkInterface!.Status, "available");
    t.same(a.NetworkInterface!.Groups, [{ GroupId: SG_DPDK, GroupName: "dpdk-data" }]);
    t.equal(emu.leakedEnis().length, 1, "an ENI not attached counts as leaked");
    t.match(await code(create(ec2, "tok-1", SUBNET_B)), {
      code: "IdempotentParameterMismatch",
      status: 400,
    });
    t.match(await code(create(ec2, undefined, "subnet-0123456789abcdef0")), {
      code: "InvalidSubnetID.NotFound",
      status: 400,
    });
  },
);

t.test(
  "attach: attaching → attached after the delay, hot-plug hook, EC2-worded errors",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    emu.attachDelayMs = 300;
    const events: string[] = [];
    emu.onAttached = (ev) => void events.push(`${ev.instanceId}/${ev.deviceIndex}/${ev.eni.mac}`);
    const eni = (await create(ec2)).NetworkInterface!;
    const att = await ec2.attachNetworkInterface({
      NetworkInterfaceId: eni.NetworkInterfaceId,
      InstanceId: INSTANCE,
      DeviceIndex: 1,
      NetworkCardIndex: 0,
    });
    t.match(att.AttachmentId, /^eni-attach-[0-9a-f]{17}$/);
    const d1 = await ec2.describeNetworkInterfaces({
      NetworkInterfaceIds: [eni.NetworkInterfaceId!],
    });
    t.equal(d1.NetworkInterfaces![0].Attachment!.Status, "attaching");
    t.equal(d1.NetworkInterfaces![0].Status, "in-use");
    t.same(events, [], "no hot-plug before attached");
    t.same(emu.enisByState(), { available: 0, attaching: 1, attached: 1 });
    await sleep(450);
    const d2 = await ec2.describeNetworkInterfaces({
      Filters: [
        { Name: "attachment.instance-id", Values: [INSTANCE] },
        { Name: "attachment.device-index", Values: ["1"] },
      ],
    });
    t.equal(d2.NetworkInterfaces!.length, 1);
    t.equal(d2.NetworkInterfaces![0].Attachment!.Status, "attached");
    t.equal(
      d2.NetworkInterfaces![0].Attachment!.DeleteOnTermination,
      false,
      "attach leaves DeleteOnTermination false",
    );
    t.same(events, [`${INSTANCE}/1/${eni.MacAddress}`]);

    const again = await code(
      ec2.attachNetworkInterface({
        NetworkInterfaceId: eni.NetworkInterfaceId,
        InstanceId: INSTANCE,
        DeviceIndex: 2,
      }),
    );
    t.same(again, {
      code: "InvalidNetworkInterface.InUse",
      status: 400,
      message: `Interface: [${eni.NetworkInterfaceId}] in use.`,
    });
    const other = (await create(ec2)).NetworkInterface!;
    const taken = await code(
      ec2.attachNetworkInterface({
        NetworkInterfaceId: other.NetworkInterfaceId,
        InstanceId: INSTANCE,
        DeviceIndex: 1,
      }),
    );
    t.same(taken, {
      code: "InvalidParameterValue",
      status: 400,
      message: `Instance '${INSTANCE}' already has an interface attached at device index '1'.`,
    });
    await ec2.attachNetworkInterface({
      NetworkInterfaceId: other.NetworkInterfaceId,
      InstanceId: INSTANCE,
      DeviceIndex: 2,
    });
    const third = (await create(ec2)).NetworkInterface!;
    const limit = await code(
      ec2.attachNetworkInterface({
        NetworkInterfaceId: third.NetworkInterfaceId,
        InstanceId: INSTANCE,
        DeviceIndex: 3,
      }),
    );
    t.same(limit, {
      code: "AttachmentLimitExceeded",
      status: 400,
      message: "Interface count 4 exceeds the limit for c6in.large",
    });
    const wrongAz = (await create(ec2, undefined, SUBNET_B)).NetworkInterface!;
    t.match(
      await code(
        ec2.attachNetworkInterface({
          NetworkInterfaceId: wrongAz.NetworkInterfaceId,
          InstanceId: INSTANCE,
          DeviceIndex: 3,
        }),
      ),
      { code: "InvalidParameterCombination" },
    );
  },
);

t.test("ModifyNetworkInterfaceAttribute sets DeleteOnTermination; detach and delete", async (t) => {
  const { emu, ec2 } = await setup(t);
  const eni = (await create(ec2)).NetworkInterface!;
  const att = await ec2.attachNetworkInterface({
    NetworkInterfaceId: eni.NetworkInterfaceId,
    InstanceId: INSTANCE,
    DeviceIndex: 1,
  });
  await ec2.modifyNetworkInterfaceAttribute({
    NetworkInterfaceId: eni.NetworkInterfaceId,
    Attachment: { AttachmentId: att.AttachmentId, DeleteOnTermination: true },
  });
  t.equal(emu.enis.get(eni.NetworkInterfaceId!)!.attachment!.deleteOnTermination, true);
  t.match(
    await code(
      ec2.modifyNetworkInterfaceAttribute({
        NetworkInterfaceId: eni.NetworkInterfaceId,
        Attachment: { AttachmentId: "eni-attach-00000000000000000", DeleteOnTermination: true },
      }),
    ),
    { code: "InvalidAttachmentID.NotFound" },
  );
  // Detach/Delete are emulated for the demo and cleanup tools; the seam itself never calls them.
  const sdk = await import("@aws-sdk/client-ec2");
  const raw = new sdk.EC2Client({ region: "us-west-2", endpoint: emu.url, maxAttempts: 1 });
  t.match(
    await code(
      raw.send(
        new sdk.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: eni.NetworkInterfaceId }),
      ),
    ),
    { code: "InvalidParameterValue", message: /currently in use/ },
  );
  await raw.send(new sdk.DetachNetworkInterfaceCommand({ AttachmentId: att.AttachmentId }));
  t.equal(emu.leakedEnis().length, 1, "detached and not deleted: leaked");
  await raw.send(
    new sdk.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: eni.NetworkInterfaceId }),
  );
  t.equal(emu.leakedEnis().length, 0);
  await raw.send(
    new sdk.CreateTagsCommand({ Resources: [INSTANCE], Tags: [{ Key: "added", Value: "yes" }] }),
  );
  const inst = await raw.send(new sdk.DescribeInstancesCommand({ InstanceIds: [INSTANCE] }));
  const i = inst.Reservations![0].Instances![0];
  t.equal(i.Placement!.AvailabilityZone, "us-west-2a");
  t.equal(i.NetworkInterfaces![0].Attachment!.DeviceIndex, 0, "primary at index 0");
  t.ok(i.Tags!.some((x) => x.Key === "added" && x.Value === "yes"));
  raw.destroy();
});

t.test(
  "describe filters: subnets by Name tag and AZ, security groups by name and tag, instance types",
  async (t) => {
    const { ec2 } = await setup(t);
    const dup = await ec2.describeSubnets({
      Filters: [
        { Name: "tag:Name", Values: ["dup"] },
        { Name: "vpc-id", Values: [VPC] },
      ],
    });
    t.equal(dup.Subnets!.length, 2);
    const inB = await ec2.describeSubnets({
      Filters: [
        { Name: "tag:Name", Values: ["data*"] },
        { Name: "availability-zone", Values: ["us-west-2b"] },
      ],
    });
    t.same(
      inB.Subnets!.map((s) => s.SubnetId),
      [SUBNET_B],
      "wildcards and AND across filters",
    );
    const byName = await ec2.describeSecurityGroups({
      Filters: [{ Name: "group-name", Values: ["nodes", "dpdk-data"] }],
    });
    t.same(
      byName.SecurityGroups!.map((g) => g.GroupId).sort(),
      [SG, SG_DPDK].sort(),
      "OR across values",
    );
    const byTag = await ec2.describeSecurityGroups({
      Filters: [
        { Name: "tag:Name", Values: ["dpdk"] },
        { Name: "vpc-id", Values: [VPC] },
      ],
    });
    t.same(
      byTag.SecurityGroups!.map((g) => g.GroupId),
      [SG_DPDK],
    );
    const it = await ec2.describeInstanceTypes({ InstanceTypes: ["c6in.large"] });
    t.same(
      [
        it.InstanceTypes![0].NetworkInfo!.MaximumNetworkInterfaces,
        it.InstanceTypes![0].NetworkInfo!.NetworkCards![0].MaximumNetworkInterfaces,
      ],
      [3, 3],
    );
    t.match(await code(ec2.describeSubnets({ Filters: [{ Name: "bogus", Values: ["x"] }] })), {
      code: "InvalidParameterValue",
      message: "The filter 'bogus' is invalid",
    });
  },
);

t.test("describeInstanceTags reads tags IMDS cannot show (slash, space)", async (t) => {
  const { ec2 } = await setup(t);
  t.same(await describeInstanceTags(ec2, INSTANCE), {
    Name: "node-1",
    "eni-dpdk/with slash": "v 1",
  });
});

t.test("throttling: token buckets per category, shared by all callers", async (t) => {
  const { emu, ec2 } = await setup(t);
  const second = await lazyEc2({ region: "us-west-2", endpoint: emu.url })();
  emu.setThrottle({
    mutating: { capacity: 1, refillPerSec: 0.001 },
    describe: { capacity: 3, refillPerSec: 0.001 },
  });
  await ec2.describeSubnets({});
  await second.describeSubnets({});
  await ec2.describeSubnets({});
  const throttled = await code(second.describeSubnets({}));
  t.same(
    throttled,
    { code: "RequestLimitExceeded", status: 503, message: "Request limit exceeded." },
    "the 4th describe from any caller is throttled",
  );
  t.equal(classifyEc2Error(await ec2.describeSubnets({}).catch((e) => e)).kind, "throttle");
  await create(second);
  t.match(
    await code(create(ec2)),
    { code: "RequestLimitExceeded" },
    "the mutating bucket is separate and also shared",
  );
  t.equal(emu.throttledCalls("describe"), 2);
  t.equal(emu.throttledCalls("mutating"), 1);
  t.equal(emu.mutatingCalls({ accepted: true }), 1);
});

t.test("faults: 500, dropped connection, stuck attach; retries classify them", async (t) => {
  const { emu, ec2 } = await setup(t);
  emu.faults.error500.DescribeSubnets = 1;
  const e500 = await code(ec2.describeSubnets({}));
  t.match(e500, { code: "InternalError", status: 500 });
  emu.faults.dropBefore.DescribeSubnets = 1;
  const dropped = await ec2.describeSubnets({}).catch((e) => e);
  t.equal(
    classifyEc2Error(dropped).kind,
    "transient",
    `a dropped connection is transient (${classifyEc2Error(dropped).code})`,
  );
  t.equal(emu.requests.at(-1)!.code, "DroppedConnection");

  emu.faults.error500["*"] = 2;
  emu.faults.dropBefore.DescribeSecurityGroups = 1;
  const retries: string[] = [];
  const out = await withEc2Retry("DescribeSecurityGroups", () => ec2.describeSecurityGroups({}), {
    deadline: new Deadline(10_000),
    onRetry: (i) => retries.push(i.code),
    baseMs: 20,
  });
  t.equal(out.SecurityGroups!.length, 2);
  t.equal(retries.length, 3);

  emu.faults.errors.DescribeSubnets = {
    status: 403,
    code: "UnauthorizedOperation",
    message: "You are not authorized to perform this operation.",
    count: 1,
  };
  const perm = await withEc2Retry("DescribeSubnets", () => ec2.describeSubnets({}), {
    deadline: new Deadline(10_000),
  }).catch((e) => e);
  t.type(perm, Ec2Error);
  t.equal(perm.code, "UnauthorizedOperation");
  t.match(perm.hint, /ec2:DescribeSubnets/);

  emu.setThrottle({
    mutating: { capacity: 0, refillPerSec: 0.0001 },
    describe: { capacity: 0, refillPerSec: 0.0001 },
  });
  const t0 = Date.now();
  const gaveUp = await withEc2Retry("DescribeSubnets", () => ec2.describeSubnets({}), {
    deadline: new Deadline(800),
    baseMs: 20,
  }).catch((e) => e);
  t.match(
    gaveUp.message,
    /still failing when the deadline ran out \(\d+ attempts; last: RequestLimitExceeded/,
  );
  t.ok(Date.now() - t0 < 1500, "bounded by the deadline");
  emu.setThrottle(undefined);

  emu.faults.stuckAttach = true;
  emu.attachDelayMs = 10;
  const eni = (await create(ec2)).NetworkInterface!;
  await ec2.attachNetworkInterface({
    NetworkInterfaceId: eni.NetworkInterfaceId,
    InstanceId: INSTANCE,
    DeviceIndex: 1,
  });
  await sleep(100);
  t.same(emu.enisByState(), { available: 0, attaching: 1, attached: 1 }, "stuck in attaching");
  t.ok((emu.callsPerAction().DescribeSubnets ?? 0) >= 5, "calls per action counted");
});

/** A raw Query-protocol POST, for values the SDK's types would never let through. */
async function post(emu: Ec2Emulator, form: Record<string, string>) {
  const r = await fetch(emu.url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ Version: "2016-11-15", ...form }).toString(),
  });
  const body = await r.text();
  return { status: r.status, code: /<Code>([^<]+)<\/Code>/.exec(body)?.[1], body };
}

t.test(
  "ENI attributes: ENA Express, UDP, queue count and source/dest check are parsed, recorded, described; malformed ones refused",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    emu.instanceTypes.set("c6in.large", {
      instanceType: "c6in.large",
      maxEnis: 3,
      enaQueues: { default: 2, maxPerInterface: 2, max: 6 },
    });
    const eni = (await create(ec2)).NetworkInterface!;
    t.equal(eni.SourceDestCheck, true, "a new ENI checks source/dest");
    const id = eni.NetworkInterfaceId!;
    const base = { Action: "AttachNetworkInterface", NetworkInterfaceId: id, InstanceId: INSTANCE };
    const refused: [Record<string, string>, string][] = [
      [
        { ...base, DeviceIndex: "1", "EnaSrdSpecification.EnaSrdEnabled": "yes" },
        "InvalidParameterValue",
      ],
      [
        {
          ...base,
          DeviceIndex: "1",
          "EnaSrdSpecification.EnaSrdEnabled": "false",
          "EnaSrdSpecification.EnaSrdUdpSpecification.EnaSrdUdpEnabled": "true",
        },
        "InvalidParameterCombination",
      ],
      [{ ...base, DeviceIndex: "1", "EnaSrdSpecification.Bogus": "true" }, "InvalidParameterValue"],
      [{ ...base, DeviceIndex: "1", EnaQueueCount: "0" }, "InvalidParameterValue"],
      [{ ...base, DeviceIndex: "1", EnaQueueCount: "3" }, "InvalidParameterValue"],
      [{ ...base, DeviceIndex: "1", NetworkCardIndex: "x" }, "InvalidParameterValue"],
      [{ ...base }, "MissingParameter"],
    ];
    for (const [form, expected] of refused) {
      const r = await post(emu, form);
      t.equal(r.code, expected, JSON.stringify(form));
      t.equal(r.status, 400);
    }
    t.equal(emu.enis.get(id)!.attachment, undefined, "no refused attach took effect");

    const att = await ec2.attachNetworkInterface({
      NetworkInterfaceId: id,
      InstanceId: INSTANCE,
      DeviceIndex: 1,
      NetworkCardIndex: 0,
      EnaSrdSpecification: {
        EnaSrdEnabled: true,
        EnaSrdUdpSpecification: { EnaSrdUdpEnabled: true },
      },
      EnaQueueCount: 2,
    });
    const last = emu.requests.at(-1)!;
    t.same(
      [
        last.params.NetworkCardIndex,
        last.params.EnaQueueCount,
        last.params["EnaSrdSpecification.EnaSrdEnabled"],
      ],
      ["0", "2", "true"],
      "the request log keeps the wire parameters",
    );
    const seen = async () =>
      (await ec2.describeNetworkInterfaces({ NetworkInterfaceIds: [id] })).NetworkInterfaces![0];
    let n = await seen();
    t.same(n.Attachment!.EnaSrdSpecification, {
      EnaSrdEnabled: true,
      EnaSrdUdpSpecification: { EnaSrdUdpEnabled: true },
    });
    t.equal(n.Attachment!.EnaQueueCount, 2);

    const modify = { Action: "ModifyNetworkInterfaceAttribute", NetworkInterfaceId: id };
    for (const [form, expected] of [
      [{ ...modify, "SourceDestCheck.Value": "no" }, "InvalidParameterValue"],
      [
        {
          ...modify,
          "SourceDestCheck.Value": "false",
          "EnaSrdSpecification.EnaSrdEnabled": "false",
        },
        "InvalidParameterCombination",
      ],
      [{ ...modify }, "MissingParameter"],
      [
        {
          ...modify,
          "Attachment.AttachmentId": att.AttachmentId!,
          "Attachment.EnaQueueCount": "1",
        },
        "IncorrectInstanceState",
      ],
      [{ ...modify, "EnaSrdSpecification.EnaSrdEnabled": "false" }, "InvalidParameterCombination"],
    ] as [Record<string, string>, string][]) {
      const r = await post(emu, form);
      t.equal(r.code, expected, JSON.stringify(form));
    }
    n = await seen();
    t.equal(n.SourceDestCheck, true, "refused Modify calls changed nothing");
    t.equal(n.Attachment!.EnaSrdSpecification!.EnaSrdEnabled, true, "UDP on needs ENA Express on");

    await ec2.modifyNetworkInterfaceAttribute({
      NetworkInterfaceId: id,
      SourceDestCheck: { Value: false },
    });
    await ec2.modifyNetworkInterfaceAttribute({
      NetworkInterfaceId: id,
      EnaSrdSpecification: {
        EnaSrdEnabled: false,
        EnaSrdUdpSpecification: { EnaSrdUdpEnabled: false },
      },
    });
    n = await seen();
    t.equal(n.SourceDestCheck, false);
    t.same(n.Attachment!.EnaSrdSpecification, {
      EnaSrdEnabled: false,
      EnaSrdUdpSpecification: { EnaSrdUdpEnabled: false },
    });
    const types = await ec2.describeInstanceTypes({ InstanceTypes: ["c6in.large"] });
    const net = types.InstanceTypes![0].NetworkInfo!;
    t.equal(net.EnaSrdSupported, true);
    t.equal(net.FlexibleEnaQueuesSupport, "supported");
    t.equal(net.NetworkCards![0].MaximumEnaQueueCountPerInterface, 2);
  },
);

t.test(
  "attach at launch (as a launch template does): attached, DeleteOnTermination, no request; EC2's refusals",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    const eni = emu.attachAtLaunch(INSTANCE, {
      deviceIndex: 1,
      subnetId: SUBNET_A,
      groups: [SG_DPDK],
      tags: { team: "net" },
      enaSrd: { enabled: true, udp: false },
    });
    t.equal(emu.requests.length, 0, "no API request: it happened at launch");
    t.same(
      [
        eni.attachment!.status,
        eni.attachment!.deleteOnTermination,
        eni.attachment!.atLaunch,
        eni.createdByApi,
      ],
      ["attached", true, true, false],
    );
    t.equal(emu.leakedEnis().length, 0);
    const n = (await ec2.describeNetworkInterfaces({ NetworkInterfaceIds: [eni.id] }))
      .NetworkInterfaces![0];
    t.equal(n.Attachment!.DeviceIndex, 1);
    t.equal(n.Attachment!.DeleteOnTermination, true);
    t.same(n.TagSet, [{ Key: "team", Value: "net" }]);
    t.throws(
      () => emu.attachAtLaunch(INSTANCE, { deviceIndex: 1, subnetId: SUBNET_A }),
      /already has/,
    );
    t.throws(() => emu.attachAtLaunch(INSTANCE, { deviceIndex: 0, subnetId: SUBNET_A }), /primary/);
    t.throws(
      () => emu.attachAtLaunch(INSTANCE, { deviceIndex: 2, subnetId: SUBNET_B }),
      /not in us-west-2a/,
    );
  },
);

t.test(
  "throttling per action at EC2's documented sizes: separate buckets, 503 RequestLimitExceeded",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    // EC2's capacities; refills slowed to nothing, so a busy machine cannot blur the count
    // (refill is checked below, scaled)
    emu.setThrottle({ ...EC2_THROTTLE, refillScale: 1e-6 });
    // CreateNetworkInterface: 100 tokens, then throttled
    const creates = await Promise.all(
      Array.from({ length: 101 }, () =>
        create(ec2).then(
          () => "ok",
          (e: unknown) => code(Promise.reject(e)),
        ),
      ),
    );
    t.equal(creates.filter((c) => c === "ok").length, 100, "a burst of exactly 100 creates");
    t.same(
      creates.find((c) => c !== "ok"),
      { code: "RequestLimitExceeded", status: 503, message: "Request limit exceeded." },
      "the 101st: RequestLimitExceeded, HTTP 503, as EC2 answers",
    );
    t.equal(emu.mutatingCalls({ accepted: true }), 100, "a throttled call takes effect not at all");
    // another action has its own bucket: attach is not throttled by the creates
    const eni = [...emu.enis.values()].find((e) => e.createdByApi)!;
    await ec2.attachNetworkInterface({
      NetworkInterfaceId: eni.id,
      InstanceId: INSTANCE,
      DeviceIndex: 1,
      NetworkCardIndex: 0,
    });
    // unfiltered DescribeNetworkInterfaces: 50 tokens; filtered ones: their own 100
    const unfiltered = await Promise.all(
      Array.from({ length: 51 }, () =>
        ec2.describeNetworkInterfaces({ NetworkInterfaceIds: [eni.id] }).then(
          () => "ok",
          () => "throttled",
        ),
      ),
    );
    t.equal(unfiltered.filter((c) => c === "ok").length, 50, "unfiltered describes: 50");
    await ec2.describeNetworkInterfaces({ Filters: [{ Name: "subnet-id", Values: [SUBNET_A] }] });
    t.pass("a filtered describe still has tokens");
  },
);

t.test("per-action buckets scale and take overrides; pooled buckets stay available", async (t) => {
  const { emu, ec2 } = await setup(t);
  emu.setThrottle({
    ...EC2_THROTTLE,
    refillScale: 10,
    override: { CreateNetworkInterface: { capacity: 1, refillPerSec: 2 } },
  });
  await create(ec2);
  t.match(await code(create(ec2)), { code: "RequestLimitExceeded" }, "override: 1 token");
  await sleep(120);
  await create(ec2);
  t.pass("refill 2/s scaled x10: a token again after 0.1 s");
  emu.setThrottle(EC2_THROTTLE);
  const burst = await Promise.all(
    Array.from({ length: 100 }, () =>
      create(ec2).then(
        () => 1,
        () => 0,
      ),
    ),
  );
  t.equal(
    burst.reduce((a: number, b) => a + b, 0),
    100,
    "EC2's create bucket holds 100",
  );
  await code(create(ec2)).catch(() => undefined);
  await sleep(450);
  await create(ec2);
  t.pass("and refills at 5/s: a token again within 0.45 s");
  emu.setThrottle({
    mutating: { capacity: 1, refillPerSec: 0.001 },
    describe: { capacity: 100, refillPerSec: 1 },
  });
  await create(ec2);
  t.match(
    await code(
      ec2.modifyNetworkInterfaceAttribute({
        NetworkInterfaceId: [...emu.enis.keys()][1],
        Description: { Value: "x" },
      }),
    ),
    { code: "RequestLimitExceeded" },
    "pooled: one bucket for every mutating action",
  );
});

t.test(
  "terminate: DeleteOnTermination ENIs go with the instance, the rest are left available",
  async (t) => {
    const { emu, ec2 } = await setup(t);
    const keep = (await create(ec2)).NetworkInterface!;
    const gone = (await create(ec2)).NetworkInterface!;
    const a1 = await ec2.attachNetworkInterface({
      NetworkInterfaceId: keep.NetworkInterfaceId,
      InstanceId: INSTANCE,
      DeviceIndex: 1,
      NetworkCardIndex: 0,
    });
    const a2 = await ec2.attachNetworkInterface({
      NetworkInterfaceId: gone.NetworkInterfaceId,
      InstanceId: INSTANCE,
      DeviceIndex: 2,
      NetworkCardIndex: 0,
    });
    void a1;
    await ec2.modifyNetworkInterfaceAttribute({
      NetworkInterfaceId: gone.NetworkInterfaceId,
      Attachment: { AttachmentId: a2.AttachmentId, DeleteOnTermination: true },
    });
    emu.terminateInstance(INSTANCE);
    t.notOk(emu.enis.has(gone.NetworkInterfaceId!), "DeleteOnTermination: deleted");
    t.notOk(emu.enis.has("eni-0aaaaaaaaaaaaaaa1"), "the primary too");
    t.equal(emu.enis.get(keep.NetworkInterfaceId!)!.attachment, undefined, "the other: detached");
    t.same(
      emu.leakedEnis().map((e) => e.id),
      [keep.NetworkInterfaceId],
    );
    const byFilter = await ec2.describeInstances({
      Filters: [{ Name: "instance-id", Values: [INSTANCE, "i-0ffffffffffffffff"] }],
    });
    t.same(
      byFilter.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.State?.Name),
      ["terminated"],
      "terminated, shown; an unknown id is simply absent under a filter",
    );
    t.match(
      await code(
        ec2.attachNetworkInterface({
          NetworkInterfaceId: keep.NetworkInterfaceId,
          InstanceId: INSTANCE,
          DeviceIndex: 1,
          NetworkCardIndex: 0,
        }),
      ),
      { code: "IncorrectInstanceState" },
    );
    emu.forgetInstance(INSTANCE);
    t.match(
      await code(ec2.describeInstances({ InstanceIds: [INSTANCE] })),
      { code: "InvalidInstanceID.NotFound" },
      "later EC2 forgets it",
    );
  },
);
