// One process under GNU time, for the benchmarks: wall time measured around it here, peak RSS and
// CPU (user + sys, in the 10 ms ticks time reports) from time itself.
import { spawn } from "node:child_process";

export interface Timed {
  ms: number;
  rssMb: number;
  cpuMs: number;
  code: number;
  /** the process's own stderr, time's line taken out */
  stderr: string;
}

export function timed(argv: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn("/usr/bin/time", ["-f", "TIMED RSS_KB=%M CPU=%U+%S", ...argv], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("exit", (code) => {
      const ms = performance.now() - t0;
      const m = /TIMED RSS_KB=(\d+) CPU=([\d.]+)\+([\d.]+)\n?$/.exec(err);
      resolve({
        ms,
        rssMb: m ? Number(m[1]) / 1024 : NaN,
        cpuMs: m ? 1000 * (Number(m[2]) + Number(m[3])) : NaN,
        code: code ?? 1,
        stderr: m ? err.slice(0, m.index) : err,
      });
    });
  });
}
