// The build run again with nothing changed leaves dist/ as it was: every file keeps its inode and
// mtime. Tests run from dist/ while `npm run package` (test/product/install.test.ts) builds beside
// them, and V8's code cache of the CLI script is keyed by that script's inode and mtime
// (src/core/code-cache.ts), so a rebuild that replaced identical files invalidated the caches of
// running tests (a clean run of npm test failed on it, 2026-12-05).
import t from "tap";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO } from "../support/repo.js";
import "../support/harness.js"; // builds dist/ when it is missing or stale

function stamps(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    const rel = path.relative(dir, p);
    if (rel.startsWith(".v8-cache")) continue; // the runs' own caches, not the build's
    const st = statSync(p, { bigint: true });
    out[rel] = `${st.ino}/${st.mtimeNs}`;
  }
  return out;
}

// One rebuild for both (each costs the suite ~2 s of CPU).
t.test(
  "a second build with nothing changed replaces no file of dist/ and keeps its caches",
  async (t) => {
    const dist = path.join(REPO, "dist");
    const caches = path.join(dist, ".v8-cache");
    mkdirSync(caches, { recursive: true, mode: 0o700 });
    const probe = path.join(caches, `build-test-${process.pid}.v8`);
    writeFileSync(probe, "a cache the build did not make");
    t.teardown(() => rmSync(probe, { force: true }));
    const before = stamps(dist);
    t.ok(
      Object.keys(before).some((f) => /^chunks\/cli-\w+\.js$/.test(f)),
      "dist/ holds the CLI script",
    );
    execFileSync(process.execPath, [path.join(REPO, "scripts/build.mjs")], {
      cwd: REPO,
      stdio: "ignore",
    });
    t.same(stamps(dist), before, "the same files, each with its inode and mtime");
    t.ok(
      existsSync(probe),
      "the runs' code caches are still there: a file the build kept keeps them valid",
    );
  },
);
