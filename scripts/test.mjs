// `npm test`: the bundle and the compiled tests, then the type check beside tap. tsc runs on one
// core for 6–14 s; beside tap it fills the core the tests leave idle instead of holding both back.
// Its report is printed after tap's, and either failing fails the run.
//
//   node scripts/test.mjs [--no-typecheck] [test/DIR | test/FILE.test.ts ...] [tap options]
//
// Test paths pick the files to run (default: all of test/**/*.test.ts); tap runs their compiled
// copies (scripts/build-tests.mjs), without tsx. Everything else goes to tap as it is.
import { spawn } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { buildTests, testFiles } from "./build-tests.mjs";

const repo = path.resolve(import.meta.dirname, "..");
const bin = (name) => path.join(repo, "node_modules/.bin", name);

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
if (!process.env.TMPDIR && isWritableDir("/dev/shm")) process.env.TMPDIR = "/dev/shm";

function isWritableDir(dir) {
  try {
    accessSync(dir, constants.W_OK);
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

let typecheck = true;
const picked = [];
const tapArgs = [];
for (const a of process.argv.slice(2)) {
  const rel = path.relative(repo, path.resolve(a));
  if (a === "--no-typecheck") typecheck = false;
  else if (!a.startsWith("-") && rel.split(path.sep)[0] === "test" && existsSync(a))
    picked.push(rel);
  else tapArgs.push(a);
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
 * the plugins no test uses (each test process loads every plugin); tap rebuilds on a mismatch by
 * itself, but only after it has chosen that run's loaders, so a fresh install builds here first.
 */
async function tapPluginsBuilt() {
  const tapjs = path.join(repo, "node_modules/@tapjs");
  const { defaultPlugins } = await import(
    pathToFileURL(path.join(tapjs, "test/dist/esm/default-plugins.js")).href
  );
  const want = new Set(defaultPlugins);
  for (const p of JSON.parse(readFileSync(path.join(repo, "package.json"), "utf8")).tap.plugin)
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
const [tsc, tap] = await Promise.all([
  // incremental: a run after a small edit re-checks what changed (14.7 -> 6.5 s of CPU here)
  typecheck
    ? run([bin("tsc"), "--noEmit", "-p", ".", "--incremental", "--tsBuildInfoFile", tsInfo], true)
    : { code: 0, out: "" },
  // tap's shebang is `env node`: run it with this Node, whose execPath it gives the tests.
  // --node-arg replaces the config's --import=tsx (tap adds --enable-source-maps itself).
  run([
    process.execPath,
    tapBin,
    "--node-arg=--enable-source-maps",
    // tap loads its process-info hook into every test process, and the hook reads each module the
    // process loads (and its source map) for coverage, which is off here: up to 0.3 s of CPU per
    // test file (sources.test 1.85 -> 1.58 s). Excluding every file keeps each process's own
    // record, which saveTimes reads.
    "--test-env=_TAPJS_PROCESSINFO_EXCLUDE_=/./",
    ...tapArgs,
    ...order.map((f) => compiled.get(f)),
  ]),
]);
saveTimes();
if (typecheck) {
  process.stdout.write(tsc.out);
  console.log(
    tsc.code === 0 ? "# tsc --noEmit: no type errors" : `# tsc --noEmit failed (exit ${tsc.code})`,
  );
}
process.exit(tsc.code || tap.code);

function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

/** Each test file's run time, from tap's process records (.tap/processinfo), into timesFile. */
function saveTimes() {
  const dir = path.join(repo, ".tap/processinfo");
  const source = new Map([...compiled].map(([f, c]) => [path.join(repo, c), f]));
  if (!existsSync(dir)) return;
  const entries = readdirSync(dir);
  for (const e of entries) {
    const p = readJson(path.join(dir, e));
    const f = p && !p.parent && source.get(p.argv?.[1]);
    if (f && typeof p.runtime === "number") times[f] = Math.round(p.runtime);
  }
  mkdirSync(path.dirname(timesFile), { recursive: true });
  const sorted = Object.fromEntries(Object.entries(times).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(timesFile, JSON.stringify(sorted, null, 1) + "\n");
}
