import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { InputError, OpError } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";
import { applyHost, planHost } from "../../../src/reconcile/host.js";
import { loadState, saveState, STATE_PATH, type State } from "../../../src/host/state.js";
import {
  bindCommand,
  earlyCommand,
  resetCommand,
  unbindCommand,
} from "../../../src/commands/device.js";
import { collectStatus } from "../../../src/reconcile/status.js";
import { renderStatus, statusCommand } from "../../../src/commands/status.js";
import {
  config,
  DATA1,
  DATA2,
  INSTANCE_ID,
  node,
  PRIMARY,
  stageCtx,
  target,
  cmdCtx,
} from "../../support/fixture.js";
import type { SimKernel } from "../../../src/sim/kernel.js";
import { BUNDLE, NODE } from "../../support/harness.js";

const run = promisify(execFile);

/** The state the ENI stage leaves: our ENIs with their MACs. */
async function seedEnis(
  sim: SimKernel,
  enis: { name: string; mac: string; idx: number }[],
): Promise<void> {
  const host = new Host(sim.root);
  const s = await loadState(host);
  s.instanceId = INSTANCE_ID;
  // what every apply records, so the offline commands know the primary
  s.primary = { mac: PRIMARY.mac, bdf: PRIMARY.bdf, deviceZeroMacs: [PRIMARY.mac] };
  for (const e of enis) {
    s.enis[e.name] = {
      name: e.name,
      eniId: `eni-0${e.idx}aaaaaaaaaaaaaaa`,
      mac: e.mac,
      deviceIndex: e.idx,
      networkCardIndex: 0,
      subnetId: "subnet-0a1b2c3d4e5f60718",
      createdByUs: true,
    };
  }
  await saveState(host, s);
}

async function applied(sim: SimKernel): Promise<State> {
  await seedEnis(sim, [
    { name: "data1", mac: DATA1.mac, idx: 1 },
    { name: "data2", mac: DATA2.mac, idx: 2 },
  ]);
  const host = new Host(sim.root);
  const ctx = stageCtx(sim, { host, state: await loadState(host) });
  const targets = [
    target("data1", DATA1.mac),
    target("data2", DATA2.mac, { dpdk: { enabled: false } }),
  ];
  await applyHost(ctx, targets, await planHost(ctx, targets));
  return ctx.state;
}

t.test("status: per device and host, as text and complete JSON", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  await applied(sim);
  const doc = await collectStatus(new Host(sim.root));
  const d1 = doc.devices.find((d) => d.name === "data1")!;
  t.match(d1, {
    eniId: "eni-01aaaaaaaaaaaaaaa",
    deviceIndex: 1,
    mac: DATA1.mac,
    bdf: DATA1.bdf,
    vendor: "1d0f",
    device: "ec20",
    driver: "vfio-pci",
    originalDriver: "ena",
    state: "bound",
  });
  t.match(d1.deviceNode, /^\/dev\/vfio\/noiommu-\d+$/);
  t.match(
    doc.devices.find((d) => d.name === "data2"),
    { state: "kernel", driver: "ena", ifname: "eth2" },
  );
  t.same(
    doc.otherDevices.map((o) => [o.bdf, o.ifname, o.active]),
    [
      [
        PRIMARY.bdf,
        "eth0",
        ["an IPv4 default route", "an IPv6 default route", "the route to IMDS"],
      ],
    ],
  );
  t.match(doc.host, {
    noiommu: "Y",
    iommuPresent: false,
    vfioLoaded: true,
    dpdkDrivers: ["vfio-pci"],
    writeCombining: { state: "unknown" },
    sriov: { configPath: "/etc/pcidp/config.json", exists: false },
  });
  const text = renderStatus(doc);
  t.match(
    text,
    /NAME\s+ENI\s+IDX\s+MAC\s+BDF\s+VEN:DEV\s+DRIVER\s+ORIGINAL\s+DEVICE NODE\s+RESOURCE\s+STATE/,
  );
  t.match(
    text,
    /data1\s+eni-01a+\s+0\/1\s+02:00:00:00:00:02\s+0000:00:06\.0\s+1d0f:ec20\s+vfio-pci\s+ena\s+\/dev\/vfio\/noiommu-\d+\s+-\s+bound/,
  );
  t.match(text, /NOIOMMU:\s+enabled/);
  t.match(text, /Write-combining:\s+unknown/);
  // through the handler: JSON parses and the config's resource name appears
  fs.mkdirSync(sim.p("/etc/eni-dpdk"), { recursive: true });
  fs.writeFileSync(
    sim.p("/etc/eni-dpdk/config.toml"),
    '[[eni]]\nname = "data1"\ndevice_index = 1\nsubnet_id = "subnet-0a1b2c3d4e5f60718"\nsecurity_group_ids = ["sg-0a1b2c3d4e5f60718"]\ndpdk = { resource_name = "amazon.com/ena_dpdk" }\n',
  );
  const ctx = cmdCtx(sim);
  t.equal(await statusCommand(ctx, { json: true }), 0);
  const parsed = JSON.parse(ctx.output.join(""));
  t.equal(
    parsed.devices.find((d: { name: string }) => d.name === "data1").resourceName,
    "amazon.com/ena_dpdk",
  );
  t.equal(ctx.host.writes, 0, "status writes nothing");
});

t.test(
  "status: hugepages per size and node, and a fix: line when a DPDK device has none",
  async (t) => {
    const sim = node({ numaNodes: 2 });
    t.teardown(() => sim.close());
    await applied(sim);
    const host = new Host(sim.root);
    const doc = await collectStatus(host);
    t.match(doc.host.hugepageProblem, { short: "none reserved", message: /^no hugepages: / });
    t.same(doc.host.hugetlbfs, ["/dev/hugepages"]);
    const text = renderStatus(doc);
    t.match(
      text,
      /^ {2}warning: no hugepages: none are reserved \(2M: 0, 1G: 0\) while 1 device is on a DPDK driver/m,
    );
    t.match(text, /^ {2}fix: set \[dpdk\]\.hugepages_2m/m);
    // an apply hands its own check to the document it writes, so its Status line and status.json agree
    t.notOk((await collectStatus(host, { hugepageProblem: null })).host.hugepageProblem);
    const given = {
      short: "none reserved" as const,
      message: "no hugepages: as the apply found",
      fix: "x",
    };
    t.same((await collectStatus(host, { hugepageProblem: given })).host.hugepageProblem, given);
    // reserved through the config, as apply would: requested against achieved, per node
    fs.writeFileSync(sim.p("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"), "512\n");
    await sim.settle();
    const cfg = config({ dpdk: { hugepages_2m: 1024 } });
    const after = await collectStatus(host, { config: cfg });
    t.notOk(after.host.hugepageProblem);
    const text2 = renderStatus(after);
    t.match(
      text2,
      /Hugepages:\s+2M: 512 of 1024 requested, 512 free; node0 256, node1 256 \| 1G: 0 total \(none requested\), 0 free; node0 0, node1 0/,
    );
    t.notMatch(text2, /no hugepages/);
  },
);

/**
 * The reboot: apply on one simulated node, then a fresh kernel (modules unloaded, every device back
 * on ena with its netdev) that keeps only the state file, optionally edited.
 */
async function rebooted(
  t: { teardown(fn: () => void): void },
  editState: (text: string) => string = (x) => x,
): Promise<SimKernel> {
  const before = node();
  await applied(before);
  const stateText = fs.readFileSync(before.p(STATE_PATH), "utf8");
  before.close();
  const sim = node();
  t.teardown(() => sim.close());
  fs.mkdirSync(path.dirname(sim.p(STATE_PATH)), { recursive: true });
  fs.writeFileSync(sim.p(STATE_PATH), editState(stateText));
  return sim;
}

t.test("early: rebinds from the state file after a reboot, without network", async (t) => {
  const sim = await rebooted(t);
  fs.mkdirSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}`), { recursive: true });
  const pre = await collectStatus(new Host(sim.root));
  t.match(
    pre.devices.find((d) => d.name === "data1"),
    {
      state: "unbound",
      driver: "ena",
      ifname: "eth1",
      detail: /recorded as bound but on a kernel driver/,
    },
  );
  const ctx = cmdCtx(sim);
  t.equal(await earlyCommand(ctx, {}), 0);
  t.match(
    ctx.output.join(""),
    new RegExp(
      `bound\\s+${DATA1.bdf} ${DATA1.mac} data1: bound to vfio-pci \\(/dev/vfio/noiommu-\\d+\\)`,
    ),
  );
  t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
  t.equal(sim.driverOf(DATA2.bdf), "ena", "the kernel ENI is not in the bindings");
  t.equal(
    fs.readFileSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth1`), "utf8"),
    "eni-dpdk",
    "nodeadm told before the netdev vanished",
  );
  // a second early run: nothing to do, no write
  await sim.settle();
  const n = sim.writes.length;
  const again = cmdCtx(sim);
  t.equal(await earlyCommand(again, {}), 0);
  await sim.settle();
  t.equal(sim.writes.length, n);
  t.match(again.output.join(""), /already on vfio-pci/);
});

t.test("early: a different ENI at the recorded BDF is left alone", async (t) => {
  const sim = await rebooted(t, (state) => state.replaceAll(DATA1.mac, "02:00:00:00:00:99"));
  const ctx = cmdCtx(sim);
  t.equal(await earlyCommand(ctx, {}), 0);
  t.match(ctx.output.join(""), /skipped .* carries MAC 02:00:00:00:00:02, not 02:00:00:00:00:99/);
  await sim.settle();
  t.notOk(
    sim.writes.some((w) => w.path.includes("driver")),
    "no driver write",
  );
  t.equal(sim.driverOf(DATA1.bdf), "ena");
});

t.test("bind and unbind by ifname, ENI id, MAC, BDF; foreign device needs --force", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  await seedEnis(sim, [{ name: "data1", mac: DATA1.mac, idx: 1 }]);
  const c1 = cmdCtx(sim);
  t.equal(await bindCommand(c1, { target: "eth1", force: false }), 0);
  t.match(
    c1.output.join(""),
    /bound 0000:00:06\.0 \(02:00:00:00:00:02\) to vfio-pci: \/dev\/vfio\/noiommu-\d+/,
  );
  t.match((await loadState(new Host(sim.root))).bindings[DATA1.mac], {
    originalDriver: "ena",
    eniName: "data1",
  });
  const c2 = cmdCtx(sim);
  t.equal(await bindCommand(c2, { target: "eni-01aaaaaaaaaaaaaaa", force: false }), 0);
  t.match(c2.output.join(""), /already bound/);
  const c3 = cmdCtx(sim);
  t.equal(await unbindCommand(c3, { target: DATA1.mac }), 0);
  t.match(c3.output.join(""), /returned 0000:00:06\.0 to ena \(netdev eth1\)/);
  t.equal(sim.netdevOf(DATA1.bdf), "eth1");
  t.same((await loadState(new Host(sim.root))).bindings, {});
  // data2 is nobody's ENI
  await sim.settle();
  const n = sim.writes.length;
  const c4 = cmdCtx(sim);
  const err = await bindCommand(c4, { target: DATA2.bdf, force: false }).catch((e) => e);
  t.type(err, OpError);
  t.match(err.message, /refusing to bind 0000:00:07\.0 \(eth2\): no managed ENI owns it/);
  t.match(err.hint, /--force/);
  await sim.settle();
  t.equal(sim.writes.length, n, "refusal wrote nothing");
  // the primary: refused as the primary, and --force does not change that
  for (const force of [false, true]) {
    const e5 = await bindCommand(cmdCtx(sim), { target: "eth0", force }).catch((e) => e);
    t.match(
      e5.message,
      /refusing to bind 0000:00:05\.0 \(eth0\): 02:00:00:00:00:01 is the primary ENI .*never binds the primary ENI, not even with --force/,
      `force=${force}`,
    );
    t.equal(sim.driverOf(PRIMARY.bdf), "ena");
  }
  const c6 = cmdCtx(sim);
  t.equal(await bindCommand(c6, { target: DATA2.bdf, force: true }), 0);
  t.ok(c6.lines.some((l) => l.includes("--force: binding despite the guards")));
  t.equal(sim.driverOf(DATA2.bdf), "vfio-pci");
  await t.rejects(bindCommand(cmdCtx(sim), { target: "eth9", force: false }), InputError);
  await t.rejects(
    bindCommand(cmdCtx(sim), { target: "eth1", driver: "mlx5", force: false }),
    InputError,
  );
});

t.test(
  "reset: unbinds managed devices, removes our files and SR-IOV entries, leaves the rest",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    fs.mkdirSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}`), { recursive: true });
    await seedEnis(sim, [
      { name: "data1", mac: DATA1.mac, idx: 1 },
      { name: "data2", mac: DATA2.mac, idx: 2 },
    ]);
    const host = new Host(sim.root);
    const ctx = stageCtx(sim, { host, state: await loadState(host) });
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    await applyHost(ctx, targets, await planHost(ctx, targets));
    // an SR-IOV config with our entry and someone else's, and a foreign networkd file
    const ours = {
      resourceName: "data1",
      resourcePrefix: "amazon.com",
      selectors: [
        { vendors: ["1d0f"], devices: ["ec20"], drivers: ["vfio-pci"], pciAddresses: [DATA1.bdf] },
      ],
    };
    const theirs = {
      resourceName: "other",
      resourcePrefix: "example.com",
      selectors: [{ vendors: ["8086"] }],
    };
    fs.mkdirSync(sim.p("/etc/pcidp"), { recursive: true });
    fs.writeFileSync(
      sim.p("/etc/pcidp/config.json"),
      JSON.stringify({ resourceList: [ours, theirs] }, null, 2),
    );
    const s = await loadState(host);
    s.sriov = { configPath: "/etc/pcidp/config.json", owned: ["amazon.com/data1"] };
    await saveState(host, s);
    fs.writeFileSync(sim.p("/etc/systemd/network/10-mine.network"), "[Match]\nName=eth9\n");

    const c = cmdCtx(sim);
    t.equal(await resetCommand(c, {}), 0);
    t.equal(sim.driverOf(DATA1.bdf), "ena");
    t.equal(sim.driverOf(DATA2.bdf), "ena");
    t.equal(sim.netdevOf(DATA1.bdf), "eth1");
    t.equal(sim.netdevOf(DATA2.bdf), "eth2");
    t.same(
      fs.readdirSync(sim.p("/etc/systemd/network")),
      ["10-mine.network"],
      "only our networkd files removed",
    );
    t.same(
      fs.readdirSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}`)),
      [],
      "our nodeadm cache entries removed",
    );
    const sriov = JSON.parse(fs.readFileSync(sim.p("/etc/pcidp/config.json"), "utf8"));
    t.same(
      sriov.resourceList.map((e: { resourceName: string }) => e.resourceName),
      ["other"],
      "only our SR-IOV entry removed",
    );
    const after = await loadState(host);
    t.same(after.bindings, {});
    t.same(after.networkdFiles, []);
    t.same(after.sriov.owned, []);
    t.equal(sim.driverOf(PRIMARY.bdf), "ena");
    t.same(sim.errors, []);
  },
);

t.test(
  "the real CLI in another process drives the simulated kernel (bind, status --json, unbind)",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    await seedEnis(sim, [{ name: "data1", mac: DATA1.mac, idx: 1 }]);
    const env = { ...process.env };
    const cli = (...args: string[]) =>
      run(NODE[0], [...NODE.slice(1), BUNDLE, ...args, "--root", sim.root], { env });
    const b = await cli("bind", DATA1.mac);
    t.match(b.stdout, /bound 0000:00:06\.0 \(02:00:00:00:00:02\) to vfio-pci/);
    t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
    t.ok(
      sim.writes.some((w) => w.path === "/sys/bus/pci/drivers_probe" && w.value === DATA1.bdf),
      "the kernel saw the CLI's probe",
    );
    const s = await cli("status", "--json");
    t.equal(JSON.parse(s.stdout).devices[0].state, "bound");
    const u = await cli("unbind", "eth1");
    t.match(u.stdout, /returned 0000:00:06\.0 to ena \(netdev eth1\)/);
    t.same(sim.errors, []);
  },
);
