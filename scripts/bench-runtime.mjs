#!/usr/bin/env node
// How should Node reach the AMI? Measures cold start of the CLI as an ESM bundle run by the system
// node (what the AL2023 nodejs packages give) against a single executable application (SEA, with
// useCodeCache) built from the same sources, with `node -e 0` as the floor. Prints figures only.
//
//   node scripts/bench-runtime.mjs [--runs N]
//
// Needs hyperfine, /usr/bin/time and network access for `npx postject` (the SEA injector).
// Node 20's SEA runs one CommonJS script, so the SEA variant is a single CJS bundle with
// import.meta.url shimmed; the ESM variant is built like scripts/build.mjs (split chunks).
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 30;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-bench-runtime-"));
const config = path.resolve("etc/eni-dpdk/config.toml");

function run(argv, opts = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", ...opts });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

// Modules other helpers have not written yet stay external: the measured paths never load them.
const externalizeMissing = {
  name: "externalize-missing",
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      if (!args.importer.startsWith(path.resolve("src"))) return undefined;
      const ts = path.resolve(args.resolveDir, args.path.replace(/\.js$/, ".ts"));
      return fs.existsSync(ts) ? undefined : { path: args.path, external: true };
    });
  },
};
const common = {
  entryPoints: ["src/main.ts"],
  bundle: true,
  platform: "node",
  target: "node20",
  minifyWhitespace: true,
  minifySyntax: true,
  external: ["sd-notify"],
  plugins: [externalizeMissing],
  logLevel: "error",
};

await build({
  ...common,
  entryPoints: { "eni-dpdk": "src/main.ts" },
  outdir: path.join(work, "esm"),
  outExtension: { ".js": ".mjs" },
  format: "esm",
  splitting: true,
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
});
await build({
  ...common,
  outfile: path.join(work, "sea/eni-dpdk.cjs"),
  format: "cjs",
  define: { "import.meta.url": "__eni_dpdk_url" },
  banner: { js: "const __eni_dpdk_url = require('node:url').pathToFileURL(__filename).href;" },
});

const seaConfig = path.join(work, "sea/sea-config.json");
fs.writeFileSync(
  seaConfig,
  JSON.stringify({
    main: path.join(work, "sea/eni-dpdk.cjs"),
    output: path.join(work, "sea/prep.blob"),
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
  }),
);
run([process.execPath, "--experimental-sea-config", seaConfig]);
const sea = path.join(work, "sea/eni-dpdk");
fs.copyFileSync(process.execPath, sea);
fs.chmodSync(sea, 0o755);
run([
  "npx",
  "--yes",
  "postject@1.0.0-alpha.6",
  sea,
  "NODE_SEA_BLOB",
  path.join(work, "sea/prep.blob"),
  "--sentinel-fuse",
  "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2",
]);

const esm = path.join(work, "esm/eni-dpdk.mjs");
const cases = [
  ["floor: node -e 0", [process.execPath, "-e", "0"]],
  ["ESM bundle --version", [process.execPath, esm, "--version"]],
  ["SEA --version", [sea, "--version"]],
  ["ESM bundle validate", [process.execPath, esm, "validate", config]],
  ["SEA validate", [sea, "validate", config]],
];
for (const [, argv] of cases) run(argv); // each must work before it is timed

const json = path.join(work, "hyperfine.json");
const quote = (argv) => argv.map((a) => `'${a}'`).join(" ");
run(
  [
    "hyperfine",
    "-N",
    "--warmup",
    "3",
    "--runs",
    String(runs),
    "--export-json",
    json,
    ...cases.flatMap(([name, argv]) => ["-n", name, quote(argv)]),
  ],
  { stdio: ["ignore", "inherit", "inherit"] },
);

const rss = (argv) => {
  const samples = [];
  for (let i = 0; i < 5; i++) {
    const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
    samples.push(Number(r.stderr.trim().split("\n").at(-1)));
  }
  return samples.sort((a, b) => a - b)[2] / 1024;
};
const results = JSON.parse(fs.readFileSync(json, "utf8")).results;
const size = (p) => (fs.statSync(p).size / 1e6).toFixed(1);
const esmBytes = fs
  .readdirSync(path.join(work, "esm"), { recursive: true })
  .filter((f) => f.endsWith(".mjs"))
  .reduce((n, f) => n + fs.statSync(path.join(work, "esm", f)).size, 0);
console.log(
  `\nmachine: ${os.cpus()[0].model}, ${os.cpus().length} CPUs, ${os.type()} ${os.release()}, node ${process.version}`,
);
console.log(
  `sizes: ESM bundle ${(esmBytes / 1e6).toFixed(1)} MB (plus node from the distribution); SEA binary ${size(sea)} MB`,
);
// CPU time (user + system) is steadier than wall time when other work shares the machine.
console.log(
  "| command | median wall ms | mean ± sd wall ms | mean CPU ms (user+sys) | peak RSS MB (median of 5) |\n|---|---|---|---|---|",
);
for (const [i, [name, argv]] of cases.entries()) {
  const r = results[i];
  const cpu = (r.user + r.system) * 1000;
  console.log(
    `| ${name} | ${(r.median * 1000).toFixed(0)} | ${(r.mean * 1000).toFixed(0)} ± ${(r.stddev * 1000).toFixed(0)} | ${cpu.toFixed(0)} | ${rss(argv).toFixed(0)} |`,
  );
}
fs.rmSync(work, { recursive: true, force: true });
