// attach = "external" through the built bundle: an ENI attached at launch (as a launch template does)
// is planned, bound by MAC and recorded as external with zero EC2 requests; a second apply and a
// concurrent second copy change nothing; `reset` unbinds it and never detaches or deletes it; the
// `launch-template` command prints the block and rejects what a template cannot carry.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { SG_DPDK, SUBNET_A, sampleConfig } from "../../src/sim/world.js";
import {
  assertPrimaryUntouched,
  diffSnapshots,
  externalEniToml,
  lastError,
  runCli,
  startCli,
  snapshotRoot,
  world,
} from "../support/harness.js";

const EXTERNAL_TOML = `[service]
sources = ["file", "user-data", "tags"]
reconcile_interval_seconds = 0
timeout_seconds = 20
${externalEniToml()}`;
/** ENI "ext1" at device index 5, attached by someone else */
const EXT1 = externalEniToml({
  name: "ext1",
  deviceIndex: 5,
  resourceName: "amazon.com/ena_dpdk_ext",
});
const BDF = "0000:00:06.0";

t.test(
  "an ENI attached at launch is bound with zero EC2 requests; again changes nothing; reset leaves it attached",
  async (t) => {
    const w = await world(t, { configToml: EXTERNAL_TOML });
    const eni = w.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] });

    const plan = await runCli(w, ["plan"]);
    t.equal(plan.code, 0, lastError(plan));
    t.match(
      plan.stdout,
      new RegExp(`eni\\s+use-external\\s+data1\\s+external ENI ${eni.id} \\(MAC ${eni.mac}\\)`),
    );
    t.match(plan.stdout, /host\s+bind\s+0000:00:06\.0\s+data1/);

    const apply = await runCli(w, ["apply"]);
    t.equal(apply.code, 0, lastError(apply));
    t.equal(w.sim.driverOf(BDF), "vfio-pci", "bound by MAC");
    assertPrimaryUntouched(t, w);
    const state = JSON.parse(
      readFileSync(path.join(w.root, "var/lib/eni-dpdk/state.json"), "utf8"),
    );
    t.match(state.enis.data1, {
      eniId: eni.id,
      mac: eni.mac,
      attach: "external",
      createdByUs: false,
    });
    t.equal(state.bindings[eni.mac].bdf, BDF);
    t.ok(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8").includes(BDF), "advertised");
    t.match(apply.stderr, /msg="eni done" stage=eni took_ms=\d+ actions=1 ec2_loaded=false/);

    const again = await runCli(w, ["plan"]);
    t.match(again.stdout, /nothing to do/);
    const before = snapshotRoot(w.root);
    // A second copy at the same time as a third: the lock serializes them, neither changes a thing.
    const [a, b] = await Promise.all([runCli(w, ["apply"]), runCli(w, ["apply"])]);
    t.same([a.code, b.code], [0, 0], `${lastError(a)} ${lastError(b)}`);
    t.same(
      diffSnapshots(before, snapshotRoot(w.root)).filter(
        (p) => !/run\/eni-dpdk\/(status|unchanged)\.json/.test(p),
      ),
      [],
      "the root is unchanged but for the status file",
    );
    t.same(w.ec2.requests, [], "zero EC2 requests in all of it");

    const reset = await runCli(w, ["reset"]);
    t.equal(reset.code, 0, lastError(reset));
    t.match(reset.stdout, new RegExp(`left external ENI ${eni.id} \\(data1\\) attached`));
    t.equal(w.sim.driverOf(BDF), "ena", "returned to its kernel driver");
    t.same(
      w.ec2.requests,
      [],
      "reset sent no request: no DetachNetworkInterface, no DeleteNetworkInterface",
    );
    t.equal(w.ec2.enis.get(eni.id)?.attachment?.status, "attached", "still attached");
  },
);

t.test(
  "an external ENI whose subnet is not the configured one: exit 2, root and NIC untouched",
  async (t) => {
    const w = await world(t, {
      configToml: EXTERNAL_TOML.replace(SUBNET_A, "subnet-0aaaaaaaaaaaaaaa2"),
    });
    w.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] });
    const before = snapshotRoot(w.root);
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 2, lastError(r));
    t.match(
      r.log.find((l) => l.level === "error")?.msg ?? "",
      /eni\.data1\.subnet_id: the external ENI is in subnet-0aaaaaaaaaaaaaaa1, not in subnet-0aaaaaaaaaaaaaaa2/,
    );
    t.same(diffSnapshots(before, snapshotRoot(w.root)), []);
    t.equal(w.sim.driverOf(BDF), "ena");
    t.same(w.sim.writes, [], "no sysfs write");
    t.same(w.ec2.requests, []);
  },
);

t.test("launch-template prints the block; names a template cannot carry are exit 2", async (t) => {
  const w = await world(t, { configToml: EXTERNAL_TOML });
  const r = await runCli(w, ["launch-template", "--primary-security-group-ids", SG_DPDK]);
  t.equal(r.code, 0, lastError(r));
  const block = JSON.parse(r.stdout);
  t.same(
    block.NetworkInterfaces.map((n: { DeviceIndex: number }) => n.DeviceIndex),
    [0, 1],
  );
  t.equal(block.NetworkInterfaces[1].SubnetId, SUBNET_A);
  t.equal(block.TagSpecifications[0].Tags[0].Key, "node.k8s.amazonaws.com/no_manage");
  t.same(w.ec2.requests, [], "offline: no EC2 request");

  const bad = path.join(w.root, "etc/eni-dpdk/named.toml");
  writeFileSync(
    bad,
    EXTERNAL_TOML.replace(`attach = "external"\n`, "").replace(
      `subnet_id = "${SUBNET_A}"`,
      'subnet_name = "data"',
    ),
  );
  const e = await runCli(w, ["launch-template", "--config", "/etc/eni-dpdk/named.toml"]);
  t.equal(e.code, 2);
  t.equal(e.stdout, "");
  t.match(e.stderr, /launch-template: eni\.data1\.subnet_name: a launch template takes subnet ids/);
});

t.test(
  "an external ENI that never comes fails the pass, named, after the ENIs that did come are bound and advertised; once attached, the next apply binds it",
  async (t) => {
    const w = await world(t, {
      configToml:
        sampleConfig({ reconcileSeconds: 0 }).replace(
          "[service]",
          "[service]\ntimeout_seconds = 10",
        ) + EXT1,
    });
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1, "the pass failed");
    t.match(
      lastError(r),
      /^timed out after [6-8]\.\d s waiting for the external ENI "ext1" at network card 0, device index 5/,
    );
    t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci", "n3 bound all the same");
    t.equal(w.sim.driverOf("0000:00:07.0"), "vfio-pci", "n6 bound all the same");
    const sriov = JSON.parse(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8"));
    t.same(
      sriov.resourceList.map(
        (x: { resourceName: string; selectors: { pciAddresses: string[] } }) => [
          x.resourceName,
          x.selectors.pciAddresses,
        ],
      ),
      [["ena_dpdk", ["0000:00:06.0", "0000:00:07.0"]]],
      "their resource advertised; the missing ENI's not yet",
    );
    const status = JSON.parse(readFileSync(w.sim.p("/run/eni-dpdk/status.json"), "utf8"));
    t.equal(status.lastApply.ok, false);
    t.match(status.lastApply.summary, /^degraded: timed out .* "ext1"/);

    const eni = w.attachAtLaunch({ deviceIndex: 5, subnetId: SUBNET_A, groups: [SG_DPDK] });
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    const bdf = w.sim.bdfOfMac(eni.mac)!;
    t.equal(w.sim.driverOf(bdf), "vfio-pci", "ext1 bound by the next apply");
    const after = JSON.parse(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8"));
    t.same(after.resourceList.map((x: { resourceName: string }) => x.resourceName).sort(), [
      "ena_dpdk",
      "ena_dpdk_ext",
    ]);
  },
);

t.test(
  "an external ENI that appears in another subnet mid-wait is bad input: no ENI is bound in that pass",
  async (t) => {
    const w = await world(t, {
      configToml: sampleConfig({ reconcileSeconds: 0 }) + EXT1,
    });
    const run = runCli(w, ["apply"]);
    await new Promise((r) => setTimeout(r, 1500));
    w.attachAtLaunch({ deviceIndex: 5, subnetId: "subnet-0aaaaaaaaaaaaaaa2", groups: [SG_DPDK] });
    const r = await run;
    t.equal(r.code, 1, "exit 1: EC2 had already created the other ENIs");
    t.match(lastError(r), /eni\.ext1\.subnet_id: the external ENI is in subnet-0aaaaaaaaaaaaaaa2/);
    t.match(lastError(r), /found after this run had changed the node/);
    t.equal(w.sim.driverOf("0000:00:06.0"), "ena", "n3 not bound");
    t.equal(w.sim.driverOf("0000:00:07.0"), "ena", "n6 not bound");
    t.same(
      w.sim.writes.filter((x) => /driver_override|\/bind$/.test(x.path)),
      [],
      "no bind was tried",
    );
  },
);

t.test(
  "run: a timer pass looks for a missing external ENI once instead of waiting, and binds it once it is there",
  async (t) => {
    const w = await world(t, {
      configToml: EXTERNAL_TOML.replace(
        "reconcile_interval_seconds = 0",
        "reconcile_interval_seconds = 1",
      ).replace("timeout_seconds = 20", 'timeout_seconds = 10\non_failure = "continue"'),
    });
    const p = startCli(w, ["run"]);
    t.teardown(() => p.signal("SIGKILL"));
    // the boot pass waits for it (timeout_seconds less the binding's quarter), then READY degraded
    await p.waitForLog(
      (l) => /^timed out after [6-8]\.\d s waiting for the external ENI "data1"/.test(l.msg ?? ""),
      20_000,
    );
    const t0 = Date.now();
    const looked = () =>
      p
        .log()
        .filter((l) =>
          /^the external ENI "data1" is not at network card 0, device index 1: .*a timer pass looks once/.test(
            l.msg ?? "",
          ),
        ).length;
    while (looked() < 2 && Date.now() - t0 < 6000) await new Promise((r) => setTimeout(r, 100));
    t.ok(looked() >= 2, `${looked()} timer passes looked once each in ${Date.now() - t0} ms`);

    const eni = w.attachAtLaunch({ deviceIndex: 1, subnetId: SUBNET_A, groups: [SG_DPDK] });
    // a drift line of this repair: one whose actions bind the ENI that came
    await p.waitForLog(
      (l) => l.msg === "repaired drift" && /use-external data1;.*bind /.test(l.actions ?? ""),
      10_000,
    );
    t.equal(
      w.sim.driverOf(w.sim.bdfOfMac(eni.mac)!),
      "vfio-pci",
      "bound by a timer pass, no reload",
    );
    p.signal("SIGTERM");
    t.equal((await p.exit).code, 0);
  },
);
