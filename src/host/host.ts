// The one host layer: every path under /sys, /proc, /dev, /etc, /run, /var/lib is resolved under a
// root, so the same code runs on a fake root in unit tests, on a real kernel in QEMU, and on EC2.
import { spawn } from "node:child_process";
import {
  chmod,
  close,
  closeSync,
  constants as fsc,
  fchmod,
  fchmodSync,
  fstatSync,
  fsync,
  lstatSync,
  mkdir,
  open,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  unlink,
  write,
  writeFile,
  writeFileSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { errnoText, OpError } from "../core/errors.js";
import { isoTime, pollUntil, SETTLE } from "../core/deadline.js";
import { childEnv, pidAlive, run } from "../core/process.js";
import { inputs } from "../core/inputs.js";
import { parseTempFile, tempFileFor } from "../core/temp-file.js";
import { RUN_DIR, VAR_DIR } from "./root.js";
import { Turns } from "../core/turns.js";
import type { Logger } from "../core/log.js";

/** The reads of the host layer (Host.probe). */
export const HOST_READS = [
  "read",
  "exists",
  "stat",
  "lstat",
  "owner",
  "link",
  "target",
  "rdev",
  "resolve",
  "list",
] as const;
export type HostRead = (typeof HOST_READS)[number];
/** What the trust rules of our own directories look at (checkOwnDirs). */
interface Owner {
  symlink: boolean;
  dir: boolean;
  mode: number;
  uid: number;
}

/** The host-wide lock (flock). */
export const LOCK_PATH = "/run/eni-dpdk.lock";

/** Who holds the host lock, as the holder wrote it into the lock file: for status and for waiters. */
export interface LockHolder {
  pid: number;
  /** its arguments, e.g. "run" or "apply --full" */
  command: string;
  since: string;
}
/** The holder's record: one write at offset 0, always this long, so a reader sees one record whole. */
const LOCK_RECORD_BYTES = 512;
/** How long a taker waits before it says who it is waiting for. */
const LOCK_WAIT_NOTICE_MS = 1000;
const OWN_DIRS = new Set([RUN_DIR, VAR_DIR]);

export class Host {
  /** Count of mutating writes made through this host (sysfs and files); tests assert on it. */
  writes = 0;
  /** What those writes were, in order, for the message when a failure is found after a change. */
  readonly changes: string[] = [];

  /** How long to wait for a sysfs effect before calling it absent (see settled). */
  readonly settleMs: number;
  /** Writes of one file, one at a time: each compares with what the one before it left. */
  private readonly fileTurns = new Turns();

  constructor(
    readonly root: string = "/",
    opts: { settleMs?: number } = {},
  ) {
    this.settleMs = opts.settleMs ?? 2000;
    this.root = path.resolve(root);
  }

  /**
   * Wait for a sysfs effect: `probe` until it returns a value, for at most `ms`. A real kernel acts
   * on a write before the write returns, so the first read shows it; the bound serves the simulated
   * kernel, whose reactor answers a moment later, and failures, which are only failures after it.
   */
  settled<T>(
    probe: () => Promise<T | undefined | false> | T | undefined | false,
    ms = this.settleMs,
  ): Promise<T | undefined> {
    return pollUntil(probe, { within: ms, backoff: SETTLE });
  }

  /**
   * A program eni-dpdk runs on the host (modprobe): resolved under the root like every host path,
   * so a simulated root brings its own; the plain name (PATH) when the root has none.
   */
  program(name: string): string {
    for (const dir of ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
      let st: unknown;
      try {
        st = this.observed("stat", `${dir}/${name}`);
      } catch {
        continue; // not in this directory
      }
      if ((st as { kind?: string } | null)?.kind === "file") return this.path(`${dir}/${name}`);
    }
    return name;
  }

  /** Our own bookkeeping (state, journal, status) is not a change to the node worth reporting. */
  private noteChange(what: string, abs: string): void {
    if (!abs.startsWith(`${VAR_DIR}/`) && !abs.startsWith(`${RUN_DIR}/`)) this.changes.push(what);
  }

  /** Absolute host path (e.g. `/sys/bus/pci`) → path under the root. */
  path(abs: string): string {
    if (!abs.startsWith("/")) throw new Error(`host path must be absolute: ${abs}`);
    if (this.root === "/") return abs;
    // A clean path needs no join (a boot resolves thousands); one with `.`, `..` or `//` is
    // normalized and must stay under the root.
    if (!abs.includes("/.") && !abs.includes("//")) return this.root + abs;
    const joined = path.join(this.root, abs);
    if (!joined.startsWith(`${this.root}/`) && joined !== this.root)
      throw new Error(`host path leaves the root ${this.root}: ${abs}`);
    return joined;
  }

  // Reads are synchronous: sysfs, procfs and our small files answer from memory in microseconds,
  // while an async read costs four thread-pool round trips; a boot makes hundreds of them.

  /**
   * Every read of the host, as data: the one implementation of each, which the methods below call
   * and record (core/inputs.ts), and which an apply on a converged node replays to show that
   * nothing changed (commands/unchanged.ts). Absent is null.
   */
  probe(op: HostRead, abs: string): unknown {
    const p = this.path(abs);
    try {
      switch (op) {
        case "read":
          return readFileSync(p, "utf8");
        case "exists":
          lstatSync(p);
          return true;
        case "stat":
        case "lstat": {
          const st = (op === "stat" ? statSync : lstatSync)(p);
          const kind = st.isSymbolicLink()
            ? "symlink"
            : st.isFile()
              ? "file"
              : st.isDirectory()
                ? "dir"
                : "other";
          return { kind, size: st.size };
        }
        case "owner": {
          const st = lstatSync(p);
          return {
            symlink: st.isSymbolicLink(),
            dir: st.isDirectory(),
            mode: st.mode & 0o7777,
            uid: st.uid,
          } satisfies Owner;
        }
        case "link":
          return path.basename(readlinkSync(p));
        case "target":
          return readlinkSync(p);
        case "rdev": {
          const st = statSync(p);
          return st.isCharacterDevice() ? `${st.rdev}` : null;
        }
        case "resolve": {
          const real = realpathSync(p);
          if (this.root === "/") return real;
          const root = realpathSync(this.root);
          return real.startsWith(`${root}/`) ? real.slice(root.length) : null;
        }
        case "list":
          return readdirSync(p).sort();
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (isNotFound(e) || (code === "EINVAL" && (op === "link" || op === "target")))
        return op === "exists" ? false : op === "list" ? [] : null;
      if (code === "EACCES" || code === "EPERM") throw this.refused(abs, e);
      throw e;
    }
  }

  /** A read the system refused: which path, and, for a user other than root, who may read it. */
  private refused(abs: string, e: unknown): OpError {
    const shown = this.root === "/" ? abs : `${abs} (under --root ${this.root})`;
    const asRoot = process.geteuid?.() === 0;
    return Object.assign(
      new OpError(
        `cannot read ${shown}: ${errnoText(e)}`,
        asRoot
          ? `check its mode and owner (ls -ld ${this.path(abs)}) and for an LSM denial (dmesg | grep -i denied)`
          : "eni-dpdk reads root's files (its state is mode 0600): run the same command as root (sudo eni-dpdk …)",
        { path: abs },
        { cause: e },
      ),
      { code: (e as NodeJS.ErrnoException).code },
    );
  }

  private observed(op: HostRead, abs: string): unknown {
    return inputs.observe(op, abs, () => this.probe(op, abs));
  }

  async read(abs: string): Promise<string | undefined> {
    return (this.observed("read", abs) as string | null) ?? undefined;
  }

  /** Trimmed content of a one-line attribute file, or undefined when absent. */
  async attr(abs: string): Promise<string | undefined> {
    const s = await this.read(abs);
    return s === undefined ? undefined : s.trim();
  }

  async exists(abs: string): Promise<boolean> {
    return this.observed("exists", abs) as boolean;
  }

  /**
   * What is at a path: its kind and size; `follow` looks through a symlink as a reader would,
   * otherwise a symlink is reported as one. Undefined when nothing is there.
   */
  async stat(
    abs: string,
    opts: { follow?: boolean } = {},
  ): Promise<{ kind: "file" | "dir" | "symlink" | "other"; size: number } | undefined> {
    return (
      (this.observed(opts.follow ? "stat" : "lstat", abs) as {
        kind: "file" | "dir" | "symlink" | "other";
        size: number;
      } | null) ?? undefined
    );
  }

  /** Basename of a symlink's target (e.g. the driver name from `<dev>/driver`), or undefined. */
  async linkName(abs: string): Promise<string | undefined> {
    return (this.observed("link", abs) as string | null) ?? undefined;
  }

  /** A symlink's target as written (e.g. `/dev/vfio/noiommu-16` from `/proc/<pid>/fd/<n>`), or undefined. */
  async linkTarget(abs: string): Promise<string | undefined> {
    return (this.observed("target", abs) as string | null) ?? undefined;
  }

  /**
   * The device number of the character device a path leads to (through symlinks, /proc's fd links
   * included), or undefined for anything else.
   */
  async charDevice(abs: string): Promise<string | undefined> {
    return (this.observed("rdev", abs) as string | null) ?? undefined;
  }

  /**
   * Where a path really is once every symlink is resolved, as a host path (under the root), or
   * undefined when it does not exist or resolves outside the root.
   */
  async resolve(abs: string): Promise<string | undefined> {
    return (this.observed("resolve", abs) as string | null) ?? undefined;
  }

  async list(abs: string): Promise<string[]> {
    return this.observed("list", abs) as string[];
  }

  /** Write a sysfs/procfs attribute: a plain open+write, never a rename (the kernel acts on write). */
  async writeAttr(abs: string, value: string): Promise<void> {
    inputs.spoil(`wrote ${abs}`);
    this.writes++;
    this.noteChange(`wrote ${JSON.stringify(value.trim())} to ${abs}`, abs);
    try {
      await withFd(this.path(abs), fsc.O_WRONLY | fsc.O_TRUNC, 0, (fd) =>
        viaCallback((cb) => write(fd, value, cb)),
      );
    } catch (e) {
      // "EINVAL: invalid argument, write" says neither which attribute nor what was written
      throw Object.assign(
        new Error(`the kernel refused ${JSON.stringify(value.trim())} in ${abs}: ${errnoText(e)}`, {
          cause: e,
        }),
        { code: (e as NodeJS.ErrnoException).code },
      );
    }
  }

  /**
   * Write a file atomically (temp in the same directory, fsync, rename, fsync the directory), only
   * when the content differs. Returns true when the file changed. Under /run (tmpfs, gone at
   * reboot anyway) the fsyncs buy nothing and are skipped, and the writes are synchronous; the
   * rename still makes it atomic.
   */
  writeFileAtomic(abs: string, data: string, mode = 0o644): Promise<boolean> {
    return this.fileTurns.run(abs, () => this.writeFileAtomicNow(abs, data, mode));
  }

  private async writeFileAtomicNow(abs: string, data: string, mode: number): Promise<boolean> {
    const target = this.path(abs);
    const current = await this.read(abs);
    if (current === data) return false;
    const dir = path.dirname(target);
    // Every write into our own directories checks them first: never through a planted symlink.
    const own = [...OWN_DIRS].filter((d) => abs.startsWith(`${d}/`));
    if (own.length) this.checkOwnDirs(own);
    await this.ensureDir(path.posix.dirname(abs));
    const tmp = tempFileFor(target);
    if (!inputs.isOutput(abs)) inputs.spoil(`wrote ${abs}`);
    this.writes++;
    this.noteChange(`wrote ${abs}`, abs);
    // O_EXCL|O_NOFOLLOW: a file or symlink planted at the temp name is never written through.
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
    let renamed = false;
    try {
      if (abs.startsWith("/run/")) {
        // tmpfs, from memory: the thread pool's round trips would cost more than the writes
        const fd = openSync(tmp, flags, mode);
        try {
          writeFileSync(fd, data);
          fchmodSync(fd, mode);
        } finally {
          closeSync(fd);
        }
        this.renameInto(tmp, target);
        return true;
      }
      await withFd(tmp, flags, mode, async (fd) => {
        await viaCallback((cb) => writeFile(fd, data, cb));
        await viaCallback((cb) => fchmod(fd, mode, cb));
        await viaCallback((cb) => fsync(fd, cb));
      });
      this.renameInto(tmp, target);
      renamed = true;
      await fsyncDir(dir);
      return true;
    } catch (e) {
      // A full disk leaves no half-written temp to fill it further; a temp planted at the name
      // (EEXIST) is not ours to remove.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") rmSync(tmp, { force: true });
      throw writeFailure(abs, e, renamed);
    }
  }

  /**
   * Renames are synchronous (a metadata change; the data was synced before): all of a run's
   * renames are then the main thread's, in the order made, which the crash suite counts on.
   */
  private renameInto(tmp: string, target: string): void {
    try {
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  /** Rename a file (e.g. one we must not overwrite, moved aside). */
  async rename(fromAbs: string, toAbs: string): Promise<void> {
    inputs.spoil(`renamed ${fromAbs}`);
    renameSync(this.path(fromAbs), this.path(toAbs));
    this.writes++;
    this.noteChange(`renamed ${fromAbs} to ${toAbs}`, fromAbs);
  }

  /** Remove a file; returns true when something was removed. */
  remove(abs: string): Promise<boolean> {
    return this.fileTurns.run(abs, async () => {
      inputs.spoil(`removed ${abs}`);
      try {
        await viaCallback((cb) => unlink(this.path(abs), cb));
        this.writes++;
        this.noteChange(`removed ${abs}`, abs);
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw e;
      }
    });
  }

  /**
   * Create a directory and any missing parents with `mode`, whatever the umask (mkdir's mode is
   * masked by it: 0777 under umask 000). Directories that exist are left as they are.
   */
  async ensureDir(abs: string, mode = 0o755): Promise<void> {
    const missing: string[] = [];
    for (let d = abs; d !== "/" && !(await this.exists(d)); d = path.posix.dirname(d))
      missing.unshift(d);
    for (const d of missing) {
      inputs.spoil(`made ${d}`);
      const want = OWN_DIRS.has(d) ? ownDirMode(d) : mode;
      try {
        await viaCallback((cb) => mkdir(this.path(d), want, cb));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        continue;
      }
      await viaCallback((cb) => chmod(this.path(d), want, cb));
    }
  }

  /**
   * Refuse to work through our own directories when they are symlinks, not directories, or writable
   * by group or others: whoever could swap them could redirect root's writes or forge the state.
   */
  checkOwnDirs(dirs: Iterable<string> = OWN_DIRS): void {
    for (const d of dirs) {
      const st = this.observed("owner", d) as Owner | null;
      if (!st) continue;
      const where = this.path(d);
      if (st.symlink) {
        throw new OpError(
          `${where} is a symlink (to ${readlinkSync(where)}); eni-dpdk never writes through a symlinked directory of its own`,
          `replace it with a real directory: rm ${where} && mkdir -m ${ownDirMode(d).toString(8)} ${where}; nothing was changed`,
          { path: where },
        );
      }
      if (!st.dir)
        throw new OpError(
          `${where} is not a directory`,
          `move it aside; eni-dpdk recreates ${where}; nothing was changed`,
          { path: where },
        );
      if (st.mode & 0o022) {
        throw new OpError(
          `${where} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`,
          `chmod go-w ${where}; nothing was changed`,
          { path: where },
        );
      }
      const euid = process.geteuid?.();
      if (euid !== undefined && st.uid !== 0 && st.uid !== euid) {
        throw new OpError(
          `${where} is owned by uid ${st.uid}, not root`,
          `chown root: ${where}; nothing was changed`,
          { path: where },
        );
      }
    }
  }

  /**
   * Remove the temp files `.<name>.<pid>.<ms>.tmp` that a writer killed between write and rename left
   * in `dir`. Only those of processes that no longer run: a live writer's temp is its own.
   */
  async cleanStaleTemps(dir: string): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await this.list(dir)) {
      const pid = parseTempFile(name)?.pid;
      if (!pid || pid === process.pid) continue;
      inputs.spoil(`probed process ${pid}`);
      if (pidAlive(pid)) continue;
      if (await this.remove(path.posix.join(dir, name))) removed.push(path.posix.join(dir, name));
    }
    return removed;
  }

  /**
   * Run `fn` holding the host-wide lock `<root>/run/eni-dpdk.lock` with flock(2) semantics across
   * processes. Node has no flock, so flock(1) holds it for us: it takes the lock, then runs `cat`,
   * which echoes our probe line back only once the lock is held; closing stdin releases it, and so
   * does our death (the pipe closes).
   */
  async withLock<T>(
    fn: (lock: { before?: LockRecord }) => Promise<T>,
    opts: LockOptions = {},
  ): Promise<T> {
    const lock = await this.acquireLock(opts);
    try {
      return await fn(lock);
    } finally {
      await lock.release();
    }
  }

  /**
   * The lock as a handle, for callers that start taking it before they need it (see withLock).
   * `before` is the last taker's record as this one found it, when that process is alive (`run`
   * between its passes).
   */
  async acquireLock({ timeoutMs = 120_000, log }: LockOptions = {}): Promise<{
    release(): Promise<void>;
    before?: LockRecord;
  }> {
    const lockPath = this.path(LOCK_PATH);
    await this.ensureDir(path.posix.dirname(LOCK_PATH));
    // One descriptor for the whole hold: the mode set, the last record read, ours written twice.
    const fd = openLockFile(lockPath);
    const child = spawn(
      "flock",
      ["--exclusive", "--timeout", String(Math.ceil(timeoutMs / 1000)), lockPath, "cat"],
      {
        stdio: ["pipe", "pipe", "pipe"],
        env: childEnv(),
      },
    );
    const held = new Promise<void>((resolve, reject) => {
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("locked\n")) resolve();
      });
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", (e) =>
        reject(
          new OpError(
            `cannot take the host lock ${lockPath}: ${e.message}`,
            "install util-linux (flock)",
          ),
        ),
      );
      child.on("exit", (code) => {
        const h = this.lockHolder();
        reject(
          new OpError(
            `host lock ${lockPath} not acquired within ${timeoutMs} ms${h ? `: held by ${holderText(h)}` : ""} (flock exit ${code}${err ? `: ${err.trim()}` : ""})`,
            "another eni-dpdk is still running; see `systemctl status eni-dpdk` and `ps -C eni-dpdk`",
          ),
        );
      });
    });
    child.stdin.write("locked\n");
    // after a second of waiting: who holds it, when the lock file says
    const notice =
      log &&
      setTimeout(() => {
        const h = this.lockHolder();
        log.info("waiting for the host lock", {
          held_by: h ? holderText(h) : "a process that did not say who it is",
        });
      }, LOCK_WAIT_NOTICE_MS);
    try {
      await held;
    } catch (e) {
      closeSync(fd);
      throw e;
    } finally {
      clearTimeout(notice);
    }
    const before = liveRecord(readRecord(fd));
    const command = process.argv.slice(2).join(" ").slice(0, 200);
    writeRecord(fd, { pid: process.pid, command, since: isoTime() });
    let released = false;
    return {
      ...(before ? { before } : {}),
      // EOF ends cat, then flock, which drops the lock as it exits. Nothing waits for that: every
      // change was made while it was held, and a waiting taker gets it the moment it is dropped.
      // (Waiting cost a boot ~3 ms, the two processes' exits.)
      release: async () => {
        // once: a second "free" could land on the record of the next holder
        if (released) return;
        released = true;
        writeRecord(fd, { free: true, pid: process.pid, command, since: isoTime() });
        closeSync(fd);
        child.stdin.end();
      },
    };
  }

  /** The holder the lock file names, when it names a live process that holds it; else undefined. */
  lockHolder(): LockHolder | undefined {
    let text: string;
    try {
      text = readFileSync(this.path(LOCK_PATH), "utf8");
    } catch {
      return undefined;
    }
    const r = liveRecord(text);
    return r && !r.free ? r.holder : undefined;
  }

  /** Whether a pass holds the lock now (flock --nonblock); undefined when flock cannot say. */
  async lockHeld(): Promise<boolean | undefined> {
    // flock(1) would create a missing lock file: a reader must not
    if (!this.probe("exists", LOCK_PATH)) return false;
    try {
      const r = await run(["flock", "--nonblock", "--shared", this.path(LOCK_PATH), "true"], {
        timeoutMs: 5000,
      });
      return r.code === 0 ? false : r.code === 1 ? true : undefined;
    } catch {
      return undefined;
    }
  }
}

export interface LockOptions {
  timeoutMs?: number;
  /** told, after a second of waiting, who holds the lock */
  log?: Pick<Logger, "info">;
}

/** A taker's record in the lock file, and whether it has let the lock go since. */
export interface LockRecord {
  holder: LockHolder;
  free: boolean;
}

/**
 * The lock file, root's alone (0600), open for the hold. flock(2) needs only read access: a lock
 * file others can open (flock(1) creates it 0666 less the umask) is a lock any local user can take
 * and hold, and every pass would wait behind them.
 */
function openLockFile(lockPath: string): number {
  const fd = openSync(lockPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
  try {
    const st = fstatSync(fd);
    if (st.uid === process.geteuid?.() && st.mode & 0o077) fchmodSync(fd, 0o600);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function readRecord(fd: number): string {
  const buf = Buffer.alloc(LOCK_RECORD_BYTES);
  try {
    return buf.toString("utf8", 0, readSync(fd, buf, 0, LOCK_RECORD_BYTES, 0));
  } catch {
    return "";
  }
}

/** Written only while the lock is held, at offset 0; best effort, as it only informs. */
function writeRecord(fd: number, record: LockHolder & { free?: true }): void {
  let text = JSON.stringify(record);
  if (Buffer.byteLength(text) >= LOCK_RECORD_BYTES)
    text = JSON.stringify({ ...record, command: "" });
  try {
    writeSync(fd, text.padEnd(LOCK_RECORD_BYTES - 1, " ") + "\n", 0);
  } catch {
    // the lock works without it: status and waiters then do not learn who holds it
  }
}

/** A record of this shape naming a live process; undefined otherwise. */
function liveRecord(text: string): LockRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<LockHolder> & { free?: boolean };
    if (!Number.isInteger(r.pid) || r.pid! <= 0) return undefined;
    if (typeof r.command !== "string" || typeof r.since !== "string") return undefined;
    if (!pidAlive(r.pid!)) return undefined;
    return { holder: { pid: r.pid!, command: r.command, since: r.since }, free: !!r.free };
  } catch {
    return undefined;
  }
}

/** "pid 1234 (eni-dpdk run) since 2026-12-08T03:35:01.000Z" */
export function holderText(h: LockHolder): string {
  return `pid ${h.pid} (eni-dpdk ${h.command || "?"}) since ${h.since}`;
}

/**
 * A failed write as the SRE needs it: the file, the reason and what to do. ENOSPC at 3 a.m. must
 * say which filesystem is full. Other errors (a planted symlink, EEXIST) keep their own message.
 */
function writeFailure(abs: string, e: unknown, renamed: boolean): unknown {
  const code = (e as NodeJS.ErrnoException)?.code;
  const dir = path.posix.dirname(abs);
  const hints: Record<string, string> = {
    ENOSPC: `free space on the filesystem that holds ${dir} (df -h ${dir})`,
    EDQUOT: `raise root's quota on the filesystem that holds ${dir}`,
    EROFS: `${dir} must be on a writable filesystem (mount | grep ' ro,')`,
    EIO: `the disk under ${dir} failed a write; see dmesg`,
  };
  const hint = code ? hints[code] : undefined;
  if (!hint) return e;
  return new OpError(
    renamed
      ? `${abs} was replaced, but its directory could not be synced: ${errnoText(e)}; a crash now may lose it`
      : `cannot write ${abs}: ${errnoText(e)}; nothing of it was written`,
    `${hint}, then run \`eni-dpdk apply\` again`,
    { path: abs },
    { cause: e },
  );
}

/** /var/lib/eni-dpdk holds the state: root only. /run/eni-dpdk holds the status, which anyone may read. */
function ownDirMode(d: string): number {
  return d === VAR_DIR ? 0o700 : 0o755;
}

function fsyncDir(dir: string): Promise<void> {
  return withFd(dir, fsc.O_RDONLY, 0, (fd) => viaCallback((cb) => fsync(fd, cb)));
}

/**
 * fs's callback forms as promises, off the main thread as fs/promises is: that module would cost a
 * boot its load (about 1 ms) and a FileHandle per file, for the few writes a boot makes.
 */
function viaCallback(
  start: (cb: (e: NodeJS.ErrnoException | null) => void) => void,
): Promise<void> {
  return new Promise((resolve, reject) => start((e) => (e ? reject(e) : resolve())));
}

async function withFd<T>(
  p: string,
  flags: number,
  mode: number,
  use: (fd: number) => Promise<T>,
): Promise<T> {
  const fd = await new Promise<number>((resolve, reject) =>
    open(p, flags, mode, (e, fd) => (e ? reject(e) : resolve(fd))),
  );
  try {
    return await use(fd);
  } finally {
    await viaCallback((cb) => close(fd, cb));
  }
}

export function isNotFound(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}
