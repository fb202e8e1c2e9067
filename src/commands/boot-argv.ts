// The exact argv shapes of the units' commands, parsed without yargs (a third of a start-up's cost).
import type { Level, LogFormat } from "../core/log.js";

export interface GlobalArgs {
  config?: string;
  root?: string;
  "log-level": Level;
  "log-format": LogFormat;
}

export type BootCommand = "run" | "apply" | "early";

export type BootArgs = GlobalArgs & { "dry-run": boolean; full: boolean };

/**
 * The exact argv shapes the units use (`run`, `early`, `apply [--dry-run] [--full]` with --config,
 * --root, --log-level, --log-format); undefined for anything else, which yargs then parses.
 */
export function parseBootArgv(
  argv: string[],
): { command: BootCommand; args: BootArgs } | undefined {
  const args: BootArgs = {
    "log-level": "info",
    "log-format": "text",
    "dry-run": false,
    full: false,
  };
  let command: BootCommand | undefined;
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i];
    const eq = tok.indexOf("=");
    const [flag, inline] =
      tok.startsWith("--") && eq > 0 ? [tok.slice(0, eq), tok.slice(eq + 1)] : [tok, undefined];
    const value = () => inline ?? argv[++i];
    if (flag === "run" || flag === "apply" || flag === "early") {
      if (command) return undefined;
      command = flag;
    } else if (flag === "--config" || flag === "--root") {
      const v = value();
      if (!v) return undefined;
      args[flag === "--config" ? "config" : "root"] = v;
    } else if (flag === "--log-level") {
      const v = value();
      if (v !== "debug" && v !== "info" && v !== "warn" && v !== "error") return undefined;
      args["log-level"] = v;
    } else if (flag === "--log-format") {
      const v = value();
      if (v !== "text" && v !== "json") return undefined;
      args["log-format"] = v;
    } else if (flag === "--dry-run" && inline === undefined) {
      args["dry-run"] = true;
    } else if (flag === "--full" && inline === undefined) {
      args.full = true;
    } else {
      return undefined;
    }
  }
  if (!command || ((args["dry-run"] || args.full) && command !== "apply")) return undefined;
  return { command, args };
}

/** The args of an `apply` that may replay the unchanged record: not a dry run, not `--full`. */
export function replayableApply(argv: string[]): BootArgs | undefined {
  const boot = parseBootArgv(argv);
  return boot?.command === "apply" && !boot.args["dry-run"] && !boot.args.full
    ? boot.args
    : undefined;
}
