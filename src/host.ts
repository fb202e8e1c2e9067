// The one host layer: every path under /sys, /proc, /dev, /etc, /run, /var/lib is resolved under a
// root, so the same code runs on a fake root in unit tests, on a real kernel in QEMU, and on EC2.
import { spawn } from "node:child_process";
import { constants as fsc, lstatSync, promises as fs, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { OpError } from "./errors.js";

export function resolveRoot(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(flag || env.ENI_DPDK_ROOT || "/");
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class Host {
  /** Count of mutating writes made through this host (sysfs and files); tests assert on it. */
  writes = 0;

  constructor(readonly root: string = "/") {}

  /** Absolute host path (e.g. `/sys/bus/pci`) → path under the root. */
  path(abs: string): string {
    if (!abs.startsWith("/")) throw new Error(`host path must be absolute: ${abs}`);
    return this.root === "/" ? abs : path.join(this.root, abs);
  }

  // Reads are synchronous: sysfs, procfs and our small files answer from memory in microseconds,
  // while an async read costs four thread-pool round trips; a boot makes hundreds of them.

  async read(abs: string): Promise<string | undefined> {
    try {
      return readFileSync(this.path(abs), "utf8");
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Trimmed content of a one-line attribute file, or undefined when absent. */
  async attr(abs: string): Promise<string | undefined> {
    const s = await this.read(abs);
    return s === undefined ? undefined : s.trim();
  }

  async exists(abs: string): Promise<boolean> {
    try {
      lstatSync(this.path(abs));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** Basename of a symlink's target (e.g. the driver name from `<dev>/driver`), or undefined. */
  async linkName(abs: string): Promise<string | undefined> {
    try {
      return path.basename(readlinkSync(this.path(abs)));
    } catch (e) {
      if (isNotFound(e) || (e as NodeJS.ErrnoException).code === "EINVAL") return undefined;
      throw e;
    }
  }

  async list(abs: string): Promise<string[]> {
    try {
      return readdirSync(this.path(abs)).sort();
    } catch (e) {
      if (isNotFound(e) || (e as NodeJS.ErrnoException).code === "ENOTDIR") return [];
      throw e;
    }
  }

  /** Write a sysfs/procfs attribute: a plain open+write, never a rename (the kernel acts on write). */
  async writeAttr(abs: string, value: string): Promise<void> {
    this.writes++;
    const fh = await fs.open(this.path(abs), fsc.O_WRONLY | fsc.O_TRUNC);
    try {
      await fh.write(value);
    } finally {
      await fh.close();
    }
  }

  /**
   * Write a file atomically (temp in the same directory, fsync, rename, fsync the directory), only
   * when the content differs. Returns true when the file changed. Under /run (tmpfs, gone at
   * reboot anyway) the fsyncs buy nothing and are skipped; the rename still makes it atomic.
   */
  async writeFileAtomic(abs: string, data: string, mode = 0o644): Promise<boolean> {
    const target = this.path(abs);
    const current = await this.read(abs);
    if (current === data) return false;
    const dir = path.dirname(target);
    await fs.mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`);
    this.writes++;
    const durable = !abs.startsWith("/run/");
    const fh = await fs.open(tmp, "w", mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fs.rename(tmp, target);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    if (durable) await fsyncDir(dir);
    return true;
  }

  /** Remove a file; returns true when something was removed. */
  async remove(abs: string): Promise<boolean> {
    try {
      await fs.unlink(this.path(abs));
      this.writes++;
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /**
   * Run `fn` holding the host-wide lock `<root>/run/eni-dpdk.lock` with flock(2) semantics across
   * processes. Node has no flock, so flock(1) holds it for us: it takes the lock, then runs `cat`,
   * which echoes our probe line back only once the lock is held; closing stdin releases it, and so
   * does our death (the pipe closes).
   */
  async withLock<T>(fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
    const lock = await this.acquireLock(timeoutMs);
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  }

  /** The lock as a handle, for callers that start taking it before they need it (see withLock). */
  async acquireLock(timeoutMs = 120_000): Promise<{ release(): Promise<void> }> {
    const lockPath = this.path("/run/eni-dpdk.lock");
    await fs.mkdir(path.dirname(lockPath), { recursive: true });
    const child = spawn("flock", ["--exclusive", "--timeout", String(Math.ceil(timeoutMs / 1000)), lockPath, "cat"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const held = new Promise<void>((resolve, reject) => {
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("locked\n")) resolve();
      });
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", (e) =>
        reject(new OpError(`cannot take the host lock ${lockPath}: ${e.message}`, "install util-linux (flock)")),
      );
      child.on("exit", (code) =>
        reject(
          new OpError(
            `host lock ${lockPath} not acquired within ${timeoutMs} ms (flock exit ${code}${err ? `: ${err.trim()}` : ""})`,
            "another eni-dpdk is still running; see `systemctl status eni-dpdk` and `ps -C eni-dpdk`",
          ),
        ),
      );
    });
    child.stdin.write("locked\n");
    await held;
    return {
      release: () => {
        child.stdin.end();
        return new Promise<void>((r) => (child.exitCode !== null ? r() : child.once("exit", () => r())));
      },
    };
  }
}

/** Spawn a program with an argv array (never a shell) and collect its output. */
export function run(argv: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty argv");
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
      timeout: opts.timeoutMs ?? 60_000,
      shell: false,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    // A child that exits (or never starts) before reading stdin gives EPIPE; unhandled, it would crash us.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function isNotFound(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A deadline shared by every bounded wait in one apply. */
export class Deadline {
  readonly at: number;
  constructor(ms: number, private readonly now: () => number = Date.now) {
    this.at = now() + ms;
  }
  remaining(): number {
    return Math.max(0, this.at - this.now());
  }
  expired(): boolean {
    return this.remaining() === 0;
  }
}
