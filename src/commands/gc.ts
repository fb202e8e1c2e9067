// `eni-dpdk gc [--dry-run] [--json]`: one pass of the leaked-ENI collection (reconcile/gc.ts) now,
// with this instance's sources for [gc]. `--dry-run` lists what would be deleted, and why every
// other ENI with our tags is kept; nothing is changed.
import { runGc, type GcEni } from "../reconcile/gc.js";
import { gather } from "../sources/chain.js";
import { commandSession } from "./apply.js";
import type { CommandContext } from "./context.js";

export async function gcCommand(
  ctx: CommandContext,
  opts: { dryRun: boolean; json: boolean },
): Promise<number> {
  const { session, local } = await commandSession(ctx);
  const gathered = await gather(
    { host: ctx.host, log: ctx.log, env: ctx.env, configPath: ctx.configPath, instance: session },
    local,
  );
  session.useConfig(gathered.config.ec2);
  const config = gathered.config.gc;
  if (!config.enabled)
    ctx.log.info("[gc].enabled = false turns off run's own pass; this explicit one runs", {
      grace_minutes: config.grace_minutes,
      max_deletes: config.max_deletes,
    });
  const r = await runGc(
    { instance: await session.identity(), log: ctx.log, deadline: session.deadline },
    session.ec2Factory(),
    { config, dryRun: opts.dryRun },
  );
  if (opts.json) {
    ctx.out(JSON.stringify({ dryRun: opts.dryRun, ...r }, null, 2) + "\n");
  } else {
    const what = (e: GcEni) =>
      `${e.eniId}: eni-dpdk's "${e.name}" for ${e.owner} (${e.ownerState}), created ${e.createdAt}, in ${e.subnetId}`;
    const lines = [
      ...r.wouldDelete.map((e) => `would delete ${what(e)}`),
      ...r.deleted.map((e) => `deleted ${what(e)}`),
      ...r.alreadyGone.map((e) => `already deleted by another node: ${what(e)}`),
      ...r.errors.map((e) => `failed to delete ${e.eniId}: ${e.message}`),
      ...r.kept.map((k) => `keep ${k.eniId}: ${k.reason}`),
      `${opts.dryRun ? `${r.wouldDelete.length} to delete (dry run: nothing deleted)` : `${r.deleted.length} deleted`}, ${r.kept.length} kept, ${r.deferred} left for a later pass (max_deletes ${config.max_deletes})${r.errors.length ? `, ${r.errors.length} failed` : ""}`,
    ];
    ctx.out(lines.join("\n") + "\n");
  }
  return r.errors.length ? 1 : 0;
}
