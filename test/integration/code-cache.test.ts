// The bundle's code cache (src/core/code-cache.ts), across real processes: a boot command keeps one
// after it succeeded, the next start takes it (and so does not write it again), garbage in the file
// is rejected and replaced, the other commands share one that no boot reads, and a failed command
// or a directory that cannot be written leaves no cache and changes nothing else.
import t, { type Test } from "tap";
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { BUNDLE, baseToml, lastError, runCli, startCli, world } from "../support/harness.js";

function cacheDir(t: Test): {
  dir: string;
  caches: () => string[];
  cliCaches: () => string[];
  vendorCaches: () => string[];
} {
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-cache-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Node 22 also keeps its compile cache of the ES vendor chunks there, in a directory of its own.
  const caches = () =>
    readdirSync(dir)
      .filter((f) => f.endsWith(".v8"))
      .sort();
  return {
    dir,
    caches,
    // a first boot also loads the SDK's and toml's scripts, which keep caches of their own
    cliCaches: () => caches().filter((f) => !f.startsWith("vendor-")),
    vendorCaches: () => caches().filter((f) => f.startsWith("vendor-")),
  };
}

/** yargs's cache: no boot loads yargs (commands/boot-argv.ts), so any command keeps it. */
const YARGS_CACHE = /^vendor-yargs-\w+\.js\.vendor-yargs\.\d+\.\d+\.\d+\.v8$/;
/** The CLI script's cache that the commands other than a boot's share; no boot reads it. */
const OTHER_CACHE = /^cli-\w+\.js\.other\.\d+\.\d+\.\d+\.v8$/;

const identity = (f: string) => {
  const st = statSync(f, { bigint: true });
  return `${st.ino}/${st.mtimeNs}`;
};

/** An apply that always runs the planner (never the unchanged apply of commands/unchanged.ts). */
const FULL = ["apply", "--full"];

t.test("apply keeps a code cache after it succeeded; the next apply takes it", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const { dir, cliCaches } = cacheDir(t);
  const env = { CACHE_DIRECTORY: dir };
  // --full: every apply runs the planner's script, whose cache this is about (the unchanged
  // apply's own script and cache are below)
  const first = await runCli(w, FULL, { env });
  t.equal(first.code, 0, lastError(first));
  t.match(cliCaches(), [/^cli-\w+\.js\.apply\.\d+\.\d+\.\d+\.v8$/], "one cache, for apply");
  t.equal(cliCaches().length, 1);
  const cache = path.join(dir, cliCaches()[0]);
  const was = identity(cache);

  const second = await runCli(w, FULL, { env });
  t.equal(second.code, 0, lastError(second));
  t.match(second.log.at(-1)?.msg ?? "", /^ready:/, "the run from the cache converged as before");
  t.equal(identity(cache), was, "V8 took the cache, so it was not written again");

  writeFileSync(cache, Buffer.alloc(statSync(cache).size, 0));
  const third = await runCli(w, FULL, { env });
  t.equal(third.code, 0, `a cache of zeros is rejected and the run goes on: ${lastError(third)}`);
  t.not(readFileSync(cache).indexOf(Buffer.from([1])), -1, "and the zeros were replaced");
  const replaced = identity(cache);
  t.equal((await runCli(w, FULL, { env })).code, 0);
  t.equal(identity(cache), replaced, "the replacement is taken");

  // V8 runs what the file holds: one that others may write is never read, and is replaced.
  chmodSync(cache, 0o666);
  t.equal((await runCli(w, FULL, { env })).code, 0);
  t.not(identity(cache), replaced, "a cache file others may write was not taken");
  t.equal(
    (statSync(cache).mode & 0o777).toString(8),
    "600",
    "its replacement is the owner's alone",
  );
});

t.test("two starts at once: both run, one cache file, no temp file left", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const { dir, cliCaches, vendorCaches } = cacheDir(t);
  const env = { CACHE_DIRECTORY: dir };
  const both = await Promise.all([runCli(w, ["apply"], { env }), runCli(w, ["apply"], { env })]);
  for (const r of both) t.equal(r.code, 0, lastError(r));
  t.equal(cliCaches().length, 1, "one cache for apply, whichever rename came last");
  t.equal(
    new Set(vendorCaches().map((f) => f.split(".")[0])).size,
    vendorCaches().length,
    `one cache per vendor script: ${vendorCaches().join(" ")}`,
  );
  t.same(
    readdirSync(dir).filter((f) => f.endsWith(".tmp")),
    [],
    "each writer renamed its own temp file",
  );
  t.equal((await runCli(w, ["apply"], { env })).code, 0, "and the next start runs from it");
});

t.test("the service keeps its cache once READY, while it runs on", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const { dir, cliCaches } = cacheDir(t);
  const svc = startCli(w, ["run"], { env: { CACHE_DIRECTORY: dir } });
  t.teardown(() => svc.signal("SIGKILL"));
  await svc.waitForLog((r) => /^ready:/.test(r.msg ?? ""));
  for (let i = 0; i < 100 && cliCaches().length === 0; i++)
    await new Promise((r) => setTimeout(r, 50));
  t.match(cliCaches(), [/\.run\.\d+\.\d+\.\d+\.v8$/], "one cache, for run");
  t.ok(svc.running(), "written while the service runs");
  svc.signal("SIGTERM");
  t.equal((await svc.exit).code, 0);
});

t.test(
  "no cache from a failed command or where nothing can be written; the other commands share one",
  async (t) => {
    const w = await world(t, { configToml: baseToml("\n[bogus]\nkey = 1\n") });
    const { dir, caches } = cacheDir(t);
    const rejected = await runCli(w, ["apply"], { env: { CACHE_DIRECTORY: dir } });
    t.equal(rejected.code, 2, "the input is rejected");
    t.same(caches(), [], "a failed apply keeps no cache (it would hold the error path)");
    const rejectedPlan = await runCli(w, ["plan"], { env: { CACHE_DIRECTORY: dir } });
    t.equal(rejectedPlan.code, 2, "the input is rejected by plan too");
    t.same(caches(), [], "a failed plan keeps none either");

    const good = await world(t, { configToml: baseToml() });
    const plan = await runCli(good, ["plan"], { env: { CACHE_DIRECTORY: dir } });
    t.equal(plan.code, 0, lastError(plan));
    t.match(
      caches(),
      [OTHER_CACHE, YARGS_CACHE],
      "plan is not a boot command: the other commands' cache of the CLI, and yargs's, which no boot loads",
    );
    const kept = caches().map((f) => path.join(dir, f));
    const was = kept.map(identity);
    for (const args of [["apply", "--dry-run"], ["apply", "--help"], ["status"]]) {
      const r = await runCli(good, args, { env: { CACHE_DIRECTORY: dir } });
      t.equal(r.code, 0, `${args.join(" ")}: ${lastError(r)}`);
      t.match(
        caches(),
        [OTHER_CACHE, YARGS_CACHE],
        `${args.join(" ")} keeps no cache of its own: not the path a boot takes`,
      );
      t.same(kept.map(identity), was, `${args.join(" ")} took both caches: neither written again`);
    }
    const boot = await runCli(good, FULL, { env: { CACHE_DIRECTORY: dir } });
    t.equal(boot.code, 0, lastError(boot));
    t.match(
      caches().filter((f) => f.startsWith("cli-")),
      [/^cli-\w+\.js\.apply\.\d+\.\d+\.\d+\.v8$/, OTHER_CACHE],
      "the boot did not take the other commands' cache: it made its own beside it",
    );
    t.same(kept.map(identity), was, "and left theirs as it was");

    writeFileSync(path.join(dir, "a-file"), "");
    const unwritable = path.join(dir, "a-file", "cache"); // ENOTDIR, even for root
    const applied = await runCli(good, ["apply"], { env: { CACHE_DIRECTORY: unwritable } });
    t.equal(
      applied.code,
      0,
      `a cache directory that cannot be made costs nothing: ${lastError(applied)}`,
    );
    t.notOk(applied.stderr.includes("cache"), "and says nothing");
  },
);

t.test(
  "the build: our code is one script, which reaches the entry only through __host",
  async (t) => {
    const entry = readFileSync(BUNDLE, "utf8");
    const [, rel] = /besides\("(chunks\/cli-[^"]+\.js)"/.exec(entry) ?? [];
    t.ok(rel, "the entry names its script");
    const script = readFileSync(path.join(path.dirname(BUNDLE), rel), "utf8");
    t.notMatch(script, /\bimport\(|import\.meta|^import\s|^export\s/m, "no ES module syntax in it");
    const wants = [...new Set([...script.matchAll(/__host\.(\w+)/g)].map((m) => m[1]))].sort();
    t.same(
      wants,
      ["lazy", "signals", "startup", "stdio"],
      "it uses the host modules the entry passes",
    );
    t.match(
      entry,
      /\{lazy:\w+,signals:\w+,startup:\w+,stdio:\w+\}/,
      "and the entry passes those four",
    );
    t.notMatch(
      script,
      /function catchSignals|function loadYargs|function onStarted|function flushStdio/,
      "none is copied in",
    );
    const [, unchangedRel] = /besides\("(chunks\/unchanged-[^"]+\.js)"/.exec(entry) ?? [];
    t.ok(unchangedRel, "the entry names the unchanged apply's script");
    const unchanged = readFileSync(path.join(path.dirname(BUNDLE), unchangedRel), "utf8");
    t.notMatch(unchanged, /\bimport\(|import\.meta|^import\s|^export\s/m, "a script too");
    t.notMatch(
      unchanged,
      /function catchSignals|function loadYargs|function flushStdio/,
      "with no host module copied in",
    );
    t.ok(unchanged.length * 5 < script.length, "and a fifth of the planner's size at most");
  },
);

t.test("the unchanged apply keeps a cache of its own script, beside the planner's", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const { dir, cliCaches } = cacheDir(t);
  const env = { CACHE_DIRECTORY: dir };
  for (let i = 0; i < 3; i++) t.equal((await runCli(w, ["apply"], { env })).code, 0);
  t.match(
    cliCaches(),
    [
      /^cli-\w+\.js\.apply\.\d+\.\d+\.\d+\.v8$/,
      /^unchanged-\w+\.js\.unchanged\.\d+\.\d+\.\d+\.v8$/,
    ],
    "the planner's cache (first two applies) and the unchanged apply's (third): neither removed the other",
  );
});

t.test(
  "the SDK's and toml's scripts keep caches of their own after a boot; later starts take them",
  async (t) => {
    const { dir, caches, vendorCaches } = cacheDir(t);
    const env = { CACHE_DIRECTORY: dir };
    /** A fresh node's first apply, which creates and attaches its ENIs through the SDK. */
    const firstBoot = async (args = ["apply"]) => {
      const w = await world(t, { configToml: baseToml() });
      const r = await runCli(w, args, { env });
      t.equal(r.code, 0, `${args.join(" ")}: ${lastError(r)}`);
      t.ok(w.ec2.totalCalls() > 0, `${args.join(" ")} called EC2, through the SDK`);
      return r;
    };

    await firstBoot(["plan"]);
    t.match(
      caches(),
      [OTHER_CACHE, YARGS_CACHE],
      "plan loads the SDK but keeps no cache of it: not a boot command (these two are no boot's)",
    );

    await firstBoot();
    t.match(
      vendorCaches(),
      [
        /^vendor-ec2-\w+\.js\.vendor-ec2\.\d+\.\d+\.\d+\.v8$/,
        /^vendor-toml-\w+\.js\.vendor-toml\.\d+\.\d+\.\d+\.v8$/,
        YARGS_CACHE,
      ],
      "a cache for each vendor script the boot ran, beside plan's of yargs",
    );
    t.equal(vendorCaches().length, 3);
    const sdkCache = path.join(dir, vendorCaches()[0]);
    const was = identity(sdkCache);
    t.ok(statSync(sdkCache).size > 1_000_000, "the SDK's holds the code of the calls made");
    t.equal((statSync(sdkCache).mode & 0o777).toString(8), "600", "the owner's alone");

    await firstBoot();
    t.equal(identity(sdkCache), was, "the next node's first boot took it: not written again");
    await firstBoot(["plan"]);
    t.equal(identity(sdkCache), was, "so does any other command");

    writeFileSync(sdkCache, Buffer.alloc(statSync(sdkCache).size, 0));
    await firstBoot();
    t.not(readFileSync(sdkCache).indexOf(Buffer.from([1])), -1, "a cache of zeros is replaced");
    t.equal(vendorCaches().length, 3, "in place: one cache per script still");
  },
);

t.test("the vendor scripts are classic scripts: no ES syntax, no import left", async (t) => {
  const entry = readFileSync(BUNDLE, "utf8");
  const scripts = [...entry.matchAll(/vendorScript\("\.\/(chunks\/vendor-[\w-]+\.js)","(\w+)"\)/g)];
  t.same(scripts.map((m) => m[2]).sort(), ["ec2", "toml", "yaml", "yargs"], "the entry runs four");
  for (const [, rel] of scripts) {
    const text = readFileSync(path.join(path.dirname(BUNDLE), rel), "utf8");
    t.notMatch(text, /\bimport\(|import\.meta|^import\s|^export\s/m, `${rel}: no ES syntax`);
  }
});
