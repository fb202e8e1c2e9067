// What every command gets, and the config it can read without the instance.
import { buildConfig, defaults, type Config } from "../config/model.js";
import { InputError, type Problem } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { Host } from "../host/host.js";
import { type LocalSources, readLocal } from "../sources/chain.js";

/** What a command handler gets. Handlers return the exit code. */
export interface CommandContext {
  host: Host;
  log: Logger;
  /** --config PATH (host path of the main config file), when given */
  configPath?: string;
  /** stdout writer (tests capture it) */
  out: (text: string) => void;
  /** the process environment, read here and nowhere else */
  env: NodeJS.ProcessEnv;
}

/**
 * The config from the file and the environment alone, without the instance: for the commands that
 * work offline (status, bind, early) and for a boot's deadline before any instance source is read.
 * Lenient unless `strict`: problems are returned and the defaults used.
 */
export async function localConfig(
  ctx: CommandContext,
  opts: { strict?: boolean } = {},
): Promise<{ config: Config; problems: Problem[]; local?: LocalSources }> {
  try {
    const local = await readLocal(ctx);
    local.merged = buildConfig([...local.file.layers, ...local.env.layers]);
    return { config: local.merged.config, problems: [], local };
  } catch (e) {
    if (opts.strict || !(e instanceof InputError)) throw e;
    return { config: defaults(), problems: e.problems };
  }
}
