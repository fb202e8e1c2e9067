// Files root may trust: regular, readable, UTF-8, not writable by group or others, owned by root, in
// directories alike — as sshd's StrictModes. A file that fails is named with why and the fix.
import { readFileSync, statSync, type Stats } from "node:fs";
import { InputError, type Problem } from "../core/errors.js";
import type { Host } from "./host.js";
import { inputs } from "../core/inputs.js";

/** The reads of config files, as data (see Host.probe): what the trust rules look at, and the bytes. */
export const TRUSTED_READS = ["config-stat", "config-bytes"] as const;
export type TrustedRead = (typeof TRUSTED_READS)[number];

export function trustedProbe(host: Host, op: TrustedRead, abs: string): unknown {
  const real = host.path(abs);
  if (op === "config-bytes") return asBase64(readFileSync(real));
  return statFacts(statOrAbsent(real));
}

const asBase64 = (b: Buffer) => b.toString("base64");

function statFacts(st: Stats | undefined): unknown {
  return st
    ? { dir: st.isDirectory(), file: st.isFile(), mode: st.mode & 0o7777, uid: st.uid }
    : null;
}

/** stat under the root, recorded as an input (core/inputs.ts); undefined when absent. */
function observedStat(host: Host, abs: string): Stats | undefined {
  return inputs.observe("config-stat", abs, () => statOrAbsent(host.path(abs)), statFacts);
}

/** The path as messages show it: under a root other than /, with the resolved path too. */
export function shownPath(host: Host, abs: string): string {
  return host.root === "/" ? abs : `${abs} (resolved under --root as ${host.path(abs)})`;
}

/** Why the file or directory at `abs` must not be trusted (undefined when it may). */
export function trustProblem(host: Host, abs: string, st: Stats): string | undefined {
  const real = host.path(abs);
  const mode = `0${(st.mode & 0o7777).toString(8)}`;
  const euid = process.geteuid?.() ?? 0;
  if ((st.mode & 0o022) !== 0) {
    const who =
      (st.mode & 0o022) === 0o022
        ? "group- and world-writable"
        : st.mode & 0o002
          ? "world-writable"
          : "group-writable";
    return `is ${who} (mode ${mode}); eni-dpdk runs as root and refuses input that others can change: chmod go-w ${real}`;
  }
  if (st.uid !== 0 && st.uid !== euid) {
    return `is owned by uid ${st.uid}, not root; eni-dpdk refuses input that another user can change: chown root ${real}`;
  }
  return undefined;
}

/** stat, or undefined when absent; anything else the caller reports. */
function statOrAbsent(real: string): Stats | undefined {
  try {
    return statSync(real);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw e;
  }
}

/**
 * TOML must be UTF-8; a decode that replaced bytes with U+FFFD would change strings in silence.
 * Says where the first invalid byte is, as line:col.
 */
export function utf8Problem(bytes: Buffer): string | undefined {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return undefined;
  } catch {
    const text = bytes.toString("utf8");
    const at = text.indexOf("\uFFFD");
    const before = text.slice(0, Math.max(0, at));
    const line = before.split("\n").length;
    const col = at - before.lastIndexOf("\n");
    return `is not valid UTF-8 (first bad byte at ${line}:${col}); save it as UTF-8`;
  }
}

/** What a read error means for the user, or undefined when it is not theirs to fix. */
export function readErrorMessage(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM") {
    return `cannot be read: permission denied (${code}); check its mode, owner and any SELinux/AppArmor policy`;
  }
  if (code === "ELOOP") return "is a symlink loop";
  if (code === "ENAMETOOLONG") return "has a name that is too long";
  return undefined;
}

/** A directory we read config from: absent is fine; a non-directory or an untrusted one is a problem. */
export function checkConfigDir(host: Host, abs: string, problems: Problem[]): boolean {
  const add = (message: string) =>
    problems.push({ source: shownPath(host, abs), key: "(directory)", message });
  let st: Stats | undefined;
  try {
    st = observedStat(host, abs);
  } catch (e) {
    const m = readErrorMessage(e);
    if (!m) throw e;
    add(m);
    return false;
  }
  if (!st) return false;
  if (!st.isDirectory()) {
    add("is not a directory; it should hold *.toml files");
    return false;
  }
  const m = trustProblem(host, abs, st);
  if (m) add(m);
  return !m;
}

/** Read one config file: undefined when absent; problems for a directory, a non-file, an untrusted file. */
export function readConfigFile(
  host: Host,
  abs: string,
  what: string,
  problems: Problem[],
): string | undefined {
  const add = (message: string) =>
    problems.push({ source: shownPath(host, abs), key: "(file)", message });
  const real = host.path(abs);
  try {
    const st = observedStat(host, abs);
    if (!st) return undefined;
    if (st.isDirectory()) return void add(`is a directory; ${what}`);
    if (!st.isFile()) return void add(`is not a regular file; ${what}`);
    const m = trustProblem(host, abs, st);
    if (m) return void add(m);
    const bytes = inputs.observe("config-bytes", abs, () => readFileSync(real), asBase64);
    const bad = utf8Problem(bytes);
    if (bad) return void add(bad);
    return bytes.toString("utf8");
  } catch (e) {
    const m = readErrorMessage(e);
    if (!m) throw e;
    add(m);
    return undefined;
  }
}

/**
 * A file that configures or authenticates eni-dpdk (a kubeconfig, a CA): undefined when absent, an
 * InputError naming `key` when it is a directory, not a regular file, unreadable, or untrusted.
 */
export function readTrustedFile(
  host: Host,
  abs: string,
  key: string,
  what: string,
): string | undefined {
  const problems: Problem[] = [];
  const text = readConfigFile(host, abs, what, problems);
  if (problems.length) throw new InputError(problems.map((p) => ({ ...p, key })));
  return text;
}
