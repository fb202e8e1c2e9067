#!/usr/bin/env node
// Entry point: keep it tiny so the bundle's start-up cost is only what a command imports.
import { catchSignals } from "./core/signals.js";

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
