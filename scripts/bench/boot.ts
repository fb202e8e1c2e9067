// Boot-time benchmark: the bundle's `apply` on a simulated node (IMDSv2 + EC2 emulators, simulated
// kernel) against `node -e 0`, run the same way. Prints medians; asserts nothing.
//   steady state: every reboot — ENIs attached, devices back on ena, state file kept → rebind
//   nothing to do: a converged node
// Usage: npm run build && npx tsx scripts/bench/boot.ts [--runs 15]
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { World, sampleConfig } from "../../test/emulators/world.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 15;
const repo = path.resolve(import.meta.dirname, "../..");
const bundle = path.join(repo, "dist/eni-dpdk.mjs");
const ioFloor = path.join(repo, "scripts/bench/io-floor.mjs");

interface Sample {
  ms: number;
  rssMb: number;
  code: number;
}

/** One process under GNU time (peak RSS); wall time measured around it here. */
function measure(argv: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn("/usr/bin/time", ["-f", "RSS_KB=%M", ...argv], { env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => {
      const ms = performance.now() - t0;
      const kb = Number(/RSS_KB=(\d+)/.exec(err)?.[1] ?? NaN);
      if (code !== 0) process.stderr.write(err);
      resolve({ ms, rssMb: kb / 1024, code: code ?? 1 });
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main() {
  const world = await World.start({ configToml: sampleConfig() });
  const env = world.env();
  try {
    const first = await measure([process.execPath, bundle, "apply"], env);
    if (first.code !== 0) throw new Error("first apply failed");
    // The IMDS paths a converged apply reads, for the I/O floor to replay.
    world.imds.requests.length = 0;
    if ((await measure([process.execPath, bundle, "apply"], env)).code !== 0) throw new Error("second apply failed");
    const imdsPaths = world.imds.requests.map((r) => r.path.replace(/^\/latest\//, ""));
    const pathsFile = path.join(tmpdir(), `eni-dpdk-bench-imds-${process.pid}.txt`);
    writeFileSync(pathsFile, imdsPaths.join("\n"));
    const floor: Sample[] = [];
    const io: Sample[] = [];
    const steady: Sample[] = [];
    const noop: Sample[] = [];
    const ec2Before = world.ec2.totalCalls();
    // Interleave the three so machine load affects them alike.
    for (let i = 0; i < runs; i++) {
      floor.push(await measure([process.execPath, "-e", "0"], env));
      io.push(await measure([process.execPath, ioFloor, pathsFile], env));
      world.reboot();
      const s = await measure([process.execPath, bundle, "apply"], env);
      if (s.code !== 0 || world.sim.driverOf("0000:00:06.0") !== "vfio-pci") throw new Error(`steady-state apply did not rebind (run ${i}); sim: ${JSON.stringify(world.sim.writes.slice(-8))} ${world.sim.errors}`);
      steady.push(s);
      noop.push(await measure([process.execPath, bundle, "apply"], env));
    }
    const ec2Calls = world.ec2.totalCalls() - ec2Before;
    const f = median(floor.map((x) => x.ms));
    const row = (name: string, xs: Sample[]) => {
      const ms = median(xs.map((x) => x.ms));
      return `| ${name} | ${ms.toFixed(0)} | ${(ms / f).toFixed(2)}× | ${median(xs.map((x) => x.rssMb)).toFixed(0)} | ${Math.max(...xs.map((x) => x.rssMb)).toFixed(0)} |`;
    };
    console.log(`machine: ${cpus()[0]?.model} × ${cpus().length}, node ${process.version}, ${runs} runs each (interleaved), ${new Date().toISOString()}`);
    console.log(`command: npx tsx scripts/bench/boot.ts --runs ${runs}`);
    console.log("| what | median wall ms | vs node -e 0 | median peak RSS MB | max peak RSS MB |");
    console.log("|---|---|---|---|---|");
    console.log(row("`node -e 0`", floor));
    console.log(row(`I/O floor: the same ${imdsPaths.length} IMDS requests, flock, sysfs reads and status write, without eni-dpdk (io-floor.mjs)`, io));
    console.log(row("steady-state boot: `apply` after a reboot (rebind 2 ENIs, MTU check, SR-IOV check)", steady));
    console.log(row("nothing to do: `apply` on a converged node", noop));
    console.log(`EC2 calls made by the ${runs * 2} measured applies: ${ec2Calls}`);
  } finally {
    await world.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
