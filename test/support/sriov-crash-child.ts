// A separate process that runs applySriov so the test can SIGKILL it mid-write.
//   argv: <root> <mode> <devices-A json> [<devices-B json>]
//   mode "hang-before-rename": the temp file is written and fsynced, then rename(2) never happens;
//     we announce "RENAME <tmp>" on stdout and wait to be killed. The hook sits at the OS-call
//     boundary (fs.renameSync, which Host.writeFileAtomic calls), so the code under test runs
//     unchanged up to the very syscall.
//   mode "loop": apply A, B, A, B… forever, printing "WROTE n" after each, until killed.
import fs, { type PathLike } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { buildConfig } from "../../src/config/model.js";
import { Host } from "../../src/host/host.js";
import { Deadline } from "../../src/core/deadline.js";
import { silentLogger } from "../../src/core/log.js";
import type { StageContext } from "../../src/reconcile/stage.js";
import { applySriov, planSriov } from "../../src/reconcile/sriov.js";
import { type SriovDevice } from "../../src/host/sriov-model.js";
import { loadState } from "../../src/host/state.js";

const [root, mode, a, b] = process.argv.slice(2) as [string, string, string, string | undefined];
const host = new Host(root);
const config = buildConfig([
  { source: "test", data: { sriov: { config_path: "/etc/pcidp/config.json" } } },
]).config;

async function ctx(): Promise<StageContext> {
  return {
    host,
    imds: undefined as never,
    ec2: () => Promise.reject(new Error("test: no EC2 here")),
    log: silentLogger,
    deadline: new Deadline(10_000),
    config,
    instance: {
      instanceId: "i-0123456789abcdef0",
      instanceType: "c6in.xlarge",
      region: "us-east-1",
      az: "us-east-1a",
      primaryMac: "02:00:00:00:00:01",
      localHostname: "ip-10-0-0-1",
    },
    imdsNics: [],
    state: await loadState(host),
    dryRun: false,
  };
}

async function apply(devices: SriovDevice[]): Promise<void> {
  const c = await ctx();
  await applySriov(c, devices, await planSriov(c, devices));
}

if (mode === "hang-before-rename") {
  const real = fs.renameSync;
  fs.renameSync = (from: PathLike, to: PathLike) => {
    if (String(to).endsWith("/etc/pcidp/config.json")) {
      process.stdout.write(`RENAME ${String(from)}\n`); // synchronous on a pipe
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // never returns: the parent kills us here
    }
    real(from, to);
  };
  // the host layer imports renameSync by name: carry the patch over to the ES bindings
  syncBuiltinESMExports();
  await apply(JSON.parse(a) as SriovDevice[]);
} else if (mode === "loop") {
  const sets = [JSON.parse(a) as SriovDevice[], JSON.parse(b ?? "[]") as SriovDevice[]];
  for (let n = 0; ; n++) {
    await apply(sets[n % 2]);
    process.stdout.write(`WROTE ${n}\n`);
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}
