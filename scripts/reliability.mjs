#!/usr/bin/env node
// Runs the adversarial suite (test/integration/adversarial/*.test.ts) and prints its cases by area with their
// results, as a Markdown table: the numbers in docs/reliability.md come from this script.
// Usage: npm run build && node scripts/reliability.mjs [--markdown]
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";

const repo = path.resolve(import.meta.dirname, "..");
const dir = path.join(repo, "test/integration/adversarial");
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".test.ts"))
  .map((f) => path.join("test/integration/adversarial", f));
const t0 = Date.now();
const r = spawnSync(path.join(repo, "node_modules/.bin/tap"), ["--reporter=tap", ...files], {
  cwd: repo,
  encoding: "utf8",
  maxBuffer: 256 * 1024 * 1024,
});
const seconds = ((Date.now() - t0) / 1000).toFixed(0);

// Each case is a subtest at depth 1: "    ok N - <area>[/<class>]: <case> # time=…" under its file's subtest.
const cases = [];
for (const line of r.stdout.split("\n")) {
  const m =
    /^ {4}(not ok|ok) \d+ - ([a-z-]+)(?:\/([a-z-]+))?: (.*?)(?: # (?:time=[\d.]+m?s|SKIP.*|TODO.*))?$/.exec(
      line,
    );
  if (m) cases.push({ ok: m[1] === "ok", area: m[2], kind: m[3] ?? "", name: m[4] });
}
const areas = [...new Set(cases.map((c) => c.area))].sort();
const md = process.argv.includes("--markdown");
const out = [];
out.push(
  `adversarial suite: ${cases.length} cases, ${cases.filter((c) => c.ok).length} passed, ${cases.filter((c) => !c.ok).length} failed (${seconds} s, tap exit ${r.status})`,
);
out.push("");
out.push("| area | cases | passed | failed |", "|---|---|---|---|");
for (const a of areas) {
  const cs = cases.filter((c) => c.area === a);
  const kinds = [...new Set(cs.map((c) => c.kind).filter(Boolean))].map(
    (k) => `${k} ${cs.filter((c) => c.kind === k).length}`,
  );
  out.push(
    `| ${a}${kinds.length ? ` (${kinds.join(", ")})` : ""} | ${cs.length} | ${cs.filter((c) => c.ok).length} | ${cs.filter((c) => !c.ok).length} |`,
  );
}
if (md) {
  for (const a of areas) {
    out.push("", `### ${a}`, "");
    for (const c of cases.filter((x) => x.area === a))
      out.push(`- ${c.ok ? "pass" : "**FAIL**"}: ${c.kind ? `${c.kind}: ` : ""}${c.name}`);
  }
} else {
  for (const c of cases.filter((x) => !x.ok)) out.push(`FAIL ${c.area}: ${c.name}`);
}
process.stdout.write(out.join("\n") + "\n");
process.exit(cases.length && cases.every((c) => c.ok) ? 0 : 1);
