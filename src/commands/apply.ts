// `eni-dpdk plan` (and `apply --dry-run`): the stages' plans, changing nothing. `eni-dpdk apply`:
// one pass, executed. Both are bounded by [service].timeout_seconds, IMDS waits included.
import { Deadline } from "../core/deadline.js";
import { reconcile } from "../reconcile/loop.js";
import { Session } from "../reconcile/session.js";
import { formatActions } from "../core/action.js";
import { localConfig, type CommandContext } from "./context.js";
import type { LocalSources } from "../sources/chain.js";
import { keepRecord, startRecording, stopRecording } from "./unchanged.js";

/**
 * A session bounded by the file's [service].timeout_seconds from its start, paced by its
 * [ec2.limits]; with the local sources it read, for the gather that follows (once read, not twice).
 */
export async function commandSession(
  ctx: CommandContext,
): Promise<{ session: Session; local?: LocalSources }> {
  const { config, local } = await localConfig(ctx);
  const session = new Session(
    ctx.log,
    new Deadline(config.service.timeout_seconds * 1000),
    undefined,
    { host: ctx.host, ec2: config.ec2 },
  );
  return { session, ...(local ? { local } : {}) };
}

export async function planCommand(ctx: CommandContext, opts: { json: boolean }): Promise<number> {
  const o = await reconcile(ctx, { dryRun: true, ...(await commandSession(ctx)) });
  if (opts.json) {
    ctx.out(
      JSON.stringify(
        { actions: o.actions, warnings: o.warnings, error: o.error, timings: o.timings },
        null,
        2,
      ) + "\n",
    );
  } else {
    // never "nothing to do" for a pass that could not finish its plan
    if (!o.error || o.actions.length) ctx.out(formatActions(o.actions));
    if (o.error)
      ctx.out(
        o.actions.length
          ? `the plan stopped here: ${o.error.message}; apply may do more than the actions above\n`
          : `no plan: ${o.error.message}\n`,
      );
    for (const w of o.warnings) ctx.log.warn(w);
  }
  if (o.error)
    ctx.log.error(o.error.message, { next: o.error.next, changes: o.error.changes?.join("; ") });
  return o.error ? 1 : 0;
}

export async function applyCommand(
  ctx: CommandContext,
  opts: { dryRun: boolean; argv?: string[] },
): Promise<number> {
  if (opts.dryRun) return planCommand(ctx, { json: false });
  if (opts.argv) startRecording();
  let o;
  try {
    o = await reconcile(ctx, { dryRun: false, ...(await commandSession(ctx)) });
  } catch (e) {
    // bad input or a failure before the pass: the recorder off, no file touched
    if (opts.argv) stopRecording();
    throw e;
  }
  for (const w of o.warnings) ctx.log.warn(w);
  if (opts.argv) {
    const kept = await keepRecord(ctx.host, opts.argv, ctx.env, o);
    ctx.log.debug("record of the inputs for the next apply", { kept });
  }
  if (o.error) {
    ctx.log.error(o.error.message, { next: o.error.next, changes: o.error.changes?.join("; ") });
    return o.error.exitCode;
  }
  ctx.log.info(o.summary, { actions: o.actions.length, took_ms: o.timings.total });
  return 0;
}
