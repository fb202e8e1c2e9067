// The device plugin's selection, predicted from sysfs: the pure model (sriov-select) over fake roots
// of the simulated node (sriov-check reads them), for eni-dpdk's own entries and foreign ones.
import fs from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import { Host } from "../../../src/host/host.js";
import { applyHost, planHost } from "../../../src/reconcile/host.js";
import { sriovStage } from "../../../src/reconcile/sriov.js";
import { checkSriov, readPluginDevices } from "../../../src/host/sriov-check.js";
import { selectDevices } from "../../../src/host/sriov-select.js";
import { parsePluginVersion } from "../../../src/host/sriov-model.js";
import { modalias, type SimKernel } from "../../../src/sim/kernel.js";
import { DATA1, DATA2, node, PRIMARY, stageCtx, target } from "../../support/fixture.js";
import { pluginVerdict } from "../../support/sriov-plugin-rules.js";

const CFG = "/etc/pcidp/config.json";

/** The fixture node with DATA1 bound by eni-dpdk (resource amazon.com/data1); DATA2 stays on ena. */
async function boundNode(t: Test, bind = [DATA1]): Promise<SimKernel> {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim);
  const targets = bind.map((d, i) => target(`data${i + 1}`, d.mac));
  const devices = await applyHost(ctx, targets, await planHost(ctx, targets));
  const up = { enis: [], devices };
  const plan = await sriovStage.plan(ctx, up);
  const applied = await sriovStage.apply(ctx, plan, up);
  t.same(applied.warnings, undefined, "apply: the plugin will advertise what eni-dpdk wrote");
  return sim;
}

function writeCfg(sim: SimKernel, doc: unknown): void {
  fs.mkdirSync(sim.p("/etc/pcidp"), { recursive: true });
  fs.writeFileSync(sim.p(CFG), typeof doc === "string" ? doc : JSON.stringify(doc));
}
const readCfg = (sim: SimKernel) =>
  JSON.parse(fs.readFileSync(sim.p(CFG), "utf8")) as { resourceList: Record<string, unknown>[] };
const check = async (sim: SimKernel, opts: Parameters<typeof checkSriov>[2] = {}) =>
  checkSriov(new Host(sim.root), CFG, opts);
const bdfs = (r: { devices: { bdf: string }[] }) => r.devices.map((d) => d.bdf);
const entry = (name: string, selectors: unknown, extra: Record<string, unknown> = {}) => ({
  resourceName: name,
  resourcePrefix: "x.io",
  selectors,
  ...extra,
});

t.test(
  "eni-dpdk's own entry: it gets exactly the bound device; the primary is left out",
  async (t) => {
    const sim = await boundNode(t);
    const r = await check(sim, { owned: new Set(["amazon.com/data1"]) });
    t.equal(r.ok, true);
    t.same(r.errors, []);
    t.equal(r.exists, true);
    t.same(
      r.resources.map((x) => [x.full, x.owner, x.state, bdfs(x), x.envVar]),
      [["amazon.com/data1", "eni-dpdk", "advertised", [DATA1.bdf], "PCIDEVICE_AMAZON_COM_DATA1"]],
    );
    t.same(r.resources[0].devices, [
      { bdf: DATA1.bdf, vendor: "1d0f", device: "ec20", driver: "vfio-pci" },
    ]);
    t.same(r.excluded, [
      {
        bdf: PRIMARY.bdf,
        reason: "eth0 has an IPv4 default route: the plugin never offers a NIC the host uses",
      },
    ]);
    t.same(r.unclaimed, [
      { bdf: DATA2.bdf, vendor: "1d0f", device: "ec20", driver: "ena", netdev: "eth2" },
    ]);
    t.same(readCfg(sim).resourceList[0].selectors, {
      vendors: ["1d0f"],
      devices: ["ec20"],
      drivers: ["vfio-pci"],
      pciAddresses: [DATA1.bdf],
    });
  },
);

t.test("the first resource claims a device; a later one that wanted it is an error", async (t) => {
  const sim = await boundNode(t);
  const ours = readCfg(sim).resourceList[0];
  const greedy = entry("all_ena", { vendors: ["1d0f"] });
  writeCfg(sim, { resourceList: [greedy, ours] });
  const r = await check(sim, { owned: new Set(["amazon.com/data1"]) });
  t.equal(r.ok, false);
  t.same(bdfs(r.resources[0]), [DATA1.bdf, DATA2.bdf], "the greedy one first: every ENA but eth0");
  t.equal(r.resources[1].state, "empty");
  t.same(r.resources[1].lost, [{ bdf: DATA1.bdf, claimedBy: "x.io/all_ena", certain: true }]);
  t.match(r.errors, [
    /resourceList\[1\] amazon.com\/data1 does not get 0000:00:06.0: the earlier resource x.io\/all_ena claims it/,
    /resourceList\[1\] amazon.com\/data1 gets no device, so the plugin does not advertise it/,
  ]);
  // after ours it still matches our device: the plugin gives it only the rest, an overlap all the same
  writeCfg(sim, { resourceList: [ours, greedy] });
  const r2 = await check(sim);
  t.same(r2.resources.map(bdfs), [[DATA1.bdf], [DATA2.bdf]]);
  t.same(r2.resources[1].lost, [{ bdf: DATA1.bdf, claimedBy: "amazon.com/data1", certain: true }]);
  t.equal(r2.ok, false);
  // disjoint selectors: no error
  writeCfg(sim, {
    resourceList: [ours, entry("kernel_ena", { vendors: ["1d0f"], drivers: ["ena"] })],
  });
  const r3 = await check(sim);
  t.equal(r3.ok, true, r3.errors.join("\n"));
  t.same(r3.resources.map(bdfs), [[DATA1.bdf], [DATA2.bdf]]);
  // the model of the plugin's parser agrees the file itself is fine: only the devices tell
  t.same(pluginVerdict(JSON.stringify({ resourceList: [greedy, ours] })).fatal, []);
});

t.test("fields are ANDed, selectors unioned, a device counted once per resource", async (t) => {
  const sim = await boundNode(t);
  writeCfg(sim, {
    resourceList: [
      entry("and", { vendors: ["1d0f"], drivers: ["igb_uio"] }),
      entry("union", [{ pciAddresses: [DATA1.bdf] }, { pciAddresses: [DATA2.bdf] }]),
    ],
  });
  let r = await check(sim);
  t.equal(r.resources[0].state, "empty");
  t.match(r.resources[0].why, [
    /selectors: drivers \["igb_uio"\] matches none of 0000:00:06.0 \(vfio-pci\), 0000:00:07.0 \(ena\)/,
  ]);
  t.same(bdfs(r.resources[1]), [DATA1.bdf, DATA2.bdf]);
  t.match(r.warnings, [/2 selectors as an array: read only by plugin v3.6.0 or later/]);
  writeCfg(sim, {
    resourceList: [entry("twice", [{ vendors: ["1d0f"] }, { pciAddresses: [DATA1.bdf] }])],
  });
  r = await check(sim);
  t.same(bdfs(r.resources[0]), [DATA1.bdf, DATA2.bdf]);
  t.same(r.resources[0].lost, [], "a second selector of the same resource is no conflict");
  t.equal(r.ok, true);
});

t.test(
  "values match as the plugin compares them: exactly, with a hint for near misses",
  async (t) => {
    const sim = await boundNode(t);
    const cases: [unknown, RegExp][] = [
      [
        { vendors: ["1D0F"] },
        /vendors \["1D0F"\] matches none .*would match if written as lower-case hex without 0x/,
      ],
      [{ vendors: ["0x1d0f"] }, /"0x1d0f"\] would match if written as lower-case hex/],
      [{ devices: ["EC20"] }, /devices \["EC20"\] matches none/],
      [
        { pciAddresses: ["00:06.0"] },
        /pciAddresses \["00:06.0"\] .*the full lower-case address, e.g. 0000:00:06.0/,
      ],
      [{ pciAddresses: ["0000:00:06.0 "] }, /pciAddresses \["0000:00:06.0 "\] matches none/],
      [
        { drivers: ["vfio_pci"] },
        /drivers \["vfio_pci"\] .*the driver's directory name, e.g. vfio-pci/,
      ],
      [
        { drivers: ["vfio-pci"], linkTypes: ["ether"] },
        /linkTypes \["ether"\] matches none of 0000:00:06.0 \(none\); a device on a DPDK driver has no netdev/,
      ],
      [{ pfNames: ["eth1"] }, /pfNames \["eth1"\] matches none of 0000:00:06.0 \(not a VF\)/],
    ];
    for (const [sel, why] of cases) {
      writeCfg(sim, { resourceList: [entry("r", sel)] });
      const r = await check(sim);
      if (bdfs(r.resources[0]).length) {
        t.fail(`${JSON.stringify(sel)} matched ${bdfs(r.resources[0]).join(",")}`);
        continue;
      }
      t.equal(r.ok, false, JSON.stringify(sel));
      t.match(r.resources[0].why.join("\n"), why, JSON.stringify(sel));
    }
    // a kernel-driver NIC still has its netdev, so linkTypes ether matches it
    writeCfg(sim, { resourceList: [entry("r", { linkTypes: ["ether"] })] });
    t.same(bdfs((await check(sim)).resources[0]), [DATA1.bdf, DATA2.bdf].slice(1));
  },
);

t.test("a device with a default route or without a driver is never offered", async (t) => {
  const sim = await boundNode(t);
  sim.addRoute({ iface: "eth2", dest: "0.0.0.0/0", gateway: "10.0.16.1", metric: 200 });
  sim.addNic({ bdf: "0000:00:09.0", driver: null });
  writeCfg(sim, { resourceList: [entry("r", { pciAddresses: [DATA2.bdf, "0000:00:09.0"] })] });
  const r = await check(sim);
  t.equal(r.resources[0].state, "empty");
  t.equal(r.ok, false);
  t.same(r.excluded, [
    {
      bdf: PRIMARY.bdf,
      reason: "eth0 has an IPv4 default route: the plugin never offers a NIC the host uses",
    },
    {
      bdf: DATA2.bdf,
      reason: "eth2 has an IPv4 default route: the plugin never offers a NIC the host uses",
    },
    { bdf: "0000:00:09.0", reason: "no driver bound: the plugin skips a device without one" },
  ]);
  // an IPv6-only default route does not exclude it (the plugin asks netlink for IPv4 routes only)
  sim.clearRoutes("eth2");
  sim.addRoute({ iface: "eth2", dest: "::/0", gateway: "fe80::1" });
  t.same(bdfs((await check(sim)).resources[0]), [DATA2.bdf]);
});

t.test("VFs: pfNames and rootDevices with index ranges; the PF with VFs is left out", async (t) => {
  const sim = await boundNode(t);
  // an SR-IOV PF (ens5 on a kernel driver, 2 VFs enabled) and its VF 1 on vfio-pci, as sysfs links them
  const pf = "0000:00:10.0";
  const vf = "0000:00:10.2";
  const dev = (bdf: string) => sim.p(`/sys/devices/pci0000:00/${bdf}`);
  for (const [bdf, id] of [
    [pf, "1572"],
    [vf, "154c"],
  ]) {
    fs.mkdirSync(dev(bdf), { recursive: true });
    fs.writeFileSync(path.join(dev(bdf), "modalias"), modalias("8086", id, "0x020000"));
    fs.symlinkSync(dev(bdf), sim.p(`/sys/bus/pci/devices/${bdf}`));
  }
  fs.mkdirSync(path.join(dev(pf), "net/ens5"), { recursive: true });
  fs.writeFileSync(sim.p("/sys/devices/pci0000:00/0000:00:10.0/net/ens5/type"), "1\n");
  fs.symlinkSync(path.join(dev(pf), "net/ens5"), sim.p("/sys/class/net/ens5"));
  fs.writeFileSync(path.join(dev(pf), "sriov_totalvfs"), "8\n");
  fs.writeFileSync(path.join(dev(pf), "sriov_numvfs"), "2\n");
  fs.symlinkSync("../0000:00:10.1", path.join(dev(pf), "virtfn0"));
  fs.symlinkSync("../0000:00:10.2", path.join(dev(pf), "virtfn1"));
  fs.symlinkSync("../0000:00:10.0", path.join(dev(vf), "physfn"));
  fs.mkdirSync(sim.p("/sys/bus/pci/drivers/i40e"), { recursive: true });
  fs.symlinkSync(sim.p("/sys/bus/pci/drivers/i40e"), path.join(dev(pf), "driver"));
  fs.symlinkSync(sim.p("/sys/bus/pci/drivers/vfio-pci"), path.join(dev(vf), "driver"));
  fs.writeFileSync(path.join(dev(vf), "acpi_index"), "7\n");

  const devs = await readPluginDevices(new Host(sim.root));
  t.match(
    devs.find((d) => d.bdf === vf),
    {
      vendor: "8086",
      device: "154c",
      driver: "vfio-pci",
      pfName: "ens5",
      pfAddr: pf,
      funcId: 1,
      linkType: "ether",
      acpiIndex: "7",
      netdevs: [],
    },
  );
  const cases: [unknown, string[]][] = [
    [{ pfNames: ["ens5"] }, [vf]],
    [{ pfNames: ["ENS5#1"] }, [vf]],
    [{ pfNames: ["ens5#0,2-5"] }, []],
    [{ pfNames: ["ens5#0-1"] }, [vf]],
    [{ pfNames: ["ens5#x"] }, []],
    [{ rootDevices: [`${pf}#1`] }, [vf]],
    [{ rootDevices: [pf], drivers: ["iavf"] }, []],
    [{ acpiIndexes: ["7"] }, [vf]],
    [{ linkTypes: ["ether"], vendors: ["8086"] }, [vf]],
    [{ vendors: ["8086"] }, [vf]],
  ];
  for (const [sel, want] of cases) {
    writeCfg(sim, { resourceList: [entry("vf", sel)] });
    t.same(bdfs((await check(sim)).resources[0]), want, JSON.stringify(sel));
  }
  const r = await check(sim);
  t.match(r.excluded, [
    { bdf: PRIMARY.bdf },
    { bdf: pf, reason: "an SR-IOV PF with VFs enabled: the plugin offers its VFs, not the PF" },
  ]);
  // before v3.6.0 acpiIndexes is an unknown key: it constrains nothing
  writeCfg(sim, { resourceList: [entry("vf", { acpiIndexes: ["99"], vendors: ["8086"] })] });
  t.same(bdfs((await check(sim)).resources[0]), [], "v3.6.0+: acpi_index 7 is not 99");
  t.same(
    bdfs((await check(sim, { version: parsePluginVersion("v3.5.1") })).resources[0]),
    [vf],
    "v3.5.1 ignores acpiIndexes",
  );
});

t.test("fields sysfs cannot answer are 'not evaluated', and never a certain error", async (t) => {
  const sim = await boundNode(t);
  writeCfg(sim, {
    resourceList: [
      entry("rdma", { vendors: ["1d0f"], isRdma: true }),
      entry("ours_later", { pciAddresses: [DATA1.bdf] }),
      entry("ddp", { ddpProfiles: ["gtp"], pciAddresses: ["0000:00:0f.0"] }),
    ],
  });
  const r = await check(sim);
  t.same(bdfs(r.resources[0]), [DATA1.bdf, DATA2.bdf], "at most these");
  t.same(r.resources[0].notEvaluated, ["selectors.isRdma"]);
  t.same(r.resources[1].lost, [{ bdf: DATA1.bdf, claimedBy: "x.io/rdma", certain: false }]);
  t.match(r.warnings.join("\n"), /x.io\/ours_later gets no device.*not certain/);
  t.match(r.warnings.join("\n"), /x.io\/rdma: not evaluated from sysfs: selectors.isRdma/);
  t.match(r.errors, [/x.io\/ddp gets no device/], "no device passes pciAddresses anyway: certain");
  t.equal(r.errors.length, 1);
});

t.test("what makes the plugin serve nothing, or skip an entry, is an error", async (t) => {
  const sim = await boundNode(t);
  const ours = readCfg(sim).resourceList[0];
  const cases: [unknown, RegExp, string][] = [
    [
      { resourceList: [] },
      /no resources in "resourceList": the plugin logs "no resource configuration" and exits/,
      "",
    ],
    [{ resourceList: { a: ours } }, /"resourceList" is object; the plugin expects an array/, ""],
    ["[1,2]", /the top level is array/, ""],
    ["{ nope", /is not valid JSON/, ""],
    [
      { resourceList: [ours, { ...ours }] },
      /is also used by resourceList\[0\]; the plugin exits/,
      "not-served",
    ],
    [
      { resourceList: [ours, entry("bad", "vendors")] },
      /resourceList\[1\] x.io\/bad is dropped by the plugin/,
      "advertised",
    ],
    [
      { resourceList: [ours, entry("bad", { vendors: "1d0f" })] },
      /dropped by the plugin.*"bad"\): selectors\.vendors must be an array of strings/,
      "advertised",
    ],
    [{ resourceList: [ours, entry("n", null)] }, /no "selectors": the plugin panics/, "not-served"],
    [
      { resourceList: [ours, { ...entry("t", {}), deviceType: "netdevice" }] },
      /deviceType "netdevice" is not one of/,
      "not-served",
    ],
  ];
  for (const [doc, err, firstState] of cases) {
    writeCfg(sim, doc);
    const r = await check(sim, { owned: new Set(["amazon.com/data1"]) });
    t.equal(r.ok, false, JSON.stringify(doc));
    t.match(r.errors.join("\n"), err, JSON.stringify(doc));
    if (firstState) t.equal(r.resources[0]?.state, firstState, JSON.stringify(doc));
  }
  fs.rmSync(sim.p(CFG));
  const gone = await check(sim);
  t.equal(gone.exists, false);
  t.match(gone.errors, [/does not exist: the plugin logs an error and exits/]);
});

t.test(
  "v3.5.1 drops an entry whose selectors are an array; an object works everywhere",
  async (t) => {
    const sim = await boundNode(t);
    const v351 = { version: parsePluginVersion("v3.5.1") };
    const ours = readCfg(sim).resourceList[0];
    t.ok((await check(sim, v351)).ok, "what eni-dpdk writes: fine on v3.5.1");
    writeCfg(sim, { resourceList: [{ ...ours, selectors: [ours.selectors] }] });
    const old = await check(sim, v351);
    t.equal(old.ok, false);
    t.equal(old.resources[0].state, "dropped");
    t.match(old.errors, [
      /amazon.com\/data1 is dropped by the plugin.*reads only from v3.6.0; v3.5.1 skips the entry/,
      /the plugin serves nothing: the plugin keeps no entry, logs "no resource configuration" and exits/,
    ]);
    const now = await check(sim);
    t.equal(now.ok, true);
    t.match(now.warnings, [/array of one; plugin releases before v3.6.0 .* skip this entry/]);
    writeCfg(sim, { resourceList: [{ ...ours, deviceType: "auxNetDevice" }] });
    t.match((await check(sim, v351)).errors, [
      /deviceType "auxNetDevice" is not one of netDevice, accelerator/,
    ]);
    t.match((await check(sim)).warnings.join("\n"), /not evaluated: auxNetDevice/);
  },
);

t.test("hostile input: prototype keys, a catch-all by misspelling, a huge file", async (t) => {
  const sim = await boundNode(t);
  writeCfg(
    sim,
    '{"resourceList": [{"resourceName": "p", "resourcePrefix": "x.io", "selectors": {"__proto__": {"vendors": ["8086"]}, "constructor": ["x"], "drivers": ["ena"]}}]}',
  );
  let r = await check(sim);
  t.same(
    bdfs(r.resources[0]),
    [DATA2.bdf],
    "__proto__/constructor are unknown keys; drivers decides",
  );
  t.equal(({} as Record<string, unknown>).vendors, undefined, "no prototype pollution");
  writeCfg(sim, { resourceList: [entry("typo", { vendor: ["8086"] })] });
  r = await check(sim);
  t.same(bdfs(r.resources[0]), [DATA1.bdf, DATA2.bdf], "a misspelt key constrains nothing");
  t.match(r.warnings.join("\n"), /unknown key "vendor".*did you mean "vendors"/);

  const many = Array.from({ length: 5000 }, (_, i) => entry(`r${i}`, { vendors: ["1d0f"] }));
  writeCfg(sim, { resourceList: many });
  const t0 = performance.now();
  r = await check(sim);
  const ms = performance.now() - t0;
  t.comment(`5000 resources checked in ${ms.toFixed(0)} ms`);
  t.same(bdfs(r.resources[0]), [DATA1.bdf, DATA2.bdf]);
  t.equal(r.resources.filter((x) => x.state === "empty").length, 4999);
  t.equal(r.resources[4999].lost[0].claimedBy, "x.io/r0");
});

t.test("selectDevices is pure: the same document and devices give the same answer", async (t) => {
  const devices = [
    {
      bdf: "0000:00:06.0",
      vendor: "1d0f",
      device: "ec20",
      baseClass: 2,
      driver: "vfio-pci",
      netdevs: [],
      defaultRoute: [],
      pfWithVfs: false,
      acpiIndex: "",
      pfName: "",
      pfAddr: "",
      funcId: -1,
      linkType: "",
    },
    {
      bdf: "0000:00:12.0",
      vendor: "1d0f",
      device: "0051",
      baseClass: 0x12,
      driver: "vfio-pci",
      netdevs: [],
      defaultRoute: [],
      pfWithVfs: false,
      acpiIndex: "",
      pfName: "",
      pfAddr: "",
      funcId: -1,
      linkType: "",
    },
  ];
  const doc = {
    resourceList: [
      { resourceName: "n", selectors: { vendors: ["1d0f"] } },
      { resourceName: "a", deviceType: "accelerator", selectors: { vendors: ["1d0f"] } },
    ],
  };
  const a = selectDevices(doc, devices);
  t.same(a, selectDevices(doc, devices));
  t.same(
    a.resources.map((r) => [r.full, bdfs(r)]),
    [
      ["intel.com/n", ["0000:00:06.0"]],
      ["intel.com/a", ["0000:00:12.0"]],
    ],
    "netDevice takes class 02, accelerator class 12; no prefix: the plugin's default",
  );
});
