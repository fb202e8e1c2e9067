// What a boot loads: the entry is CommonJS (scripts/build.mjs), so an apply never starts Node's
// ES module loader (2-4 ms of every apply, docs/benchmarks.md). Only a path that needs a vendor
// library's ES chunk (the EKS token's signing) does. And what the other commands load: yargs lays
// out its help after each command, without string-width's Unicode tables (45 ms on Node 20).
import t, { type Test } from "tap";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { World } from "../../src/sim/world.js";
import { REPO } from "../support/repo.js";
import { baseToml, lastError, runCli, world } from "../support/harness.js";

const probe = path.join(REPO, "test/support/start-probe.cjs");

interface Loaded {
  esm: string[];
  segmenters: number;
}

/** A file for the probe's report, in a directory removed after the test. */
function probeOut(t: Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-probe-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, "loaded.json");
}

/** The bundle's run of `args`, with what the probe saw it load. */
async function loaded(t: Test, w: World, args: string[]) {
  const out = probeOut(t);
  const r = await runCli(w, args, {
    nodeArgs: ["--require", probe],
    env: { START_PROBE_OUT: out },
  });
  return { ...r, ...(JSON.parse(readFileSync(out, "utf8")) as Loaded) };
}

/** What the probe saw a plain `node ARGS` load: its positive controls. */
function nodeLoaded(t: Test, args: string[]): Loaded {
  const out = probeOut(t);
  execFileSync(process.execPath, ["--require", probe, ...args], {
    env: { ...process.env, START_PROBE_OUT: out },
  });
  return JSON.parse(readFileSync(out, "utf8")) as Loaded;
}

// A module's job exists once a module is linked: what importing an ES module costs.
const LINKED = "NativeModule internal/modules/esm/module_job";

t.test("a reboot's apply and the unchanged apply never start the ES module loader", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const first = await loaded(t, w, ["apply"]);
  t.equal(first.code, 0, lastError(first));
  w.reboot();
  const rebind = await loaded(t, w, ["apply"]);
  t.equal(rebind.code, 0, lastError(rebind));
  t.match(rebind.log.at(-1)?.msg ?? "", /^ready:.* bound/, "it rebound the devices");
  t.notOk(rebind.esm.includes(LINKED), `a reboot's apply: ${rebind.esm.join(", ")}`);
  const unchanged = await loaded(t, w, ["apply"]);
  t.equal(unchanged.code, 0, lastError(unchanged));
  t.notOk(unchanged.esm.includes(LINKED), `the unchanged apply: ${unchanged.esm.join(", ")}`);
  // yargs is a script too (scripts/build.mjs), so help and the other commands do not either
  const help = await loaded(t, w, ["--help"]);
  t.equal(help.code, 0, lastError(help));
  t.notOk(help.esm.includes(LINKED), `--help: ${help.esm.join(", ")}`);
  // and the probe sees a linked module where there is one
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-esm-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, "a.mjs"), "export {};\n");
  t.ok(
    nodeLoaded(t, [path.join(dir, "a.mjs")]).esm.includes(LINKED),
    "an ES module, run with the probe, is seen linked",
  );
});

t.test(
  "status, plan and --help make no Intl.Segmenter (string-width stays unloaded)",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    for (const args of [["status"], ["plan"], ["status", "--help"], ["--help"]]) {
      const r = await loaded(t, w, args);
      t.equal(r.code, 0, `${args.join(" ")}: ${lastError(r)}`);
      t.equal(r.segmenters, 0, `${args.join(" ")}: no Segmenter made`);
    }
    // and the probe counts one where one is made
    t.equal(
      nodeLoaded(t, ["-e", "new Intl.Segmenter()"]).segmenters,
      1,
      "a Segmenter made is counted",
    );
  },
);
