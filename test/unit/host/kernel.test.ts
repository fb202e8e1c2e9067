import fs from "node:fs";
import t from "tap";
import { OpError } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";
import { applyHost, planHost } from "../../../src/reconcile/host.js";
import {
  applyHugepages,
  hugepageProblem,
  hugetlbfsMounts,
  perNode,
  readHugepages,
  readKernelFacts,
  writeCombiningReport,
} from "../../../src/host/kernel.js";
import {
  captureLog,
  config,
  DATA1,
  DATA2,
  node,
  PRIMARY,
  stageCtx,
  target,
} from "../../support/fixture.js";

t.test(
  "kernel without NOIOMMU: fails with that diagnosis before any device is touched",
  async (t) => {
    const sim = node({ noiommuSupport: false });
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    const targets = [target("data1", DATA1.mac), target("data2", DATA2.mac)];
    const plan = await planHost(ctx, targets);
    const err = await applyHost(ctx, targets, plan).catch((e) => e);
    t.type(err, OpError);
    t.match(
      err.message,
      /this kernel lacks NOIOMMU: \/sys\/module\/vfio\/parameters\/enable_unsafe_noiommu_mode does not exist/,
    );
    t.match(err.hint, /CONFIG_VFIO_NOIOMMU.*no device was touched/);
    t.same(
      sim.modprobeCalls(),
      ["vfio enable_unsafe_noiommu_mode=1", "vfio-pci"],
      "modprobe ran (and exited 0, as the real one does)",
    );
    await sim.settle();
    t.same(sim.writes, [], "no sysfs write at all");
    t.equal(ctx.host.writes, 0, "no file written (networkd, state)");
    t.equal(sim.driverOf(DATA1.bdf), "ena");
    t.equal(sim.driverOf(DATA2.bdf), "ena");
  },
);

t.test("vfio already loaded without NOIOMMU: the parameter is written and verified", async (t) => {
  const sim = node({ loaded: ["vfio_pci"] });
  t.teardown(() => sim.close());
  t.equal((await readKernelFacts(new Host(sim.root))).noiommu, "N");
  const ctx = stageCtx(sim);
  const targets = [target("data1", DATA1.mac)];
  const [r] = await applyHost(ctx, targets, await planHost(ctx, targets));
  t.equal(r.state, "bound");
  t.same(sim.modprobeCalls(), [], "nothing to load");
  t.same(
    sim.writes[0],
    { path: "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", value: "1" },
    "first write is the parameter, before any device",
  );
  t.equal(
    fs.readFileSync(sim.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), "utf8").trim(),
    "Y",
  );
});

t.test("IOMMU present with noiommu=auto: no NOIOMMU, /dev/vfio/<group>", async (t) => {
  const sim = node({ iommu: true });
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  const targets = [target("data1", DATA1.mac)];
  const plan = await planHost(ctx, targets);
  t.notOk(plan.actions.some((a) => a.kind === "enable-noiommu"));
  const [r] = await applyHost(ctx, targets, plan);
  t.match(r.deviceNode, /^\/dev\/vfio\/\d+$/);
  t.same(sim.modprobeCalls(), ["vfio", "vfio-pci"]);
  t.equal(
    fs.readFileSync(sim.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), "utf8").trim(),
    "N",
  );
});

t.test('noiommu = "off" on a host without IOMMU fails before any device', async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim, { config: config({ dpdk: { noiommu: "off" } }) });
  const targets = [target("data1", DATA1.mac)];
  await t.rejects(
    applyHost(ctx, targets, await planHost(ctx, targets)),
    /no IOMMU on this host.*noiommu = "off"/,
  );
  await sim.settle();
  t.same(sim.writes, []);
});

t.test(
  "uio_pci_generic binds with its own checks; igb_uio missing fails before devices",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim);
    const targets = [target("data1", DATA1.mac, { dpdk: { driver: "uio_pci_generic" } })];
    const [r] = await applyHost(ctx, targets, await planHost(ctx, targets));
    t.match(r, { state: "bound", driver: "uio_pci_generic", deviceNode: "/dev/uio0" });
    t.same(sim.modprobeCalls(), ["uio_pci_generic"]);
    const igb = [target("data2", DATA2.mac, { dpdk: { driver: "igb_uio" } })];
    const err = await applyHost(ctx, igb, await planHost(ctx, igb)).catch((e) => e);
    t.match(
      err.message,
      /igb_uio wc_activate=1 failed \(exit 1\): modprobe: FATAL: Module igb_uio not found/,
    );
    t.match(err.hint, /dpdk-kmods/);
    t.equal(sim.driverOf(DATA2.bdf), "ena");
  },
);

t.test(
  "hugepages: raised to the configured count, short allocation warned with figures, never shrunk",
  async (t) => {
    const sim = node({ hugepageCapacity: { 2048: 300 }, hugepageSizes: [2048] });
    t.teardown(() => sim.close());
    const host = new Host(sim.root);
    const { log, lines } = captureLog();
    const res = await applyHugepages(
      host,
      [
        { sizeKb: 2048, pages: 512 },
        { sizeKb: 1048576, pages: 2 },
      ],
      log,
    );
    t.match(res[0], { sizeKb: 2048, wanted: 512, got: 300, changed: true });
    t.match(res[0].warning, /allocated 300 of 512 2M hugepages \(600 MiB of 1024 MiB\)/);
    t.match(res[1].warning, /does not support 1G hugepages/);
    t.ok(
      lines.some(
        (l) => l.startsWith("level=warn") && l.includes("wanted=512") && l.includes("got=300"),
      ),
    );
    sim.setHugepageCapacity(2048, 10_000);
    const again = await applyHugepages(host, [{ sizeKb: 2048, pages: 512 }], log);
    t.match(again[0], { got: 512, changed: true });
    t.notOk(again[0].warning);
    const before = host.writes;
    const less = await applyHugepages(host, [{ sizeKb: 2048, pages: 100 }], log);
    t.match(less[0], { got: 512, changed: false });
    t.equal(host.writes, before, "no write when the pool is already large enough");
  },
);

t.test(
  "hugepages: a kernel slow to count the new pages (a loaded machine) is waited for, not reported short or absent",
  async (t) => {
    const sim = node({
      hugepageCapacity: { 2048: 300 },
      hugepageSizes: [2048],
      hugepageLagMs: 300,
    });
    t.teardown(() => sim.close());
    const host = new Host(sim.root);
    const { log } = captureLog();
    const [r] = await applyHugepages(host, [{ sizeKb: 2048, pages: 512 }], log);
    t.match(r, { got: 300, changed: true }, "what the kernel counted, not what was written");
    t.match(r.warning, /allocated 300 of 512 2M hugepages/);
    t.equal(await hugepageProblem(host, { dpdkDevices: 1 }), undefined, "the pages are there");
  },
);

t.test("hugepages through the host stage", async (t) => {
  const sim = node({ hugepageCapacity: { 2048: 64 } });
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim, { config: config({ dpdk: { hugepages_2m: 128 } }) });
  const plan = await planHost(ctx, []);
  t.same(
    plan.actions.map((a) => a.kind),
    ["hugepages"],
  );
  await applyHost(ctx, [], plan);
  t.equal(
    fs.readFileSync(sim.p("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"), "utf8").trim(),
    "64",
  );
  t.ok(ctx.lines.some((l) => l.includes("allocated 64 of 128")));
});

t.test(
  "write-combining: PAT evidence first, then the kernel's known behaviour, else a command",
  async (t) => {
    const sim = node();
    t.teardown(() => sim.close());
    const host = new Host(sim.root);
    const ena = { bdf: DATA1.bdf, vendor: "1d0f", device: "ec20" };
    t.equal((await writeCombiningReport(host, [])).state, "n/a");
    t.match(
      await writeCombiningReport(host, [{ bdf: "0000:00:09.0", vendor: "8086", device: "100e" }]),
      {
        state: "n/a",
        detail: /no ENA device/,
      },
    );
    const ctx = stageCtx(sim);
    const targets = [target("data1", DATA1.mac)];
    await applyHost(ctx, targets, await planHost(ctx, targets));
    const bar = sim.prefetchableBar(DATA1.bdf);

    // (3) a Debian kernel, no debugfs: unknown, with the exact command and no patch recommended
    const unknown = await writeCombiningReport(host, [ena]);
    t.equal(unknown.state, "unknown");
    t.match(unknown.detail, /PAT list is not readable.*kernel 6\.1\.0-57-amd64/);
    t.equal(
      unknown.check,
      `mount -t debugfs none /sys/kernel/debug; grep -e '[mem ${bar.start}-' /sys/kernel/debug/x86/pat_memtype_list (as root, while a DPDK app runs: "write-combining" or "uncached-minus")`,
    );
    t.notOk(unknown.fix, "no patch offered without evidence");
    // the command, run as it says against what a mapping puts there, finds the entry
    sim.mapBar(DATA1.bdf, "write-combining");
    const pat = fs.readFileSync(sim.p("/sys/kernel/debug/x86/pat_memtype_list"), "utf8");
    t.ok(
      pat
        .split("\n")
        .some((l) => l.includes(`[mem ${bar.start}-`) && l.endsWith("write-combining")),
    );

    // (1) a live mapping: write-combining, told from the PAT list
    const wc = await writeCombiningReport(host, [ena]);
    t.equal(wc.state, "write-combining");
    t.equal(wc.detail, `PAT: 0000:00:06.0 BAR ${bar.start}: write-combining`);
    t.notOk(wc.fix);
    sim.mapBar(DATA1.bdf, "uncached-minus");
    const uc = await writeCombiningReport(host, [ena]);
    t.equal(uc.state, "uncached");
    t.match(uc.fix, /enav2-vfio-patch \(get-vfio-with-wc\.sh\)/, "not AL2023: the script applies");

    // (2) no mapping on Amazon Linux 2023's 6.1 kernel: expected, not yet observed
    sim.mapBar(DATA1.bdf, undefined);
    fs.writeFileSync(sim.p("/proc/sys/kernel/osrelease"), "6.1.132-147.221.amzn2023.x86_64\n");
    const expected = await writeCombiningReport(host, [ena]);
    t.equal(expected.state, "expected");
    t.match(
      expected.detail,
      /Amazon Linux 2023's 6\.1\.132 kernel maps ENA's prefetchable BAR write-combining in vfio-pci; expected, not yet observed/,
    );
    t.notMatch(expected.check, /mount -t debugfs/, "debugfs is mounted now");
    // an uncached mapping on AL2023: the script is broken there, so it is not what we send users to
    sim.mapBar(DATA1.bdf, "uncached-minus");
    const al = await writeCombiningReport(host, [ena]);
    t.equal(al.state, "uncached");
    t.match(al.fix, /does not build on AL2023 \(amzn-drivers #348, PR #370\)/);
    t.notMatch(al.fix, /enav2-vfio-patch/);
    // 6.12 is not claimed; an out-of-tree vfio-pci (what the patch builds) is expected WC
    sim.mapBar(DATA1.bdf, undefined);
    fs.writeFileSync(sim.p("/proc/sys/kernel/osrelease"), "6.12.40-64.114.amzn2023.x86_64\n");
    t.equal((await writeCombiningReport(host, [ena])).state, "unknown");
    fs.writeFileSync(sim.p("/sys/module/vfio_pci/taint"), "O\n");
    t.match(await writeCombiningReport(host, [ena]), { state: "expected", detail: /out-of-tree/ });
  },
);

t.test(
  "vfio-pci probe without NOIOMMU leaves the device driverless; bindDevice restores it",
  async (t) => {
    const sim = node({ loaded: ["vfio_pci"] }); // vfio loaded, parameter N, no IOMMU
    t.teardown(() => sim.close());
    const host = new Host(sim.root);
    // the kernel's failure mode, step by step
    await host.writeAttr(`/sys/bus/pci/devices/${DATA2.bdf}/driver_override`, "vfio-pci");
    await host.writeAttr(`/sys/bus/pci/devices/${DATA2.bdf}/driver/unbind`, DATA2.bdf);
    await sim.settle();
    await host.writeAttr("/sys/bus/pci/drivers_probe", DATA2.bdf);
    await sim.settle();
    t.equal(sim.driverOf(DATA2.bdf), undefined, "no driver at all");
    t.equal(sim.netdevOf(DATA2.bdf), undefined, "no netdev");
    t.equal(
      fs.readFileSync(sim.p(`/sys/bus/pci/devices/${DATA2.bdf}/driver_override`), "utf8").trim(),
      "vfio-pci",
      "override still set",
    );
    // and what bindDevice does about it
    const { bindDevice } = await import("../../../src/host/pci.js");
    const { guardFacts, readRoutes } = await import("../../../src/host/guard.js");
    const { log } = captureLog();
    const guard = guardFacts({
      primaryMac: PRIMARY.mac,
      routes: await readRoutes(host),
      ownedMacs: [DATA1.mac],
    });
    const err = await bindDevice(host, DATA1.bdf, "vfio-pci", { log, mac: DATA1.mac, guard }).catch(
      (e) => e,
    );
    t.type(err, OpError);
    t.match(
      err.message,
      /probe did not bind vfio-pci \(driver now: none; without an IOMMU, vfio-pci needs NOIOMMU\); restored to ena \(netdev eth1 is back\)/,
    );
    t.equal(err.fields.rolled_back, true);
    t.equal(sim.driverOf(DATA1.bdf), "ena");
    t.equal(fs.readFileSync(sim.p("/sys/class/net/eth1/address"), "utf8").trim(), DATA1.mac);
    t.same(sim.errors, []);
  },
);

t.test("hugepages per NUMA node: requested against achieved", async (t) => {
  const sim = node({ numaNodes: 2, hugepageCapacity: { 2048: 701 } });
  t.teardown(() => sim.close());
  const host = new Host(sim.root);
  const { log } = captureLog();
  const want = [{ sizeKb: 2048, pages: 1024 }];
  const [r] = await applyHugepages(host, want, log);
  t.match(
    r.warning,
    /allocated 701 of 1024 2M hugepages \(1402 MiB of 2048 MiB\), per NUMA node node0 351, node1 350/,
  );
  const pools = await readHugepages(host, want);
  t.match(pools, [
    {
      sizeKb: 2048,
      total: 701,
      requested: 1024,
      nodes: [
        { node: 0, total: 351, free: 351 },
        { node: 1, total: 350, free: 350 },
      ],
    },
    { sizeKb: 1048576, total: 0, requested: 0 },
  ]);
  t.equal(perNode(pools[0]), "node0 351, node1 350");
});

t.test("no hugepages: a device on a DPDK driver without pages, or without hugetlbfs", async (t) => {
  const sim = node({ hugetlbfs: true });
  t.teardown(() => sim.close());
  const host = new Host(sim.root);
  t.equal(await hugepageProblem(host, { dpdkDevices: 0 }), undefined, "no DPDK device: no need");
  const none = await hugepageProblem(host, { dpdkDevices: 2 });
  t.equal(none?.short, "none reserved");
  t.equal(
    none?.message,
    'no hugepages: none are reserved (2M: 0, 1G: 0) while 2 devices are on a DPDK driver; a DPDK app stops with "No free 2048 kB hugepages reported"',
  );
  t.match(none?.fix, /\[dpdk\]\.hugepages_2m.*packer variable hugepages_1g/);
  t.equal(
    await hugepageProblem(host, { dpdkDevices: 2, planned: [{ sizeKb: 1048576, pages: 2 }] }),
    undefined,
    "a dry run that will reserve pages counts them",
  );
  fs.writeFileSync(sim.p("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"), "64\n");
  await sim.settle();
  t.equal(await hugepageProblem(host, { dpdkDevices: 1 }), undefined, "pages and a mount: fine");
  t.same(await hugetlbfsMounts(host), ["/dev/hugepages"]);
  sim.setHugetlbfs(false);
  const unmounted = await hugepageProblem(host, { dpdkDevices: 1 });
  t.equal(unmounted?.short, "no hugetlbfs mounted");
  t.match(
    unmounted?.message,
    /^no hugepages usable: no hugetlbfs is mounted .* while 1 device is on a DPDK driver/,
  );
  t.match(unmounted?.fix, /dev-hugepages\.mount/);
});
