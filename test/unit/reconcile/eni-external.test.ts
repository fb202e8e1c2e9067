// attach = "external": ENIs the launch template (or a lifecycle hook) attached, found through the
// IMDS emulator alone, checked, recorded as external; the EC2 emulator's request log proves that no
// EC2 call was made. Real planEnis/applyEnis, the real AWS SDK where EC2 is used at all.
import t from "tap";
import { applyEnis, planEnis } from "../../../src/reconcile/eni.js";
import { checkExternal } from "../../../src/reconcile/eni-external.js";
import { InputError, OpError } from "../../../src/core/errors.js";
import { STATE_PATH } from "../../../src/host/state.js";
import { networkdPath } from "../../../src/host/networkd.js";
import { Ec2Emulator } from "../../../src/sim/ec2.js";
import {
  SG,
  SG_DPDK,
  SUBNET_A,
  SUBNET_A2,
  SimNode,
  standardSeed,
  useDummyCredentials,
  type SimNodeOptions,
} from "../../../src/sim/node.js";

useDummyCredentials();

let seq = 0x100;
async function world(t: { teardown(fn: () => unknown): void }, opts: Partial<SimNodeOptions> = {}) {
  const emu = await new Ec2Emulator(standardSeed()).start();
  seq++;
  const node = await SimNode.create(emu, {
    instanceId: `i-0${seq.toString(16).padStart(16, "0")}`,
    primaryMac: `02:00:00:00:${(seq >> 8).toString(16).padStart(2, "0")}:${(seq & 255).toString(16).padStart(2, "0")}`,
    primaryEniId: `eni-0${seq.toString(16).padStart(16, "a")}`,
    enis: [external()],
    ...opts,
  });
  t.teardown(async () => {
    await node.close();
    await emu.close();
  });
  return { emu, node };
}

function external(over: Record<string, unknown> = {}): Record<string, unknown> {
  const e: Record<string, unknown> = {
    name: "data1",
    attach: "external",
    device_index: 1,
    subnet_id: SUBNET_A,
    security_group_ids: [SG_DPDK],
    dpdk: { resource_name: "amazon.com/ena_dpdk" },
    ...over,
  };
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined));
}

async function run(node: SimNode, opts: Parameters<SimNode["context"]>[0] = {}) {
  const ctx = await node.context(opts);
  const plan = await planEnis(ctx, node.ec2);
  const records = await applyEnis(ctx, node.ec2, plan);
  return { ctx, plan, records };
}

const kinds = (plan: { actions: { kind: string }[] }) => plan.actions.map((a) => a.kind);
const settle = <T>(p: Promise<T>) =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

t.test(
  "an ENI the launch template attached is found through IMDS and recorded as external: zero EC2 calls, twice",
  async (t) => {
    const { emu, node } = await world(t);
    const eni = await node.attachAtLaunch({
      deviceIndex: 1,
      subnetId: SUBNET_A,
      groups: [SG_DPDK],
      tags: { "node.k8s.amazonaws.com/no_manage": "true" },
    });
    t.equal(
      eni.attachment?.deleteOnTermination,
      true,
      "attached at launch with DeleteOnTermination",
    );
    t.equal(eni.attachment?.status, "attached");

    const dry = await node.context({ dryRun: true });
    const dryPlan = await planEnis(dry, node.ec2);
    t.same(kinds(dryPlan), ["use-external"]);
    t.match(
      dryPlan.actions[0].detail,
      new RegExp(`${eni.id} \\(MAC ${eni.mac}\\).*found through IMDS`),
    );

    const first = await run(node);
    t.same(kinds(first.plan), ["use-external"]);
    t.same(first.records, [
      {
        name: "data1",
        eniId: eni.id,
        mac: eni.mac,
        deviceIndex: 1,
        networkCardIndex: 0,
        subnetId: SUBNET_A,
        createdByUs: false,
        attach: "external",
      },
    ]);
    t.equal(first.plan.usedEc2, false);
    t.same(emu.requests, [], "the EC2 emulator received no request at all");
    t.equal(node.ec2FactoryCalls, 0, "the EC2 client was never even asked for");
    const onDisk = JSON.parse((await node.host.read(STATE_PATH))!);
    t.equal(onDisk.enis.data1.attach, "external", "recorded as external");
    t.match(
      (await node.host.read(networkdPath("data1"))) ?? "",
      new RegExp(`PermanentMACAddress=${eni.mac}\\n[\\s\\S]*Unmanaged=yes`),
      "networkd is told to leave it alone as soon as its MAC is known",
    );

    const writes = node.host.writes;
    const second = await run(node);
    t.same(second.plan.actions, [], "a second apply has nothing to do");
    t.same(second.records, first.records);
    t.same(emu.requests, [], "still no EC2 request");
    t.equal(node.host.writes, writes, "and writes no file");
  },
);

t.test(
  "an ENI a lifecycle hook attaches after boot is awaited through IMDS, bounded, with no EC2 call",
  async (t) => {
    const { emu, node } = await world(t, { deadlineMs: 10_000 });
    const dry = await planEnis(await node.context({ dryRun: true }), node.ec2);
    t.same(kinds(dry), ["wait-external"]);
    t.match(dry.actions[0].detail, /network card 0, device index 1 .*through IMDS, no EC2 call/);

    const imdsBefore = node.imdsEmu!.requests.length;
    const ctx = await node.context();
    const plan = await planEnis(ctx, node.ec2);
    const attachLater = setTimeout(
      () => void node.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] }),
      400,
    );
    t.teardown(() => clearTimeout(attachLater));
    const t0 = Date.now();
    const records = await applyEnis(ctx, node.ec2, plan);
    t.ok(Date.now() - t0 >= 350, `waited for it (${Date.now() - t0} ms)`);
    t.equal(records[0].attach, "external");
    t.equal(records[0].eniId, emu.attachedTo(node.opts.instanceId)[1].id);
    t.ok(node.imdsEmu!.count("/latest/meta-data/network/interfaces/macs") > 2, "IMDS was polled");
    t.ok(node.imdsEmu!.requests.length > imdsBefore);
    t.same(emu.requests, [], "no EC2 request while waiting");
  },
);

t.test(
  "an external ENI that never appears: the deadline ends the wait with what IMDS showed, no EC2 call",
  async (t) => {
    const { emu, node } = await world(t, { deadlineMs: 1500 });
    const t0 = Date.now();
    const err = await settle(run(node));
    const took = Date.now() - t0;
    t.type(err, OpError);
    t.match(
      (err as Error).message,
      new RegExp(
        `timed out after \\d+\\.\\d s waiting for the external ENI "data1" at network card 0, device index 1: IMDS lists ${node.opts.primaryMac} \\(card 0, device 0\\); attach = "external" means the launch template or a lifecycle hook attaches it, and eni-dpdk makes no EC2 call for it`,
      ),
    );
    t.match((err as OpError).hint, /eni-dpdk launch-template/);
    t.ok(took >= 1200 && took < 4000, `bounded by the deadline (${took} ms)`);
    t.same(emu.requests, []);
    t.equal(await node.host.exists(networkdPath("data1")), false, "nothing written for it");
  },
);

t.test(
  "subnet or security groups other than configured: exit-2 error naming IMDS, key and both values; nothing written, no EC2 call",
  async (t) => {
    const cases = [
      {
        name: "subnet",
        spec: { subnetId: SUBNET_A2, groups: [SG_DPDK] },
        key: "eni.data1.subnet_id",
        message: `the external ENI is in ${SUBNET_A2}, not in ${SUBNET_A}`,
      },
      {
        name: "security groups",
        spec: { subnetId: SUBNET_A, groups: [SG, SG_DPDK] },
        key: "eni.data1.security_group_ids",
        message: `the external ENI has security groups [${[SG, SG_DPDK].sort().join(", ")}], configured [${SG_DPDK}]`,
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async (t) => {
        const { emu, node } = await world(t);
        const eni = await node.attachAtLaunch({ deviceIndex: 1, ...c.spec });
        const err = await settle(run(node));
        t.type(err, InputError, "bad input: exit 2");
        const p = (err as InputError).problems;
        t.equal(p.length, 1);
        t.equal(p[0].key, c.key);
        t.match(
          p[0].source,
          new RegExp(
            `^IMDS \\(instance ${node.opts.instanceId}, ${eni.id} ${eni.mac} at network card 0, device index 1\\)$`,
          ),
        );
        t.match(p[0].message, c.message);
        t.equal(node.host.writes, 0, "no file written (no networkd file, no state)");
        t.same(emu.requests, []);
      });
    }
    await t.test("found only after waiting: the same check", async (t) => {
      const { emu, node } = await world(t, { deadlineMs: 10_000 });
      const later = setTimeout(
        () => void node.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A2, groups: [SG_DPDK] }),
        200,
      );
      t.teardown(() => clearTimeout(later));
      const err = await settle(run(node));
      t.type(err, InputError);
      t.match(
        (err as Error).message,
        /eni\.data1\.subnet_id: the external ENI is in subnet-0aaaaaaaaaaaaaaa2/,
      );
      t.equal(await node.host.exists(networkdPath("data1")), false);
      t.same(emu.requests, []);
    });
    await t.test("without subnet_id and security groups configured, any is accepted", async (t) => {
      const { emu, node } = await world(t, {
        enis: [external({ subnet_id: undefined, security_group_ids: undefined })],
      });
      await node.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A2, groups: [SG] });
      const { records } = await run(node);
      t.equal(records[0].subnetId, SUBNET_A2, "recorded as IMDS shows it");
      t.same(emu.requests, []);
    });
  },
);

t.test("the primary is never taken for an external ENI", async (t) => {
  const { emu, node } = await world(t, { deadlineMs: 1200 });
  // Hostile IMDS: the primary's MAC reported at the external slot.
  const ctx = await node.context();
  const e = ctx.config.eni[0];
  const primaryAtSlot = {
    mac: node.opts.primaryMac,
    deviceNumber: 1,
    networkCard: 0,
    interfaceId: "eni-0ffffffffffffffff",
  };
  await t.rejects(
    checkExternal(ctx, e, primaryAtSlot),
    /IMDS shows the primary ENI \(02:00:00:00:[0-9a-f:]+\) at network card 0, device index 1; eni-dpdk never binds the primary/,
  );
  // Through the whole stage, with IMDS reporting the primary's device-number as 1: refused.
  node.imdsEmu!.instance.nics[0].deviceNumber = 1;
  const r = await settle(run(node));
  t.type(r, OpError);
  t.match((r as Error).message, /IMDS shows the primary ENI .* eni-dpdk never binds the primary/);
  t.same(emu.requests, []);
  t.equal(await node.host.exists(networkdPath("data1")), false, "no file for the primary");
});

t.test(
  "external_ec2: attributes are read with one Describe and set with one Modify each; then IMDS and the record suffice",
  async (t) => {
    const { emu, node } = await world(t, {
      enis: [external({ external_ec2: true, ena_express: true, source_dest_check: false })],
    });
    const eni = await node.attachAtLaunch({
      deviceIndex: 1,
      subnetId: SUBNET_A,
      groups: [SG_DPDK],
    });
    const first = await run(node);
    t.same(kinds(first.plan), ["use-external", "set-ena-express", "set-source-dest-check"]);
    t.same(emu.callsPerAction(), {
      DescribeNetworkInterfaces: 1,
      ModifyNetworkInterfaceAttribute: 2,
    });
    const modifies = emu.requests.filter((r) => r.action === "ModifyNetworkInterfaceAttribute");
    t.same(
      modifies.map((r) =>
        Object.keys(r.params)
          .filter((k) => k !== "Action" && k !== "Version")
          .sort(),
      ),
      [
        ["EnaSrdSpecification.EnaSrdEnabled", "NetworkInterfaceId"],
        ["NetworkInterfaceId", "SourceDestCheck.Value"],
      ],
      "one attribute per call",
    );
    t.equal(modifies[0].params["EnaSrdSpecification.EnaSrdEnabled"], "true");
    t.equal(modifies[1].params["SourceDestCheck.Value"], "false");
    t.same(eni.attachment?.enaSrd, { enabled: true, udp: false });
    t.equal(eni.sourceDestCheck, false);

    const calls = emu.totalCalls();
    t.same((await run(node)).plan.actions, [], "converged");
    t.equal(emu.totalCalls(), calls, "proven by IMDS and the record: no EC2 call");

    await node.host.remove(STATE_PATH);
    const again = await run(node);
    t.same(kinds(again.plan), ["use-external"], "state lost: Describe shows them set, no Modify");
    t.equal(emu.callsPerAction().ModifyNetworkInterfaceAttribute, 2);
    t.equal(emu.callsPerAction().DescribeNetworkInterfaces, 2);
  },
);

t.test("without external_ec2, ENA Express on an external ENI costs no EC2 call", async (t) => {
  const { emu, node } = await world(t, { enis: [external({ ena_express: true })] });
  await node.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] });
  const { plan } = await run(node);
  t.same(kinds(plan), ["use-external"]);
  t.same(emu.requests, [], "the launch template's business: not checked at boot");
});
