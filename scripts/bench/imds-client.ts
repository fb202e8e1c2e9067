// The CPU and wall time of a converged boot's IMDS reads in a fresh Node process: the token and the
// reads one `apply` makes, by eni-dpdk's own client (src/cloud/imds-http.ts) and by node:http with
// a keep-alive agent (what the I/O floor script does), beside `node -e 0`. Prints medians and means;
// asserts nothing. Usage: npx tsx scripts/bench/imds-client.ts [--runs 25] [--node /path/to/node]
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { World, sampleConfig } from "../../src/sim/world.js";
import { timed, type Timed } from "./timed.js";

const args = process.argv.slice(2);
const opt = (name: string) => args[args.indexOf(name) + 1];
const runs = args.includes("--runs") ? Number(opt("--runs")) : 25;
const node = args.includes("--node") ? opt("--node") : process.execPath;
const repo = path.resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-imds-bench-"));

// The two clients as fresh processes: the paths come from a real converged apply's request log.
const ours = path.join(dir, "ours.mjs");
writeFileSync(
  path.join(dir, "ours-entry.ts"),
  `import { readFileSync } from "node:fs";
import { ImdsClient } from ${JSON.stringify(path.join(repo, "src/cloud/imds.ts"))};
const paths = readFileSync(process.argv[2], "utf8").split("\\n").filter((p) => p && p !== "api/token");
const imds = new ImdsClient();
await Promise.all(paths.map((p) => imds.getBytes(p)));
process.exit(0);
`,
);
await build({
  entryPoints: [path.join(dir, "ours-entry.ts")],
  outfile: ours,
  bundle: true,
  format: "esm",
  platform: "node",
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: "warning",
});
const viaHttp = path.join(dir, "http.mjs");
writeFileSync(
  viaHttp,
  `import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
const http = createRequire(import.meta.url)("node:http");
const paths = readFileSync(process.argv[2], "utf8").split("\\n").filter((p) => p && p !== "api/token");
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const base = process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT;
const request = (method, p, headers) => new Promise((resolve, reject) => {
  const r = http.request(base + "/latest/" + p, { method, headers, agent }, (res) => {
    const chunks = []; res.on("data", (c) => chunks.push(c)); res.on("end", () => resolve(Buffer.concat(chunks)));
  });
  r.on("error", reject); r.end();
});
const token = (await request("PUT", "api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "21600" })).toString();
await Promise.all(paths.map((p) => request("GET", p, { "x-aws-ec2-metadata-token": token })));
process.exit(0);
`,
);

async function measure(argv: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  const r = await timed(argv, env);
  if (r.code !== 0 || Number.isNaN(r.cpuMs))
    throw new Error(`${argv.join(" ")}: exit ${r.code}: ${r.stderr}`);
  return r;
}

const world = await World.start({ configToml: sampleConfig() });
try {
  const env = world.env();
  const cli = path.join(repo, "dist/eni-dpdk.cjs");
  await measure([node, cli, "apply"], env);
  world.imds.requests.length = 0;
  await measure([node, cli, "apply"], env);
  const paths = world.imds.requests.map((r) => r.path.replace(/^\/latest\//, ""));
  const pathsFile = path.join(dir, "paths.txt");
  writeFileSync(pathsFile, paths.join("\n"));
  const subjects: [string, string[]][] = [
    ["`node -e 0`", [node, "-e", "0"]],
    ["node:http, keep-alive agent", [node, viaHttp, pathsFile]],
    ["eni-dpdk's client (imds-http.ts)", [node, ours, pathsFile]],
  ];
  const got = subjects.map(() => [] as { ms: number; cpuMs: number }[]);
  for (let i = 0; i < runs; i++)
    for (const [k, [, argv]] of subjects.entries()) got[k].push(await measure(argv, env));
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const version = (await import("node:child_process"))
    .execFileSync(node, ["--version"], { encoding: "utf8" })
    .trim();
  console.log(
    `machine: ${cpus()[0]?.model} × ${cpus().length}, node ${version}, ${runs} runs each (interleaved), ${new Date().toISOString()}`,
  );
  console.log(`a token and ${paths.length - 1} reads, the requests of one converged apply`);
  console.log("| client | median wall ms | mean CPU ms (user+sys, 10 ms ticks) |");
  console.log("|---|---|---|");
  for (const [k, [name]] of subjects.entries())
    console.log(
      `| ${name} | ${median(got[k].map((x) => x.ms)).toFixed(1)} | ${mean(got[k].map((x) => x.cpuMs)).toFixed(1)} |`,
    );
} finally {
  await world.close();
  rmSync(dir, { recursive: true, force: true });
}
