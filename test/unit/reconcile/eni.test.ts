// The ENI stage end to end: real planEnis/applyEnis, the real AWS SDK over HTTP against the EC2
// emulator, IMDSv2 from the IMDS emulator, a fake root whose NICs appear on hot-plug.
import t from "tap";
import {
  applyEnis,
  planEnis,
  TAG_CREATED_AT,
  TAG_INSTANCE,
  TAG_NAME,
  TAG_NO_MANAGE,
} from "../../../src/reconcile/eni.js";
import { Ec2Error } from "../../../src/cloud/ec2.js";
import { InputError } from "../../../src/core/errors.js";
import { pollUntil } from "../../../src/core/deadline.js";
import { readNics } from "../../../src/cloud/imds.js";
import { STATE_PATH, emptyState } from "../../../src/host/state.js";
import { EC2_ACTIONS } from "../../../src/config/facts.js";
import { EC2_THROTTLE, Ec2Emulator } from "../../../src/sim/ec2.js";
import {
  SG,
  SG_DPDK,
  SUBNET_A,
  SUBNET_B,
  SimNode,
  eniConfigs,
  standardSeed,
  useDummyCredentials,
  type SimNodeOptions,
} from "../../../src/sim/node.js";
import { REPO_URL } from "../../support/repo.js";

useDummyCredentials();

let seq = 0;
async function world(
  t: { teardown(fn: () => unknown): void },
  opts: Partial<SimNodeOptions> & { emu?: Ec2Emulator } = {},
) {
  const emu = opts.emu ?? (await new Ec2Emulator(standardSeed()).start());
  seq++;
  const node = await SimNode.create(emu, {
    instanceId: `i-0${seq.toString(16).padStart(16, "0")}`,
    primaryMac: `02:00:00:00:${(seq >> 8).toString(16).padStart(2, "0")}:${(seq & 255).toString(16).padStart(2, "0")}`,
    primaryEniId: `eni-0${seq.toString(16).padStart(16, "a")}`,
    enis: eniConfigs(3),
    ...opts,
  });
  t.teardown(async () => {
    await node.close();
    if (!opts.emu) await emu.close();
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

t.test(
  "first apply creates and attaches N ENIs; a second apply makes no EC2 call at all",
  async (t) => {
    const { emu, node } = await world(t, { enis: eniConfigs(3, { tags: { team: "net" } }) });
    const first = await run(node);
    t.same(kinds(first.plan).filter((k) => k === "create").length, 3);
    t.equal(emu.callsPerAction().CreateNetworkInterface, 3);
    t.equal(emu.callsPerAction().AttachNetworkInterface, 3);
    t.equal(emu.callsPerAction().ModifyNetworkInterfaceAttribute, 3);
    t.equal(emu.mutatingCalls(), 9, "3 mutating calls per ENI");
    const attached = emu.attachedTo(node.opts.instanceId);
    t.same(
      attached.map((e) => e.attachment!.deviceIndex),
      [0, 1, 2, 3],
    );
    for (const e of attached.slice(1)) {
      t.equal(e.attachment!.status, "attached");
      t.equal(e.attachment!.deleteOnTermination, true, "DeleteOnTermination set");
      t.equal(e.tags[TAG_INSTANCE], node.opts.instanceId);
      t.equal(e.tags[TAG_NO_MANAGE], "true");
      t.equal(e.tags.team, "net", "user tags at creation");
      t.ok(e.clientToken, "created with a ClientToken");
      t.same(e.groups, [SG_DPDK]);
    }
    t.same(
      first.records.map((r) => [r.name, r.deviceIndex, r.createdByUs]),
      [
        ["data1", 1, true],
        ["data2", 2, true],
        ["data3", 3, true],
      ],
    );
    t.same(
      first.records.map((r) => r.mac),
      attached.slice(1).map((e) => e.mac),
      "records carry the MACs EC2 assigned",
    );
    const onDisk = JSON.parse((await node.host.read(STATE_PATH))!);
    t.same(Object.keys(onDisk.enis).sort(), ["data1", "data2", "data3"]);
    t.equal(onDisk.enis.data2.eniId, attached[2].id);
    t.equal(emu.leakedEnis().length, 0);

    const callsBefore = emu.totalCalls();
    const factoryCalls = node.ec2FactoryCalls;
    const second = await run(node);
    t.same(second.plan.actions, [], "nothing to do");
    t.equal(second.plan.usedEc2, false, "IMDS alone proved it");
    t.equal(
      node.ec2FactoryCalls,
      factoryCalls,
      "the EC2 client was not even requested on the second run",
    );
    t.equal(emu.totalCalls(), callsBefore, "zero EC2 calls");
    t.same(
      second.records.map((r) => [r.eniId, r.mac]),
      first.records.map((r) => [r.eniId, r.mac]),
    );
  },
);

t.test("state file lost: EC2 is consulted, but zero mutating calls", async (t) => {
  const { emu, node } = await world(t);
  await run(node);
  await node.host.remove(STATE_PATH);
  const mutating = emu.mutatingCalls();
  const { plan, records } = await run(node);
  t.same(plan.actions, []);
  t.equal(plan.usedEc2, true);
  t.equal(emu.mutatingCalls(), mutating, "no mutating call");
  t.equal(records.length, 3);
  t.ok(records.every((r) => r.createdByUs && r.deleteOnTermination === true));
});

t.test("EC2 answering in pages of one: every page is read, nothing is planned twice", async (t) => {
  const { emu, node } = await world(t);
  await run(node);
  await node.host.remove(STATE_PATH);
  emu.pageSize = 1;
  const mutating = emu.mutatingCalls();
  const from = emu.requests.length;
  const { plan, records } = await run(node);
  t.same(plan.actions, [], "the three ENIs of ours, each on its own page, are all found");
  t.equal(emu.mutatingCalls(), mutating, "no mutating call");
  t.equal(records.length, 3);
  const dni = emu.requests.slice(from).filter((r) => r.action === "DescribeNetworkInterfaces");
  t.equal(dni.length, 3, "one request per page (three ENIs tagged ours)");
});

t.test("dry run plans every step and changes nothing", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(2) });
  const ctx = await node.context({ dryRun: true });
  const plan = await planEnis(ctx, node.ec2);
  t.same(kinds(plan), [
    "create",
    "attach",
    "set-delete-on-termination",
    "wait-nic",
    "create",
    "attach",
    "set-delete-on-termination",
    "wait-nic",
  ]);
  t.match(plan.actions[0].detail, new RegExp(`${SUBNET_A}.*${SG_DPDK}.*no_manage=true`));
  t.same(await applyEnis(ctx, node.ec2, plan), []);
  t.equal(emu.mutatingCalls(), 0);
  t.equal(await node.host.exists(STATE_PATH), false, "no state written");
});

t.test("crash after create, before attach: the next run adopts, no duplicate", async (t) => {
  for (const keepState of [true, false]) {
    await t.test(keepState ? "state file kept" : "state file lost too", async (t) => {
      const { emu, node } = await world(t);
      // a permanent error on every attach: the run stops right after creating, as if the process died
      emu.faults.errors.AttachNetworkInterface = {
        status: 400,
        code: "SimulatedCrash",
        message: "process died",
        count: 3,
      };
      await t.rejects(run(node), /SimulatedCrash/);
      t.equal(emu.leakedEnis().length, 3, "three ENIs created and left available");
      if (keepState) {
        const onDisk = JSON.parse((await node.host.read(STATE_PATH))!);
        t.equal(Object.keys(onDisk.enis).length, 3, "each create was recorded before attaching");
      } else await node.host.remove(STATE_PATH);

      const created = emu.callsPerAction().CreateNetworkInterface;
      const { plan } = await run(node);
      t.same(kinds(plan).filter((k) => k === "adopt").length, 3);
      t.notOk(kinds(plan).includes("create"));
      t.equal(emu.callsPerAction().CreateNetworkInterface, created, "no new create");
      t.equal([...emu.enis.values()].filter((e) => e.createdByApi).length, 3, "no duplicate ENI");
      t.equal(emu.leakedEnis().length, 0, "nothing leaked");
      t.same(
        emu.attachedTo(node.opts.instanceId).map((e) => e.attachment!.deviceIndex),
        [0, 1, 2, 3],
      );
    });
  }
});

t.test("crash after attach, before DeleteOnTermination: the next run converges", async (t) => {
  const { emu, node } = await world(t);
  emu.faults.errors.ModifyNetworkInterfaceAttribute = {
    status: 400,
    code: "SimulatedCrash",
    message: "process died",
    count: 3,
  };
  await t.rejects(run(node), /SimulatedCrash/);
  t.ok(
    emu
      .attachedTo(node.opts.instanceId)
      .slice(1)
      .every((e) => e.attachment!.deleteOnTermination === false),
  );
  // DeleteOnTermination is set right after the attach, so this run died before the hot-plug
  // finished; the restart comes once the NICs are there.
  t.ok(await pollUntil(async () => (await readNics(node.imds)).length === 4, { within: 5000 }));
  const before = emu.mutatingCalls({ accepted: true });
  const { plan } = await run(node);
  t.same(kinds(plan), [
    "set-delete-on-termination",
    "set-delete-on-termination",
    "set-delete-on-termination",
  ]);
  t.equal(emu.mutatingCalls({ accepted: true }) - before, 3, "only the three Modify calls");
  t.ok(
    emu
      .attachedTo(node.opts.instanceId)
      .slice(1)
      .every((e) => e.attachment!.deleteOnTermination === true),
  );
  const total = emu.totalCalls();
  const third = await run(node);
  t.same(third.plan.actions, []);
  t.equal(emu.totalCalls(), total, "then IMDS proves it: zero EC2 calls");
});

t.test("pre-flight rejections make zero mutating calls and write nothing", async (t) => {
  const cases: {
    name: string;
    enis: Record<string, unknown>[];
    instanceType?: string;
    setup?: (emu: Ec2Emulator, node: SimNode) => void;
    error: RegExp;
  }[] = [
    {
      name: "subnet_id in another AZ",
      enis: eniConfigs(1, { subnet_id: SUBNET_B }),
      error:
        /eni\.data1\.subnet_id: subnet subnet-0bbbbbbbbbbbbbbb1 is in us-west-2b, but the instance is in us-west-2a/,
    },
    {
      name: "subnet_name only in another AZ",
      enis: eniConfigs(1, { subnet_id: undefined, subnet_name: "data-b" }),
      error: /subnet "data-b" exists only in us-west-2b/,
    },
    {
      name: "ambiguous subnet name",
      enis: eniConfigs(2, { subnet_id: undefined, subnet_name: "dup" }),
      error: /ambiguous: 2 subnets named "dup"/,
    },
    {
      name: "unknown subnet name",
      enis: eniConfigs(1, { subnet_id: undefined, subnet_name: "nope" }),
      error: /no subnet with tag Name="nope"/,
    },
    {
      name: "unknown security group name",
      enis: eniConfigs(1, { security_group_ids: [], security_group_names: ["ghost"] }),
      error: /no security group with group name or tag Name "ghost"/,
    },
    {
      name: "ENI limit of the instance type",
      enis: eniConfigs(3),
      instanceType: "c6in.large",
      error: /limit exceeded: c6in\.large takes at most 3 ENIs; 1 attached \+ 3 to attach = 4/,
    },
    {
      name: "network card that does not exist",
      enis: eniConfigs(1, { network_card_index: 2 }),
      error: /has 1 network card\(s\); index 2 does not exist/,
    },
    {
      name: "device index taken by someone else's ENI",
      enis: eniConfigs(2),
      setup: (emu, node) => {
        const other = emu.addEni({ subnetId: SUBNET_A, tags: { owner: "someone" } });
        other.attachment = {
          attachmentId: "eni-attach-0f0f0f0f0f0f0f0f0",
          instanceId: node.opts.instanceId,
          deviceIndex: 2,
          networkCardIndex: 0,
          status: "attached",
          deleteOnTermination: false,
          attachTime: new Date().toISOString(),
        };
      },
      error:
        /eni\.data2\.device_index: conflict: device index 2 on network card 0 already holds eni-\w+ \(an ENI eni-dpdk did not create\)/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const { emu, node } = await world(t, { enis: c.enis, instanceType: c.instanceType });
      c.setup?.(emu, node);
      const err = await run(node).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.type(err, InputError, "an input error: exit 2, nothing changed");
      t.match((err as Error).message, c.error);
      t.equal(emu.mutatingCalls(), 0, "zero mutating calls");
      t.equal(node.host.writes, 0, "no file written");
    });
  }
});

t.test(
  "names resolve: subnet by Name tag, security groups by group name and by Name tag",
  async (t) => {
    const { emu, node } = await world(t, {
      enis: eniConfigs(1, {
        subnet_id: undefined,
        subnet_name: "data",
        security_group_ids: [],
        security_group_names: ["nodes", "dpdk"],
      }),
    });
    const { records } = await run(node);
    t.equal(records[0].subnetId, SUBNET_A);
    t.equal(records[0].subnetName, "data");
    t.same(emu.enis.get(records[0].eniId)!.groups.sort(), [SG, SG_DPDK].sort());
    const total = emu.totalCalls();
    t.same((await run(node)).plan.actions, [], "converged");
    t.equal(emu.totalCalls(), total, "and proven by IMDS");
  },
);

t.test("someone else's available ENI tagged for another instance is never adopted", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(1) });
  const foreign = emu.addEni({
    subnetId: SUBNET_A,
    tags: { [TAG_INSTANCE]: "i-0ffffffffffffffff", [TAG_NAME]: "data1" },
    createdByApi: false,
  });
  const { plan } = await run(node);
  t.same(kinds(plan).slice(0, 1), ["create"]);
  t.equal(foreign.attachment, undefined, "left alone");
  const primary = emu.attachedTo(node.opts.instanceId)[0];
  t.equal(primary.id, node.opts.primaryEniId, "primary still at index 0");
  t.equal(primary.attachment!.deleteOnTermination, true, "primary untouched");
});

t.test(
  "throttling storm: two nodes against tiny buckets converge, no duplicates, no leaks",
  async (t) => {
    const emu = await new Ec2Emulator(standardSeed()).start();
    t.teardown(() => emu.close());
    const buckets = {
      mutating: { capacity: 2, refillPerSec: 8 },
      describe: { capacity: 2, refillPerSec: 12 },
    };
    emu.setThrottle(buckets);
    emu.attachDelayMs = 200;
    // The pacer is told this account's (tiny, pooled) bucket sizes, as it would be EC2's.
    const paceBuckets = (key: string) =>
      key.startsWith("Describe") ? buckets.describe : buckets.mutating;
    const a = await world(t, { emu, enis: eniConfigs(4), deadlineMs: 60_000, paceBuckets });
    const b = await world(t, { emu, enis: eniConfigs(4), deadlineMs: 60_000, paceBuckets });
    const results = await Promise.all([run(a.node), run(b.node)]);
    t.equal(results.flatMap((r) => r.records).length, 8);
    t.ok(emu.throttledCalls() > 0, `throttled ${emu.throttledCalls()} requests`);
    t.equal(
      emu.mutatingCalls({ accepted: true }),
      24,
      "exactly 3 effective mutating calls per ENI",
    );
    t.equal([...emu.enis.values()].filter((e) => e.createdByApi).length, 8, "no duplicates");
    t.equal(emu.leakedEnis().length, 0);
  },
);

t.test(
  "transient faults are retried: 500s, dropped connections, lost responses (ClientToken, attach)",
  async (t) => {
    const { emu, node } = await world(t, { enis: eniConfigs(2) });
    emu.faults.error500["*"] = 3;
    emu.faults.dropBefore.DescribeNetworkInterfaces = 1;
    emu.faults.dropAfter.CreateNetworkInterface = 2; // created, response lost: the retry must return the same ENI
    emu.faults.dropAfter.AttachNetworkInterface = 1; // attached, response lost: the retry sees "in use", then proves it is ours
    const { records } = await run(node);
    t.equal(records.length, 2);
    t.equal(
      [...emu.enis.values()].filter((e) => e.createdByApi).length,
      2,
      "no duplicate despite lost create responses",
    );
    t.equal(emu.leakedEnis().length, 0);
    t.ok(emu.requests.some((r) => r.code === "DroppedConnection"));
    t.ok(
      emu.requests.some((r) => r.code === "InvalidNetworkInterface.InUse"),
      "the retried attach was answered in-use",
    );
    t.same(
      emu
        .attachedTo(node.opts.instanceId)
        .map((e) => [e.attachment!.deviceIndex, e.attachment!.deleteOnTermination]),
      [
        [0, true],
        [1, true],
        [2, true],
      ],
    );
  },
);

t.test("a permanent EC2 error fails at once with the EC2 code", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(1) });
  emu.faults.errors.CreateNetworkInterface = {
    status: 403,
    code: "UnauthorizedOperation",
    message: "You are not authorized to perform this operation.",
    count: Infinity,
  };
  const t0 = Date.now();
  const err = await run(node).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, Ec2Error);
  t.equal((err as Ec2Error).code, "UnauthorizedOperation");
  t.match((err as Ec2Error).hint, /ec2:CreateNetworkInterface/);
  t.equal(emu.callsPerAction().CreateNetworkInterface, 1, "not retried");
  t.ok(Date.now() - t0 < 3000);
});

t.test("a stuck attachment fails within the deadline with a clear message", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(1), deadlineMs: 2500 });
  emu.faults.stuckAttach = true;
  const t0 = Date.now();
  await t.rejects(
    run(node),
    /timed out after \d+\.\d s waiting for a NIC with MAC [0-9a-f:]+ \(eni-\w+, data1\) under \S+; last seen: no such NIC yet; EC2 shows its attachment as "attaching"/,
  );
  const took = Date.now() - t0;
  t.ok(took >= 2000 && took < 5000, `bounded by the deadline (${took} ms)`);
});

t.test("a NIC that never appears fails with what was awaited and for how long", async (t) => {
  const { emu, node } = await world(t, {
    enis: eniConfigs(1),
    deadlineMs: 2000,
    hotplugDelayMs: 60_000,
  });
  await t.rejects(
    run(node),
    /timed out after \d+\.\d s waiting for a NIC with MAC 02:e0:[0-9a-f:]+ \(eni-\w+, data1\) under .*\/sys\/class\/net/,
  );
  t.equal(emu.enisByState().attached, 2, "EC2 side is done; only the host side is missing");
});

t.test("IMDS device-number reading 0 just after hot-plug is waited out", async (t) => {
  const { node } = await world(t, {
    enis: eniConfigs(1),
    deviceNumberZeroReads: 3,
    hotplugDelayMs: 100,
  });
  const { records } = await run(node);
  t.equal(records[0].deviceIndex, 1);
  t.equal(
    node.imdsEmu!.faults.deviceNumberZeroReads[records[0].mac],
    0,
    "the zero reads were consumed",
  );
});

t.test("an ENI of ours moved to another index is reported, not touched", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(1) });
  await run(node);
  const ctx = await node.context({ enis: eniConfigs(1, { device_index: 4 }) });
  ctx.state = emptyState();
  const err = await planEnis(ctx, node.ec2).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, InputError);
  t.match(
    (err as Error).message,
    /is attached at network card 0, device index 1, not at the configured 0\/4/,
  );
  t.equal(emu.mutatingCalls(), 3, "only the first run's calls");
});

t.test("a converged boot in a fresh process never imports the AWS SDK", async (t) => {
  const { emu, node } = await world(t, { enis: eniConfigs(2) });
  await run(node);
  const calls = emu.totalCalls();
  // A new node process, as at the next boot: IMDS + state file only; the EC2 endpoint points at the emulator.
  // A resolve hook makes importing the SDK fail outright in the child, so an import cannot go unnoticed.
  const hook = `export async function resolve(s, c, next) { if (s.includes("client-ec2")) throw new Error("SDK import blocked: " + s); return next(s, c); }`;
  const script = `
    const { register } = await import("node:module");
    register("data:text/javascript," + encodeURIComponent(${JSON.stringify(hook)}));
    const { planEnis, applyEnis } = await import(${JSON.stringify(new URL("src/reconcile/eni.ts", REPO_URL).href)});
    const { lazyEc2 } = await import(${JSON.stringify(new URL("src/cloud/ec2.ts", REPO_URL).href)});
    const { Host } = await import(${JSON.stringify(new URL("src/host/host.ts", REPO_URL).href)});
    const { Deadline } = await import(${JSON.stringify(new URL("src/core/deadline.ts", REPO_URL).href)});
    const { ImdsClient, readInstance, readNics } = await import(${JSON.stringify(new URL("src/cloud/imds.ts", REPO_URL).href)});
    const { buildConfig } = await import(${JSON.stringify(new URL("src/config/model.ts", REPO_URL).href)});
    const { loadState } = await import(${JSON.stringify(new URL("src/host/state.ts", REPO_URL).href)});
    const { silentLogger } = await import(${JSON.stringify(new URL("src/core/log.ts", REPO_URL).href)});
    const host = new Host(process.env.ROOT);
    const imds = new ImdsClient({ endpoint: process.env.IMDS });
    const ctx = { host, imds, log: silentLogger, deadline: new Deadline(10000), config: buildConfig([{ source: "test", data: JSON.parse(process.env.CONFIG) }]).config,
      instance: await readInstance(imds), imdsNics: await readNics(imds), state: await loadState(host), dryRun: false };
    const ec2 = lazyEc2({ region: "us-west-2", endpoint: process.env.EC2 });
    const plan = await planEnis(ctx, ec2);
    const recs = await applyEnis(ctx, ec2, plan);
    const blocked = await import("@aws-sdk/client-ec2").then(() => "imported", (e) => e.message);
    console.log(JSON.stringify({ actions: plan.actions.length, enis: recs.length, blocked }));
  `;
  const { run: spawnRun } = await import("../../../src/core/process.js");
  const r = await spawnRun(
    [process.execPath, "--import", "tsx", "--input-type=module", "-e", script],
    {
      env: {
        ...process.env,
        ROOT: node.root,
        IMDS: node.imdsEmu!.url,
        EC2: emu.url,
        CONFIG: JSON.stringify({ eni: eniConfigs(2) }),
      },
      timeoutMs: 60_000,
    },
  );
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  t.same(
    out,
    { actions: 0, enis: 2, blocked: "SDK import blocked: @aws-sdk/client-ec2" },
    "no actions, both ENIs reported, SDK never imported (and the block works)",
  );
  t.equal(emu.totalCalls(), calls, "zero EC2 calls from the new process");
});

t.test(
  "waiting for the attachment polls no DescribeNetworkInterfaces: the NIC and IMDS tell",
  async (t) => {
    const { emu, node } = await world(t, { enis: eniConfigs(2), hotplugDelayMs: 300 });
    emu.attachDelayMs = 400;
    const t0 = Date.now();
    const { records } = await run(node);
    t.ok(Date.now() - t0 >= 700, "it did wait for the attachment and the hot-plug");
    t.equal(records.length, 2);
    const firstAttach = emu.requests.findIndex((r) => r.action === "AttachNetworkInterface");
    t.same(
      emu.requests
        .slice(firstAttach)
        .map((r) => r.action)
        .filter((a) => a.startsWith("Describe")),
      [],
      "no describe at all after the first attach",
    );
    t.same(
      emu.requests.map((r) => r.action).filter((a) => a === "DescribeNetworkInterfaces"),
      ["DescribeNetworkInterfaces"],
      "one describe of our own ENIs, at plan time; the attached ones come from DescribeInstances",
    );
    for (const e of emu.attachedTo(node.opts.instanceId).slice(1)) {
      const age = Date.now() - Date.parse(e.tags[TAG_CREATED_AT]);
      t.ok(age >= 0 && age < 60_000, `${TAG_CREATED_AT} set at creation (${age} ms ago)`);
      t.equal(e.attachment!.deleteOnTermination, true);
    }
  },
);

t.test(
  "throttled past a short deadline: the run fails; the next process adopts and converges",
  async (t) => {
    const emu = await new Ec2Emulator(standardSeed()).start();
    t.teardown(() => emu.close());
    // Attach: one token, then one every 2 s; the client is told the same sizes.
    const attach = { capacity: 1, refillPerSec: 0.5 };
    emu.setThrottle({ ...EC2_THROTTLE, override: { AttachNetworkInterface: attach } });
    const paceBuckets = (key: string) =>
      key === "AttachNetworkInterface" ? attach : { capacity: 100, refillPerSec: 20 };
    const { node } = await world(t, { emu, enis: eniConfigs(2), paceBuckets });
    const t0 = Date.now();
    const err = await run(node, { deadlineMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    t.ok(err, "the first run cannot finish: the second attach has no token before its deadline");
    t.match(err!.message, /RequestLimitExceeded/);
    t.ok(Date.now() - t0 < 4000, `bounded by its deadline (${Date.now() - t0} ms)`);
    const created = emu.callsPerAction().CreateNetworkInterface;
    t.equal(created, 2, "both ENIs were created");
    t.equal(emu.leakedEnis().length, 1, "one created, not attached yet");
    t.ok(await node.host.exists("/run/eni-dpdk/ec2-pacing.json"), "the pacing learned is kept");

    // the unit's restart: a new process, the state file and /run as the first left them
    const second = await run(node, { deadlineMs: 15_000 });
    t.equal(second.records.length, 2);
    t.ok(kinds(second.plan).includes("adopt"), "the available ENI is adopted");
    t.equal(emu.callsPerAction().CreateNetworkInterface, created, "no second create");
    t.equal([...emu.enis.values()].filter((e) => e.createdByApi).length, 2, "no duplicate");
    t.equal(emu.leakedEnis().length, 0);
    t.ok(
      emu.attachedTo(node.opts.instanceId).every((e) => e.attachment!.deleteOnTermination),
      "both with DeleteOnTermination",
    );
    const attaches = emu.requests.filter((r) => r.action === "AttachNetworkInterface");
    t.ok(
      attaches.length <= 4,
      `attaches sent: ${attaches.map((r) => r.code ?? "ok").join(", ")} (2 accepted, no blind retries)`,
    );
  },
);

t.test(
  "a create whose answer was lost, then the process died: the restart's ClientToken finds it",
  async (t) => {
    const { emu, node } = await world(t, { enis: eniConfigs(1) });
    // The create takes effect, its answer is lost, and the process dies before retrying.
    emu.faults.dropAfter.CreateNetworkInterface = 1;
    emu.latency.CreateNetworkInterface = 150;
    await t.rejects(run(node, { deadlineMs: 100 }));
    t.equal([...emu.enis.values()].filter((e) => e.createdByApi).length, 1, "created once");
    // EC2's describes lag behind: the restart cannot see that ENI, and plans a create again
    emu.faults.describeLagMs = 60_000;
    emu.latency.CreateNetworkInterface = 0;
    const { plan, records } = await run(node);
    t.ok(kinds(plan).includes("create"), "the restart did not see it");
    t.equal(
      [...emu.enis.values()].filter((e) => e.createdByApi).length,
      1,
      "the same ClientToken returned the same ENI: no duplicate",
    );
    t.equal(records[0].eniId, [...emu.enis.values()].find((e) => e.createdByApi)!.id);
    t.equal(emu.leakedEnis().length, 0);
  },
);

t.test(
  "an account with raised limits, told in [ec2.limits]: a storm is paced by its real buckets, not EC2's documented ones",
  async (t) => {
    // This account's buckets refill far faster than EC2 documents (mutating 5/s, describes 20/s).
    const limits = {
      mutating: { capacity: 100, refill_per_sec: 100 },
      describe: { capacity: 10, refill_per_sec: 200 },
    };
    const real = (action: string) =>
      action.startsWith("Describe")
        ? { capacity: limits.describe.capacity, refillPerSec: limits.describe.refill_per_sec }
        : { capacity: limits.mutating.capacity, refillPerSec: limits.mutating.refill_per_sec };
    const actions = EC2_ACTIONS;
    const deadlineMs = 10_000;
    const boot = async (told: boolean) => {
      const emu = await new Ec2Emulator(standardSeed()).start();
      t.teardown(() => emu.close());
      emu.setThrottle({
        ...EC2_THROTTLE,
        override: Object.fromEntries(actions.map((a) => [a, real(a)])),
      });
      // The node group's other nodes have just emptied the describe bucket: this node's first
      // DescribeNetworkInterfaces is throttled, which tells its pacer that many nodes boot at once.
      emu.faults.errors.DescribeNetworkInterfaces = {
        status: 503,
        code: "RequestLimitExceeded",
        message: "Request limit exceeded.",
        count: 1,
      };
      const { node } = await world(t, {
        emu,
        enis: eniConfigs(2),
        ...(told ? { config: { ec2: { limits } } } : {}),
      });
      const out = await run(node, { deadlineMs }).then(
        (r) => ({ records: r.records, error: undefined }),
        (e: unknown) => ({ records: undefined, error: e as Error }),
      );
      return { ...out, emu, pacer: node.pacer!, throttled: emu.throttledCalls() };
    };
    const [told, untold] = await Promise.all([boot(true), boot(false)]);

    t.same(told.pacer.bucket("AttachNetworkInterface"), real("AttachNetworkInterface"));
    t.same(untold.pacer.bucket("AttachNetworkInterface"), { capacity: 50, refillPerSec: 5 });
    t.equal(told.error, undefined, "told: the node converges within its deadline");
    t.equal(told.records?.length, 2);
    t.equal(told.emu.mutatingCalls({ accepted: true }), 6, "3 effective mutating calls per ENI");
    t.equal(told.emu.mutatingCalls(), 6, "none throttled, none sent twice");
    // The pacer's own waits, which a loaded machine can only shorten (the backlog drains meanwhile):
    // two bucket-fulls of 10 describes at 200/s is at most 0.1 s; the creates' seeded backlog
    // (40) is below the 100-token burst.
    t.ok(told.pacer.stats.pacedMs < 1000, `told: paced ${Math.round(told.pacer.stats.pacedMs)} ms`);
    t.ok(
      told.throttled <= untold.throttled,
      `no more throttles (${told.throttled} / ${untold.throttled})`,
    );

    // Untold, the same storm is paced as if the buckets refilled at 5/s: two bucket-fulls of the
    // documented 100 describes ahead, their nodes' 400 creates, attaches and modifies: at the least
    // slot (0.05) 0.5 + 4 + 3.8 + 3.6 s of waits, past the 10 s deadline at any slot.
    t.equal(untold.records, undefined, "untold: it cannot converge within the same deadline");
    t.match(
      untold.error?.message,
      /RequestLimitExceeded.*next try is due in \d+ s, after this run's deadline/,
    );
    t.equal(
      untold.emu.mutatingCalls(),
      untold.emu.mutatingCalls({ accepted: true }),
      "no mutating call throttled: it waited instead",
    );
  },
);
