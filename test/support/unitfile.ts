// Helpers for checking systemd units without a running systemd: a tiny unit-file reader and a
// throw-away root for `systemd-analyze verify --root`, which resolves units and ExecStart binaries
// inside that root (so /usr/bin/eni-dpdk can be a stub there and the unit files stay unmodified).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export type UnitFile = Record<string, Record<string, string[]>>;

/** Parse a unit file: sections of key=value; repeated keys accumulate; "Key=" resets the list. */
export function parseUnit(text: string): UnitFile {
  const out: UnitFile = {};
  let section: Record<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = out[header[1]] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`unit file: cannot parse line ${JSON.stringify(raw)}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    section[key] = value === "" ? [] : [...(section[key] ?? []), value];
  }
  return out;
}

/** All space-separated values of a key (Before=a b + Before=c → [a, b, c]). */
export function words(unit: UnitFile, section: string, key: string): string[] {
  return (unit[section]?.[key] ?? []).flatMap((v) => v.split(/\s+/)).filter(Boolean);
}

/** Seconds of a systemd time span such as "330s", "5min", "20min 30s" or "90". */
export function seconds(span: string): number {
  const units: Record<string, number> = { "": 1, s: 1, sec: 1, m: 60, min: 60, h: 3600, hr: 3600 };
  let total = 0;
  for (const m of span.matchAll(/(\d+)\s*([a-z]*)/g)) {
    const f = units[m[2]];
    if (f === undefined) throw new Error(`time span ${span}: unknown unit ${m[2]}`);
    total += Number(m[1]) * f;
  }
  return total;
}

/**
 * A root for `systemd-analyze verify --root`: the host's own system units (so sysinit.target and
 * friends resolve) plus copies of a few binaries the units name. Returns the root directory.
 */
export function makeVerifyRoot(root: string, binaries: Record<string, string> = {}): string {
  const unitDir = path.join(root, "usr/lib/systemd/system");
  fs.mkdirSync(path.dirname(unitDir), { recursive: true });
  // Existing files (units installed into the root) win over the host's.
  fs.cpSync("/usr/lib/systemd/system", unitDir, {
    recursive: true,
    verbatimSymlinks: true,
    force: false,
  });
  fs.mkdirSync(path.join(root, "usr/bin"), { recursive: true });
  fs.mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
  if (!fs.existsSync(path.join(root, "bin"))) fs.symlinkSync("usr/bin", path.join(root, "bin"));
  for (const [inRoot, fromHost] of Object.entries(binaries)) {
    const dest = path.join(root, inRoot);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.copyFileSync(fromHost, dest);
    fs.chmodSync(dest, 0o755);
  }
  return root;
}

export interface VerifyResult {
  status: number | null;
  output: string;
}

/** `systemd-analyze verify --root=ROOT UNIT...` (unit names are looked up inside the root). */
export function analyzeVerify(root: string, units: string[]): VerifyResult {
  const r = spawnSync("systemd-analyze", ["verify", `--root=${root}`, "--man=no", ...units], {
    encoding: "utf8",
  });
  if (r.error) throw r.error;
  return { status: r.status, output: (r.stdout + r.stderr).trim() };
}
