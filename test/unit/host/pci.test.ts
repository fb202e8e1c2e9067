import fs from "node:fs";
import t from "tap";
import { InputError, OpError } from "../../../src/core/errors.js";
import { Deadline } from "../../../src/core/deadline.js";
import { Host } from "../../../src/host/host.js";
import { applyHost, planHost, type HostTarget } from "../../../src/reconcile/host.js";
import { JOURNAL_PATH, loadState, type State } from "../../../src/host/state.js";
import { SimKernel, writeFakeBindingScript } from "../../../src/sim/kernel.js";
import { deviceNetdevs, listNetdevs, restoreDriver } from "../../../src/host/pci.js";
import { prepareHost } from "../../../src/host/recovery.js";
import { collectStatus } from "../../../src/reconcile/status.js";
import { renderStatus } from "../../../src/commands/status.js";
import {
  captureLog,
  config,
  DATA1,
  DATA2,
  INSTANCE_ID,
  node,
  PRIMARY,
  simHost,
  stageCtx,
  target,
} from "../../support/fixture.js";

const deviceWrites = (sim: { writes: { path: string; value: string }[] }, bdf: string) =>
  sim.writes.filter((w) => w.path.includes(bdf) || w.value === bdf);

t.test(
  "binds DPDK ENIs found by MAC; override kept, node verified, state and networkd recorded",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    const plan = await planHost(ctx, targets);
    t.same(
      plan.actions.map((a) => a.kind),
      ["load-module", "enable-noiommu", "write-networkd", "write-networkd", "bind", "bind"],
      "plan: vfio-pci, NOIOMMU (no IOMMU here), networkd files, two binds",
    );
    t.equal(sim.writes.length, 0, "planning writes nothing");
    const res = await applyHost(ctx, targets, plan);
    t.same(
      res.map((r) => [
        r.name,
        r.state,
        r.bdf,
        r.driver,
        r.originalDriver,
        r.vendor + ":" + r.device,
      ]),
      [
        ["data1", "bound", DATA1.bdf, "vfio-pci", "ena", "1d0f:ec20"],
        ["data2", "bound", DATA2.bdf, "vfio-pci", "ena", "1d0f:ec20"],
      ],
    );
    t.match(res[0].deviceNode, /^\/dev\/vfio\/noiommu-\d+$/);
    t.ok(fs.existsSync(sim.p(res[0].deviceNode)), "device node exists");
    t.equal(res[0].resourceName, "amazon.com/data1");
    t.equal(
      fs.readFileSync(sim.p(`/sys/bus/pci/devices/${DATA1.bdf}/driver_override`), "utf8").trim(),
      "vfio-pci",
      "override stays set",
    );
    t.equal(
      fs
        .readFileSync(sim.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), "utf8")
        .trim(),
      "Y",
    );
    t.notOk(fs.existsSync(sim.p("/sys/class/net/eth1")), "netdev gone with ena");
    t.equal(sim.driverOf(PRIMARY.bdf), "ena", "primary untouched");
    t.same(deviceWrites(sim, PRIMARY.bdf), [], "no write names the primary's device");
    t.notOk(
      sim.writes.some((w) => /new_id|remove_id/.test(w.path)),
      "new_id is never used",
    );
    const saved = await loadState(new Host(sim.root));
    t.same(Object.keys(saved.bindings).sort(), [DATA1.mac, DATA2.mac]);
    t.match(saved.bindings[DATA1.mac], {
      bdf: DATA1.bdf,
      originalDriver: "ena",
      driver: "vfio-pci",
      eniName: "data1",
      ifname: "eth1",
    });
    const nw = fs.readFileSync(sim.p("/etc/systemd/network/00-eni-dpdk-data1.network"), "utf8");
    t.match(nw, /\[Match\]\nPermanentMACAddress=02:00:00:00:00:02\n\n\[Link\]\nUnmanaged=yes\n/);
    t.ok(
      ctx.lines.some((l) => l.includes("NOIOMMU mode is on")),
      "security implication logged",
    );
    t.same(sim.errors, []);
  },
);

t.test("a second run makes no writes at all", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const targets = [
    target("data1", DATA1.mac),
    target("data2", DATA2.mac, { dpdk: { enabled: false } }),
  ];
  const first = stageCtx(sim);
  await applyHost(first, targets, await planHost(first, targets));
  await sim.settle();
  const before = sim.writes.length;
  const host = new Host(sim.root);
  const ctx = stageCtx(sim, { host, state: await loadState(host) });
  const plan = await planHost(ctx, targets);
  t.same(plan.actions, [], "converged: no actions");
  const res = await applyHost(ctx, targets, plan);
  await sim.settle();
  t.same(
    res.map((r) => [r.state, r.changed]),
    [
      ["bound", false],
      ["kernel", false],
    ],
  );
  t.equal(host.writes, 0, "no sysfs or file write through Host");
  t.equal(sim.writes.length, before, "the kernel saw no write");
  t.same(
    sim.modprobeCalls(),
    ["vfio enable_unsafe_noiommu_mode=1", "vfio-pci"],
    "modprobe ran in the first run only",
  );
});

t.test("kernel-driver ENI: MTU and link up through sysfs, verified", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  const targets = [target("k1", DATA2.mac, { mtu: 9001, dpdk: { enabled: false } })];
  const plan = await planHost(ctx, targets);
  t.same(
    plan.actions.map((a) => a.kind),
    ["set-mtu", "link-up"],
  );
  const [r] = await applyHost(ctx, targets, plan);
  t.match(r, { state: "kernel", driver: "ena", ifname: "eth2", resourceName: "" });
  t.equal(fs.readFileSync(sim.p("/sys/class/net/eth2/mtu"), "utf8").trim(), "9001");
  t.equal(
    parseInt(fs.readFileSync(sim.p("/sys/class/net/eth2/flags"), "utf8"), 16) & 1,
    1,
    "IFF_UP",
  );
  t.equal(fs.readFileSync(sim.p("/sys/class/net/eth2/operstate"), "utf8").trim(), "up");
  t.equal(sim.modprobeCalls().length, 0, "no DPDK module loaded for kernel ENIs");
  t.notOk(fs.existsSync(sim.p("/etc/systemd/network/00-eni-dpdk-k1.network")));
});

t.test(
  "guards: the primary ENI and device-number 0 reject the stage before any write",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    const primary = [target("oops", PRIMARY.mac)];
    await t.rejects(planHost(ctx, primary), OpError);
    await t.rejects(applyHost(ctx, primary, { actions: [], located: [] }), /primary ENI/);
    const ctx0 = stageCtx(sim, { imdsNics: [{ mac: DATA1.mac, deviceNumber: 0, networkCard: 0 }] });
    await t.rejects(
      applyHost(ctx0, [target("data1", DATA1.mac)], { actions: [], located: [] }),
      /device-number 0/,
    );
    await sim.settle();
    t.same(sim.writes, [], "no sysfs write");
    t.equal(ctx.host.writes + ctx0.host.writes, 0, "no file written");
    t.equal(sim.modprobeCalls().length, 0, "not even a module loaded");
  },
);

t.test("guards: default routes (v4, v6) and the IMDS route refuse that device only", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  sim.addNic({ bdf: "0000:00:08.0", mac: "02:00:00:00:00:04", ifname: "eth3" });
  sim.addNic({ bdf: "0000:00:09.0", mac: "02:00:00:00:00:05", ifname: "eth4" });
  sim.addRoute({ iface: "eth1", dest: "0.0.0.0/0", gateway: "10.0.2.1", metric: 513 });
  sim.addRoute({ iface: "eth2", dest: "::/0", gateway: "fe80::1", metric: 514 });
  sim.addRoute({ iface: "eth3", dest: "169.254.169.254/32" });
  const ctx = stageCtx(sim);
  const targets = [
    target("v4", DATA1.mac),
    target("v6", DATA2.mac),
    target("imds", "02:00:00:00:00:04"),
    target("ok", "02:00:00:00:00:05"),
  ];
  const res = await applyHost(ctx, targets, await planHost(ctx, targets));
  t.same(
    res.map((r) => r.state),
    ["failed", "failed", "failed", "bound"],
  );
  t.match(res[0].error, /eth1 carries an IPv4 default route/);
  t.match(res[1].error, /eth2 carries an IPv6 default route/);
  t.match(res[2].error, /eth3 carries the route to IMDS/);
  for (const bdf of [DATA1.bdf, DATA2.bdf, "0000:00:08.0"]) {
    t.equal(sim.driverOf(bdf), "ena", `${bdf} untouched`);
    t.same(deviceWrites(sim, bdf), [], `no write for ${bdf}`);
  }
  t.ok(
    fs.existsSync(sim.p("/etc/systemd/network/00-eni-dpdk-v4.network")),
    "networkd file still written, so the next boot leaves it unconfigured",
  );
});

t.test(
  "a configured pci_address that is not the ENI's device is rejected before any write",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    const targets = [
      target("data1", DATA1.mac, { dpdk: { pci_address: DATA2.bdf } }),
      target("data2", DATA2.mac),
    ];
    const err = await planHost(ctx, targets).catch((e) => e);
    t.type(err, InputError);
    t.match(
      err.message,
      /eni\.data1\.dpdk\.pci_address: is 0000:00:07\.0, but the ENI's MAC 02:00:00:00:00:02 is on 0000:00:06\.0/,
    );
    await t.rejects(applyHost(ctx, targets, { actions: [], located: [] }), InputError);
    await sim.settle();
    t.same(sim.writes, []);
    t.equal(ctx.host.writes, 0);
    // the right address is accepted
    const ok = [target("data1", DATA1.mac, { dpdk: { pci_address: DATA1.bdf } })];
    const [r] = await applyHost(ctx, ok, await planHost(ctx, ok));
    t.equal(r.state, "bound");
  },
);

t.test("devices are bound at once: a slow unbind of one does not hold up the other", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  sim.delayNextUnbind(DATA1.bdf, 400);
  const journal: string[] = [];
  const write = ctx.host.writeFileAtomic.bind(ctx.host);
  ctx.host.writeFileAtomic = (abs, data, mode) => {
    if (abs === JOURNAL_PATH) journal.push(data);
    return write(abs, data, mode);
  };
  const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
  const res = await applyHost(ctx, targets, await planHost(ctx, targets));
  t.same(
    res.map((r) => [r.name, r.state]),
    [
      ["data1", "bound"],
      ["data2", "bound"],
    ],
    "results in the config's order",
  );
  t.same(
    sim.writes.filter((w) => w.path === "/sys/bus/pci/drivers_probe").map((w) => w.value),
    [DATA2.bdf, DATA1.bdf],
    "data2 was probed while data1 was still leaving ena",
  );
  t.same(
    journal.map((j) => (JSON.parse(j) as { ops: { bdf: string }[] }).ops.map((o) => o.bdf)),
    [[DATA1.bdf, DATA2.bdf], [DATA1.bdf]],
    "both intents in one journal write; data2's end leaves data1's",
  );
  t.notOk(fs.existsSync(sim.p("/var/lib/eni-dpdk/inflight.json")), "the journal is empty");
  const saved = await loadState(new Host(sim.root));
  t.same(Object.keys(saved.bindings).sort(), [DATA1.mac, DATA2.mac], "both recorded");
  t.same(sim.errors, []);
});

/** The targets bound by one apply of the stage, then the node rebooted; the state as saved. */
async function boundThenRebooted(sim: SimKernel, targets: HostTarget[]): Promise<State> {
  const first = stageCtx(sim);
  await applyHost(first, targets, await planHost(first, targets));
  sim.reboot();
  await sim.settle();
  return loadState(new Host(sim.root));
}

t.test(
  "a reboot's rebind of recorded devices: no journal, no state write, the records as they were",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    const before = await boundThenRebooted(sim, targets);
    const ctx = stageCtx(sim, { state: await loadState(new Host(sim.root)) });
    const written: string[] = [];
    const write = ctx.host.writeFileAtomic.bind(ctx.host);
    ctx.host.writeFileAtomic = async (abs, data, mode) => {
      const changed = await write(abs, data, mode);
      if (changed) written.push(abs);
      return changed;
    };
    const res = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.same(
      res.map((r) => [r.name, r.state, r.changed]),
      [
        ["data1", "bound", true],
        ["data2", "bound", true],
      ],
    );
    t.same(written, [], "neither the journal nor the state file: the records were the intents");
    const after = await loadState(new Host(sim.root));
    t.same(after.bindings, before.bindings, "the same bindings on record, first-bound times kept");
    t.same(sim.errors, []);
  },
);

t.test(
  "a reboot's rebind whose rollback fails too goes into the journal, and the next run finishes the rollback",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const targets = [target("data1", DATA1.mac)];
    const ctx = stageCtx(sim, { state: await boundThenRebooted(sim, targets) });
    sim.failNextProbe(DATA1.bdf, 2); // vfio-pci's probe, then ena's in the rollback
    const res = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.equal(res[0].state, "failed");
    t.match(res[0].error, /ROLLBACK INCOMPLETE/);
    t.equal(sim.driverOf(DATA1.bdf), undefined, "left driverless, our override taken back");
    const journal = JSON.parse(fs.readFileSync(sim.p(JOURNAL_PATH), "utf8")) as {
      ops: { bdf: string; from: string }[];
    };
    t.same(
      journal.ops.map((o) => [o.bdf, o.from]),
      [[DATA1.bdf, "ena"]],
      "the journal holds what the record cannot tell",
    );
    const { log } = captureLog();
    await prepareHost(simHost(sim), log);
    await sim.settle();
    t.equal(sim.driverOf(DATA1.bdf), "ena", "the next run gave it back to ena");
    t.notOk(fs.existsSync(sim.p(JOURNAL_PATH)), "and emptied the journal");
  },
);

t.test(
  "a record that does not describe the bind (another PCI address) is no intent: the journal is written",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const targets = [target("data1", DATA1.mac)];
    const state = await boundThenRebooted(sim, targets);
    state.bindings[DATA1.mac].bdf = DATA2.bdf;
    const ctx = stageCtx(sim, { state });
    const journal: string[] = [];
    const write = ctx.host.writeFileAtomic.bind(ctx.host);
    ctx.host.writeFileAtomic = (abs, data, mode) => {
      if (abs === JOURNAL_PATH) journal.push(data);
      return write(abs, data, mode);
    };
    const res = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.equal(res[0].state, "bound");
    t.same(
      journal.map((j) => (JSON.parse(j) as { ops: { bdf: string }[] }).ops.map((o) => o.bdf)),
      [[DATA1.bdf]],
      "the intent journalled as for a first bind",
    );
    t.equal(ctx.state.bindings[DATA1.mac].bdf, DATA1.bdf, "the record now names the real address");
  },
);

/** data1 bound to vfio-pci, and the record of it gone (bound by hand, or an older version's state). */
async function strayData1(sim: SimKernel): Promise<void> {
  const ctx = stageCtx(sim);
  const targets = [target("data1", DATA1.mac)];
  await applyHost(ctx, targets, await planHost(ctx, targets));
  if (sim.driverOf(DATA1.bdf) !== "vfio-pci") throw new Error("setup: data1 is not on vfio-pci");
  fs.rmSync(sim.p("/var/lib/eni-dpdk/state.json"));
}

t.test(
  "an ENI whose device sits on vfio-pci with no record: no wait for a NIC that cannot appear, and the error says what to do",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    await strayData1(sim);
    const ctx = stageCtx(sim, { deadline: new Deadline(20_000) });
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    const before = sim.writes.length;
    const t0 = Date.now();
    const res = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.ok(Date.now() - t0 < 5_000, `done in ${Date.now() - t0} ms, not after the 20 s wait`);
    t.same(
      res.map((r) => [r.name, r.state]),
      [
        ["data1", "failed"],
        ["data2", "bound"],
      ],
    );
    t.match(
      res[0].error,
      new RegExp(
        `no NIC carries .*${DATA1.mac}; ${DATA1.bdf} is on a DPDK driver with no record .*eni-dpdk unbind ${DATA1.bdf}`,
      ),
    );
    t.same(
      deviceWrites({ writes: sim.writes.slice(before) }, DATA1.bdf),
      [],
      "the stray untouched",
    );
    t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
  },
);

t.test(
  "a stray on vfio-pci does not stop the wait for an attached ENI's NIC still to appear",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    await strayData1(sim);
    const DATA3 = { bdf: "0000:00:09.0", mac: "02:00:00:00:00:09", ifname: "eth3" };
    const ctx = stageCtx(sim, {
      imdsNics: [
        { mac: PRIMARY.mac, deviceNumber: 0, networkCard: 0 },
        { mac: DATA1.mac, deviceNumber: 1, networkCard: 0 },
        { mac: DATA2.mac, deviceNumber: 2, networkCard: 0 },
        { mac: DATA3.mac, deviceNumber: 3, networkCard: 0 },
      ],
    });
    const targets = [target("data3", DATA3.mac)];
    const plan = await planHost(ctx, targets);
    setTimeout(() => sim.addNic(DATA3), 300);
    const res = await applyHost(ctx, targets, plan);
    t.same(
      res.map((r) => [r.name, r.state]),
      [["data3", "bound"]],
      "its NIC appeared and was bound",
    );
  },
);

t.test(
  "a failed probe is rolled back: device back on ena with its netdev; other devices continue",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    sim.failNextProbe(DATA1.bdf);
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    const res = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.same(
      res.map((r) => r.state),
      ["failed", "bound"],
    );
    t.match(
      res[0].error,
      /probe did not bind vfio-pci \(driver now: none.*restored to ena \(netdev eth1 is back\)/,
    );
    t.equal(sim.driverOf(DATA1.bdf), "ena");
    t.equal(
      fs.readFileSync(sim.p("/sys/class/net/eth1/address"), "utf8").trim(),
      DATA1.mac,
      "same MAC on the returned netdev",
    );
    t.equal(
      fs.readFileSync(sim.p(`/sys/bus/pci/devices/${DATA1.bdf}/driver_override`), "utf8").trim(),
      "(null)",
      "override cleared",
    );
    t.notOk(ctx.state.bindings[DATA1.mac], "failed device not recorded as bound");
    t.ok(ctx.state.bindings[DATA2.mac]);
    t.same(sim.errors, []);
  },
);

t.test("binding_script: exits 0 without binding → detected in sysfs and rolled back", async (t) => {
  for (const behaviour of ["nothing", "unbind-only"] as const) {
    await t.test(behaviour, async (t) => {
      const sim = node();
      t.teardown(() => sim.close());
      const script = writeFakeBindingScript(sim, behaviour);
      const ctx = stageCtx(sim, { config: config({ dpdk: { binding_script: script } }) });
      const targets = [target("data1", DATA1.mac)];
      const [r] = await applyHost(ctx, targets, await planHost(ctx, targets));
      t.equal(r.state, "failed");
      t.match(
        r.error,
        new RegExp(
          `exited 0 but ${DATA1.bdf} is bound to (no driver|ena), not vfio-pci.*restored to ena`,
        ),
      );
      t.equal(sim.driverOf(DATA1.bdf), "ena");
      t.equal(sim.netdevOf(DATA1.bdf), "eth1", "netdev back");
      t.match(
        fs.readFileSync(sim.p("/.sim/devbind.log"), "utf8"),
        `vfio-pci ${DATA1.bdf}`,
        "script got driver and BDF as argv",
      );
    });
  }
  await t.test(
    "works (and clears the override, as devbind does) → override set again",
    async (t) => {
      const sim = node();
      t.teardown(() => sim.close());
      const script = writeFakeBindingScript(sim, "works");
      const ctx = stageCtx(sim, { config: config({ dpdk: { binding_script: script } }) });
      const targets = [target("data1", DATA1.mac)];
      const [r] = await applyHost(ctx, targets, await planHost(ctx, targets));
      t.equal(r.state, "bound");
      await sim.settle();
      t.equal(
        fs.readFileSync(sim.p(`/sys/bus/pci/devices/${DATA1.bdf}/driver_override`), "utf8").trim(),
        "vfio-pci",
      );
    },
  );
});

t.test("concurrent runs serialise on the host lock", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
  const spans: { who: string; start: number; end: number; changed: boolean[] }[] = [];
  const runOne = (who: string) => {
    const host = new Host(sim.root); // separate Host objects: each takes its own flock
    return host.withLock(async () => {
      const start = performance.now();
      const ctx = stageCtx(sim, { host, state: await loadState(host) });
      const res = await applyHost(ctx, targets, await planHost(ctx, targets));
      spans.push({ who, start, end: performance.now(), changed: res.map((r) => r.changed) });
    });
  };
  await Promise.all([runOne("a"), runOne("b")]);
  spans.sort((x, y) => x.start - y.start);
  t.ok(spans[1].start >= spans[0].end, "the second started after the first finished");
  t.same(spans[0].changed, [true, true]);
  t.same(spans[1].changed, [false, false], "the second found everything bound and changed nothing");
  t.same(sim.errors, []);
});

t.test("state file and instance id are what the cache is keyed by", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  fs.mkdirSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}`), { recursive: true });
  fs.writeFileSync(
    sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth1`),
    "io.systemd.Network",
  );
  fs.writeFileSync(
    sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth2`),
    JSON.stringify({ mac: DATA2.mac, manager: "io.systemd.Network" }),
  );
  const ctx = stageCtx(sim);
  const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
  await applyHost(ctx, targets, await planHost(ctx, targets));
  t.equal(
    fs.readFileSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth1`), "utf8"),
    "eni-dpdk",
    "old format: bare manager name",
  );
  t.same(
    JSON.parse(
      fs.readFileSync(sim.p(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth2`), "utf8"),
    ),
    { mac: DATA2.mac, manager: "eni-dpdk" },
    "new format kept",
  );
  t.ok(
    ctx.state.networkdFiles.includes(`/etc/eks/nodeadm/udev-net-manager/${INSTANCE_ID}/eth1`),
    "recorded for reset",
  );
});

t.test("a just-attached ENI: waits for its NIC to appear, then binds", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  const mac = "02:00:00:00:00:09";
  const targets = [target("late", mac)];
  const plan = await planHost(ctx, targets);
  t.match(
    plan.actions.find((a) => a.target === "late"),
    { kind: "bind", detail: /wait for the NIC with MAC 02:00:00:00:00:09/ },
  );
  setTimeout(() => sim.addNic({ bdf: "0000:00:0a.0", mac, ifname: "eth5" }), 300); // the EC2 emulator's hot-plug hook
  const [r] = await applyHost(ctx, targets, plan);
  t.match(r, { state: "bound", bdf: "0000:00:0a.0", originalDriver: "ena" });
});

t.test(
  "DPDK switched off for a bound ENI: returned to its kernel driver, then MTU and link up",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    await applyHost(
      ctx,
      [target("data1", DATA1.mac)],
      await planHost(ctx, [target("data1", DATA1.mac)]),
    );
    t.equal(sim.driverOf(DATA1.bdf), "vfio-pci");
    const off = [target("data1", DATA1.mac, { dpdk: { enabled: false } })];
    const plan = await planHost(ctx, off);
    t.match(plan.actions, [
      { kind: "unbind", target: DATA1.bdf, detail: /return from vfio-pci to ena/ },
    ]);
    const [r] = await applyHost(ctx, off, plan);
    t.match(r, { state: "kernel", driver: "ena", ifname: "eth1" });
    t.equal(fs.readFileSync(sim.p("/sys/class/net/eth1/mtu"), "utf8").trim(), "9001");
    t.notOk(ctx.state.bindings[DATA1.mac]);
  },
);

t.test("routes are read as the kernel prints them", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  fs.writeFileSync(
    sim.p("/proc/net/route"),
    [
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       ",
      "ens5\t00000000\t0101000A\t0003\t0\t0\t512\t00000000\t0\t0\t0                                                                               ",
      "ens6\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                               ",
      "ens7\tFEA9FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0                                                                               ",
      "ens8\t00000000\t0101000A\t0203\t0\t0\t0\t00000000\t0\t0\t0                                                                               ",
      "",
    ].join("\n"),
  );
  fs.writeFileSync(
    sim.p("/proc/net/ipv6_route"),
    [
      "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000200 00000001 00000000 00000003     ens5",
      "fd000ec2000000000000000000000000 20 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens9",
      "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo",
      "",
    ].join("\n"),
  );
  const { readRoutes } = await import("../../../src/host/guard.js");
  const r = await readRoutes(new Host(sim.root));
  t.same([...r.defaultV4], ["ens5"], "RTF_REJECT route ignored");
  t.same([...r.defaultV6], ["ens5"], "lo's reject route ignored");
  t.same(
    [...r.imds].sort(),
    ["ens5", "ens7", "ens9"],
    "host route to 169.254.169.254 and fd00:ec2::/32 count; a subnet route does not",
  );
});

t.test(
  "virtio-net: the netdev hangs off virtioN, and is still found at its PCI function",
  async (t) => {
    // A QEMU guest's NICs as the kernel lays them out: /sys/class/net/<if>/device -> ../../../virtio0,
    // whose parent is the PCI function (virtio-pci). The primary is one of them, with the default route.
    const sim = SimKernel.create({ loaded: ["virtio_pci"] });
    t.teardown(() => sim.close());
    const virtio = { vendor: "1af4", device: "1000" };
    sim.addNic({ ...virtio, bdf: "0000:00:03.0", mac: PRIMARY.mac, ifname: "ens3", up: true });
    sim.addRoute({ iface: "ens3", dest: "0.0.0.0/0", gateway: "10.0.1.1" });
    sim.addNic({ ...virtio, bdf: "0000:00:04.0", mac: DATA1.mac, ifname: "ens4" });
    t.equal(fs.readlinkSync(sim.p("/sys/class/net/ens3/device")), "../../../virtio0");
    t.equal(
      fs.realpathSync(sim.p("/sys/class/net/ens4/device")),
      fs.realpathSync(sim.p("/sys/bus/pci/devices/0000:00:04.0/virtio1")),
      "virtio1 sits under the PCI function",
    );
    const host = new Host(sim.root);
    t.same(
      (await listNetdevs(host)).filter((n) => n.ifname !== "lo"),
      [
        { ifname: "ens3", mac: PRIMARY.mac, bdf: "0000:00:03.0" },
        { ifname: "ens4", mac: DATA1.mac, bdf: "0000:00:04.0" },
      ],
    );
    t.same(await deviceNetdevs(host, "0000:00:04.0"), [{ ifname: "ens4", mac: DATA1.mac }]);

    // status names the primary's netdev and its routes, as for any NIC
    const doc = await collectStatus(host);
    t.match(
      doc.otherDevices.find((d) => d.bdf === "0000:00:03.0"),
      {
        driver: "virtio-pci",
        ifname: "ens3",
        mac: PRIMARY.mac,
        active: ["an IPv4 default route"],
      },
    );
    t.match(
      renderStatus(doc),
      /0000:00:03\.0 '1af4:1000' if=ens3 drv=virtio-pci mac=02:00:00:00:00:01 \*Active\*/,
    );

    // the data NIC binds by MAC (verified on the virtio child's netdev) and comes back on unbind
    const ctx = stageCtx(sim, { host: simHost(sim) });
    const targets = [target("data1", DATA1.mac)];
    const [r] = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.match(r, {
      state: "bound",
      bdf: "0000:00:04.0",
      originalDriver: "virtio-pci",
      ifname: "ens4",
    });
    t.notOk(
      fs.existsSync(sim.p("/sys/bus/pci/devices/0000:00:04.0/virtio1")),
      "virtio device gone",
    );
    const rb = await restoreDriver(ctx.host, "0000:00:04.0", "virtio-pci", {
      log: ctx.log,
      mac: DATA1.mac,
    });
    t.match(rb, { ok: true, driver: "virtio-pci", ifname: "ens4" });
    // the primary, found at its PCI function now, is refused as the primary
    const p = [target("p", PRIMARY.mac)];
    await t.rejects(planHost(ctx, p), /primary ENI/);
    t.equal(sim.driverOf("0000:00:03.0"), "virtio-pci");
    t.same(sim.errors, []);
  },
);
