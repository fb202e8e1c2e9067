// Child processes: an argv array (never a shell), a fixed minimal environment, our own timer.
import { spawn } from "node:child_process";
import { inputs } from "./inputs.js";
import { lazyOs } from "./lazy.js";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The whole environment a child process gets: a fixed PATH and the C locale. Nothing is inherited,
 * so no input that reached our process (or its prototype chain) can set LD_PRELOAD and the like
 * for root's children. Callers add what one child needs (NOTIFY_SOCKET for systemd-notify).
 */
export const CHILD_ENV: Readonly<Record<string, string>> = Object.freeze({
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LC_ALL: "C",
});

/** A fresh null-prototype environment: CHILD_ENV plus the caller's own, explicitly named, variables. */
export function childEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries(CHILD_ENV)) env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** Spawn a program with an argv array (never a shell) and collect its output. */
export function run(
  argv: string[],
  opts: { timeoutMs?: number; env?: Record<string, string | undefined>; input?: string } = {},
): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty argv");
  inputs.spoil(`ran ${cmd}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: childEnv(opts.env),
      shell: false,
    });
    // Our own timer, not spawn's `timeout`: when the program does not exist, Node emits `error` and
    // `close` but never `exit`, and spawn's timer would then hold the process open until it fires.
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // killed by a signal: 128 + its number, as a shell reports it
      resolve({
        code: code ?? (signal ? 128 + (lazyOs().constants.signals[signal] ?? 0) : 1),
        stdout,
        stderr,
      });
    });
    // A child that exits (or never starts) before reading stdin gives EPIPE; unhandled, it would crash us.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
