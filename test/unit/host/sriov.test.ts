import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { buildConfig } from "../../../src/config/model.js";
import { InputError, OpError } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";
import { Deadline } from "../../../src/core/deadline.js";
import { Logger, silentLogger } from "../../../src/core/log.js";
import type { StageContext } from "../../../src/reconcile/stage.js";
import {
  afterSriovChange,
  inspectSriov,
  removeOwnedSriov,
  restartDevicePlugin,
} from "../../../src/host/sriov-file.js";
import { applySriov, planSriov } from "../../../src/reconcile/sriov.js";
import { type SriovDevice } from "../../../src/host/sriov-model.js";
import { emptyState, loadState, saveState } from "../../../src/host/state.js";
import { cleanVerdict, pluginVerdict } from "../../support/sriov-plugin-rules.js";
import { REPO } from "../../support/repo.js";

const here = path.join(REPO, "test");
const goldenDir = path.join(here, "golden", "sriov");
const CFG = "/etc/pcidp/config.json";

async function tmpRoot(tt: { teardown: (fn: () => unknown) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "eni-dpdk-sriov-"));
  tt.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

function captureLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", "text", { write: (l) => lines.push(l) }), lines };
}

function makeCtx(
  root: string,
  sriov: Record<string, unknown> = {},
  log: Logger = silentLogger,
): StageContext {
  return {
    host: new Host(root),
    imds: undefined as never,
    ec2: () => Promise.reject(new Error("test: no EC2 here")),
    log,
    deadline: new Deadline(10_000),
    config: buildConfig([{ source: "test", data: { sriov } }]).config,
    instance: {
      instanceId: "i-0123456789abcdef0",
      instanceType: "c6in.xlarge",
      region: "us-east-1",
      az: "us-east-1a",
      primaryMac: "02:00:00:00:00:01",
      localHostname: "ip-10-0-0-1",
    },
    imdsNics: [],
    state: emptyState(),
    dryRun: false,
  };
}

async function apply(ctx: StageContext, devices: SriovDevice[]) {
  const plan = await planSriov(ctx, devices);
  return { plan, result: await applySriov(ctx, devices, plan) };
}

const dev = (
  eniName: string,
  resource: string,
  bdf: string,
  driver = "vfio-pci",
  device = "0xec20",
): SriovDevice => ({
  eniName,
  resource,
  bdf,
  vendor: "0x1d0f",
  device,
  driver,
});

const single = [dev("data1", "amazon.com/ena_dpdk", "0000:00:06.0")];
const shared = [
  dev("data2", "amazon.com/ena_dpdk", "0000:00:07.0"),
  dev("data1", "amazon.com/ena_dpdk", "0000:00:06.0", "vfio-pci", "ec21"),
];
const mixed = [
  dev("fast1", "amazon.com/dpdk_fast", "0000:00:06.0"),
  dev("fast2", "amazon.com/dpdk_fast", "0000:00:08.0", "vfio-pci", "0xec21"),
  dev("uio1", "uio_pool", "0000:00:07.0", "igb_uio"),
  dev("ctl1", "example.org/ctl_plane", "0000:00:09.0", "uio_pci_generic"),
];

const readCfg = async (root: string) => fs.readFile(path.join(root, CFG), "utf8");
const writeCfg = async (root: string, text: string) => {
  await fs.mkdir(path.join(root, "etc/pcidp"), { recursive: true });
  await fs.writeFile(path.join(root, CFG), text);
};

// ---- the parser-rules checker itself must catch what the plugin rejects ----------------------------

t.test("plugin-rules checker catches the known failure modes", async (t) => {
  const seedDoc = await fs
    .readFile("/work/shared/seed/dpdk-device-binding.md", "utf8")
    .catch(() => "");
  const seed = JSON.stringify({
    resourceList: [
      {
        resourceName: "intel.com/intel_sriov_netdevice_1",
        deviceType: "netdevice",
        devices: [{ pciAddress: "0000:00:06.0", driver: "vfio-pci" }],
      },
    ],
  });
  if (seedDoc) t.match(seedDoc, /"devices": \[/, "the seed really uses the devices shape");
  t.match(
    pluginVerdict(seed).fatal,
    [/unsupported deviceType "netdevice"/],
    "the seed's lower-case deviceType fails the whole file",
  );
  const seedFixedType = seed.replace('"netdevice"', '"netDevice"');
  t.match(
    pluginVerdict(seedFixedType).fatal,
    [/nil selectors/],
    "without selectors the plugin panics",
  );
  t.match(pluginVerdict(seedFixedType).ignored, ["resourceList[0].devices"]);

  const one = {
    vendors: ["1d0f"],
    devices: ["ec20"],
    drivers: ["vfio-pci"],
    pciAddresses: ["0000:00:06.0"],
  };
  const good = { resourceName: "ena_dpdk", resourcePrefix: "amazon.com", selectors: one };
  const doc = (e: Record<string, unknown>) => JSON.stringify({ resourceList: [e] });
  t.ok(cleanVerdict(pluginVerdict(doc(good))), "one selector as an object is clean");
  t.ok(cleanVerdict(pluginVerdict(doc(good), "intel.com", "old")), "v3.5.x reads it too");
  t.same(pluginVerdict(doc(good)).resources, ["amazon.com/ena_dpdk"]);
  t.same(pluginVerdict(doc(good), "intel.com", "old").resources, ["amazon.com/ena_dpdk"]);
  // domain.md's entry (an array of one selector) works from v3.6.0 only
  const arrayOfOne = doc({ ...good, selectors: [one] });
  t.match(pluginVerdict(arrayOfOne).style, [/array of one: v3.5.x skips it/]);
  t.match(pluginVerdict(arrayOfOne, "intel.com", "old").dropped, [/array/]);
  t.same(
    pluginVerdict(arrayOfOne, "intel.com", "old").resources,
    [],
    "v3.5.x: the resource vanishes",
  );
  const two = doc({ ...good, selectors: [one, { ...one, drivers: ["igb_uio"] }] });
  t.same(pluginVerdict(two).needsArrays, ["resourceList[0].selectors"]);
  t.ok(cleanVerdict(pluginVerdict(two)), "several selectors: an array is the only way");
  t.same(pluginVerdict(two, "intel.com", "old").resources, []);
  t.same(pluginVerdict(doc({ ...good, deviceType: "auxNetDevice" }), "intel.com", "old").fatal, [
    'readConfig: resourceList[0]: unsupported deviceType "auxNetDevice"',
  ]);
  // written as text: an object literal's __proto__ sets the prototype, it is not a key
  const protoKeys =
    '{"resourceList": [{"resourceName": "a", "resourcePrefix": "x.io", "constructor": 1, "__proto__": {"x": 1}, "toString": "y", "selectors": {"vendors": ["1d0f"], "constructor": 2, "__proto__": null}}]}';
  t.same(pluginVerdict(protoKeys).fatal, [], "keys named like Object.prototype members: ignored");
  t.same(pluginVerdict(protoKeys).dropped, []);
  t.same(pluginVerdict(protoKeys).resources, ["x.io/a"]);
  t.same(pluginVerdict(protoKeys).ignored, [
    "resourceList[0].constructor",
    "resourceList[0].__proto__",
    "resourceList[0].toString",
    "resourceList[0].selectors[0].constructor",
    "resourceList[0].selectors[0].__proto__",
  ]);
  const misspelt = pluginVerdict(
    doc({ ...good, selectors: [{ vendor: ["1d0f"], pciAdresses: ["0000:00:06.0"] }] }),
  );
  t.same(misspelt.ignored, [
    "resourceList[0].selectors[0].vendor",
    "resourceList[0].selectors[0].pciAdresses",
  ]);
  t.same(
    misspelt.matchesAll,
    ["resourceList[0].selectors[0]"],
    "all keys misspelt: matches every NIC",
  );
  t.match(pluginVerdict(doc({ ...good, selectors: [{ vendors: "1d0f" }] })).dropped, [
    /vendors: cannot unmarshal string/,
  ]);
  t.match(pluginVerdict(doc({ ...good, selectors: [] })).dropped, [/non-empty array/]);
  t.same(pluginVerdict(doc({ ...good, selectors: { vendors: ["1d0f"] } })).style, []);
  t.match(pluginVerdict(doc({ ...good, resourceName: 7 })).fatal, [
    /resourceName: cannot unmarshal number/,
  ]);
  t.match(pluginVerdict(doc({ ...good, excludeTopology: "yes" })).fatal, [/excludeTopology/]);
  t.match(pluginVerdict(doc({ ...good, resourceName: "amazon.com/ena" })).fatal, [
    /invalid characters/,
  ]);
  t.match(pluginVerdict(doc({ ...good, resourceName: "ena-dpdk" })).style, [/hyphen/]);
  t.match(pluginVerdict(JSON.stringify({ resourceList: [good, good] })).fatal, [/already exists/]);
  t.match(
    pluginVerdict(
      JSON.stringify({ resourceList: [good, { ...good, resourcePrefix: undefined }] }, null, 0),
      "amazon.com",
    ).fatal,
    [/already exists/],
  );
  t.match(pluginVerdict("{ nope").fatal, [/not JSON/]);
  t.match(pluginVerdict('{"resourceList": []}').fatal, [/no resource configuration/]);
  t.match(pluginVerdict(doc({ ...good, selectors: [null] })).fatal, [/null/]);
  t.match(
    pluginVerdict(
      doc({ ...good, selectors: [{ IsRdma: true, vdpaType: "vhost", vendors: ["1d0f"] }] }),
    ).fatal,
    [/IsRdma with vdpaType/],
  );
  t.match(
    pluginVerdict(doc({ ...good, ResourceName: "ena_dpdk", resourceName: undefined })).style,
    [/case differs/],
  );
});

// ---- golden files ----------------------------------------------------------------------------------

for (const [name, devices, resources] of [
  ["single", single, ["amazon.com/ena_dpdk"]],
  ["shared", shared, ["amazon.com/ena_dpdk"]],
  ["mixed", mixed, ["amazon.com/dpdk_fast", "amazon.com/uio_pool", "example.org/ctl_plane"]],
] as const) {
  t.test(`golden: ${name}`, async (t) => {
    const root = await tmpRoot(t);
    const ctx = makeCtx(root);
    const { plan, result } = await apply(ctx, [...devices]);
    t.same(
      plan.actions.map((a) => [a.stage, a.kind, a.target]),
      [["sriov", "write-sriov", CFG]],
    );
    t.match(plan.actions[0].detail, /^add /);
    t.same(result, { changed: true, path: CFG, resources });
    const text = await readCfg(root);
    const goldenPath = path.join(goldenDir, `${name}.json`);
    if (process.env.UPDATE_GOLDEN) await fs.writeFile(goldenPath, text);
    const golden = await fs.readFile(goldenPath, "utf8");
    t.equal(text, golden, `${name}.json matches the golden file`);
    const clean = {
      fatal: [],
      dropped: [],
      ignored: [],
      matchesAll: [],
      style: [],
      needsArrays: [],
    };
    t.same(
      pluginVerdict(golden, "intel.com"),
      { ...clean, resources },
      "the plugin would serve exactly our resources",
    );
    t.same(
      pluginVerdict(golden, "intel.com", "old"),
      { ...clean, resources },
      "so would v3.5.x: one selector per resource, written as an object",
    );
    t.equal((await fs.stat(path.join(root, CFG))).mode & 0o777, 0o644);
    t.same(
      (await loadState(ctx.host)).sriov,
      { configPath: CFG, owned: resources },
      "ownership persisted",
    );
  });
}

t.test("every golden file passes the parser-rules checker", async (t) => {
  const files = (await fs.readdir(goldenDir)).filter((f) => f.endsWith(".json"));
  t.ok(files.length >= 3);
  for (const f of files) {
    const text = await fs.readFile(path.join(goldenDir, f), "utf8");
    t.ok(cleanVerdict(pluginVerdict(text)), f);
    t.ok(cleanVerdict(pluginVerdict(text, "intel.com", "old")), `${f} under v3.5.x`);
  }
});

t.test(
  "ENIs sharing a resource but bound to different drivers get one selector per driver",
  async (t) => {
    const root = await tmpRoot(t);
    const { log, lines } = captureLogger();
    const ctx = makeCtx(root, {}, log);
    const { plan } = await apply(ctx, [
      dev("a", "pool", "0000:00:06.0"),
      dev("b", "pool", "0000:00:07.0", "igb_uio"),
    ]);
    t.match(
      plan.actions[0].detail,
      /add amazon.com\/pool \(2 devices; 2 selectors, one per driver, as an array: needs device plugin v3.6.0 or later\)/,
      "the plan says the array needs v3.6.0",
    );
    t.ok(
      lines.some(
        (l) =>
          l.startsWith("level=warn") &&
          l.includes("2 selectors as an array: read only by plugin v3.6.0 or later"),
      ),
      "the log says so when the file is written",
    );
    t.same(pluginVerdict(await readCfg(root)).needsArrays, ["resourceList[0].selectors"]);
    t.match(
      pluginVerdict(await readCfg(root), "intel.com", "old").dropped,
      [/array/],
      "v3.5.x cannot read it: the reason for the warning",
    );
    const doc = JSON.parse(await readCfg(root));
    t.same(doc.resourceList[0].selectors, [
      {
        vendors: ["1d0f"],
        devices: ["ec20"],
        drivers: ["igb_uio"],
        pciAddresses: ["0000:00:07.0"],
      },
      {
        vendors: ["1d0f"],
        devices: ["ec20"],
        drivers: ["vfio-pci"],
        pciAddresses: ["0000:00:06.0"],
      },
    ]);
    t.ok(cleanVerdict(pluginVerdict(await readCfg(root))));
  },
);

// ---- merge -----------------------------------------------------------------------------------------

const foreignDoc = {
  comment: "managed by someone else",
  resourceList: [
    {
      resourceName: "intel_sriov_netdevice",
      resourcePrefix: "intel.com",
      excludeTopology: true,
      selectors: [
        {
          vendors: ["8086"],
          devices: ["154c"],
          drivers: ["iavf"],
          pfNames: ["ens785f0#0-3"],
          customField: { nested: [1, 2.5, null] },
        },
      ],
      additionalInfo: { "*": { token: "abc" } },
      xVendorField: "kept",
    },
    {
      resourceName: "mlnx_rdma",
      resourcePrefix: "nvidia.com",
      deviceType: "netDevice",
      selectors: [{ vendors: ["15b3"], isRdma: true }],
    },
  ],
};

t.test(
  "merge keeps foreign entries and unknown fields, and removes ours when no longer desired",
  async (t) => {
    const root = await tmpRoot(t);
    await writeCfg(root, JSON.stringify(foreignDoc)); // minified, as another tool might write it
    const ctx = makeCtx(root);
    const first = await apply(ctx, mixed);
    t.equal(first.result.changed, true);
    let doc = JSON.parse(await readCfg(root));
    t.same(doc.comment, foreignDoc.comment, "unknown top-level key kept");
    t.strictSame(
      doc.resourceList.slice(0, 2),
      foreignDoc.resourceList,
      "foreign entries JSON-equivalent and in place",
    );
    t.same(
      doc.resourceList
        .slice(2)
        .map(
          (e: { resourcePrefix: string; resourceName: string }) =>
            `${e.resourcePrefix}/${e.resourceName}`,
        ),
      ["amazon.com/dpdk_fast", "amazon.com/uio_pool", "example.org/ctl_plane"],
    );
    t.same(pluginVerdict(await readCfg(root)).fatal, []);
    t.same(pluginVerdict(await readCfg(root)).dropped, []);

    // Fewer ENIs now: uio_pool and ctl_plane go, dpdk_fast shrinks to one address.
    const second = await apply(ctx, [mixed[0]]);
    t.same(second.plan.removed, ["amazon.com/uio_pool", "example.org/ctl_plane"]);
    t.same(second.plan.updated, ["amazon.com/dpdk_fast"]);
    t.match(
      second.plan.actions[0].detail,
      /update amazon.com\/dpdk_fast \(1 device\); remove amazon.com\/uio_pool, example.org\/ctl_plane/,
    );
    t.same(second.result.resources, ["amazon.com/dpdk_fast"]);
    doc = JSON.parse(await readCfg(root));
    t.strictSame(doc.resourceList.slice(0, 2), foreignDoc.resourceList);
    t.equal(doc.resourceList.length, 3);
    t.same(doc.resourceList[2].selectors.pciAddresses, ["0000:00:06.0"]);
    t.same((await loadState(ctx.host)).sriov.owned, ["amazon.com/dpdk_fast"]);

    // No DPDK ENIs at all: only the foreign entries remain, unchanged.
    const third = await apply(ctx, []);
    t.same(third.result, { changed: true, path: CFG, resources: [] });
    t.strictSame(JSON.parse(await readCfg(root)), foreignDoc);
    t.same((await loadState(ctx.host)).sriov.owned, []);
  },
);

t.test("an entry with our name that we do not own is a conflict; nothing is written", async (t) => {
  const root = await tmpRoot(t);
  const theirs = {
    resourceList: [
      {
        resourceName: "ena_dpdk",
        resourcePrefix: "amazon.com",
        selectors: [{ vendors: ["1d0f"], drivers: ["ena"] }],
      },
    ],
  };
  await writeCfg(root, JSON.stringify(theirs));
  const ctx = makeCtx(root);
  await t.rejects(planSriov(ctx, single), InputError);
  const err = await planSriov(ctx, single).catch((e: InputError) => e);
  t.match((err as InputError).problems, [
    {
      source: CFG,
      key: "resourceList[0]",
      message: /"amazon.com\/ena_dpdk" is already defined by an entry eni-dpdk does not own/,
    },
  ]);
  await t.rejects(
    applySriov(ctx, single, {
      enabled: true,
      path: CFG,
      actions: [],
      resources: [],
      added: [],
      updated: [],
      removed: [],
      adopted: [],
    }),
    InputError,
  );
  t.equal(ctx.host.writes, 0, "no write at all");
  t.equal(await readCfg(root), JSON.stringify(theirs));

  // The same name without resourcePrefix depends on the plugin's flag: refused too.
  await writeCfg(
    root,
    JSON.stringify({
      resourceList: [{ resourceName: "ena_dpdk", selectors: [{ drivers: ["vfio-pci"] }] }],
    }),
  );
  const err2 = await planSriov(ctx, single).catch((e: InputError) => e);
  t.match((err2 as InputError).problems[0].message, /without resourcePrefix/);
});

t.test(
  "a foreign entry selecting one of our devices is reported; a case-variant resourceList is not merged into",
  async (t) => {
    const root = await tmpRoot(t);
    await writeCfg(
      root,
      JSON.stringify({
        resourceList: [
          {
            resourceName: "grab",
            resourcePrefix: "x.io",
            selectors: [{ pciAddresses: ["0000:00:06.0"] }],
          },
        ],
      }),
    );
    const { log, lines } = captureLogger();
    const ctx = makeCtx(root, {}, log);
    await apply(ctx, single);
    t.ok(
      lines.some(
        (l) =>
          l.startsWith("level=warn") &&
          l.includes("also selects 0000:00:06.0, which eni-dpdk advertises as amazon.com/ena_dpdk"),
      ),
    );

    const root2 = await tmpRoot(t);
    const odd = JSON.stringify({
      ResourceList: [
        { resourceName: "a", resourcePrefix: "x.io", selectors: [{ vendors: ["8086"] }] },
      ],
    });
    await writeCfg(root2, odd);
    const r = await apply(makeCtx(root2), single);
    t.match(r.plan.invalidExisting, /spells "resourceList" as "ResourceList"/);
    t.equal(await fs.readFile(path.join(root2, r.result.movedAside!), "utf8"), odd);
  },
);

t.test(
  "an identical entry found without an ownership record is adopted, not a conflict",
  async (t) => {
    const root = await tmpRoot(t);
    const ctx = makeCtx(root);
    await apply(ctx, single);
    const before = await readCfg(root);
    const ctx2 = makeCtx(root); // state lost
    const { plan, result } = await apply(ctx2, single);
    t.same(plan.actions, []);
    t.same(plan.adopted, ["amazon.com/ena_dpdk"]);
    t.equal(result.changed, false);
    t.equal(await readCfg(root), before);
    t.same(ctx2.state.sriov.owned, ["amazon.com/ena_dpdk"]);
  },
);

// What an older eni-dpdk wrote: one selector, but as an array (v3.5.x skips the entry).
const oldShape = (golden: string) => {
  const d = JSON.parse(golden) as { resourceList: { selectors: unknown }[] };
  for (const e of d.resourceList) e.selectors = [e.selectors];
  return JSON.stringify(d, null, 2) + "\n";
};

t.test(
  "an entry in the old array-of-one shape is rewritten as an object, owned or found without a record",
  async (t) => {
    const golden = await fs.readFile(path.join(goldenDir, "single.json"), "utf8");
    for (const stateLost of [false, true]) {
      const root = await tmpRoot(t);
      await writeCfg(root, oldShape(golden));
      t.match(pluginVerdict(oldShape(golden), "intel.com", "old").dropped, [/array/]);
      const ctx = makeCtx(root);
      if (!stateLost) {
        ctx.state.sriov = { configPath: CFG, owned: ["amazon.com/ena_dpdk"] };
        await saveState(ctx.host, ctx.state);
      }
      const { plan, result } = await apply(ctx, single);
      t.same(plan.updated, ["amazon.com/ena_dpdk"], `updated (state lost: ${stateLost})`);
      t.same(plan.adopted, stateLost ? ["amazon.com/ena_dpdk"] : []);
      t.equal(result.changed, true);
      t.equal(await readCfg(root), golden, "now the object form every plugin release reads");
      t.same((await loadState(ctx.host)).sriov.owned, ["amazon.com/ena_dpdk"]);
      const again = await apply(ctx, single);
      t.same(again.plan.actions, [], "converged");
    }
  },
);

t.test(
  "hostile foreign entries: prototype-named keys are ordinary keys, kept and never a refusal",
  async (t) => {
    const root = await tmpRoot(t);
    const text =
      '{"resourceList": [{"resourceName": "theirs", "resourcePrefix": "x.io", "constructor": 1, "__proto__": {"polluted": true}, "hasOwnProperty": "no", "selectors": {"vendors": ["8086"], "toString": 5, "__proto__": []}}], "__proto__": {"top": 1}}';
    await writeCfg(root, text);
    const ctx = makeCtx(root);
    const { plan, result } = await apply(ctx, single);
    t.same(plan.added, ["amazon.com/ena_dpdk"], "not refused as a file the plugin cannot read");
    t.equal(result.changed, true);
    const after = await readCfg(root);
    const want = JSON.parse(text) as { resourceList: unknown[] };
    const got = JSON.parse(after) as { resourceList: unknown[] };
    t.strictSame(got.resourceList[0], want.resourceList[0], "the foreign entry kept byte for key");
    t.ok(Object.hasOwn(got, "__proto__"), "the top-level __proto__ key kept as a key");
    t.equal(({} as Record<string, unknown>).polluted, undefined, "no prototype pollution");
    t.same(pluginVerdict(after).fatal, []);
    t.same(pluginVerdict(after).resources, ["x.io/theirs", "amazon.com/ena_dpdk"]);
    const r = await inspectSriov(ctx.host, CFG);
    t.equal(r.valid, true);
    t.match(r.warnings.join("\n"), /unknown key "constructor" is ignored/);
  },
);

t.test(
  "a file nested deeper than Go's limit is unreadable to the plugin: moved aside, no crash",
  async (t) => {
    const root = await tmpRoot(t);
    const deep = `{"resourceList": [{"resourceName": "d", "resourcePrefix": "x.io", "selectors": {"vendors": ["8086"]}, "x": ${"[".repeat(20_000)}${"]".repeat(20_000)}}]}`;
    await writeCfg(root, deep);
    const ctx = makeCtx(root);
    const { plan, result } = await apply(ctx, single);
    t.match(plan.invalidExisting, /nested deeper than 10000 levels/);
    t.equal(await fs.readFile(path.join(root, result.movedAside!), "utf8"), deep);
    const r = await inspectSriov(ctx.host, CFG);
    t.equal(r.valid, true, "the new file is ours alone");
    await writeCfg(root, deep);
    t.match((await inspectSriov(ctx.host, CFG)).warnings, [/nested deeper than 10000 levels/]);
    // 10000 levels is still fine for Go, and for us
    const limit = `{"resourceList": [{"resourceName": "d", "resourcePrefix": "x.io", "selectors": {"vendors": ["8086"]}, "x": ${"[".repeat(9_997)}${"]".repeat(9_997)}}]}`;
    await writeCfg(root, limit);
    t.equal((await inspectSriov(ctx.host, CFG)).valid, true);
    t.same(pluginVerdict(limit).fatal, []);
  },
);

t.test("a huge foreign file is merged without loss", async (t) => {
  const root = await tmpRoot(t);
  const foreign = Array.from({ length: 20_000 }, (_, i) => ({
    resourceName: `r${i}`,
    resourcePrefix: "x.io",
    selectors: { pciAddresses: [`0000:${(i >> 8).toString(16).padStart(2, "0")}:00.0`] },
    note: "x".repeat(100),
  }));
  const text = JSON.stringify({ resourceList: foreign });
  t.ok(text.length > 3_000_000, `${text.length} bytes`);
  await writeCfg(root, text);
  const ctx = makeCtx(root);
  const { result } = await apply(ctx, single);
  t.equal(result.changed, true);
  const got = JSON.parse(await readCfg(root)) as { resourceList: unknown[] };
  t.equal(got.resourceList.length, 20_001);
  t.strictSame(got.resourceList.slice(0, 20_000), foreign);
});

t.test("bad resource names are rejected before anything is written", async (t) => {
  const root = await tmpRoot(t);
  const ctx = makeCtx(root);
  const err = await planSriov(ctx, [dev("data1", "amazon.com/ena-dpdk", "0000:00:06.0")]).catch(
    (e) => e,
  );
  t.type(err, InputError);
  t.match((err as InputError).problems, [
    { key: "eni.data1.dpdk.resource_name", message: /must match \[A-Za-z0-9_\]/ },
  ]);
  await t.rejects(
    applySriov(ctx, [dev("x", "Bad.Prefix/name", "0000:00:06.0")], await planSriov(ctx, [])),
    InputError,
  );
  await t.rejects(
    planSriov(ctx, [dev("a", "p", "0000:00:06.0"), dev("b", "q", "0000:00:06.0")]),
    OpError,
    "one BDF twice",
  );
  await t.rejects(
    planSriov(ctx, [{ ...single[0], vendor: "" }]),
    OpError,
    "an empty vendor would make an empty selector",
  );
  t.equal(ctx.host.writes, 0);
  t.equal(await ctx.host.exists(CFG), false);
});

t.test(
  "foreign entries that would stop the plugin serving ours are refused, with the reason",
  async (t) => {
    const root = await tmpRoot(t);
    const broken = JSON.stringify({
      resourceList: [
        { resourceName: "x", devices: [{ pciAddress: "0000:00:05.0", driver: "vfio-pci" }] },
      ],
    });
    await writeCfg(root, broken);
    const ctx = makeCtx(root);
    const err = await planSriov(ctx, single).catch((e) => e);
    t.type(err, OpError);
    t.match((err as OpError).message, /no "selectors": the plugin panics/);
    t.match((err as OpError).hint, /validate/);
    const empty = JSON.stringify({
      resourceList: [{ resourceName: "all", resourcePrefix: "x.io", selectors: [{}] }],
    });
    await writeCfg(root, empty);
    t.match(
      ((await planSriov(ctx, single).catch((e) => e)) as OpError).message,
      /matches every NIC/,
    );
    t.equal(await readCfg(root), empty);
    t.equal(ctx.host.writes, 0);
  },
);

t.test("an existing file that is not valid JSON is moved aside, never overwritten", async (t) => {
  const root = await tmpRoot(t);
  const garbage = '{"resourceList": [ {"resourceName": "half';
  await writeCfg(root, garbage);
  const { log, lines } = captureLogger();
  const ctx = makeCtx(root, {}, log);
  const { plan, result } = await apply(ctx, single);
  t.same(
    plan.actions.map((a) => a.kind),
    ["move-aside", "write-sriov"],
  );
  t.match(plan.invalidExisting, /not valid JSON/);
  t.match(result.movedAside, /^\/etc\/pcidp\/config\.json\.invalid-\d{8}T\d{6}Z$/);
  t.equal(
    await fs.readFile(path.join(root, result.movedAside!), "utf8"),
    garbage,
    "the original bytes are kept",
  );
  t.equal(await readCfg(root), await fs.readFile(path.join(goldenDir, "single.json"), "utf8"));
  t.ok(
    lines.some((l) => l.includes("moved it aside") && l.includes("moved_to=")),
    "the log says so",
  );

  // With nothing of ours to write, an unusable file is left exactly as it is.
  const root2 = await tmpRoot(t);
  await writeCfg(root2, "[1, 2, 3]");
  const ctx2 = makeCtx(root2);
  const r2 = await apply(ctx2, []);
  t.same(r2.plan.actions, []);
  t.equal(r2.result.changed, false);
  t.equal(await readCfg(root2), "[1, 2, 3]");
  t.equal(ctx2.host.writes, 0);
});

t.test("a second apply changes nothing: no write, same mtime", async (t) => {
  const root = await tmpRoot(t);
  const ctx = makeCtx(root);
  await apply(ctx, shared);
  const st1 = await fs.stat(path.join(root, CFG));
  const writes = ctx.host.writes;
  await new Promise((r) => setTimeout(r, 20));
  const { plan, result } = await apply(ctx, [...shared].reverse());
  t.same(plan.actions, []);
  t.equal(result.changed, false);
  t.equal(ctx.host.writes, writes, "host.writes unchanged");
  const st2 = await fs.stat(path.join(root, CFG));
  t.equal(st2.mtimeMs, st1.mtimeMs);
  t.equal(st2.ino, st1.ino, "not replaced");

  // A foreign tool reformatting the file (same content) does not trigger a rewrite either.
  const pretty = await readCfg(root);
  await writeCfg(root, JSON.stringify(JSON.parse(pretty)));
  const again = await apply(ctx, shared);
  t.equal(again.result.changed, false);
  t.equal(await readCfg(root), JSON.stringify(JSON.parse(pretty)));
});

t.test("[sriov].enabled = false does nothing", async (t) => {
  const root = await tmpRoot(t);
  const ctx = makeCtx(root, { enabled: false });
  const { plan, result } = await apply(ctx, single);
  t.same(plan.actions, []);
  t.same(result, { changed: false, path: CFG, resources: [] });
  t.equal(await ctx.host.exists(CFG), false);
  t.equal(ctx.host.writes, 0);
});

t.test("dry-run plans but writes nothing", async (t) => {
  const root = await tmpRoot(t);
  const ctx = { ...makeCtx(root), dryRun: true };
  const { plan, result } = await apply(ctx, single);
  t.equal(plan.actions.length, 1);
  t.equal(result.changed, false);
  t.equal(ctx.host.writes, 0);
});

t.test(
  "a changed config_path moves our entries: removed from the old file, written to the new",
  async (t) => {
    const root = await tmpRoot(t);
    await writeCfg(root, JSON.stringify(foreignDoc));
    const ctx = makeCtx(root);
    await apply(ctx, single);
    const ctx2 = { ...makeCtx(root, { config_path: "/etc/pcidp/other.json" }), state: ctx.state };
    const { plan, result } = await apply(ctx2, single);
    t.same(
      plan.actions.map((a) => a.target),
      [CFG, "/etc/pcidp/other.json"],
    );
    t.equal(result.changed, true);
    t.strictSame(
      JSON.parse(await readCfg(root)),
      foreignDoc,
      "old file back to the foreign entries only",
    );
    t.same((await loadState(ctx2.host)).sriov, {
      configPath: "/etc/pcidp/other.json",
      owned: ["amazon.com/ena_dpdk"],
    });
  },
);

t.test("removeOwnedSriov removes only our entries", async (t) => {
  const root = await tmpRoot(t);
  await writeCfg(root, JSON.stringify(foreignDoc));
  const ctx = makeCtx(root);
  await apply(ctx, mixed);
  const state = await loadState(ctx.host);
  t.equal(await removeOwnedSriov(ctx.host, ctx.config, state, silentLogger), true);
  t.strictSame(JSON.parse(await readCfg(root)), foreignDoc);
  t.same((await loadState(ctx.host)).sriov.owned, []);
  t.equal(
    await removeOwnedSriov(ctx.host, ctx.config, state, silentLogger),
    false,
    "nothing left to remove",
  );

  // An unparsable file is left alone.
  await apply(ctx, single);
  const s2 = await loadState(ctx.host);
  await writeCfg(root, "{broken");
  t.equal(await removeOwnedSriov(ctx.host, ctx.config, s2, silentLogger), false);
  t.equal(await readCfg(root), "{broken");
});

// ---- inspect ---------------------------------------------------------------------------------------

t.test("inspectSriov explains the seed's shape and other mistakes", async (t) => {
  const root = await tmpRoot(t);
  const host = new Host(root);
  t.same(await inspectSriov(host, CFG), { exists: false, valid: true, warnings: [], entries: [] });

  const seed = {
    resourceList: [
      {
        resourceName: "intel.com/intel_sriov_netdevice_1",
        deviceType: "netdevice",
        devices: [{ pciAddress: "0000:00:06.0", driver: "vfio-pci" }],
      },
    ],
  };
  await writeCfg(root, JSON.stringify(seed, null, 2));
  const r = await inspectSriov(host, CFG);
  t.equal(r.exists, true);
  t.equal(r.valid, false, "the plugin would serve nothing");
  t.strictSame(r.entries, seed.resourceList);
  t.match(
    r.warnings.join("\n"),
    /"devices" \(the seed document's shape\) is not a plugin field and is ignored; list devices in "selectors" instead, e\.g\. \{"resourceName": "ena_dpdk", "resourcePrefix": "amazon.com"/,
  );
  t.match(
    r.warnings.join("\n"),
    /deviceType "netdevice" is not one of netDevice, accelerator, auxNetDevice \(case matters\); did you mean "netDevice"\?/,
  );

  const seedFixed = { resourceList: [{ ...seed.resourceList[0], deviceType: "netDevice" }] };
  await writeCfg(root, JSON.stringify(seedFixed));
  const r2 = await inspectSriov(host, CFG);
  t.match(r2.warnings.join("\n"), /no "selectors": the plugin panics at start/);

  await writeCfg(
    root,
    JSON.stringify({
      resourceList: [
        {
          resourceName: "ena-dpdk",
          resourcePrefix: "amazon.com",
          selectors: { vendor: ["1d0f"], drivers: ["vfio-pci"] },
        },
        { resourceName: "intel.com/x", selectors: [{ vendors: ["8086"] }] },
      ],
    }),
  );
  const r3 = await inspectSriov(host, CFG);
  const w = r3.warnings.join("\n");
  t.notMatch(w, /resourceList\[0\].*"selectors" is/, "one selector as an object: no remark");
  t.match(
    w,
    /resourceList\[1\] \("intel.com\/x"\): "selectors" is an array of one; plugin releases before v3.6.0 \(v3.5.1 is what aws-samples' guide deploys\) skip this entry; write the selector as an object/,
  );
  t.match(
    w,
    /unknown key "vendor" is ignored by the plugin, so it constrains nothing; did you mean "vendors"\?/,
  );
  t.match(w, /resourceName "ena-dpdk" has a hyphen/);
  t.match(
    w,
    /resourceName "intel.com\/x" has characters outside \[a-zA-Z0-9_-\]; the plugin exits; put the part before "\/" in "resourcePrefix"/,
  );
  t.equal(r3.valid, false);

  await writeCfg(root, "{not json");
  const r4 = await inspectSriov(host, CFG);
  t.equal(r4.valid, false);
  t.match(r4.warnings, [/is not valid JSON/]);

  await writeCfg(root, await fs.readFile(path.join(goldenDir, "mixed.json"), "utf8"));
  t.same(await inspectSriov(host, CFG), {
    exists: true,
    valid: true,
    warnings: [],
    entries: JSON.parse(await readCfg(root)).resourceList,
  });
});

t.test("inspectSriov's verdict agrees with the independent parser model", async (t) => {
  const root = await tmpRoot(t);
  const host = new Host(root);
  const good = {
    resourceName: "ena_dpdk",
    resourcePrefix: "amazon.com",
    selectors: [{ vendors: ["1d0f"], pciAddresses: ["0000:00:06.0"] }],
  };
  const docs: unknown[] = [
    { resourceList: [good] },
    { resourceList: [] },
    { resourceList: null },
    null,
    [good],
    { resourceList: [good, good] },
    { resourceList: [{ ...good, deviceType: "NetDevice" }] },
    { resourceList: [{ ...good, deviceType: "accelerator", selectors: [{ pfNames: ["x"] }] }] },
    { resourceList: [{ ...good, selectors: null }] },
    { resourceList: [{ ...good, selectors: [null] }] },
    { resourceList: [{ ...good, selectors: "x" }] },
    { resourceList: [{ ...good, selectors: [{ drivers: "vfio-pci" }] }] },
    {
      resourceList: [
        { ...good, selectors: [{ drivers: "vfio-pci" }] },
        { ...good, resourceName: "b" },
      ],
    },
    { resourceList: [{ ...good, additionalInfo: { "*": { a: 1 } } }] },
    { resourceList: [{ ...good, resourceName: "a.b" }] },
    { resourceList: [{ ...good, resourceName: "a-b" }] },
    { resourceList: [{ ...good, selectors: [{ isRdma: true, vdpaType: "vhost" }] }] },
    { resourceList: [null] },
    { resourceList: [7] },
    { resourceList: [good, { ...good, resourcePrefix: "" }] },
  ];
  for (const d of docs) {
    const text = JSON.stringify(d);
    await writeCfg(root, text);
    const mine = await inspectSriov(host, CFG);
    const model = pluginVerdict(text);
    t.equal(mine.valid, model.fatal.length === 0, `valid agrees for ${text}`);
    t.equal(
      mine.warnings.some((w) => w.startsWith("entry dropped")),
      model.dropped.length > 0,
      `dropped agrees for ${text}`,
    );
  }
});

// ---- atomicity -------------------------------------------------------------------------------------

function child(root: string, mode: string, ...args: string[]) {
  return spawn(
    process.execPath,
    ["--import=tsx", path.join(here, "support", "sriov-crash-child.ts"), root, mode, ...args],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
}

t.test("a crash between the temp write and the rename leaves the old file intact", async (t) => {
  const root = await tmpRoot(t);
  const ctx = makeCtx(root);
  await apply(ctx, single);
  const old = await readCfg(root);
  const c = child(root, "hang-before-rename", JSON.stringify(mixed));
  const tmp = await new Promise<string>((resolve, reject) => {
    let out = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /RENAME (\S+)\n/.exec(out);
      if (m) resolve(m[1]);
    });
    c.on("exit", (code) => reject(new Error(`child exited ${code} before the rename`)));
  });
  c.kill("SIGKILL");
  await new Promise((r) => c.once("exit", r));
  t.equal(await readCfg(root), old, "the target still holds the old content");
  const leftover = await fs.readFile(tmp, "utf8");
  t.ok(
    cleanVerdict(pluginVerdict(leftover)),
    "the temp file was complete (written and fsynced) when killed",
  );
  t.match(path.basename(tmp), /^\.config\.json\.\d+\.\d+\.tmp$/);

  // The next run clears the dead writer's temp file first (as every host command does), then converges.
  const { prepareHost } = await import("../../../src/host/recovery.js");
  const ctx2 = {
    ...makeCtx(root),
    state: await prepareHost(ctx.host, silentLogger, { tempDirs: ["/etc/pcidp"] }),
  };
  const { result } = await apply(ctx2, mixed);
  t.equal(result.changed, true);
  t.equal(await readCfg(root), await fs.readFile(path.join(goldenDir, "mixed.json"), "utf8"));
  t.equal(
    await ctx2.host.exists(path.posix.join("/etc/pcidp", path.basename(tmp))),
    false,
    "stale temp removed",
  );
});

t.test("SIGKILL at arbitrary moments never leaves a partial file", async (t) => {
  const root = await tmpRoot(t);
  const a = JSON.stringify(single);
  const b = JSON.stringify(mixed);
  // Both possible contents, produced in-process.
  const ra = await tmpRoot(t);
  await apply(makeCtx(ra), single);
  const rb = await tmpRoot(t);
  await apply(makeCtx(rb), mixed);
  const ok = new Set([await readCfg(ra), await readCfg(rb)]);
  await apply(makeCtx(root), single);

  const rounds = 6;
  let killedAfterWrites = 0;
  for (let i = 0; i < rounds; i++) {
    const c = child(root, "loop", a, b);
    // Wait for a few completed writes, then kill at a random point of a later one.
    const seen = await new Promise<number>((resolve) => {
      let n = 0;
      c.stdout.on("data", (d: Buffer) => {
        n += (d.toString().match(/WROTE/g) ?? []).length;
        if (n >= 2) setTimeout(() => resolve(n), Math.floor(Math.random() * 15));
      });
      c.on("exit", () => resolve(n));
    });
    c.kill("SIGKILL");
    await new Promise((r) =>
      c.exitCode !== null || c.signalCode !== null ? r(null) : c.once("exit", r),
    );
    killedAfterWrites += seen;
    const text = await readCfg(root);
    t.ok(ok.has(text), `round ${i}: the file is exactly the old or the new content`);
  }
  t.ok(killedAfterWrites >= rounds * 2, `the children really wrote (${killedAfterWrites} writes)`);
  // And the next run still converges.
  const ctx = { ...makeCtx(root), state: await loadState(new Host(root)) };
  await apply(ctx, single);
  t.equal(await readCfg(root), [...ok][0]);
});

// ---- plugin restart --------------------------------------------------------------------------------

t.test("restartDevicePlugin runs the argv without a shell and reports the outcome", async (t) => {
  const okRun = await restartDevicePlugin(
    [process.execPath, "-e", "process.stdout.write('restarted')"],
    silentLogger,
  );
  t.same(okRun, {
    ok: true,
    detail: `${process.execPath} -e process.stdout.write('restarted') exited 0: restarted`,
  });
  const bad = await restartDevicePlugin(
    [process.execPath, "-e", "console.error('no such unit'); process.exit(5)"],
    silentLogger,
  );
  t.equal(bad.ok, false);
  t.match(bad.detail, /exited 5: no such unit/);
  const shelly = await restartDevicePlugin(["/bin/echo", "$HOME;", "false"], silentLogger);
  t.equal(shelly.ok, true, "metacharacters are plain arguments");
  t.match(shelly.detail, /exited 0: \$HOME; false/);
  const missing = await restartDevicePlugin(["/nonexistent/restart-plugin"], silentLogger);
  t.equal(missing.ok, false);
  t.match(missing.detail, /could not be started/);
});

t.test(
  "after a change outside boot, say that the plugin needs a restart (or run restart_command)",
  async (t) => {
    const { log, lines } = captureLogger();
    const cfg = buildConfig([]).config;
    const changed = { changed: true, path: CFG, resources: ["amazon.com/ena_dpdk"] };
    t.same(await afterSriovChange(cfg, changed, log, { atBoot: true }), {
      restartNeeded: false,
      restarted: false,
    });
    t.same(await afterSriovChange(cfg, { ...changed, changed: false }, log, { atBoot: false }), {
      restartNeeded: false,
      restarted: false,
    });
    const r = await afterSriovChange(cfg, changed, log, { atBoot: false });
    t.equal(r.restartNeeded, true);
    t.match(
      r.status,
      /restart the device plugin to advertise it \(it reads its config only at start\), or set \[sriov\]\.restart_command/,
    );
    t.ok(lines.some((l) => l.startsWith("level=warn") && l.includes("restart the device plugin")));
    const withCmd = buildConfig([
      { source: "t", data: { sriov: { restart_command: [process.execPath, "-e", ""] } } },
    ]).config;
    t.same(await afterSriovChange(withCmd, changed, log, { atBoot: false }), {
      restartNeeded: false,
      restarted: true,
    });
    const failing = buildConfig([
      {
        source: "t",
        data: { sriov: { restart_command: [process.execPath, "-e", "process.exit(1)"] } },
      },
    ]).config;
    const f = await afterSriovChange(failing, changed, log, { atBoot: false });
    t.equal(f.restartNeeded, true);
    t.match(f.status, /restart failed/);
  },
);
