// One reconcile pass, top to bottom:
//   1. sources   the chain gathers the desired config (while the host lock is being taken)
//   2. prepare   holding the lock: safe directories, stale temps, half-done operations recovered
//   3. observe   the NICs over IMDS, the state file, the primary's record
//   4. preflight everything about the host that can be checked before the first change
//   5. stages    eni → host → sriov → nodeeni, each planned, then applied (dry run: planned only)
//   6. outcome   one Status line and /run/eni-dpdk/status.json
// Bad input is an InputError before the first change; a problem found after one is exit 1 and
// lists the changes.
import path from "node:path";
import { readNics } from "../cloud/imds.js";
import { Deadline, isoTime, monotonicMs } from "../core/deadline.js";
import { errorMessage, formatProblem, InputError, OpError } from "../core/errors.js";
import { emptyState, journalPending, loadState, saveState } from "../host/state.js";
import { hugepageProblem, hugepageWants } from "../host/kernel.js";
import { devicesOnDpdkDrivers } from "../host/pci.js";
import type { Logger } from "../core/log.js";
import type { Host } from "../host/host.js";
import { gather, type Gathered, type LocalSources } from "../sources/chain.js";
import { saveTomlMemo } from "../sources/toml.js";
import { eniStage } from "./eni.js";
import { hostStage } from "./host.js";
import { maxPodsStage } from "./maxpods.js";
import { NODEADM_DROPIN_DIR } from "../host/nodeadm-dropin.js";
import { interruptedRecordedBinds, prepareHost } from "../host/recovery.js";
import { nodeEniStage } from "./nodeeni.js";
import { summaryLine, writeStatusFile, type ApplyOutcome } from "./outcome.js";
import { notePrimary, preflight } from "./preflight.js";
import { Session } from "./session.js";
import { sriovStage } from "./sriov.js";
import type { Stage, StageContext, StagePlan, Upstream } from "./stage.js";
import type { Action } from "../core/action.js";

/** The stages, in the order a pass runs them. */
export const STAGES: readonly Stage<StagePlan>[] = [
  eniStage,
  maxPodsStage,
  hostStage,
  sriovStage,
  nodeEniStage,
] as Stage<StagePlan>[];

/** What a pass needs of the command that runs it. */
export interface PassContext {
  host: Host;
  log: Logger;
  /** the process environment (the env source reads it) */
  env: NodeJS.ProcessEnv;
  /** --config PATH, replacing /etc/eni-dpdk/config.toml */
  configPath?: string;
}

export interface ReconcileOptions {
  dryRun: boolean;
  session?: Session;
  /** skip re-reading sources and use this config (run's periodic reconcile between SIGHUPs) */
  gathered?: Gathered;
  /** the file and environment as the command read them for its session a moment ago */
  local?: LocalSources;
  /**
   * `run`'s timer pass: its stage lines go out at debug, so a converged node's journal holds the
   * boot and the repairs (logged by the caller), not six lines a minute of nothing done
   */
  periodic?: boolean;
}

export type ReconcileResult = ApplyOutcome & { gathered: Gathered };

/** One pass. Throws InputError on bad input, before any change; every other failure is in `error`. */
export async function reconcile(
  ctx: PassContext,
  opts: ReconcileOptions,
): Promise<ReconcileResult> {
  // Taking the lock starts now, so spawning flock(1) overlaps the sources' IMDS round trips; it is
  // held until the status file is written, and released on every path.
  const lock = opts.dryRun ? undefined : ctx.host.acquireLock({ log: ctx.log });
  lock?.catch(() => {});
  try {
    return await pass(ctx, opts, lock);
  } finally {
    if (lock)
      await lock.then(
        (l) => l.release(),
        () => {},
      );
  }
}

async function pass(
  ctx: PassContext,
  opts: ReconcileOptions,
  lock: Promise<unknown> | undefined,
): Promise<ReconcileResult> {
  const { log, host } = ctx;
  const t0 = monotonicMs();
  const startedAt = isoTime();
  const timings: ApplyOutcome["timings"] = {};
  let mark = t0;
  const done = (stage: keyof ApplyOutcome["timings"], fields: Record<string, unknown> = {}) => {
    const now = monotonicMs();
    timings[stage] = Math.round(now - mark);
    mark = now;
    log[opts.periodic ? "debug" : "info"](`${stage} done`, {
      stage,
      took_ms: timings[stage],
      ...fields,
    });
  };

  const session = opts.session ?? new Session(log, new Deadline(300_000));
  const changesBefore = { host: host.changes.length, ec2: session.changes.length };
  const changesMade = () => [
    ...session.changes.slice(changesBefore.ec2),
    ...host.changes.slice(changesBefore.host),
  ];
  // 1. The instance's identity never changes: fetch it alongside the sources.
  const identity = session.identity();
  identity.catch(() => {});
  const gathered =
    opts.gathered ??
    (await gather(
      { host, log, env: ctx.env, configPath: ctx.configPath, instance: session },
      opts.local,
    ));
  const config = gathered.config;
  const deadline = session.deadline.within(config.service.timeout_seconds * 1000);
  session.narrow(deadline);
  session.useConfig(config.ec2);
  done("sources", {
    enis: config.eni.length,
    sources: gathered.consulted.map((c) => c.source).join(","),
  });
  const warnings = gathered.warnings.map((w) => `${w.source}: ${w.message}`);

  const body = async () => {
    const actions: Action[] = [];
    // 2. What can change (the NICs, the state, sysfs) is observed only once the lock is held.
    const state = opts.dryRun
      ? await loadState(host)
      : await prepareHost(host, log, {
          tempDirs: [path.posix.dirname(config.sriov.config_path), NODEADM_DROPIN_DIR],
        });
    if (opts.dryRun) {
      for (const op of await journalPending(host)) {
        actions.push({
          stage: "host",
          kind: "recover",
          target: op.bdf,
          detail: `finish or roll back the ${op.op} (${op.from || "no driver"} → ${op.to || "kernel driver"}) that pid ${op.pid} began at ${op.startedAt}`,
        });
      }
      for (const { rec, was } of await interruptedRecordedBinds(host, state)) {
        actions.push({
          stage: "host",
          kind: "recover",
          target: rec.bdf,
          detail: `roll back the interrupted bind of ${rec.eniName} (${was}) to ${rec.originalDriver || "its kernel driver"}, then bind it again`,
        });
      }
    }
    // 3.
    const [instance, imdsNics] = await Promise.all([
      identity,
      readNics(
        session.imds,
        identity.then((i) => i.primaryMac),
        new Map(Object.values(state.enis).map((r) => [r.mac.toLowerCase(), r.eniId])),
      ),
    ]);
    done("observe", { instance: instance.instanceId, nics: imdsNics.length });
    if (state.instanceId !== instance.instanceId) {
      // A state file from another instance (an AMI baked from a running node) is not trusted. Reset
      // in memory only: the stages persist it once they change something, so a rejected run leaves
      // the file as it was.
      if (state.instanceId)
        log.warn("state file belongs to another instance; starting fresh", {
          was: state.instanceId,
        });
      Object.assign(state, {
        ...emptyState(),
        instanceId: instance.instanceId,
        nodeeni: state.nodeeni,
      });
    }
    const primaryBefore = JSON.stringify(state.primary ?? null);
    await notePrimary(host, state, instance, imdsNics);
    const sctx: StageContext = {
      host,
      imds: session.imds,
      ec2: session.ec2Factory(),
      log,
      deadline,
      config,
      instance,
      imdsNics,
      state,
      dryRun: opts.dryRun,
      eniOrigins: gathered.eniOrigins,
      ...(opts.periodic ? { periodic: true } : {}),
      ...(gathered.nodeEni ? { nodeEni: gathered.nodeEni } : {}),
      // only when the user-data source read them; otherwise a stage that needs them reads IMDS
      ...(gathered.consulted.some((c) => c.source === "user-data")
        ? { userDataParts: gathered.userDataParts }
        : {}),
    };
    // 4.
    await preflight(sctx, gathered);
    // 5.
    let up: Upstream = { enis: [], devices: [] };
    for (const stage of STAGES) {
      if (!stage.enabled(sctx)) continue;
      const plan = await stage.plan(sctx, up);
      actions.push(...plan.actions);
      const { warnings: found = [], ...got } = opts.dryRun
        ? plan.expected
        : await stage.apply(sctx, plan, up);
      up = { ...up, ...got };
      for (const w of [...(plan.warnings ?? []), ...found])
        if (!warnings.includes(w)) warnings.push(w);
      done(stage.name, {
        actions: plan.actions.length,
        ...(stage.name === "eni" ? { ec2_loaded: session.ec2Loaded } : {}),
      });
    }
    // A DPDK app needs hugepages and a hugetlbfs mount; binding without them is a node that lies.
    const onDpdk = (await devicesOnDpdkDrivers(host)).length;
    const hugepages = await hugepageProblem(host, {
      dpdkDevices: opts.dryRun
        ? Math.max(onDpdk, config.eni.filter((e) => e.dpdk.enabled).length)
        : onDpdk,
      ...(opts.dryRun ? { planned: hugepageWants(config.dpdk) } : {}),
    });
    if (!opts.dryRun) {
      // The primary's record is kept even when nothing else changed (a state file from an older version).
      if (JSON.stringify(state.primary ?? null) !== primaryBefore) await saveState(host, state);
      // Parsed sources are kept for the next boot only once they were applied without error.
      if (!up.devices.some((d) => d.state === "failed")) await saveTomlMemo(host);
    }
    return { actions, up, hugepages };
  };

  let result: Awaited<ReturnType<typeof body>> | undefined;
  let error: ApplyOutcome["error"];
  try {
    result = lock ? await lock.then(body) : await body();
  } catch (e) {
    const changes = changesMade();
    if (e instanceof InputError && changes.length === 0) throw e;
    error = failure(e, changes);
  }
  const devices = result?.up.devices ?? [];
  const failed = devices.filter((d) => d.state === "failed");
  // an ENI that never became ready: the others were bound, and the pass still failed
  if (!error && result?.up.eniFailure) error = failure(result.up.eniFailure, changesMade());
  if (!error && failed.length) {
    error = {
      message: `${failed.length} device(s) failed to bind: ${failed.map((d) => `${d.name} (${d.error})`).join("; ")}`,
      // a device that was not found was never touched; one whose bind failed says where it is
      next: "see `eni-dpdk status` and the log lines above: each device's error says where it was left",
      exitCode: 1,
    };
  }
  if (result?.hugepages) warnings.push(result.hugepages.message);
  timings.total = Math.round(monotonicMs() - t0);
  const outcome: ApplyOutcome = {
    ok: !error,
    dryRun: opts.dryRun,
    startedAt,
    actions: result?.actions ?? [],
    enis: result?.up.enis ?? [],
    devices,
    ...(result?.up.sriov && !opts.dryRun ? { sriov: result.up.sriov } : {}),
    ...(result?.hugepages ? { hugepages: result.hugepages } : {}),
    ...(result?.up.maxPods ? { maxPods: result.up.maxPods } : {}),
    timings,
    warnings,
    ...(error ? { error } : {}),
    summary: "",
    ec2Loaded: session.ec2Loaded,
  };
  outcome.summary = summaryLine(outcome, config);
  if (!opts.dryRun)
    await writeStatusFile(host, outcome, config, {
      ...(result?.up.sriovCheck ? { sriovCheck: result.up.sriovCheck } : {}),
      ...(result ? { hugepageProblem: result.hugepages ?? null } : {}),
    });
  return { ...outcome, gathered };
}

/**
 * A failure as the outcome states it. Found only after something changed, bad input is never
 * "nothing was changed": the message says exactly what was, and how to go on from there.
 */
function failure(e: unknown, changes: string[]): NonNullable<ApplyOutcome["error"]> {
  if (e instanceof InputError) {
    return {
      message: `${e.problems.map(formatProblem).join("; ")}; found after this run had changed the node: ${changes.join("; ")}`,
      next: `${e.hint}; then run \`eni-dpdk apply\` again: it adopts what this run created (or \`eni-dpdk reset\` to undo the host side)`,
      exitCode: 1,
    };
  }
  return {
    message: errorMessage(e),
    next:
      e instanceof OpError ? e.hint : "rerun with --log-level debug; see `journalctl -u eni-dpdk`",
    exitCode: 1,
    ...(changes.length ? { changes } : {}),
  };
}
