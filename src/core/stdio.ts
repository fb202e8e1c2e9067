// Standard output and error as write(2) calls on descriptors 1 and 2, not through Node's
// process.stdout and process.stderr. Through the stream, a reader that went away (`apply 2>&1 |
// head -1`, a broken journal stream) was an uncaught EPIPE at the next line, and the apply died
// before its binds. Here those lines are lost and the pass goes on: a log write never fails a bind.
// On Linux the stream's writes to a pipe, file or terminal are synchronous too, so nothing changes
// in order or timing. A descriptor that is non-blocking and full (EAGAIN) hands that write and every
// later one to Node's stream, which waits for it; `flushStdio` waits for what the stream holds.
// One instance for the entry and the CLI script (scripts/build.mjs HOST_MODULES).
import { createRequire } from "node:module";

// Required, not imported, as in code-cache.ts: an ES import of node:fs would build its facade.
const require = createRequire(import.meta.url);
const fs = require("node:fs") as typeof import("node:fs");

/** A descriptor's lines, written at once; through `fallback()` once the descriptor said EAGAIN. */
export class FdWriter {
  private stream: NodeJS.WritableStream | undefined;
  /** whether a write found no reader (EPIPE); later writes are dropped too */
  closed = false;

  constructor(
    readonly fd: number,
    private readonly fallback: () => NodeJS.WritableStream,
  ) {}

  write(text: string): void {
    if (this.stream) {
      this.stream.write(text);
      return;
    }
    if (this.closed) return;
    let rest = Buffer.from(text);
    while (rest.length) {
      try {
        rest = rest.subarray(fs.writeSync(this.fd, rest));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EAGAIN") {
          this.stream = this.fallback();
          this.stream.write(rest);
        } else if (code === "EPIPE") this.closed = true;
        else throw e;
        return;
      }
    }
  }

  /** Calls `done` once the stream, if one took over, has passed on all it holds. */
  flush(done: () => void): void {
    if (this.stream) this.stream.write("", done);
    else done();
  }

  /** Whether the descriptor is the one journald gave this process (`JOURNAL_STREAM=dev:inode`). */
  isJournal(env: NodeJS.ProcessEnv = process.env): boolean {
    const want = env.JOURNAL_STREAM;
    if (!want) return false;
    try {
      const st = fs.fstatSync(this.fd);
      return want === `${st.dev}:${st.ino}`;
    } catch {
      return false;
    }
  }
}

export const stdout = new FdWriter(1, () => process.stdout);
export const stderr = new FdWriter(2, () => process.stderr);

/** Calls `done` once both descriptors have been given everything written to them. */
export function flushStdio(done: () => void): void {
  stdout.flush(() => stderr.flush(done));
}
