// `npm test`: the bundle and the compiled tests, then the test files, each in a Node process of its
// own, with the type check beside them. tsc runs on one core for 6–14 s; beside the tests it fills
// the core they leave idle instead of holding both back. Its report is printed after the tests',
// and either failing fails the run.
//
//   node scripts/test.mjs [--no-typecheck] [test/DIR | test/FILE.test.ts ...]
//                         [--grep PATTERN] [--bail] [--jobs N] [--timeout SECONDS]
//
// Test paths pick the files to run (default: all of test/**/*.test.ts); their compiled copies
// (scripts/build-tests.mjs) run without tsx. Each file is a tap test: it prints TAP and its counts,
// and exits non-zero when an assertion failed. They run here rather than under tap's runner, which
// puts its process-info hook into every test process and into every Node process a test starts:
// on Node 20 that is a module loader on a thread of its own, and it cost the suite about a fifth
// of its CPU (docs/benchmarks.md, 2026-12-07). package.json's "tap" section still says which
// plugins the tests' tap is built with, and the jobs and the timeout used here.
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { clearTimeout, setTimeout } from "node:timers";
import { pathToFileURL } from "node:url";
import { buildTests, testFiles } from "./build-tests.mjs";
import { preferTmpfs } from "./tmpfs.mjs";

const repo = path.resolve(import.meta.dirname, "..");
const bin = (name) => path.join(repo, "node_modules/.bin", name);
const tapConfig = JSON.parse(readFileSync(path.join(repo, "package.json"), "utf8")).tap;

/** Run argv; resolve with its exit code (and its output, when captured). */
function run(argv, capture = false) {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: repo,
      stdio: capture ? ["ignore", "pipe", "pipe"] : "inherit",
    });
    let out = "";
    if (capture) for (const s of [child.stdout, child.stderr]) s.on("data", (d) => (out += d));
    child.on("error", (e) => resolve({ code: 127, out: `${argv[0]}: ${e.message}\n` }));
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), out }));
  });
}

// The tests' fake roots, emulators' files and tsx's cache go to os.tmpdir(). On tmpfs the fsyncs of
// every atomic write cost nothing: 144 → 131 s here, against /tmp on the machine's ext4 disk.
preferTmpfs();

function usage(problem) {
  console.error(`test.mjs: ${problem}`);
  console.error(
    "usage: node scripts/test.mjs [--no-typecheck] [test/DIR | test/FILE.test.ts ...] " +
      "[--grep PATTERN] [--bail] [--jobs N] [--timeout SECONDS]",
  );
  process.exit(2);
}

let typecheck = true;
let grep;
let bail = false;
let jobs = tapConfig.jobs;
let timeoutS = tapConfig.timeout;
const picked = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const [flag, inline] = a.startsWith("--") && a.includes("=") ? a.split(/=(.*)/s) : [a];
  const value = () => inline ?? args[++i] ?? usage(`${flag} needs a value`);
  const count = () => {
    const v = value();
    return /^[1-9]\d*$/.test(v) ? Number(v) : usage(`${flag} takes a whole number, not ${v}`);
  };
  const rel = path.relative(repo, path.resolve(a));
  if (a === "--no-typecheck") typecheck = false;
  else if (a === "--bail") bail = true;
  else if (flag === "--grep") grep = value();
  else if (flag === "--jobs") jobs = count();
  else if (flag === "--timeout") timeoutS = count();
  else if (!a.startsWith("-") && rel.split(path.sep)[0] === "test" && existsSync(a))
    picked.push(rel);
  else usage(`unknown argument ${JSON.stringify(a)}`);
}
const all = await testFiles();
const selected = picked.length
  ? all.filter((f) => picked.some((p) => f === p || f.startsWith(p + path.sep)))
  : all;
if (!selected.length) {
  console.error(`test.mjs: no test file under ${picked.join(" ")}`);
  process.exit(1);
}

/**
 * Whether tap's Test class is built with the plugins package.json asks for. package.json drops
 * the plugins no test uses (each test process loads every plugin), and tap's runner, which would
 * rebuild on a mismatch, does not run here: a fresh install builds here first.
 */
async function tapPluginsBuilt() {
  const tapjs = path.join(repo, "node_modules/@tapjs");
  const { defaultPlugins } = await import(
    pathToFileURL(path.join(tapjs, "test/dist/esm/default-plugins.js")).href
  );
  const want = new Set(defaultPlugins);
  for (const p of tapConfig.plugin)
    if (p.startsWith("!")) want.delete(p.slice(1));
    else want.add(p);
  let built;
  try {
    built = readFileSync(path.join(tapjs, "test/test-built/dist/esm/index.js"), "utf8");
  } catch {
    return false;
  }
  const signature = /^export const signature = `([^`]*)`/m.exec(built)?.[1];
  return signature === [...want].sort((a, b) => a.localeCompare(b, "en")).join("\n");
}

const tapBin = path.join(repo, "node_modules/tap/dist/esm/run.mjs");
const tsInfo = path.join(repo, ".cache/tsc/tsbuildinfo");
const build = await run([process.execPath, path.join(repo, "scripts/build.mjs")]);
if (build.code !== 0) process.exit(build.code);
if (!(await tapPluginsBuilt())) {
  const b = await run([process.execPath, tapBin, "build"]);
  if (b.code !== 0) process.exit(b.code);
}
// Longest first, by each file's time in the last run (a new file counts as long): with files
// started by name, unit/reconcile/eni.test.ts (38 s, asleep in EC2 backoffs) started at 80 s and
// ran alone for the last 20 s of the suite.
// A fresh clone (CI's every run) has no last run: it starts from test/times.json, the times of a
// run on a 2-core machine, committed.
const timesFile = path.join(repo, ".cache/test-times.json");
const times = { ...readJson(path.join(repo, "test/times.json")), ...readJson(timesFile) };
const order = [...selected].sort((a, b) => (times[b] ?? 1e9) - (times[a] ?? 1e9));
const compiled = await buildTests(order);
const [tsc, tests] = await Promise.all([
  // incremental: a run after a small edit re-checks what changed (14.7 -> 6.5 s of CPU here)
  typecheck
    ? run([bin("tsc"), "--noEmit", "-p", ".", "--incremental", "--tsBuildInfoFile", tsInfo], true)
    : { code: 0, out: "" },
  runTestFiles(order),
]);
mkdirSync(path.dirname(timesFile), { recursive: true });
// the files there are: a deleted or renamed file's time is not carried on
const sorted = Object.fromEntries(
  Object.entries(times)
    .filter(([f]) => all.includes(f))
    .sort(([a], [b]) => a.localeCompare(b)),
);
// indented as prettier would, so that test/times.json can be a copy
writeFileSync(timesFile, JSON.stringify(sorted, null, 2) + "\n");
if (typecheck) {
  process.stdout.write(tsc.out);
  console.log(
    tsc.code === 0 ? "# tsc --noEmit: no type errors" : `# tsc --noEmit failed (exit ${tsc.code})`,
  );
}
process.exit(tsc.code || tests.code);

/**
 * Run the files `jobs` at a time, in order, and print each one's TAP as a subtest when it is done,
 * then the counts of all. A file fails when it exits non-zero or by a signal, counts a failure,
 * or prints no counts (it ended before tap did). tap's own timeout (TAP_TIMEOUT) fails a file
 * and names what was pending; a file still running 30 s later is killed.
 */
async function runTestFiles(files) {
  const started = performance.now();
  const totals = {};
  const failed = [];
  let next = 0;
  let reported = 0;
  console.log("TAP version 14");
  // Each file gets a temp directory of its own, removed when it ends: whatever a test leaves in
  // os.tmpdir() goes with it (SIM_KEEP, which keeps simulated roots to look at, keeps them too).
  // Both as /tmp is (1777): a test's process run as nobody reaches its root through them.
  const tmpRoot = mkdtempSync(path.join(tmpdir(), "eni-dpdk-test-"));
  chmodSync(tmpRoot, 0o1777);
  const keepTmp = !!process.env.SIM_KEEP;
  const one = (file) =>
    new Promise((resolve) => {
      const t0 = performance.now();
      const tmp = mkdtempSync(path.join(tmpRoot, `${path.basename(file, ".test.ts")}-`));
      chmodSync(tmp, 0o1777);
      const child = spawn(process.execPath, ["--enable-source-maps", compiled.get(file)], {
        cwd: repo,
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          TMPDIR: tmp,
          TAP_TIMEOUT: String(timeoutS),
          ...(grep !== undefined && { TAP_GREP: grep }),
          ...(bail && { TAP_BAIL: "1" }),
        },
      });
      let out = "";
      for (const stream of [child.stdout, child.stderr]) stream.on("data", (d) => (out += d));
      const kill = setTimeout(() => child.kill("SIGKILL"), (timeoutS + 30) * 1000);
      child.on("error", (e) => (out += `# could not start: ${e.message}\n`));
      child.on("close", (code, signal) => {
        clearTimeout(kill);
        if (!keepTmp) rmSync(tmp, { recursive: true, force: true });
        const ms = performance.now() - t0;
        times[file] = Math.round(ms);
        // tap's last lines: `# { total: 12, pass: 11, fail: 1 }`, then `# time=…`
        const countsLine = [...out.matchAll(/^# \{ (total: [^}]*) \}$/gm)].at(-1)?.[1];
        const counts = countsLine && parseCounts(countsLine);
        for (const [k, v] of Object.entries(counts || {})) totals[k] = (totals[k] ?? 0) + v;
        const why = signal
          ? `killed by ${signal}`
          : code !== 0
            ? `exit ${code}`
            : !counts
              ? "no counts: it ended before tap did"
              : counts.fail
                ? `${counts.fail} failed`
                : undefined;
        if (why) failed.push(`${file}: ${why}`);
        console.log(`# Subtest: ${file}\n${out.replace(/\n$/, "").replace(/^/gm, "    ")}`);
        console.log(
          `${why ? "not ok" : "ok"} ${++reported} - ${file}${why ? ` (${why})` : ""}` +
            ` # time=${ms.toFixed(0)}ms`,
        );
        resolve();
      });
    });
  const worker = async () => {
    while (next < files.length && !(bail && failed.length)) await one(files[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(jobs, files.length) }, worker));
  if (!keepTmp) rmSync(tmpRoot, { recursive: true, force: true });
  else console.log(`# SIM_KEEP: the test files' temp directories are kept in ${tmpRoot}`);
  console.log(`1..${reported}`);
  for (const f of failed) console.log(`# failed: ${f}`);
  if (reported < files.length) console.log(`# not run (--bail): ${files.length - reported} files`);
  const counts = Object.entries(totals).map(([k, v]) => `${k}: ${v}`);
  console.log(`# { ${counts.join(", ")} }`);
  console.log(`# time=${(performance.now() - started).toFixed(0)}ms`);
  return { code: failed.length || reported < files.length ? 1 : 0 };
}

/** tap's counts (`total: 12, pass: 11, fail: 1`, not JSON) → their numbers. */
function parseCounts(text) {
  return Object.fromEntries([...text.matchAll(/(\w+): (\d+)/g)].map(([, k, v]) => [k, Number(v)]));
}

function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}
