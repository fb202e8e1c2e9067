// core/code-cache.ts on real V8 and real files: the cache is written after a run and taken by the
// next, a bad or foreign cache is never run, an edited script never meets its old cache, and a
// directory that cannot be written costs nothing but the cache.
import t, { type Test } from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCached } from "../../../src/core/code-cache.js";

interface Exports {
  answer: () => string;
  host: unknown;
}

/** A script in the shape the build makes: CommonJS, with `__host` from the entry. */
function script(answer: string): string {
  const body = Array.from({ length: 50 }, (_, i) => `function f${i}(x) { return x + ${i}; }`);
  return `"use strict";
${body.join("\n")}
module.exports.answer = () => ${JSON.stringify(answer)} + f3(0);
module.exports.host = __host;
`;
}

function setup(t: Test) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "code-cache-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "cli-TEST.js");
  fs.writeFileSync(file, script("one"));
  const cacheDir = path.join(dir, "cache");
  const caches = () => (fs.existsSync(cacheDir) ? fs.readdirSync(cacheDir).sort() : []);
  return { dir, file, cacheDir, caches };
}

// V8 keeps what an isolate compiled by source text, so a second start in this process would not
// consult the cache file at all: taking it, and rejecting garbage, are tested across processes with
// the bundle (test/integration/code-cache.test.ts).
t.test("a first start writes the cache of what ran, after the run, once", async (t) => {
  const { file, cacheDir, caches } = setup(t);
  const host = { lazy: {} };
  const first = runCached<Exports>(file, cacheDir, "apply", host);
  t.equal(first.exports.answer(), "one3", "the script ran");
  t.equal(first.exports.host, host, "the script got the entry's host modules");
  t.equal(first.cacheUsed, false, "no cache yet");
  t.same(caches(), [], "nothing is written before keep()");
  first.keep();
  const [written, ...more] = caches();
  t.same(more, [], "one cache file");
  t.match(
    written,
    /^cli-TEST\.js\.apply\.\d+\.\d+\.\d+\.v8$/,
    "named after the script, the command and the file's size, mtime and inode",
  );
  const cache = path.join(cacheDir, written);
  t.ok(
    fs.statSync(cache).size > 1000,
    `it holds compiled functions (${fs.statSync(cache).size} bytes)`,
  );
  t.equal((fs.statSync(cache).mode & 0o777).toString(8), "600");
});

t.test("an edited script of the same length never runs its old cache", async (t) => {
  // V8 checks a cache against the source's length only: the file name carries the file's identity.
  const { file, cacheDir, caches } = setup(t);
  runCached<Exports>(file, cacheDir, "apply", {}).keep();
  runCached<Exports>(file, cacheDir, "run", {}).keep();
  const [oldApply] = caches().filter((n) => n.includes(".apply."));
  fs.writeFileSync(file, script("two")); // same length, same inode, a new mtime
  t.equal(fs.statSync(file).size, Buffer.byteLength(script("one")));
  const run = runCached<Exports>(file, cacheDir, "apply", {});
  t.equal(run.cacheUsed, false, "the old cache was not offered");
  t.equal(run.exports.answer(), "two3", "the new code ran");
  run.keep();
  const now = caches();
  t.notOk(now.includes(oldApply), "the command's cache of the old script is gone");
  t.equal(now.filter((n) => n.includes(".apply.")).length, 1, "one cache for apply");
  t.equal(
    now.filter((n) => n.includes(".run.")).length,
    1,
    "another command's cache is left alone",
  );
});

t.test("a directory that cannot be written costs the cache only", async (t) => {
  const { dir, file } = setup(t);
  fs.writeFileSync(path.join(dir, "plain-file"), "");
  const cacheDir = path.join(dir, "plain-file", "cache"); // ENOTDIR, even for root
  const run = runCached<Exports>(file, cacheDir, "apply", {});
  t.equal(run.exports.answer(), "one3");
  t.doesNotThrow(() => run.keep(), "keep() swallows the error");
  t.notOk(fs.existsSync(cacheDir));
});

t.test("temp files of a killed writer go once they are a minute old", async (t) => {
  const { file, cacheDir, caches } = setup(t);
  fs.mkdirSync(cacheDir);
  const old = "cli-TEST.js.apply.1.2.3.v8.999999.tmp";
  const fresh = "cli-TEST.js.apply.1.2.3.v8.999998.tmp";
  const unrelated = "notes.txt";
  for (const n of [old, fresh, unrelated]) fs.writeFileSync(path.join(cacheDir, n), "x");
  const hourAgo = new Date(Date.now() - 3_600_000);
  fs.utimesSync(path.join(cacheDir, old), hourAgo, hourAgo);
  runCached<Exports>(file, cacheDir, "apply", {}).keep();
  const now = caches();
  t.notOk(now.includes(old), "the hour-old temp file is gone");
  t.ok(now.includes(fresh), "a temp file another writer may still rename stays");
  t.ok(now.includes(unrelated), "files that are not caches stay");
});

t.test("an error thrown by the script at load reaches the caller", async (t) => {
  const { file, cacheDir } = setup(t);
  fs.writeFileSync(file, `throw new Error("broken build");`);
  t.throws(() => runCached(file, cacheDir, "apply", {}), /broken build/);
});
