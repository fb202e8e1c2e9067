// The CLI contract: global options, commands, exit codes (0 ok, 2 invalid input or usage, 1 other).
// Our own modules are imported statically, so the bundle holds them in one chunk (58 → 37 chunks,
// 6 MB less peak RSS on a converged boot; its time the same within noise); only the vendor
// libraries are loaded on first use (core/lazy.ts).
import { statSync } from "node:fs";
import { stderr, stdout } from "./core/stdio.js";
import type { Argv } from "yargs";
import { errorMessage, exitCodeOf, formatProblem, InputError, OpError } from "./core/errors.js";
import { Host } from "./host/host.js";
import { resolveRoot } from "./host/root.js";
import { Logger, type Level, type LogFormat } from "./core/log.js";
import type { CommandContext } from "./commands/context.js";
import { loadYargs } from "./core/lazy.js";
import { parseBootArgv, type BootCommand, type GlobalArgs } from "./commands/boot-argv.js";

export { parseBootArgv };
import { applyCommand, planCommand } from "./commands/apply.js";
import { configCommand, userdataCommand, validateCommand } from "./commands/config.js";
import { bindCommand, earlyCommand, resetCommand, unbindCommand } from "./commands/device.js";
import { gcCommand } from "./commands/gc.js";
import { launchTemplateCommand } from "./commands/launch-template.js";
import { runCommand } from "./commands/run.js";
import { sriovCheckCommand } from "./commands/sriov.js";
import { statusCommand } from "./commands/status.js";

export const VERSION = "0.1.0";

export interface CliIo {
  out: (s: string) => void;
  err: { write(s: string): void };
  env: NodeJS.ProcessEnv;
}

const defaultIo: CliIo = {
  out: (s) => stdout.write(s),
  err: stderr,
  env: process.env,
};

export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let code = 0;
  let usageError: string | undefined;
  const ctxOf = (a: GlobalArgs): CommandContext => {
    const host = new Host(resolveRoot(a.root, io.env));
    const log = new Logger(a["log-level"], a["log-format"], io.err);
    return { host, log, configPath: a.config, out: io.out, env: io.env };
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
    run: wrap(async (ctx) => runCommand(ctx)),
    apply: wrap<{ "dry-run": boolean }>(async (ctx, a) =>
      applyCommand(ctx, { dryRun: a["dry-run"], argv }),
    ),
    early: wrap(async (ctx) => earlyCommand(ctx, {})),
  };
  const fast = parseBootArgv(argv);
  if (fast) {
    await boot[fast.command](fast.args);
    return code;
  }

  const yargs = await loadYargs();
  const parser: Argv<GlobalArgs> = yargs(argv)
    .scriptName("eni-dpdk")
    .usage(
      "$0 <command> [options]\n\nGets an EKS node's data-plane ENIs attached, bound to vfio-pci and advertised to the SR-IOV device plugin before kubelet starts.",
    )
    .option("config", {
      type: "string",
      describe: "main config file (default /etc/eni-dpdk/config.toml, then config.d/*.toml)",
    })
    .option("root", {
      type: "string",
      describe: "resolve every host path under this directory (env ENI_DPDK_ROOT; default /)",
    })
    // yargs widens a literal default to string; the casts keep Level/LogFormat.
    .option("log-level", {
      choices: ["debug", "info", "warn", "error"] as const,
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
      default: "info" as Level,
    })
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    .option("log-format", { choices: ["text", "json"] as const, default: "text" as LogFormat })
    .command(
      "validate [files..]",
      "validate config files standalone, or (without files) gather this instance's sources and validate the merge",
      (y) =>
        y.positional("files", {
          type: "string",
          array: true,
          describe: "TOML files to validate on their own",
        }),
      wrap<{ files?: string[] }>(async (ctx, a) => validateCommand(ctx, { files: a.files ?? [] })),
    )
    .command(
      "config",
      "print the effective merged config, with each value's source",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>(async (ctx, a) => configCommand(ctx, { json: a.json })),
    )
    .command(
      "plan",
      "gather, validate, observe, and print the actions apply would take (changes nothing)",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>(async (ctx, a) => planCommand(ctx, { json: a.json })),
    )
    .command(
      "apply",
      "execute the plan once: ENIs, host binding, SR-IOV config; writes /run/eni-dpdk/status.json",
      (y) =>
        y
          .option("dry-run", {
            type: "boolean",
            default: false,
            describe: "print the plan, change nothing",
          })
          .option("full", {
            type: "boolean",
            default: false,
            describe:
              "plan every stage even when every input is as a converged apply found it (see `unchanged` in docs/architecture.md)",
          }),
      boot.apply,
    )
    .command(
      "run",
      "the service (systemd ExecStart): apply, notify READY with a Status line, keep reconciling",
      (y) => y,
      boot.run,
    )
    .command(
      "gc",
      "delete ENIs eni-dpdk created for instances that are gone (available, our tags, past the grace period)",
      (y) =>
        y
          .option("dry-run", {
            type: "boolean",
            default: false,
            describe: "list what would be deleted and why the rest is kept; change nothing",
          })
          .option("json", { type: "boolean", default: false }),
      wrap<{ "dry-run": boolean; json: boolean }>(async (ctx, a) =>
        gcCommand(ctx, { dryRun: a["dry-run"], json: a.json }),
      ),
    )
    .command(
      "status",
      "show managed devices and host DPDK readiness",
      (y) => y.option("json", { type: "boolean", default: false }),
      wrap<{ json: boolean }>(async (ctx, a) => statusCommand(ctx, { json: a.json })),
    )
    .command(
      "sriov",
      "SR-IOV device plugin tools",
      (y) =>
        y
          .command(
            "check",
            "predict which devices the device plugin will advertise for each resource in its config, from this host's sysfs; exit 1 when a resource gets none",
            (yy) =>
              yy.option("json", { type: "boolean", default: false }).option("plugin-version", {
                type: "string",
                describe:
                  "the plugin release to apply the rules of, e.g. v3.5.1 (default: v3.6.0 or later)",
              }),
            wrap<{ json: boolean; "plugin-version"?: string }>(async (ctx, a) =>
              sriovCheckCommand(ctx, {
                json: a.json,
                pluginVersion: a["plugin-version"],
              }),
            ),
          )
          .demandCommand(1, "name an sriov command: check"),
      () => {},
    )
    .command(
      "bind <target>",
      "bind one device (BDF, ifname, ENI id or MAC) to a DPDK driver",
      (y) =>
        y
          .positional("target", { type: "string", demandOption: true })
          .option("driver", { type: "string", describe: "default: [dpdk].driver" })
          .option("force", {
            type: "boolean",
            default: false,
            describe: "override the safety guards (primary, routes, unmanaged)",
          }),
      wrap<{ target: string; driver?: string; force: boolean }>(async (ctx, a) =>
        bindCommand(ctx, {
          target: a.target,
          driver: a.driver,
          force: a.force,
        }),
      ),
    )
    .command(
      "unbind <target>",
      "return one device to its original kernel driver",
      (y) => y.positional("target", { type: "string", demandOption: true }),
      wrap<{ target: string }>(async (ctx, a) => unbindCommand(ctx, { target: a.target })),
    )
    .command(
      "reset",
      "unbind every managed device, remove eni-dpdk's networkd files and SR-IOV entries; leave the rest",
      (y) => y,
      wrap(async (ctx) => resetCommand(ctx, {})),
    )
    .command(
      "early",
      "offline rebind at boot from the state file (eni-dpdk-early.service; no network needed)",
      (y) => y,
      boot.early,
    )
    .command(
      "launch-template",
      "print the EC2 launch template NetworkInterfaces block and network-interface TagSpecifications (JSON) for the configured ENIs",
      (y) =>
        y
          .option("primary-security-group-ids", {
            type: "string",
            describe:
              "comma-separated security groups of the primary ENI (device index 0): the node's",
          })
          .option("managed-node-group", {
            type: "boolean",
            default: false,
            describe: "leave SubnetId out of every entry (EKS managed node groups refuse it)",
          }),
      wrap<{ "primary-security-group-ids"?: string; "managed-node-group": boolean }>(
        async (ctx, a) =>
          launchTemplateCommand(ctx, {
            primarySecurityGroupIds: a["primary-security-group-ids"],
            managedNodeGroup: a["managed-node-group"],
          }),
      ),
    )
    .command(
      "userdata",
      "render MIME multipart user-data: nodeadm's NodeConfig plus an eni-dpdk TOML part",
      (y) =>
        y
          .option("nodeconfig", {
            type: "string",
            demandOption: true,
            describe: "NodeConfig YAML file",
          })
          .option("config", {
            type: "string",
            demandOption: true,
            describe: "eni-dpdk TOML file (validated first)",
          }),
      wrap<{ nodeconfig: string }>(async (ctx, a) =>
        userdataCommand(ctx, {
          nodeconfig: a.nodeconfig,
          config: a.config!,
        }),
      ),
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
      [
        {
          source: `${from} ${root}`,
          key: "(root)",
          message: "is not an existing directory; every host path is resolved under it",
        },
      ],
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
