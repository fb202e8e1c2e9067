// The kubelet stage: nodeadm's maxPods formula over the ENIs eni-dpdk leaves to the VPC CNI, as a
// NodeConfig drop-in in the fake root's /etc/eks/nodeadm.d; IMDS (prefix delegation evidence) from
// the IMDS emulator over HTTP.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import t, { type Test } from "tap";
import { ImdsClient } from "../../../src/cloud/imds.js";
import { ENI_LIMITS_SOURCE } from "../../../src/config/eni-limits.js";
import { eniLimits, maxPodsFor } from "../../../src/config/max-pods.js";
import { NODEADM_MEDIA_TYPE } from "../../../src/config/facts.js";
import { loadYaml } from "../../../src/core/lazy.js";
import { MAX_PODS_DROPIN, NODEADM_DROPIN_DIR } from "../../../src/host/nodeadm-dropin.js";
import { applyMaxPods, planMaxPods } from "../../../src/reconcile/maxpods.js";
import type { StageContext } from "../../../src/reconcile/stage.js";
import { defaultInstance, ImdsEmulator } from "../../../src/sim/imds.js";
import type { SimKernel } from "../../../src/sim/kernel.js";
import { config, node, PRIMARY, stageCtx } from "../../support/fixture.js";

const eni = (name: string, idx: number, over: Record<string, unknown> = {}) => ({
  name,
  device_index: idx,
  subnet_id: "subnet-0a1b2c3d4e5f60718",
  security_group_ids: ["sg-0a1b2c3d4e5f60718"],
  dpdk: { resource_name: "amazon.com/ena_dpdk" },
  ...over,
});
const TWO_DPDK = { eni: [eni("n3", 1), eni("n6", 2)] };

/** A node with nodeadm's drop-in directory (EKS AL2023 from v20251023) and an IMDS emulator. */
async function eks(
  t: Test,
  opts: { instanceType?: string; prefixes?: string[]; dir?: boolean } = {},
): Promise<{
  sim: SimKernel;
  imds: ImdsEmulator;
  ctx: (over?: Partial<StageContext>) => StageContext;
}> {
  const sim = node();
  const inst = defaultInstance({
    mac: PRIMARY.mac,
    instanceType: opts.instanceType ?? "m5.xlarge",
  });
  if (opts.prefixes) inst.nics[0].ipv4Prefixes = opts.prefixes;
  const imds = await new ImdsEmulator(inst).start();
  t.teardown(async () => {
    await imds.close();
    sim.close();
  });
  if (opts.dir !== false) fs.mkdirSync(sim.p(NODEADM_DROPIN_DIR), { recursive: true });
  const base = stageCtx(sim);
  return {
    sim,
    imds,
    ctx: (over = {}) => ({
      ...base,
      imds: new ImdsClient({ endpoint: imds.url }),
      instance: { ...base.instance, instanceType: inst.instanceType },
      config: config(TWO_DPDK),
      ...over,
    }),
  };
}

const dropin = (sim: SimKernel) =>
  fs.existsSync(sim.p(MAX_PODS_DROPIN)) ? fs.readFileSync(sim.p(MAX_PODS_DROPIN), "utf8") : null;

const userData = (yaml: string) => [
  {
    contentType: NODEADM_MEDIA_TYPE,
    label: "user-data part 1 (application/node.eks.aws)",
    text: yaml,
  },
];
const nodeConfig = (kubelet: string) =>
  `apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: c\n  kubelet:\n${kubelet}`;

t.test("nodeadm's data and formula, as nodeadm has them", async (t) => {
  t.same(eniLimits("m5.xlarge"), { enis: 4, ipv4PerEni: 15 });
  t.same(eniLimits("c6in.4xlarge"), { enis: 8, ipv4PerEni: 30 });
  // families with a "-" and sizes with one, as nodeadm's data spells them
  t.same(eniLimits("u-6tb1.metal"), { enis: 5, ipv4PerEni: 30 });
  t.same(eniLimits("c8a.metal-24xl"), { enis: 16, ipv4PerEni: 64 });
  t.same(eniLimits("mac2-m2pro.metal"), { enis: 8, ipv4PerEni: 30 });
  t.equal(eniLimits("m5.xlarge "), undefined, "no fuzzy match");
  t.equal(eniLimits("__proto__"), undefined);
  t.equal(eniLimits("m99.huge"), undefined);
  // nodeadm's published figures (the same formula as AL2's eni-max-pods.txt): m5.xlarge 58, m5.large 29
  t.equal(maxPodsFor(4, 15), 58);
  t.equal(maxPodsFor(eniLimits("m5.large")!.enis, eniLimits("m5.large")!.ipv4PerEni), 29);
  t.equal(maxPodsFor(1, 10, true), 146, "prefix delegation: /28 per slot");
  t.equal(ENI_LIMITS_SOURCE.types, 1384);
});

t.test("m5.xlarge with 2 DPDK ENIs: the drop-in as written, idempotent", async (t) => {
  const { sim, ctx } = await eks(t);
  const c = ctx();
  const plan = await planMaxPods(c);
  t.same(
    plan.actions.map((a) => [a.stage, a.kind, a.target]),
    [["kubelet", "write-max-pods", MAX_PODS_DROPIN]],
  );
  t.match(plan.actions[0].detail, /^maxPods 30 for nodeadm \(alone it would set 58\): 2 of 4 ENIs/);
  t.equal(dropin(sim), null, "planning writes nothing");
  const r = await applyMaxPods(c, plan);
  t.match(r, { state: "written", changed: true, maxPods: 30, nodeadmMaxPods: 58 });
  const text = dropin(sim);
  t.equal(
    text,
    [
      "# eni-dpdk:max-pods: written by eni-dpdk, which rewrites or removes this file; edits are lost.",
      "# kubelet's maxPods for the ENIs the VPC CNI can use. For m5.xlarge nodeadm computes",
      "# 4 ENIs × (15 IPv4 addresses − 1) + 2 = 58; eni-dpdk takes 2 of",
      "# those ENIs (n3, n6: no pods on them), leaving 2 × (15 − 1) + 2 = 30.",
      "# Opt out: [kubernetes] adjust_max_pods = false. A maxPods set in your NodeConfig is left alone.",
      "apiVersion: node.eks.aws/v1alpha1",
      "kind: NodeConfig",
      "spec:",
      "  kubelet:",
      "    config:",
      "      maxPods: 30",
      "",
    ].join("\n"),
  );
  // what nodeadm decodes: a NodeConfig whose kubelet config has maxPods 30, nothing else
  const YAML = await loadYaml();
  t.same(YAML.parse(text!), {
    apiVersion: "node.eks.aws/v1alpha1",
    kind: "NodeConfig",
    spec: { kubelet: { config: { maxPods: 30 } } },
  });
  t.equal((fs.statSync(sim.p(MAX_PODS_DROPIN)).mode & 0o777).toString(8), "644");
  // a second pass: nothing to do, nothing written
  const again = await planMaxPods(ctx());
  t.same(again.actions, []);
  const writes = c.host.writes;
  t.match(await applyMaxPods(c, again), { state: "written", changed: false, maxPods: 30 });
  t.equal(c.host.writes, writes, "no write on a converged node");
  t.same(again.warnings, []);
});

t.test("no ENI on card 0, no ENI at all, or opted out: ours is removed", async (t) => {
  const { sim, ctx } = await eks(t);
  await applyMaxPods(ctx(), await planMaxPods(ctx()));
  t.ok(dropin(sim));
  for (const [name, cfg, reason] of [
    ["card 1 only", { eni: [eni("n3", 1, { network_card_index: 1 })] }, /network card 0/],
    [
      "opted out",
      { ...TWO_DPDK, kubernetes: { adjust_max_pods: false } },
      /adjust_max_pods = false/,
    ],
    ["no ENI", {}, /^eni-dpdk takes no ENI$/],
  ] as const) {
    fs.writeFileSync(sim.p(MAX_PODS_DROPIN), (await planMaxPods(ctx())).text!);
    const c = ctx({ config: config(cfg) });
    const plan = await planMaxPods(c);
    t.same(
      plan.actions.map((a) => a.kind),
      ["remove-max-pods"],
      name,
    );
    t.match(await applyMaxPods(c, plan), { state: "removed", changed: true, reason }, name);
    t.equal(dropin(sim), null, `${name}: removed`);
    t.same((await planMaxPods(c)).actions, [], `${name}: then nothing to do`);
  }
  t.same(fs.readdirSync(sim.p(NODEADM_DROPIN_DIR)), [], "no temp file left");
});

t.test(
  "a maxPods the user set wins: user-data, another drop-in, a flag, an expression",
  async (t) => {
    const { sim, ctx } = await eks(t);
    await applyMaxPods(ctx(), await planMaxPods(ctx()));
    const cases: [string, Partial<StageContext>, () => void, RegExp, RegExp | undefined][] = [
      [
        "user-data maxPods 20",
        { userDataParts: userData(nodeConfig("    config:\n      maxPods: 20\n")) },
        () => {},
        /maxPods is yours \(spec\.kubelet\.config\.maxPods = 20 in user-data part 1/,
        undefined,
      ],
      [
        "user-data maxPods above what the ENIs serve",
        { userDataParts: userData(nodeConfig("    config:\n      maxPods: 110\n")) },
        () => {},
        /maxPods is yours/,
        /= 110 in user-data part 1 .* is more than the 30 pods the 2 ENIs left to the VPC CNI can address/,
      ],
      [
        "a --max-pods flag",
        { userDataParts: userData(nodeConfig('    flags: ["--max-pods=25"]\n')) },
        () => {},
        /spec\.kubelet\.flags --max-pods = "25"/,
        undefined,
      ],
      [
        "maxPodsExpression (our config.maxPods would override it)",
        { userDataParts: userData(nodeConfig('    maxPodsExpression: "max_pods - 10"\n')) },
        () => {},
        /spec\.kubelet\.maxPodsExpression = "max_pods - 10"/,
        undefined,
      ],
      [
        "another drop-in",
        {},
        () =>
          fs.writeFileSync(
            sim.p(`${NODEADM_DROPIN_DIR}/50-mine.YML`),
            nodeConfig("    config:\n      maxPods: 40\n"),
          ),
        /= 40 in \/etc\/eks\/nodeadm\.d\/50-mine\.YML/,
        /more than the 30 pods/,
      ],
      [
        "a MIME multipart drop-in (nodeadm reads those too)",
        {},
        () =>
          fs.writeFileSync(
            sim.p(`${NODEADM_DROPIN_DIR}/60-mime.yaml`),
            [
              "MIME-Version: 1.0",
              'Content-Type: multipart/mixed; boundary="B"',
              "",
              "--B",
              "Content-Type: application/node.eks.aws",
              "",
              nodeConfig("    config:\n      maxPods: 12\n"),
              "--B--",
              "",
            ].join("\n"),
          ),
        /= 12 in \/etc\/eks\/nodeadm\.d\/60-mime\.yaml part 1/,
        undefined,
      ],
    ];
    for (const [name, over, setup, reason, warning] of cases) {
      for (const f of fs.readdirSync(sim.p(NODEADM_DROPIN_DIR)))
        if (!f.startsWith("00-")) fs.rmSync(sim.p(`${NODEADM_DROPIN_DIR}/${f}`));
      fs.writeFileSync(sim.p(MAX_PODS_DROPIN), (await planMaxPods(ctx())).text!);
      setup();
      const c = ctx(over);
      const plan = await planMaxPods(c);
      t.same(
        plan.actions.map((a) => a.kind),
        ["remove-max-pods"],
        name,
      );
      t.match(plan.result.reason, reason, name);
      if (warning) t.match(plan.warnings.join("\n"), warning, name);
      else t.same(plan.warnings, [], `${name}: no warning`);
      await applyMaxPods(c, plan);
      t.equal(dropin(sim), null, `${name}: ours removed`);
    }
  },
);

t.test("without the user-data source, the stage reads user-data itself", async (t) => {
  // [service].sources may leave user-data out; nodeadm reads it anyway
  const { sim, imds, ctx } = await eks(t);
  imds.instance.userData = Buffer.from(nodeConfig("    config:\n      maxPods: 20\n")).toString(
    "base64",
  );
  const plan = await planMaxPods(ctx());
  t.same(plan.actions, []);
  t.match(
    plan.result.reason,
    /maxPods is yours \(spec\.kubelet\.config\.maxPods = 20 in user-data\)/,
  );
  t.equal(dropin(sim), null);
  imds.instance.userData = null;
  t.same(
    (await planMaxPods(ctx())).actions.map((a) => a.kind),
    ["write-max-pods"],
    "no user-data (404): ours",
  );
});

t.test("hostile maxPods values: left alone, told, never overwritten", async (t) => {
  const { sim, ctx } = await eks(t);
  for (const v of [
    '"abc"',
    "-5",
    "0",
    "1.5",
    "null",
    "{a: 1}",
    "[30]",
    "1e400",
    "99999999999999999999",
  ]) {
    const c = ctx({ userDataParts: userData(nodeConfig(`    config:\n      maxPods: ${v}\n`)) });
    const plan = await planMaxPods(c);
    t.same(plan.actions, [], `maxPods: ${v}`);
    t.equal(plan.text, undefined);
    t.match(
      plan.warnings.join("\n"),
      /is not a positive integer: nodeadm or kubelet will refuse it/,
      v,
    );
    await applyMaxPods(c, plan);
    t.equal(dropin(sim), null);
  }
  // broken YAML and an alias bomb for maxPods: warned, and no maxPods is read from them
  const bomb = [
    'a: &a ["x", "x", "x", "x", "x", "x", "x", "x"]',
    ...Array.from(
      { length: 8 },
      (_, i) =>
        `${"bcdefghi"[i]}: &${"bcdefghi"[i]} [${Array(8).fill(`*${"abcdefgh"[i]}`).join(", ")}]`,
    ),
    nodeConfig("    config:\n      maxPods: *i\n"),
  ].join("\n");
  for (const text of [nodeConfig("    config: [\n"), bomb]) {
    const plan = await planMaxPods(ctx({ userDataParts: userData(text) }));
    t.same(
      plan.actions.map((a) => a.kind),
      ["write-max-pods"],
      "an unreadable NodeConfig sets nothing",
    );
    t.match(
      plan.warnings.join("\n"),
      /user-data part 1 .*: (not valid YAML|YAML cannot be read).*ignored for kubelet's maxPods/,
    );
  }
});

t.test("a file at our path that is not ours is never overwritten or removed", async (t) => {
  const { sim, ctx } = await eks(t);
  const theirs = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: {}\n";
  fs.writeFileSync(sim.p(MAX_PODS_DROPIN), theirs);
  for (const cfg of [TWO_DPDK, {}, { ...TWO_DPDK, kubernetes: { adjust_max_pods: false } }]) {
    const c = ctx({ config: config(cfg) });
    const plan = await planMaxPods(c);
    t.same(plan.actions, []);
    await applyMaxPods(c, plan);
    t.equal(dropin(sim), theirs);
  }
  const plan = await planMaxPods(ctx());
  t.match(plan.result, { state: "skipped", reason: /is not eni-dpdk's/ });
  t.match(plan.warnings[0], /left alone \(maxPods 30 would fit this node\)/);
  // the check is made again at write time: a foreign file that appears after the plan survives
  fs.rmSync(sim.p(MAX_PODS_DROPIN));
  const late = await planMaxPods(ctx());
  fs.writeFileSync(sim.p(MAX_PODS_DROPIN), theirs);
  t.match(await applyMaxPods(ctx(), late), { state: "skipped", changed: false });
  t.match(
    late.warnings.at(-1),
    /writing .* failed: .* is not eni-dpdk's; left alone; set spec\.kubelet\.config\.maxPods: 30/,
  );
  t.equal(dropin(sim), theirs);
  // a symlink planted at our path is not ours either, whatever it points to
  fs.rmSync(sim.p(MAX_PODS_DROPIN));
  fs.writeFileSync(sim.p("/etc/ours-copy.yaml"), (await planMaxPods(ctx())).text!);
  fs.symlinkSync(sim.p("/etc/ours-copy.yaml"), sim.p(MAX_PODS_DROPIN));
  await applyMaxPods(ctx(), await planMaxPods(ctx()));
  t.ok(fs.lstatSync(sim.p(MAX_PODS_DROPIN)).isSymbolicLink(), "the link is left as it was");
});

t.test("an unreadable drop-in (a FIFO) neither blocks nor stops ours", async (t) => {
  const { sim, ctx } = await eks(t);
  execFileSync("mkfifo", [sim.p(`${NODEADM_DROPIN_DIR}/10-pipe.yaml`)]);
  const plan = await planMaxPods(ctx());
  t.same(
    plan.actions.map((a) => a.kind),
    ["write-max-pods"],
  );
  t.match(plan.warnings[0], /10-pipe\.yaml: not a regular file, so eni-dpdk cannot tell/);
});

t.test(
  "unknown instance type, or a nodeadm without drop-ins: no file, a warning with the number",
  async (t) => {
    const unknown = await eks(t, { instanceType: "m99.huge" });
    const p1 = await planMaxPods(unknown.ctx());
    t.same(p1.actions, []);
    t.match(p1.result, {
      state: "skipped",
      reason: /m99\.huge is not in eni-dpdk's copy of nodeadm's instance data/,
    });
    t.match(
      p1.warnings[0],
      /set spec\.kubelet\.config\.maxPods: \(ENIs of m99\.huge on network card 0 − 2\) × \(IPv4 per ENI − 1\) \+ 2/,
    );

    // a maxPods of the user's needs no advice, whatever the type
    const set = await planMaxPods(
      unknown.ctx({ userDataParts: userData(nodeConfig("    config:\n      maxPods: 20\n")) }),
    );
    t.same([set.actions, set.warnings], [[], []]);
    t.match(set.result.reason, /maxPods is yours/);

    const old = await eks(t, { dir: false });
    const p2 = await planMaxPods(old.ctx());
    t.same([p2.actions, p2.warnings], [[], []], "no nodeadm at all: nothing to say");
    fs.mkdirSync(old.sim.p("/usr/bin"), { recursive: true });
    fs.writeFileSync(old.sim.p("/usr/bin/nodeadm"), "");
    const p3 = await planMaxPods(old.ctx());
    t.match(
      p3.warnings[0],
      /\/etc\/eks\/nodeadm\.d does not exist: this nodeadm reads no drop-ins .* set spec\.kubelet\.config\.maxPods: 30 in your NodeConfig/,
    );
    await applyMaxPods(old.ctx(), p3);
    t.notOk(fs.existsSync(old.sim.p(NODEADM_DROPIN_DIR)), "the directory is never created");
  },
);

t.test(
  "prefix delegation seen on the primary ENI: nodeadm's number fits, or the /28 capacity",
  async (t) => {
    const pd = await eks(t, { prefixes: ["10.0.1.32/28", "10.0.1.48/28"] });
    const plan = await planMaxPods(pd.ctx());
    t.same(plan.actions, []);
    t.match(
      plan.result.reason,
      /prefix delegation is on \(2 IPv4 prefixes on the primary ENI, e\.g\. 10\.0\.1\.32\/28\): nodeadm's 58 fits the 2 ENIs left to the VPC CNI \(450 addresses\)/,
    );
    // 24 ENIs, 23 of them eni-dpdk's: one ENI's prefixes (63 × 16 + 2) are fewer than nodeadm's 1514
    const big = await eks(t, { instanceType: "c8a.48xlarge", prefixes: ["10.0.1.32/28"] });
    const many = { eni: Array.from({ length: 23 }, (_, i) => eni(`e${i + 1}`, i + 1)) };
    const p = await planMaxPods(big.ctx({ config: config(many) }));
    t.match(p.result, { maxPods: 1010, nodeadmMaxPods: 1514 });
    t.match(p.text, /prefix delegation is on .* so 1 × \(64 − 1\) × 16 \+ 2 = 1010\./);
  },
);
