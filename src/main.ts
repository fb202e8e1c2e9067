#!/usr/bin/env node
// Entry point: keep it tiny so the bundle's start-up cost is only what a command imports.
import nodeModule from "node:module";
import path from "node:path";
import * as signals from "./core/signals.js";
import * as lazy from "./core/lazy.js";
import * as startup from "./core/startup.js";
import * as stdio from "./core/stdio.js";
import { besides, keepVendorScripts, runCached, setCacheDir } from "./core/code-cache.js";
import { replayableApply } from "./commands/boot-argv.js";
import { resolveRoot, UNCHANGED_PATH } from "./host/root.js";

/** The bundle's CLI script (chunks/cli-<hash>.js), set by scripts/build.mjs; unset under tsx. */
declare const ENI_DPDK_CLI_SCRIPT: string | undefined;
/** The apply of an unchanged node (commands/unchanged.ts) as a script of its own, a tenth the size. */
declare const ENI_DPDK_UNCHANGED_SCRIPT: string | undefined;
/** The commands of a boot, each with a code cache of its own; the others share one ("other"). */
const CACHED_COMMANDS = ["run", "apply", "early"];
/** The vendor scripts no boot loads, whose caches the other commands keep. */
const OFF_BOOT_VENDOR_SCRIPTS = ["yargs"];

// Required, not imported: an ES import of node:fs builds its facade, which loads fs's streams (3 ms).
const { existsSync } = nodeModule.createRequire(import.meta.url)(
  "node:fs",
) as typeof import("node:fs");

const argv = process.argv.slice(2);
// The service catches its signals before anything else loads: a SIGHUP during start-up is a reload.
if (argv.includes("run")) signals.catchSignals();

// systemd's CacheDirectory= (the units'); elsewhere the bundle's own directory, as at the AMI's build.
const cacheDir =
  process.env.CACHE_DIRECTORY?.split(":")[0] || besides("./.v8-cache", import.meta.url);
setCacheDir(cacheDir);
// Node 22 (the AMI's) keeps V8's code of the ES vendor chunks there too. It is keyed by each file's
// content and by the V8 version; Node 20 has no such cache.
const { enableCompileCache } = nodeModule as { enableCompileCache?: (dir: string) => unknown };
enableCompileCache?.(cacheDir);

// A dry run or help would keep the code of a path the boot does not take.
const offPath = argv.some((a) => a === "--dry-run" || a === "--help" || a === "-h");
/** The code cache this start uses: its boot command's own, or the one the others share. */
const command = (!offPath && argv.find((a) => CACHED_COMMANDS.includes(a))) || "other";

type Cli = typeof import("./cli.js");
type Unchanged = typeof import("./commands/unchanged.js");

/**
 * `apply` on a node whose every input reads as the last converged apply found it: done without
 * loading the planner. Undefined when anything differs, or for any other command.
 */
async function unchanged(): Promise<number | undefined> {
  if (typeof ENI_DPDK_UNCHANGED_SCRIPT !== "string") return undefined;
  const args = replayableApply(argv);
  // A boot finds no record (a reboot empties /run): then the script is not even loaded.
  if (!args || !existsSync(path.join(resolveRoot(args.root), UNCHANGED_PATH))) return undefined;
  try {
    const script = runCached<Unchanged>(
      besides(ENI_DPDK_UNCHANGED_SCRIPT, import.meta.url),
      cacheDir,
      "unchanged",
      { lazy, signals, startup, stdio },
    );
    const code = await script.exports.replayUnchanged(argv);
    if (code === 0) startup.onStarted(() => setImmediate(() => script.keep()));
    return code;
  } catch {
    return undefined; // a shortcut only: whatever went wrong, the planner runs
  }
}

function loadCli(): Promise<Cli> {
  if (typeof ENI_DPDK_CLI_SCRIPT !== "string") return import("./cli.js");
  const cli = runCached<Cli>(besides(ENI_DPDK_CLI_SCRIPT, import.meta.url), cacheDir, command, {
    lazy,
    signals,
    startup,
    stdio,
  });
  // The other commands share one cache of the script ("other"), which no boot reads; without it
  // compiling the script was 15-27 ms of `status` or `plan` on Node 20. yargs parses no boot's own
  // argv (commands/boot-argv.ts), so any command may make its cache too. The SDK's and the other
  // vendor scripts' caches are a boot's own: only its command writes them.
  startup.onStarted(() =>
    setImmediate(() => {
      cli.keep();
      keepVendorScripts(command === "other" ? OFF_BOOT_VENDOR_SCRIPTS : undefined);
    }),
  );
  return Promise.resolve(cli.exports);
}

// Exit as soon as the command is done: keep-alive sockets of the HTTP clients (IMDS, EC2) would
// otherwise hold the process for seconds, and boot time is what this service is judged by.
function exit(code: number): void {
  if (code === 0) startup.started();
  process.exitCode = code;
  // After the cache write that started() queued with setImmediate, and once what a stream still
  // holds is written. A boot's lines went out with write(2) (core/stdio.ts), so none waits in
  // Node's streams; yargs prints help and versions through those, so the other commands flush them.
  const streams =
    command === "other"
      ? (next: () => void) => process.stdout.write("", () => process.stderr.write("", next))
      : (next: () => void) => next();
  setImmediate(() => stdio.flushStdio(() => streams(() => process.exit(code))));
}

Promise.resolve()
  .then(unchanged)
  .then(async (code) => code ?? (await loadCli()).main(argv))
  .then(exit, (err: unknown) => {
    stdio.stderr.write(`level=error msg=${JSON.stringify(String((err as Error)?.stack ?? err))}\n`);
    exit(1);
  });
