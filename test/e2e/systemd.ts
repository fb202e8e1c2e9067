// Scenario 7: a debootstrap'd Debian guest with systemd as PID 1 and the real unit files.
import type { StepResult } from "./topology.js";

export interface SystemdCtx {
  repo: string;
  work: string;
  krel: string;
  kernel: string;
  base: string;
  assets: string;
  say: (s: string) => void;
}

export async function runSystemdScenario(_ctx: SystemdCtx): Promise<StepResult> {
  return { scenario: "7", title: "systemd guest", status: "NOT DONE", evidence: ["not implemented yet"] };
}
