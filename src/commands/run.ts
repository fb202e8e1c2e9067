// `eni-dpdk run`, the unit's ExecStart: apply, READY=1 with a one-line STATUS, then keep
// reconciling on a timer and on SIGHUP (which re-reads the sources), until SIGTERM. Once per
// process, after READY, one pass of the leaked-ENI collection ([gc]).
//
// When EC2 throttles so that the first pass cannot finish within [service].timeout_seconds, each
// EC2 call waits for its slot (cloud/ec2.ts Ec2Pacer) until that deadline, then the pass fails:
//   on_failure = "fail": exit 1 before READY. kubelet, ordered after us but not dependent on us,
//     starts without the devices; systemd restarts the unit (RestartSec=15s, 3 starts in 20 min),
//     and the next start goes on where this one stopped: the state file and the ENIs' tags let it
//     adopt what was created (ClientToken covers a create whose answer was lost), /run keeps the
//     pacing learned.
//   on_failure = "continue": READY at once with the error in STATUS, kubelet starts, and the next
//     reconcile pass goes on.
// Either way the devices come later, after the device plugin has read its config: a pass that
// changes our entries then runs [sriov].restart_command (a start after an earlier pass of this
// boot counts as later: the status file in /run says one finished).
import { errorMessage, formatProblem, InputError } from "../core/errors.js";
import { Deadline, monotonicMs } from "../core/deadline.js";
import { createNotifier, type Notifier } from "../core/notify.js";
import { type CommandContext, localConfig } from "./context.js";
import { reconcile } from "../reconcile/loop.js";
import type { ApplyOutcome } from "../reconcile/outcome.js";
import { Session } from "../reconcile/session.js";
import { onSignal, type ServiceSignal } from "../core/signals.js";
import type { Gathered } from "../sources/chain.js";
import { afterSriovChange } from "../host/sriov-file.js";
import { STATUS_PATH } from "../host/state.js";
import { runGc } from "../reconcile/gc.js";
import { started } from "../core/startup.js";

/** Signals received and not yet handled; `wait` resolves when one arrives. */
class Inbox {
  private readonly queue: ServiceSignal[] = [];
  private wake?: () => void;
  /** the deadline of the pass in flight: SIGTERM ends its waits early */
  current?: Deadline;
  readonly stop: () => void;
  constructor() {
    this.stop = onSignal((s) => {
      if (s !== "SIGHUP") this.current?.abort();
      this.queue.push(s);
      this.wake?.();
    });
  }
  take(): ServiceSignal | undefined {
    return this.queue.shift();
  }
  stopping(): boolean {
    return this.queue.some((s) => s !== "SIGHUP");
  }
  wait(): Promise<void> {
    return this.queue.length ? Promise.resolve() : new Promise((r) => (this.wake = r));
  }
}

export async function runCommand(ctx: CommandContext): Promise<number> {
  // First, so a SIGHUP or SIGTERM during the first apply is handled, not fatal.
  const inbox = new Inbox();
  try {
    return await serve(ctx, inbox);
  } finally {
    inbox.stop();
  }
}

async function serve(ctx: CommandContext, inbox: Inbox): Promise<number> {
  const log = ctx.log;
  const notifier = await createNotifier(ctx.env, log);
  // From the file alone, so a broken user-data or tag still honours the file's choices.
  const fileConfig = (await localConfig(ctx)).config;
  const fileService = fileConfig.service;
  const onFailure = fileService?.on_failure ?? "fail";
  const bootTimeout = (fileService?.timeout_seconds ?? 300) * 1000;
  log.info("starting", {
    notify: notifier.via,
    on_failure: onFailure,
    timeout_s: bootTimeout / 1000,
  });
  await notifier.status("applying: reading sources");

  // A pass of this boot finished before (the unit restarted after a failure, or by hand): kubelet
  // and the device plugin may be running, so a change to our entries needs the plugin restarted.
  const afterEarlierPass = await ctx.host.exists(STATUS_PATH);
  const session = new Session(log, new Deadline(bootTimeout), undefined, {
    host: ctx.host,
    ec2: fileConfig.ec2,
  });
  inbox.current = session.deadline;
  let gathered: Gathered | undefined;
  let first: ApplyOutcome;
  try {
    const o = await reconcile(ctx, { dryRun: false, session });
    gathered = o.gathered;
    first = o;
  } catch (e) {
    if (inbox.stopping()) return stopDuringStart(ctx, notifier);
    if (!(e instanceof InputError)) throw e;
    for (const p of e.problems) log.error(formatProblem(p), { source: p.source, key: p.key });
    const msg = `invalid config: ${e.problems.length} problem(s), first: ${formatProblem(e.problems[0])}`;
    if (onFailure === "fail") {
      log.error("not ready: the input is invalid and nothing was changed", { next: e.hint });
      await notifier.status(`failed: ${msg}`);
      return 2;
    }
    log.error("continuing without applying (on_failure=continue)", { next: e.hint });
    await notifier.ready(`degraded: ${msg}`);
    return waitForSignals(ctx, notifier, inbox, session, undefined, 0);
  }
  if (inbox.stopping()) return stopDuringStart(ctx, notifier);

  for (const w of first.warnings) log.warn(w);
  if (first.error) {
    log.error(first.error.message, {
      next: first.error.next,
      changes: first.error.changes?.join("; "),
    });
    if (onFailure === "fail") {
      await notifier.status(`failed: ${first.error.message}`);
      return first.error.exitCode;
    }
    log.warn("signalling READY despite the failure (on_failure=continue) so kubelet starts", {
      next: first.error.next,
    });
  }
  let summary = first.summary;
  if (afterEarlierPass && first.sriov) {
    const after = await afterSriovChange(gathered.config, first.sriov, log, { atBoot: false });
    if (after.status) summary += `; ${after.status}`;
  }
  log.info(summary, { took_ms: first.timings.total, actions: first.actions.length });
  await notifier.ready(summary);
  if (!first.error) started();
  return waitForSignals(
    ctx,
    notifier,
    inbox,
    session,
    gathered,
    gathered.config.service.reconcile_interval_seconds,
  );
}

/** SIGTERM before READY (systemctl stop, start timeout): the first apply ended its waits early; exit. */
async function stopDuringStart(ctx: CommandContext, notifier: Notifier): Promise<number> {
  ctx.log.warn("stopping during start-up; the next start converges from where this one stopped", {
    next: "systemctl start eni-dpdk",
  });
  await notifier.stopping("stopping during start-up");
  return 0;
}

/** The long-running part: periodic reconcile, SIGHUP reload, watchdog pings, clean SIGTERM. */
async function waitForSignals(
  ctx: CommandContext,
  notifier: Notifier,
  inbox: Inbox,
  session: Session,
  gathered: Gathered | undefined,
  intervalSeconds: number,
): Promise<number> {
  const log = ctx.log;
  let busySince: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let queued: "reload" | "tick" | undefined;
  let inFlight: Promise<void> | undefined;
  let stopping = false;
  const timeoutMs = (gathered?.config.service.timeout_seconds ?? 300) * 1000;

  // Once per process, a random 0..[gc].delay_seconds after READY (a fleet's passes spread out, as
  // the VPC CNI staggers its own cleanup): leaked ENIs of instances that are gone.
  let gcPass: Deadline | undefined;
  const gcConfig = gathered?.config.gc;
  const gcTimer = gcConfig?.enabled
    ? setTimeout(
        () => {
          const s = session.next(new Deadline(timeoutMs));
          gcPass = s.deadline;
          void (async () => {
            try {
              await runGc(
                { instance: await s.identity(), log, deadline: s.deadline },
                s.ec2Factory(),
                { config: gcConfig, dryRun: false },
              );
            } catch (e) {
              log.warn("gc pass failed; the next start tries again", { error: errorMessage(e) });
            }
          })();
        },
        Math.random() * gcConfig.delay_seconds * 1000,
      )
    : undefined;

  const pass = (reload: boolean): Promise<void> => {
    if (stopping) return Promise.resolve();
    if (busySince !== undefined) {
      queued = reload || queued === "reload" ? "reload" : "tick";
      return inFlight ?? Promise.resolve();
    }
    busySince = monotonicMs();
    inFlight = passOnce(reload);
    return inFlight;
  };
  const passOnce = async (reload: boolean) => {
    try {
      const dynamic = gathered?.config.service.sources.includes("nodeeni");
      const passSession = session.next(new Deadline(timeoutMs));
      inbox.current = passSession.deadline;
      const o = await reconcile(ctx, {
        dryRun: false,
        periodic: !reload,
        session: passSession,
        gathered: reload || dynamic || !gathered ? undefined : gathered,
      });
      gathered = o.gathered;
      if (o.actions.length)
        log.warn("repaired drift", {
          actions: o.actions.map((a) => `${a.kind} ${a.target}`).join("; "),
        });
      let line = o.summary;
      if (o.sriov) {
        const after = await afterSriovChange(gathered.config, o.sriov, log, { atBoot: false });
        if (after.status) line += `; ${after.status}`;
      }
      if (o.error)
        log.error(o.error.message, { next: o.error.next, changes: o.error.changes?.join("; ") });
      await notifier.status(line);
      if (reload) log.info("reloaded", { enis: gathered.config.eni.length });
      const next = gathered.config.service.reconcile_interval_seconds;
      if (next !== intervalSeconds) {
        intervalSeconds = next;
        schedule();
      }
    } catch (e) {
      const msg =
        e instanceof InputError
          ? `invalid config: ${e.problems.map(formatProblem).join("; ")}`
          : errorMessage(e);
      log.error(reload ? "reload failed; keeping the previous config" : "reconcile failed", {
        error: msg,
        next: "fix the input; send SIGHUP (systemctl reload eni-dpdk) to retry",
      });
      await notifier.status(`degraded: ${msg}`);
    } finally {
      busySince = undefined;
      const q = queued;
      queued = undefined;
      if (q) void pass(q === "reload");
    }
  };

  const schedule = () => {
    if (timer) clearInterval(timer);
    timer =
      intervalSeconds > 0 ? setInterval(() => void pass(false), intervalSeconds * 1000) : undefined;
  };
  schedule();

  // Ping only while no pass has been stuck past its own deadline, so a hung reconcile gets restarted.
  const wd = notifier.watchdogMs();
  const wdTimer = wd
    ? setInterval(
        () => {
          if (busySince === undefined || monotonicMs() - busySince < timeoutMs)
            void notifier.watchdog();
        },
        Math.max(500, Math.floor(wd / 2)),
      )
    : undefined;

  // A Type=notify service runs until SIGTERM, even with no timer and no watchdog to keep Node busy.
  const keepAlive = setInterval(() => {}, 2 ** 30);
  try {
    for (;;) {
      await inbox.wait();
      const sig = inbox.take();
      if (sig === "SIGHUP") {
        log.info("SIGHUP: re-reading the sources");
        void pass(true);
        continue;
      }
      if (!sig) continue;
      log.info("stopping", { signal: sig });
      stopping = true;
      gcPass?.abort();
      await notifier.stopping("stopping");
      // A pass in flight had its deadline aborted: let it reach a clean point rather than cut it.
      if (busySince !== undefined && inFlight)
        await Promise.race([inFlight, new Promise((r) => setTimeout(r, 10_000).unref())]);
      return 0;
    }
  } finally {
    clearInterval(keepAlive);
    clearTimeout(gcTimer);
    if (timer) clearInterval(timer);
    if (wdTimer) clearInterval(wdTimer);
  }
}
