// The CLI contract: global options, commands, exit codes (0 ok, 2 invalid input or usage, 1 other).
// Command modules are imported when their command runs, so each path loads only what it uses.
import { promises as fs, statSync } from "node:fs";
import type { Argv } from "yargs";
import { buildConfig, type EffectiveConfig } from "./config/model.js";
import { errorMessage, exitCodeOf, formatProblem, InputError, OpError, type Problem } from "./core/errors.js";
import { Host, resolveRoot } from "./host/host.js";
import { Logger, type Level, type LogFormat } from "./core/log.js";
import type { CommandContext } from "./reconcile/stage.js";

export const VERSION = "0.1.0";

interface GlobalArgs {
  config?: string;
  root?: string;
  "log-level": Level;
  "log-format": LogFormat;
}

export interface CliIo {
  out: (s: string) => void;
  err: { write(s: string): void };
  env: NodeJS.ProcessEnv;
}

const defaultIo: CliIo = { out: (s) => process.stdout.write(s), err: process.stderr, env: process.env };

export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let code = 0;
  let usageError: string | undefined;
  const ctxOf = (a: GlobalArgs): CommandContext => {
    const host = new Host(resolveRoot(a.root, io.env));
    const log = new Logger(a["log-level"], a["log-format"], io.err);
    return { host, log, configPath: a.config, out: io.out };
  };
  /** Run a handler; map errors to exit codes and one actionable line each. */
  // yargs' inferred argument types differ per builder; handlers name the fields they read.
  const wrap =
    <A>(fn: (ctx: CommandContext, a: A & GlobalArgs) => Promise<number>) =>
    async (args: unknown) => {
      const a = args as A & GlobalArgs;
      const ctx = ctxOf(a);
      try {
        checkRoot(ctx.host.root, a.root !== undefined ? "--root" : "env ENI_DPDK_ROOT");
        code = await fn(ctx, a);
      } catch (e) {
        code = reportError(ctx, e);
      }
    };

  // The boot path (`run`, `apply`, `early` with plain global options) skips loading yargs, which
  // is a third of the start-up cost; anything else, help and errors included, goes through yargs.
  // The boot commands' handlers serve both the fast path and yargs.
  const boot: Record<BootCommand, (args: unknown) => Promise<void>> = {
    run: wrap(async (ctx) => (await import("./commands/run.js")).runCommand(ctx, { env: io.env })),
    apply: wrap<{ "dry-run": boolean }>(async (ctx, a) => (await import("./reconcile/loop.js")).applyCommand(ctx, { dryRun: a["dry-run"], env: io.env })),
    early: wrap(async (ctx) => (await import("./commands/device.js")).earlyCommand(ctx, {})),
  };
  const fast = parseBootArgv(argv);
  if (fast) {
    await boot[fast.command](fast.args);
    return code;
  }

  const { default: yargs } = await import("yargs");
  const parser: Argv<GlobalArgs> = yargs(argv)
    .scriptName("eni-dpdk")
    .usage("$0 <command> [options]\n\nGets an EKS node's data-plane ENIs attached, bound to vfio-pci and advertised to the SR-IOV device plugin before kubelet starts.")
    .option("config", { type: "string", describe: "main config file (default /etc/eni-dpdk/config.toml, then config.d/*.toml)" })
    .option("root", { type: "string", describe: "resolve every host path under this directory (env ENI_DPDK_ROOT; default /)" })
    .option("log-level", { choices: ["debug", "info", "warn", "error"] as const, default: "info" as Level })
    .option("log-format", { choices: ["text", "json"] as const, default: "text" as LogFormat })
    .command(
      "validate [files..]",
      "validate config files standalone, or (without files) gather this instance's sources and validate the merge",
      (y) => y.positional("files", { type: "string", array: true, describe: "TOML files to validate on their own" }),
      wrap<{ files?: string[] }>((ctx, a) => validateCommand(ctx, { files: a.files ?? [], env: io.env })),
    )
    .command(
      "config",
      "print the effective merged config, with each value's source",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>((ctx, a) => configCommand(ctx, { json: a.json, env: io.env })),
    )
    .command(
      "plan",
      "gather, validate, observe, and print the actions apply would take (changes nothing)",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>(async (ctx, a) => (await import("./reconcile/loop.js")).planCommand(ctx, { json: a.json, env: io.env })),
    )
    .command(
      "apply",
      "execute the plan once: ENIs, host binding, SR-IOV config; writes /run/eni-dpdk/status.json",
      (y) => y.option("dry-run", { type: "boolean", default: false, describe: "print the plan, change nothing" }),
      boot.apply,
    )
    .command(
      "run",
      "the service (systemd ExecStart): apply, notify READY with a Status line, keep reconciling",
      (y) => y,
      boot.run,
    )
    .command(
      "status",
      "show managed devices and host DPDK readiness",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>(async (ctx, a) => (await import("./commands/device.js")).statusCommand(ctx, { json: a.json })),
    )
    .command(
      "bind <target>",
      "bind one device (BDF, ifname, ENI id or MAC) to a DPDK driver",
      (y) =>
        y
          .positional("target", { type: "string", demandOption: true })
          .option("driver", { type: "string", describe: "default: [dpdk].driver" })
          .option("force", { type: "boolean", default: false, describe: "override the safety guards (primary, routes, unmanaged)" }),
      wrap<{ target: string; driver?: string; force: boolean }>(async (ctx, a) =>
        (await import("./commands/device.js")).bindCommand(ctx, { target: a.target, driver: a.driver, force: a.force }),
      ),
    )
    .command(
      "unbind <target>",
      "return one device to its original kernel driver",
      (y) => y.positional("target", { type: "string", demandOption: true }),
      wrap<{ target: string }>(async (ctx, a) => (await import("./commands/device.js")).unbindCommand(ctx, { target: a.target })),
    )
    .command(
      "reset",
      "unbind every managed device, remove eni-dpdk's networkd files and SR-IOV entries; leave the rest",
      (y) => y,
      wrap(async (ctx) => (await import("./commands/device.js")).resetCommand(ctx, {})),
    )
    .command(
      "early",
      "offline rebind at boot from the state file (eni-dpdk-early.service; no network needed)",
      (y) => y,
      boot.early,
    )
    .command(
      "userdata",
      "render MIME multipart user-data: nodeadm's NodeConfig plus an eni-dpdk TOML part",
      (y) =>
        y
          .option("nodeconfig", { type: "string", demandOption: true, describe: "NodeConfig YAML file" })
          .option("config", { type: "string", demandOption: true, describe: "eni-dpdk TOML file (validated first)" }),
      wrap<{ nodeconfig: string }>((ctx, a) => userdataCommand(ctx, { nodeconfig: a.nodeconfig, config: a.config! })),
    )
    .demandCommand(1, "name a command; see --help")
    .strict()
    .version(VERSION)
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .exitProcess(false)
    // Throwing aborts parsing, so no handler runs after a usage error.
    .fail((msg, err) => {
      if (err) throw err;
      usageError = msg;
      throw new Error(msg);
    });

  try {
    await parser.parseAsync();
  } catch (e) {
    usageError ??= errorMessage(e);
  }
  if (usageError) {
    io.err.write(`eni-dpdk: ${usageError}\nRun "eni-dpdk --help" for usage.\n`);
    return 2;
  }
  return code;
}

export type BootCommand = "run" | "apply" | "early";

/**
 * The exact argv shapes the units use (`run`, `early`, `apply [--dry-run]` with --config, --root,
 * --log-level, --log-format); undefined for anything else, which yargs then parses.
 */
export function parseBootArgv(argv: string[]): { command: BootCommand; args: GlobalArgs & { "dry-run": boolean } } | undefined {
  const args: GlobalArgs & { "dry-run": boolean } = { "log-level": "info", "log-format": "text", "dry-run": false };
  let command: BootCommand | undefined;
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    const eq = tok.indexOf("=");
    const [flag, inline] = tok.startsWith("--") && eq > 0 ? [tok.slice(0, eq), tok.slice(eq + 1)] : [tok, undefined];
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
    } else {
      return undefined;
    }
  }
  if (!command || (args["dry-run"] && command !== "apply")) return undefined;
  return { command, args };
}

/** Every host path resolves under the root, so a root that is not a directory is a usage error, not an empty host. */
function checkRoot(root: string, from: string): void {
  if (root === "/") return;
  let isDir = false;
  try {
    isDir = statSync(root).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) {
    throw new InputError(
      [{ source: `${from} ${root}`, key: "(root)", message: "is not an existing directory; every host path is resolved under it" }],
      "pass --root an existing directory (or leave it unset for /)",
    );
  }
}

export function reportError(ctx: CommandContext, e: unknown): number {
  if (e instanceof InputError) {
    for (const p of e.problems) ctx.log.error(formatProblem(p), { source: p.source, key: p.key });
    ctx.log.error(`${e.problems.length} problem(s); nothing was changed`, { next: e.hint });
  } else if (e instanceof OpError) {
    ctx.log.error(e.message, { ...e.fields, next: e.hint });
  } else {
    ctx.log.error(errorMessage(e), {
      next: "this is unexpected; rerun with --log-level debug and report it with the output",
      stack: ctx.log.enabled("debug") ? (e as Error)?.stack : undefined,
    });
  }
  return exitCodeOf(e);
}

// ---- validate / config / userdata -------------------------------------------------------------------

async function validateCommand(ctx: CommandContext, opts: { files: string[]; env: NodeJS.ProcessEnv }): Promise<number> {
  const { tomlLayer, loadToml } = await import("./sources/toml.js");
  await loadToml();
  if (opts.files.length > 0) {
    const problems: Problem[] = [];
    for (const file of opts.files) {
      try {
        const text = await readLocal(file);
        const eff = buildConfig([tomlLayer(text, file)]);
        ctx.out(`ok: ${file}: ${summarize(eff)}\n`);
      } catch (e) {
        if (e instanceof InputError) problems.push(...e.problems);
        else throw e;
      }
    }
    if (problems.length) throw new InputError(problems);
    return 0;
  }
  const eff = await gatherOnInstance(ctx, opts.env);
  for (const w of eff.warnings) ctx.log.warn(formatProblem(w));
  for (const c of eff.consulted) ctx.log.info("source", { source: c.source, found: c.note });
  const sriov = await inspectSriovFor(ctx, eff);
  for (const w of sriov) ctx.log.warn(w, { source: eff.config.sriov.config_path });
  ctx.out(`ok: ${summarize(eff)}\n`);
  return 0;
}

async function configCommand(ctx: CommandContext, opts: { json: boolean; env: NodeJS.ProcessEnv }): Promise<number> {
  const eff = await gatherOnInstance(ctx, opts.env);
  if (opts.json) {
    ctx.out(JSON.stringify({ config: eff.config, origin: eff.origin, warnings: eff.warnings, sources: eff.consulted }, null, 2) + "\n");
    return 0;
  }
  ctx.out(renderEffective(eff));
  return 0;
}

async function userdataCommand(ctx: CommandContext, opts: { nodeconfig: string; config: string }): Promise<number> {
  const { tomlLayer, loadToml } = await import("./sources/toml.js");
  await loadToml();
  const { renderUserData, sniffDocument } = await import("./sources/mime.js");
  const nodeConfig = await readLocal(opts.nodeconfig);
  const toml = await readLocal(opts.config);
  if (sniffDocument(nodeConfig) !== "nodeadm") {
    throw new InputError([{ source: opts.nodeconfig, key: "apiVersion", message: "expected a nodeadm NodeConfig (apiVersion: node.eks.aws/v1alpha1, kind: NodeConfig)" }]);
  }
  buildConfig([tomlLayer(toml, opts.config)]);
  ctx.out(renderUserData(nodeConfig, toml));
  return 0;
}

/** A file named on the command line (relative to the working directory); a read error says why, naming it. */
async function readLocal(file: string): Promise<string> {
  try {
    // A FIFO or device would block or never end; only regular files are config.
    const st = await fs.stat(file);
    if (st.isDirectory()) throw Object.assign(new Error("EISDIR"), { code: "EISDIR" });
    if (!st.isFile()) throw new InputError([{ source: file, key: "(file)", message: "is not a regular file" }]);
    return await fs.readFile(file, "utf8");
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why: Record<string, string> = {
      ENOENT: "no such file",
      EISDIR: "is a directory; name a file",
      EACCES: "cannot be read: permission denied",
      EPERM: "cannot be read: permission denied",
      ENOTDIR: "a component of the path is not a directory",
      ELOOP: "is a symlink loop",
    };
    if (code && Object.hasOwn(why, code)) throw new InputError([{ source: file, key: "(file)", message: why[code]! }]);
    throw e;
  }
}

function summarize(eff: EffectiveConfig): string {
  const enis = eff.config.eni;
  const dpdk = enis.filter((e) => e.dpdk.enabled).length;
  return `${enis.length} ENI(s) (${dpdk} DPDK, ${enis.length - dpdk} kernel)${enis.length ? ": " + enis.map((e) => e.name).join(", ") : ""}`;
}

/** The effective config as annotated TOML: every value with the source it came from. */
export function renderEffective(eff: EffectiveConfig): string {
  const lines: string[] = [];
  const val = (v: unknown) => JSON.stringify(v);
  const c = eff.config as unknown as Record<string, unknown>;
  for (const table of ["service", "dpdk", "sriov", "kubernetes"]) {
    lines.push(`[${table}]`);
    for (const [k, v] of Object.entries(c[table] as Record<string, unknown>)) {
      lines.push(`${k} = ${val(v)}`.padEnd(56) + ` # ${eff.origin[`${table}.${k}`] ?? "default"}`);
    }
    lines.push("");
  }
  for (const eni of eff.config.eni) {
    lines.push("[[eni]]");
    for (const [k, v] of Object.entries(eni)) {
      if (k === "dpdk") continue;
      lines.push(`${k} = ${val(v)}`.padEnd(56) + ` # ${k === "name" ? eff.origin[`eni.${eni.name}.name`] : eff.origin[`eni.${eni.name}.${k}`] ?? "default"}`);
    }
    lines.push("  [eni.dpdk]");
    for (const [k, v] of Object.entries(eni.dpdk)) {
      lines.push(`  ${k} = ${val(v)}`.padEnd(56) + ` # ${eff.origin[`eni.${eni.name}.dpdk.${k}`] ?? "default"}`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

/** Gather every configured source on this instance (IMDS, tags, NodeENI) and merge. */
export async function gatherOnInstance(ctx: CommandContext, env: NodeJS.ProcessEnv) {
  const { gather } = await import("./sources/chain.js");
  const { instanceSources } = await import("./reconcile/loop.js");
  return gather(ctx.host, { configPath: ctx.configPath, env, instance: await instanceSources(ctx, env) });
}

async function inspectSriovFor(ctx: CommandContext, eff: EffectiveConfig): Promise<string[]> {
  if (!eff.config.sriov.enabled) return [];
  const { inspectSriov } = await import("./host/sriov-file.js");
  return (await inspectSriov(ctx.host, eff.config.sriov.config_path)).warnings;
}
