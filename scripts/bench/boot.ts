// Boot-time benchmark: the bundle's `apply` on a simulated node (IMDSv2 + EC2 emulators, simulated
// kernel) against `node -e 0` and the I/O floor, run the same way. Prints medians; asserts nothing.
//   steady state: every reboot — ENIs attached, devices back on ena, state file kept → rebind;
//     on the AMI, whose etc/modules-load.d has loaded vfio-pci before eni-dpdk starts, and without
//     it, where apply runs modprobe itself
//   nothing to do: a converged node
//   first boot: a fresh node, where apply creates and attaches the ENIs through the EC2 emulator
//     (the AWS SDK is loaded), then binds them
// With several --bundle directories (A/B), each gets its own simulated node and the runs of all of
// them are interleaved, so machine load affects them alike.
// Usage: npm run build && npx tsx scripts/bench/boot.ts [--runs 15] [--node /path/to/node] [--bundle DIR --bundle DIR2]
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { World, modulesLoadOf, sampleConfig } from "../../src/sim/world.js";
import { timed, type Timed } from "./timed.js";
import { preferTmpfs } from "../tmpfs.mjs";

// Before the first simulated node: its fake root on tmpfs, as the tests' (scripts/tmpfs.mjs). Until
// 2026-12-07 this bench's roots were on the disk: a steady-state apply took 12 ms longer there,
// waiting for the simulated kernel, and the floor 5-6 ms (docs/benchmarks.md).
preferTmpfs();

const args = process.argv.slice(2);
const opt = (name: string) =>
  args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]] : []));
const runs = Number(opt("--runs")[0]) || 15;
const node = opt("--node")[0] ?? process.execPath;
const repo = path.resolve(import.meta.dirname, "../..");
const bundles = (opt("--bundle").length ? opt("--bundle") : [path.join(repo, "dist")]).map((d) =>
  path.resolve(d),
);
const ioFloor = path.join(repo, "scripts/bench/io-floor.cjs");
const settleWaits = path.join(repo, "scripts/bench/settle-waits.mjs");
// The AMI's own files, as systemd-modules-load reads them at boot.
const amiModules = modulesLoadOf(
  readFileSync(path.join(repo, "etc/modules-load.d/eni-dpdk.conf"), "utf8"),
  readFileSync(path.join(repo, "etc/modprobe.d/eni-dpdk.conf"), "utf8"),
);

/** A bundle's entry: eni-dpdk.cjs, or eni-dpdk.mjs in a bundle built before 2026-12-04 (A/B). */
const entryOf = (bundle: string) =>
  existsSync(path.join(bundle, "eni-dpdk.cjs"))
    ? path.join(bundle, "eni-dpdk.cjs")
    : path.join(bundle, "eni-dpdk.mjs");

type Sample = Timed;

/** One process; its stderr is shown when it fails. */
async function measure(argv: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  const r = await timed(argv, env);
  if (r.code !== 0) process.stderr.write(r.stderr);
  return r;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface Subject {
  bundle: string;
  world: World;
  env: NodeJS.ProcessEnv;
  imdsRequests: number;
  steady: Sample[];
  steadyAmi: Sample[];
  noop: Sample[];
  unchanged: Sample[];
  first: Sample[];
  ec2Before: number;
}

async function subject(bundle: string): Promise<Subject> {
  const world = await World.start({ configToml: sampleConfig() });
  // Bundles from before the redesign took the simulated modprobe and the settle bound from these
  // variables; today's bundle finds modprobe under the root and ignores them.
  const env = world.env({
    ENI_DPDK_MODPROBE: path.join(world.root, "usr/sbin/modprobe"),
    ENI_DPDK_SETTLE_MS: "2000",
  });
  const cli = entryOf(bundle);
  if ((await measure([node, cli, "apply"], env)).code !== 0)
    throw new Error(`${bundle}: first apply failed`);
  world.imds.requests.length = 0;
  if ((await measure([node, cli, "apply"], env)).code !== 0)
    throw new Error(`${bundle}: second apply failed`);
  return {
    bundle,
    world,
    env,
    imdsRequests: world.imds.requests.length,
    steady: [],
    steadyAmi: [],
    noop: [],
    unchanged: [],
    first: [],
    ec2Before: world.ec2.totalCalls(),
  };
}

/** A fresh node's first `apply`: every ENI is created and attached, so the SDK loads. */
async function firstBoot(cli: string): Promise<Sample> {
  const world = await World.start({ configToml: sampleConfig() });
  try {
    const r = await measure([node, cli, "apply"], world.env());
    const { attached } = world.ec2.enisByState();
    if (r.code !== 0 || attached < 4)
      throw new Error(`${cli}: first boot left ${attached - 1} ENIs attached`);
    return r;
  } finally {
    await world.close();
  }
}

async function main() {
  const subjects: Subject[] = [];
  try {
    for (const b of bundles) subjects.push(await subject(b));
    // The floor replays the IMDS requests of the first subject's converged apply.
    const first = subjects[0];
    first.world.imds.requests.length = 0;
    await measure([node, entryOf(first.bundle), "apply"], first.env);
    const imdsPaths = first.world.imds.requests.map((r) => r.path.replace(/^\/latest\//, ""));
    const pathsFile = path.join(tmpdir(), `eni-dpdk-bench-imds-${process.pid}.txt`);
    writeFileSync(pathsFile, imdsPaths.join("\n"));
    const floor: Sample[] = [];
    const io: Sample[] = [];
    for (let i = 0; i < runs; i++) {
      floor.push(await measure([node, "-e", "0"], first.env));
      io.push(await measure([node, ioFloor, pathsFile], first.env));
      for (const s of subjects) {
        const cli = entryOf(s.bundle);
        for (const [ami, into] of [
          [true, s.steadyAmi],
          [false, s.steady],
        ] as const) {
          s.world.reboot(ami ? { modulesLoad: amiModules } : {});
          const r = await measure([node, cli, "apply"], s.env);
          if (r.code !== 0 || s.world.sim.driverOf("0000:00:06.0") !== "vfio-pci")
            throw new Error(`${s.bundle}: steady-state apply did not rebind (run ${i})`);
          into.push(r);
        }
        // The first apply with nothing to do after the reboot's rebinds plans; it keeps the record
        // of its reads (since 2026-12-03), so the one after it checks them and plans nothing.
        s.noop.push(await measure([node, cli, "apply"], s.env));
        s.unchanged.push(await measure([node, cli, "apply"], s.env));
        s.first.push(await firstBoot(cli));
      }
    }
    const f = median(floor.map((x) => x.ms));
    const fio = median(io.map((x) => x.ms));
    const row = (name: string, xs: Sample[]) => {
      const ms = median(xs.map((x) => x.ms));
      return `| ${name} | ${ms.toFixed(0)} | ${(ms / f).toFixed(2)}× | ${(ms / fio).toFixed(2)}× | ${median(xs.map((x) => x.rssMb)).toFixed(0)} |`;
    };
    const nodeVersion = (await import("node:child_process"))
      .execFileSync(node, ["--version"], { encoding: "utf8" })
      .trim();
    console.log(
      `machine: ${cpus()[0]?.model} × ${cpus().length}, node ${nodeVersion}, ${runs} runs each (interleaved), simulated roots in ${tmpdir()}, ${new Date().toISOString()}`,
    );
    console.log(
      `command: npx tsx scripts/bench/boot.ts --runs ${runs}${node !== process.execPath ? ` --node ${node}` : ""}${bundles.map((b) => ` --bundle ${path.relative(repo, b) || "."}`).join("")}`,
    );
    console.log("| what | median wall ms | vs node -e 0 | vs I/O floor | median peak RSS MB |");
    console.log("|---|---|---|---|---|");
    console.log(row("`node -e 0`", floor));
    console.log(
      row(
        `I/O floor: the same ${imdsPaths.length} IMDS requests, flock, sysfs reads and status write, without eni-dpdk (io-floor.cjs)`,
        io,
      ),
    );
    for (const s of subjects) {
      const label = subjects.length > 1 ? ` [${path.relative(repo, s.bundle) || s.bundle}]` : "";
      console.log(
        row(
          `steady-state boot on the AMI: \`apply\` after a reboot, vfio-pci loaded by etc/modules-load.d (rebind 2 ENIs)${label}`,
          s.steadyAmi,
        ),
      );
      console.log(
        row(
          `steady-state boot without modules-load.d: \`apply\` runs modprobe, then rebinds 2 ENIs${label}`,
          s.steady,
        ),
      );
      console.log(
        row(
          `nothing to do, the first apply after a change: \`apply\` on a converged node, planned${label}`,
          s.noop,
        ),
      );
      console.log(
        row(
          `nothing to do, unchanged since the last apply: \`apply\` reads its recorded inputs again${label}`,
          s.unchanged,
        ),
      );
      console.log(
        row(`first boot: \`apply\` creates and attaches 3 ENIs over EC2, binds 2${label}`, s.first),
      );
    }
    // Apart from the timed runs: the steady state's sleeps while the simulated kernel answers.
    for (const s of subjects) {
      const cli = entryOf(s.bundle);
      const waits: { n: number; ms: number; anyMs: number }[] = [];
      for (let i = 0; i < Math.min(runs, 15); i++) {
        s.world.reboot({ modulesLoad: amiModules });
        const r = await measure([node, "--import", settleWaits, cli, "apply"], s.env);
        const m = /SETTLE_WAITS (.*)/.exec(r.stderr);
        if (m) waits.push(JSON.parse(m[1]) as { n: number; ms: number; anyMs: number });
      }
      console.log(
        `${path.relative(repo, s.bundle) || s.bundle}: a steady-state apply sleeps ${median(waits.map((w) => w.n))} times (median of ${waits.length}) while the simulated kernel answers its writes, ${median(waits.map((w) => w.ms)).toFixed(1)} ms summed over the devices bound at once, ${median(waits.map((w) => w.anyMs)).toFixed(1)} ms with one or more asleep (scripts/bench/settle-waits.mjs); a real kernel has acted when the write returns`,
      );
    }
    for (const s of subjects) {
      console.log(
        `${path.relative(repo, s.bundle) || s.bundle}: ${s.imdsRequests} IMDS requests per converged apply; EC2 calls by the ${runs * 4} measured applies: ${s.world.ec2.totalCalls() - s.ec2Before}; applies that found their inputs unchanged: ${s.unchanged.filter((x) => x.stderr.includes("unchanged_since=")).length} of ${runs} (second row), ${s.noop.filter((x) => x.stderr.includes("unchanged_since=")).length} of ${runs} (first row)`,
      );
    }
  } finally {
    for (const s of subjects) await s.world.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
