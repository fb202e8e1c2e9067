// systemd's side of sd_notify for tests: a real unix datagram socket (test/support/notify-recv.py)
// that records every message with the sender's pid, as systemd sees it (SO_PASSCRED).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";

/** Debian's python3 when there is one: a python3 found on PATH may be a pyenv shim, ~0.1 s a start. */
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

export class NotifySocket {
  readonly messages: { pid: number; fields: Record<string, string> }[] = [];
  private waiters: (() => void)[] = [];
  private constructor(
    readonly path: string,
    private readonly proc: ChildProcess,
  ) {}

  static async open(): Promise<NotifySocket> {
    const sock = path.join(mkdtempSync(path.join(tmpdir(), "eni-dpdk-notify-")), "notify.sock");
    const proc = spawn(PYTHON, [path.join(import.meta.dirname, "notify-recv.py"), sock], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const n = new NotifySocket(sock, proc);
    await new Promise<void>((resolve) => {
      createInterface({ input: proc.stdout }).on("line", (line) => {
        const m = JSON.parse(line);
        if (m.listening) return resolve();
        n.messages.push(m);
        for (const w of n.waiters.splice(0)) w();
      });
    });
    return n;
  }

  async waitFor(
    pred: (f: Record<string, string>) => boolean,
    ms = 60_000,
  ): Promise<Record<string, string>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.messages.find((m) => pred(m.fields));
      if (hit) return hit.fields;
      if (Date.now() > deadline)
        throw new Error(
          `no matching notify message; got ${JSON.stringify(this.messages.map((m) => m.fields))}`,
        );
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  close(): void {
    this.proc.kill();
  }
}
