// An apply on a converged node, without planning: when every input of the last apply that found
// nothing to do reads as it did then, this one would find nothing to do too. A pass is a function of
// what it reads; the seams record every read (core/inputs.ts), so reading them all again is the
// proof. The record is kept under /run: a reboot, which undoes every bind, leaves none.
//
// The record is never made by a pass that wrote anything but its status, called EC2 or the
// Kubernetes API, ran a program, saw a value move, or ended with an error. It is keyed by the build,
// Node, the user, the directory, the argv and the environment. `apply --full` plans as ever.
import { asRecorded, inputs, type LoggedLine, type Observation } from "../core/inputs.js";
import { Host, HOST_READS, type HostRead } from "../host/host.js";
import { resolveRoot, RUN_DIR, UNCHANGED_PATH } from "../host/root.js";
import { TRUSTED_READS, trustedProbe, type TrustedRead } from "../host/trusted.js";
import { ImdsClient } from "../cloud/imds.js";
import { Deadline, isoTime, monotonicMs } from "../core/deadline.js";
import { Logger } from "../core/log.js";
import { pidAlive } from "../core/process.js";
import { STATUS_PATH } from "../host/state.js";
import { replayableApply } from "./boot-argv.js";
import { stderr } from "../core/stdio.js";

/** Set by scripts/build.mjs: a digest of the sources and the lockfile. Unset under tsx: no record. */
declare const ENI_DPDK_BUILD_ID: string | undefined;

const VERSION = 1;

/**
 * Variables that differ from one start to the next and that a pass does not read (systemd's per
 * invocation ones, a shell's): left out of the key. Every other variable is in it, so one that some
 * code reads can never be missed; a shell's other variables only cost a planned apply.
 */
const PER_START_ENV =
  /^(INVOCATION_ID|JOURNAL_STREAM|SYSTEMD_EXEC_PID|MONITOR_\w+|_|OLDPWD|PWD|SHLVL|SSH_\w+|SUDO_COMMAND|LS_COLORS|TERM)$/;

export interface UnchangedRecord {
  version: number;
  key: string;
  /** when the pass that found nothing to do ran */
  at: string;
  observations: Observation[];
  logged: LoggedLine[];
  summary: string;
  /** the status document that pass wrote */
  status: string;
}

/** What a record must match; undefined when this build keeps none. */
export function recordKey(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  if (typeof ENI_DPDK_BUILD_ID !== "string") return undefined;
  const keyed = Object.keys(env)
    .filter((k) => !PER_START_ENV.test(k))
    .sort()
    .map((k) => [k, env[k]]);
  return JSON.stringify({
    build: ENI_DPDK_BUILD_ID,
    node: process.version,
    euid: process.geteuid?.(),
    // relative paths in argv (--config) resolve against it
    cwd: process.cwd(),
    argv: argv.filter((a) => a !== "--full"),
    env: keyed,
  });
}

/** What an apply writes for others to read (its status, this record): never inputs of the next one. */
const OUTPUTS: ReadonlySet<string> = new Set([STATUS_PATH, UNCHANGED_PATH]);

/** Record what this apply reads, from here on. */
export function startRecording(): void {
  inputs.start(OUTPUTS);
}

export function stopRecording(): void {
  inputs.stop();
}

/**
 * After an apply: keep its record when it found nothing to do and nothing spoiled it. An older
 * record stays otherwise (a rejected apply changes no file): it describes the node as an apply
 * with nothing to do found it, and is used only while every read still says so.
 */
export async function keepRecord(
  host: Host,
  argv: string[],
  env: NodeJS.ProcessEnv,
  o: { ok: boolean; actions: unknown[]; summary: string; error?: unknown },
): Promise<"kept" | string> {
  const observations = inputs.stop();
  const key = recordKey(argv, env);
  const why = !key
    ? "not a built bundle"
    : o.error || !o.ok
      ? "the apply failed"
      : o.actions.length
        ? `${o.actions.length} actions`
        : inputs.spoiled;
  if (why) return why;
  try {
    const status = host.probe("read", STATUS_PATH);
    if (typeof status !== "string") return "no status written";
    const rec: UnchangedRecord = {
      version: VERSION,
      key: key!,
      at: isoTime(),
      observations,
      logged: inputs.logged,
      summary: o.summary,
      status,
    };
    await host.writeFileAtomic(UNCHANGED_PATH, JSON.stringify(rec) + "\n", 0o600);
    return "kept";
  } catch (e) {
    // the record is an optimisation: without it the next apply plans, as this one did
    return `not kept: ${(e as Error).message}`;
  }
}

/** The record, when it is root's alone and of this shape; never trusted otherwise. */
function readRecord(host: Host): UnchangedRecord | undefined {
  try {
    host.checkOwnDirs([RUN_DIR]);
    const own = host.probe("owner", UNCHANGED_PATH) as { mode: number; uid: number } | null;
    if (!own || own.uid !== process.geteuid?.() || own.mode & 0o077) return undefined;
    const rec = JSON.parse(host.probe("read", UNCHANGED_PATH) as string) as UnchangedRecord;
    if (
      rec.version !== VERSION ||
      !Array.isArray(rec.observations) ||
      !Array.isArray(rec.logged) ||
      !rec.logged.every((l) => l.level === "warn" || l.level === "error") ||
      typeof rec.status !== "string" ||
      typeof rec.summary !== "string"
    )
      return undefined;
    return rec;
  } catch {
    return undefined;
  }
}

/** The first host or config read that differs from the record; undefined when none does. */
function hostDifference(host: Host, rec: UnchangedRecord): string | undefined {
  for (const [op, key, value] of rec.observations) {
    let now: unknown;
    if ((HOST_READS as readonly string[]).includes(op)) now = host.probe(op as HostRead, key);
    else if ((TRUSTED_READS as readonly string[]).includes(op))
      now = trustedProbe(host, op as TrustedRead, key);
    else if (op === "imds") continue;
    else return `unknown read ${op}`;
    if (asRecorded(op, key, now, OUTPUTS, pidAlive) !== value) return `${op} ${key}`;
  }
  return undefined;
}

async function imdsDifference(imds: ImdsClient, rec: UnchangedRecord): Promise<string | undefined> {
  const reads = rec.observations.filter(([op]) => op === "imds");
  const now = await Promise.all(
    reads.map(async ([, key]) => (await imds.getBytes(key))?.toString("base64")),
  );
  const i = reads.findIndex(
    ([op, key, value], n) => asRecorded(op, key, now[n], OUTPUTS) !== value,
  );
  return i < 0 ? undefined : `imds ${reads[i][1]}`;
}

/**
 * The apply of an unchanged node: every recorded read made again (host reads before the lock, to
 * give up early, and again under it), then the recorded status and warnings. Undefined when
 * anything differs or cannot be read: then the caller plans, as without a record.
 */
export async function replayUnchanged(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  err: { write(s: string): void } = stderr,
): Promise<number | undefined> {
  const started = monotonicMs();
  const args = replayableApply(argv);
  if (!args) return undefined;
  const key = recordKey(argv, env);
  const host = new Host(resolveRoot(args.root, env));
  const rec = key ? readRecord(host) : undefined;
  if (!rec || rec.key !== key) return undefined;
  const log = new Logger(args["log-level"], args["log-format"], err);
  const changed = (first: string) => {
    log.debug("inputs changed since the last converged apply: planning", { first });
    return undefined;
  };
  // IMDS is asked and the lock taken at once; the host is read while flock starts, to give up
  // early, and read again once the lock is held, when no other apply can be changing it.
  const imds = new ImdsClient({ deadline: new Deadline(1000), timeoutMs: 1000 });
  const imdsDiff = imdsDifference(imds, rec).then(
    (d) => ({ d }),
    (e: unknown) => ({ e }),
  );
  const locked = host.acquireLock({ log }).then(
    (lock) => ({ lock }),
    (e: unknown) => ({ e }),
  );
  try {
    const early = hostDifference(host, rec);
    if (early) return changed(early);
    const l = await locked;
    if (!("lock" in l)) throw l.e;
    // while IMDS answers
    const held = hostDifference(host, rec);
    if (held) return changed(held);
    const i = await imdsDiff;
    if ("e" in i) throw i.e;
    if (i.d) return changed(i.d);
    const now = isoTime();
    const took = Math.round(monotonicMs() - started);
    await host.writeFileAtomic(STATUS_PATH, restamp(rec, now, took), 0o644);
    for (const line of rec.logged) log[line.level](line.msg, line.fields);
    log.info(rec.summary, {
      actions: 0,
      took_ms: took,
      unchanged_since: rec.at,
      reads: rec.observations.length,
    });
    return 0;
  } catch (e) {
    log.debug("could not check the inputs again: planning", { error: (e as Error).message });
    return undefined;
  } finally {
    // the planner takes the lock anew; flock drops this one as it exits
    const l = await locked;
    if ("lock" in l) await l.lock.release();
  }
}

/** The recorded status document as of now: this apply's time, and since when nothing changed. */
function restamp(rec: UnchangedRecord, now: string, took: number): string {
  const doc = JSON.parse(rec.status) as {
    generatedAt?: string;
    lastApply?: { startedAt?: string; unchangedSince?: string };
    apply?: { startedAt?: string; timings?: unknown; unchangedSince?: string };
  };
  doc.generatedAt = now;
  if (doc.lastApply) Object.assign(doc.lastApply, { startedAt: now, unchangedSince: rec.at });
  if (doc.apply) {
    doc.apply.startedAt = now;
    doc.apply.timings = { total: took };
    doc.apply.unchangedSince = rec.at;
  }
  return JSON.stringify(doc, null, 2) + "\n";
}
