// Lists the IMDS requests of one converged `apply` on a simulated node, in the order they arrived.
// Usage: npm run build && npx tsx scripts/bench/imds-paths.ts
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { World, sampleConfig } from "../../src/sim/world.js";

const repo = path.resolve(import.meta.dirname, "../..");
const cli = path.join(repo, "dist/eni-dpdk.cjs");
const world = await World.start({ configToml: sampleConfig() });
try {
  const env = world.env();
  // async: the emulators answer from this process's event loop
  const run = () => promisify(execFile)(process.execPath, [cli, "apply"], { env });
  await run();
  world.imds.requests.length = 0;
  await run();
  for (const r of world.imds.requests) console.log(`${r.method} ${r.path}`);
  console.log(`${world.imds.requests.length} IMDS requests`);
} finally {
  await world.close();
}
