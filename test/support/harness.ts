// The harness of the integration tests. Every case runs the built bundle (dist/eni-dpdk.cjs) as a real
// process against a World (IMDSv2 and EC2 emulators over HTTP, a simulated kernel on a fake root),
// and asserts what the README promises: the exit code, a message naming the source and the key,
// a byte-identical root and no EC2 mutation after a rejection, and convergence after a crash.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Test } from "tap";
import { SG_DPDK, SUBNET_A, World, type WorldOptions } from "../../src/sim/world.js";

export { REPO } from "./repo.js";
import { REPO } from "./repo.js";
/** The bundle under test; ENI_DPDK_TEST_BUNDLE runs the suite against another build (e.g. a release). */
export const BUNDLE = process.env.ENI_DPDK_TEST_BUNDLE
  ? path.resolve(process.env.ENI_DPDK_TEST_BUNDLE, "eni-dpdk.cjs")
  : path.join(REPO, "dist/eni-dpdk.cjs");

/** Build the bundle once when it is missing or older than any source file (a lone `tap FILE` run). */
export function ensureBundle(): void {
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((m, d) => {
      const p = path.join(dir, d.name);
      return Math.max(m, d.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }, 0);
  if (
    process.env.ENI_DPDK_TEST_BUNDLE ||
    (existsSync(BUNDLE) && statSync(BUNDLE).mtimeMs >= newest(path.join(REPO, "src")))
  )
    return;
  execFileSync(process.execPath, [path.join(REPO, "scripts/build.mjs")], {
    cwd: REPO,
    stdio: "ignore",
  });
}
ensureBundle();

/**
 * How the bundle is started. Under tap's runner (`npx tap FILE`; npm test does not use it), its
 * process-info hook puts its own loader into NODE_OPTIONS of every child, which costs start-up time
 * and installs signal handlers the product does not have (SIGHUP then kills where it must not), and
 * a developer's shell may set NODE_OPTIONS too. `env -u` runs the product as systemd would, without.
 */
export const NODE = ["/usr/bin/env", "-u", "NODE_OPTIONS", process.execPath];

export interface CliResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stderr parsed as logfmt records */
  log: LogRecord[];
  pid: number;
}

export type LogRecord = Record<string, string>;

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /**
   * kill the process with SIGKILL at the `when`-th `syscall` (on `path`, when given: strace -P,
   * which matches a syscall's first path argument or its fd) — strace fault injection
   */
  killAt?: { path?: string; syscall?: string; when?: number };
  /** argv prefix that execs the rest (e.g. a shell that sets the umask first) */
  wrap?: string[];
  /** node's own options, before the bundle (e.g. a --require probe) */
  nodeArgs?: string[];
  /** record the syscalls named here (strace -e trace=…) into this file */
  traceTo?: { file: string; syscalls: string };
  /** the `when`-th `syscall` fails with `errno` (strace fault injection), e.g. a full disk's fsync */
  failAt?: { syscall: string; errno: string; when?: number };
  /** called with the child's pid as soon as it runs (to signal it, or to arm an emulator hook) */
  onSpawn?: (pid: number) => void;
  timeoutMs?: number;
  cwd?: string;
}

/** strace over a process and its threads, stopping only at `syscalls`; `inject` for the first one. */
function strace(log: string, syscalls: string, inject?: string): string[] {
  const argv = ["strace", "-f", "--seccomp-bpf", "-qq", "-o", log, "-e", `trace=${syscalls}`];
  return inject ? [...argv, "-e", `inject=${syscalls}:${inject}`] : argv;
}

/** Run the bundle: `node dist/eni-dpdk.cjs ARGS` with the world's environment. */
export function runCli(
  world: World | undefined,
  args: string[],
  opts: RunOptions = {},
): Promise<CliResult> {
  // strace counts `when` per thread: one libuv worker makes "the Nth write" on a path the Nth of the
  // process (renames are all the main thread's, Host.renameInto).
  const traced = opts.killAt || opts.traceTo || opts.failAt ? { UV_THREADPOOL_SIZE: "1" } : {};
  const env = { ...(world ? world.env() : { PATH: process.env.PATH }), ...traced, ...opts.env };
  let argv = [...(opts.wrap ?? []), ...NODE, ...(opts.nodeArgs ?? []), BUNDLE, ...args];
  /** the kill point, with strace's log, which killAtEntry watches */
  const kill = opts.killAt && {
    syscall: opts.killAt.syscall ?? "openat",
    when: opts.killAt.when ?? 1,
    path: opts.killAt.path,
    log: path.join(mkdtempSync(path.join(tmpdir(), "eni-dpdk-kill-")), "strace"),
  };
  if (kill) {
    writeFileSync(kill.log, "");
    // strace's --seccomp-bpf stops the process only at the traced syscall; without it every syscall
    // of every thread is a ptrace stop (4,800 in a first boot), and a killed run cost 3–4 times the
    // CPU of a plain one, most of it in the kernel. With the filter strace 6.1 does not deliver an
    // injected signal (its seccomp stop drops it), so the call is held at its entry instead
    // (delay_enter), and the harness kills the process as soon as the log shows that entry
    // (killAtEntry). The kernel skips a syscall held at its seccomp stop when a fatal signal is
    // pending: the call never runs, as with strace's own signal.
    argv = [
      ...strace(kill.log, kill.syscall, `delay_enter=60s:when=${kill.when}`),
      ...(kill.path ? ["-P", kill.path] : []),
      // timeout forks the product and reaps it the moment it dies. strace, killed, cannot: its
      // orphan would be PID 1's to reap, which here takes up to 2 s, and until then the product's
      // pid looks alive (the next run keeps a temp file whose writer seems to be running).
      "timeout",
      String(Math.ceil((opts.timeoutMs ?? 60_000) / 1000) + 5),
      ...argv,
    ];
  } else if (opts.failAt) {
    const { syscall, errno, when = 1 } = opts.failAt;
    argv = [...strace("/dev/null", syscall, `error=${errno}:when=${when}`), ...argv];
  } else if (opts.traceTo) {
    argv = [...strace(opts.traceTo.file, opts.traceTo.syscalls), ...argv];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      env,
      cwd: opts.cwd ?? REPO,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    if (child.pid) opts.onSpawn?.(child.pid);
    const stopWatching = kill && killAtEntry(child, kill.log, kill.syscall, kill.when);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (stopWatching) stopWatching();
      if (kill) rmSync(path.dirname(kill.log), { recursive: true, force: true });
      // killAtEntry kills strace too; a tracee killed otherwise is strace's exit status 137
      const killed = signal ?? (kill && code === 137 ? "SIGKILL" : null);
      resolve({
        code: code ?? 128,
        signal: killed,
        stdout,
        stderr,
        log: parseLog(stderr),
        pid: child.pid ?? 0,
      });
    });
  });
}

/**
 * Watch strace's log for the `when`-th entry of `syscall` in one thread (strace counts per thread),
 * held there by delay_enter; then SIGKILL the process, and strace, whose exit releases it. Returns
 * the function that stops watching.
 */
function killAtEntry(strace: ChildProcess, log: string, syscall: string, when: number): () => void {
  const entry = new RegExp(`^(\\d+) +${syscall}\\(`, "gm");
  let done = false;
  const check = () => {
    if (done) return;
    const seen = new Map<string, number>();
    for (const [, tid] of readFileSync(log, "utf8").matchAll(entry)) {
      const n = (seen.get(tid) ?? 0) + 1;
      seen.set(tid, n);
      if (n < when) continue;
      done = true;
      // the process first: released by strace's exit without a fatal signal pending, it would run
      // the held call
      try {
        process.kill(Number(tid), "SIGKILL");
      } catch {
        // gone already: strace's exit status says how
      }
      strace.kill("SIGKILL");
      return;
    }
  };
  const watcher = watch(log, check);
  // inotify is the fast path; the poll covers an event coalesced away
  const poll = setInterval(check, 20);
  return () => {
    done = true;
    watcher.close();
    clearInterval(poll);
  };
}

export interface LiveCli {
  pid: number;
  /** stderr so far, parsed */
  log(): LogRecord[];
  stderr(): string;
  signal(sig: NodeJS.Signals): void;
  /** resolves when a log record matches (or rejects after `ms`) */
  waitForLog(pred: (r: LogRecord) => boolean, ms?: number): Promise<LogRecord>;
  exit: Promise<{ code: number; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

/** Start the bundle and keep it running (the service: `run`). */
export function startCli(
  world: World,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv } = {},
): LiveCli {
  const child = spawn(NODE[0], [...NODE.slice(1), BUNDLE, ...args], {
    env: { ...world.env(), ...opts.env },
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let done = false;
  const waiters: (() => void)[] = [];
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stdout.resume();
  const exit = new Promise<{ code: number; signal: NodeJS.Signals | null }>((r) =>
    child.on("close", (code, signal) => {
      done = true;
      for (const w of waiters.splice(0)) w();
      r({ code: code ?? 128, signal });
    }),
  );
  return {
    pid: child.pid!,
    log: () => parseLog(stderr),
    stderr: () => stderr,
    signal: (sig) => void child.kill(sig),
    running: () => !done,
    exit,
    async waitForLog(pred, ms = 30_000) {
      const until = Date.now() + ms;
      for (;;) {
        const hit = parseLog(stderr).find(pred);
        if (hit) return hit;
        if (done || Date.now() > until)
          throw new Error(
            `no matching log record (${done ? "the process exited" : "timed out"}); stderr: ${stderr.slice(-800)}`,
          );
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 100);
        });
      }
    },
  };
}

/** logfmt as src/log.ts writes it: `k=v` or `k="JSON string"`. */
export function parseLog(text: string): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("level=")) continue;
    const rec: LogRecord = {};
    const re = /([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s]*)/g;
    for (const m of line.matchAll(re))
      rec[m[1]] = m[2].startsWith('"') ? (JSON.parse(m[2]) as string) : m[2];
    out.push(rec);
  }
  return out;
}

/**
 * The targets of every rename a run makes, in order, relative to the root. strace's -P matches only
 * a rename's first path (the temp file, whose name holds a pid), so crash tests kill "at the Nth
 * rename" with N taken from this sequence, then check which temp file the kill left behind.
 */
export async function renameTargets(w: World, args: string[]): Promise<string[]> {
  const file = path.join(w.root, "..", `rename-trace-${process.pid}-${Date.now()}.log`);
  const r = await runCli(w, args, { traceTo: { file, syscalls: "rename" } });
  if (r.code !== 0) throw new Error(`the probe run failed: ${lastError(r)}`);
  const out: string[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /rename\("[^"]*", "([^"]*)"\) = 0/.exec(line);
    if (m && m[1].startsWith(w.root)) out.push(m[1].slice(w.root.length));
  }
  return out;
}

// ---- the root, byte for byte -----------------------------------------------------------------------

export type Snapshot = Map<string, string>;

/** Every entry under the root: type, mode, and content hash or link target. The lock file is left out. */
export function snapshotRoot(root: string): Snapshot {
  const snap: Snapshot = new Map();
  const walk = (rel: string) => {
    const abs = path.join(root, rel);
    const st = lstatSync(abs);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) return void snap.set(rel, `link ${readlinkSync(abs)}`);
    if (st.isDirectory()) {
      if (rel) snap.set(rel, `dir ${mode}`);
      for (const name of readdirSync(abs).sort()) walk(path.join(rel, name));
      return;
    }
    if (rel === "run/eni-dpdk.lock") return;
    if (st.isFile()) {
      let content: Buffer;
      try {
        content = readFileSync(abs);
      } catch {
        return void snap.set(rel, `file ${mode} unreadable`); // write-only sysfs attributes
      }
      snap.set(
        rel,
        `file ${mode} ${createHash("sha256").update(content).digest("hex").slice(0, 16)}`,
      );
      return;
    }
    snap.set(rel, `other ${mode}`);
  };
  walk("");
  return snap;
}

/** Differences between two snapshots, one line each ("+ path", "- path", "~ path"). */
export function diffSnapshots(a: Snapshot, b: Snapshot): string[] {
  const out: string[] = [];
  for (const [k, v] of a)
    if (!b.has(k)) out.push(`- ${k}`);
    else if (b.get(k) !== v) out.push(`~ ${k} (${v} → ${b.get(k)})`);
  for (const k of b.keys()) if (!a.has(k)) out.push(`+ ${k}`);
  return out;
}

// ---- worlds ------------------------------------------------------------------------------------------

/** A world with the sample config's ENIs reduced to what a case needs; closed by the test's teardown. */
export async function world(t: Test, opts: WorldOptions = {}): Promise<World> {
  const w = await World.start(opts);
  t.teardown(() => w.close());
  return w;
}

/** Write a file under the world's root (parents 0755), with a mode. */
export function put(w: World, rel: string, content: string | Buffer, mode = 0o644): string {
  const file = path.join(w.root, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  chmodSync(file, mode);
  return file;
}

/** An ENI someone else attaches (a launch template, a lifecycle hook), as a config's [[eni]] block. */
export function externalEniToml(
  o: { name?: string; deviceIndex?: number; resourceName?: string } = {},
): string {
  return `
[[eni]]
name = "${o.name ?? "data1"}"
attach = "external"
device_index = ${o.deviceIndex ?? 1}
subnet_id = "${SUBNET_A}"
security_group_ids = ["${SG_DPDK}"]
  [eni.dpdk]
  resource_name = "${o.resourceName ?? "amazon.com/ena_dpdk"}"
`;
}

/** A small valid config: one DPDK ENI (data1) and one kernel ENI (kern1) in SUBNET_A. */
export function baseToml(extra = ""): string {
  return `[service]
sources = ["file", "user-data", "tags"]
reconcile_interval_seconds = 0

[[eni]]
name = "data1"
device_index = 1
subnet_id = "subnet-0aaaaaaaaaaaaaaa1"
security_group_ids = ["sg-0dddddddddddddddd"]
  [eni.dpdk]
  resource_name = "amazon.com/ena_dpdk"

[[eni]]
name = "kern1"
device_index = 2
subnet_id = "subnet-0aaaaaaaaaaaaaaa1"
security_group_ids = ["sg-0dddddddddddddddd"]
mtu = 9001
  [eni.dpdk]
  enabled = false
${extra}`;
}

/** Apply once and require success: the converged node many cases start from. */
export async function converge(t: Test, w: World, args: string[] = ["apply"]): Promise<CliResult> {
  const r = await runCli(w, args);
  t.equal(r.code, 0, `converged (${args.join(" ")}): ${lastError(r)}`);
  return r;
}

export function lastError(r: CliResult): string {
  const errs = r.log.filter((l) => l.level === "error").map((l) => l.msg);
  return errs.length ? errs.join(" | ") : r.stderr.slice(-600);
}

export interface Rejection {
  /** default 2 */
  code?: number;
  /** the source each problem must name: a file path, `user-data part N`, `tag <key>`, `NodeENI <name>`, `env NAME` */
  source: RegExp | string;
  /** the key path it must name */
  key: RegExp | string;
  /** the message must say this (what was expected) */
  message?: RegExp;
}

const asRe = (x: RegExp | string) =>
  typeof x === "string" ? new RegExp(x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : x;

/**
 * The promise for bad input: exit 2, an error line naming the source and the key (and saying what
 * was expected), the root byte-identical, and no mutating EC2 call.
 */
export async function expectRejected(
  t: Test,
  w: World,
  args: string[],
  want: Rejection,
  opts: RunOptions = {},
): Promise<CliResult> {
  const before = snapshotRoot(w.root);
  const mutating = w.ec2.mutatingCalls();
  const r = await runCli(w, args, opts);
  t.equal(r.code, want.code ?? 2, `exit ${want.code ?? 2}: ${lastError(r)}`);
  const named = r.log.filter(
    (l) =>
      l.level === "error" &&
      asRe(want.source).test(l.source ?? l.msg ?? "") &&
      asRe(want.key).test(l.key ?? l.msg ?? ""),
  );
  t.ok(
    named.length > 0,
    `an error names source ${want.source} and key ${want.key}; got: ${lastError(r)}`,
  );
  if (want.message)
    t.ok(
      named.some((l) => want.message!.test(l.msg ?? "")),
      `the message says ${want.message}; got: ${named.map((l) => l.msg).join(" | ") || lastError(r)}`,
    );
  t.same(diffSnapshots(before, snapshotRoot(w.root)), [], "the root is byte-identical");
  t.equal(w.ec2.mutatingCalls() - mutating, 0, "no mutating EC2 call");
  return r;
}

/** After any run: the primary NIC is on its kernel driver, with its netdev, never overridden. */
export function assertPrimaryUntouched(t: Test, w: World, bdf = "0000:00:05.0"): void {
  t.equal(w.sim.driverOf(bdf), "ena", "the primary is on ena");
  t.ok(w.sim.netdevOf(bdf), "the primary has its netdev");
  const ov = readFileSync(w.sim.p(`/sys/bus/pci/devices/${bdf}/driver_override`), "utf8").trim();
  t.ok(ov === "(null)" || ov === "", `the primary's driver_override is unset (reads "${ov}")`);
}

/** Every PCI NIC has a driver: a crash never leaves one driverless. */
export function assertNoneDriverless(t: Test, w: World): void {
  const devs = readdirSync(w.sim.p("/sys/bus/pci/devices"));
  const driverless = devs.filter((bdf) => !w.sim.driverOf(bdf));
  t.same(driverless, [], "no PCI device is left without a driver");
}
