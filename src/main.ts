#!/usr/bin/env node
// Entry point: keep it tiny so the bundle's start-up cost is only what a command imports.
import nodeModule from "node:module";
import { catchSignals } from "./core/signals.js";

// Node 22 (the AMI's) keeps V8's compiled code of the bundle's chunks in a cache beside them, so
// a start skips parsing the 300 KB boot chunk: 126 -> 117 ms for a converged apply. The cache is
// keyed by each file's content and by the V8 version, so a new release or Node rejects it and
// writes it anew; when the directory cannot be written the start is as without it. Node 20 has
// no such cache.
const { enableCompileCache } = nodeModule as { enableCompileCache?: (dir: string) => unknown };
enableCompileCache?.(new URL("./.v8-cache", import.meta.url).pathname);

const argv = process.argv.slice(2);
// The service catches its signals before anything else loads: a SIGHUP during start-up is a reload.
if (argv.includes("run")) catchSignals();

// Exit as soon as the command is done: keep-alive sockets of the HTTP clients (IMDS, EC2) would
// otherwise hold the process for seconds, and boot time is what this service is judged by.
function exit(code: number): void {
  process.exitCode = code;
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

import("./cli.js")
  .then(({ main }) => main(argv))
  .then(exit, (err: unknown) => {
    process.stderr.write(
      `level=error msg=${JSON.stringify(String((err as Error)?.stack ?? err))}\n`,
    );
    exit(1);
  });
