// What a boot loads: the entry is CommonJS (scripts/build.mjs), so an apply never starts Node's
// ES module loader (2-4 ms of every apply, docs/benchmarks.md). Only a path that needs a vendor
// library's ES chunk (yargs, for help and every non-boot command) does.
import t from "tap";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { World } from "../../src/sim/world.js";
import { REPO } from "../support/repo.js";
import { baseToml, lastError, runCli, world } from "../support/harness.js";

const probe = path.join(REPO, "test/support/esm-probe.cjs");

/** The bundle's run of `args`, with the ES loader modules it loaded. */
async function esmLoaded(w: World, args: string[]) {
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-esm-"));
  try {
    const out = path.join(dir, "esm.txt");
    const r = await runCli(w, args, {
      nodeArgs: ["--require", probe],
      env: { ESM_PROBE_OUT: out },
    });
    return { ...r, esm: readFileSync(out, "utf8").split("\n") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// A module's job exists once a module is linked: what importing an ES module costs.
const LINKED = "NativeModule internal/modules/esm/module_job";

t.test("a reboot's apply and the unchanged apply never start the ES module loader", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const first = await esmLoaded(w, ["apply"]);
  t.equal(first.code, 0, lastError(first));
  w.reboot();
  const rebind = await esmLoaded(w, ["apply"]);
  t.equal(rebind.code, 0, lastError(rebind));
  t.match(rebind.log.at(-1)?.msg ?? "", /^ready:.* bound/, "it rebound the devices");
  t.notOk(rebind.esm.includes(LINKED), `a reboot's apply: ${rebind.esm.join(", ")}`);
  const unchanged = await esmLoaded(w, ["apply"]);
  t.equal(unchanged.code, 0, lastError(unchanged));
  t.notOk(unchanged.esm.includes(LINKED), `the unchanged apply: ${unchanged.esm.join(", ")}`);
  // the probe sees a linked module where there is one: help loads yargs' ES chunk
  const help = await esmLoaded(w, ["--help"]);
  t.equal(help.code, 0, lastError(help));
  t.ok(help.esm.includes(LINKED), "--help imports yargs, an ES chunk");
});
