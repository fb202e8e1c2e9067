#!/usr/bin/env node
// Entry point: keep it tiny so the bundle's start-up cost is only what a command imports.
import { main } from "./cli.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`level=error msg=${JSON.stringify(String((err as Error)?.stack ?? err))}\n`);
    process.exitCode = 1;
  },
);
