// The plan: desired state vs observed state, as a list of actions each stage will take.
// `plan`/`apply --dry-run` print it; `apply` executes it; a converged node yields no actions.
import type { Config } from "../config/model.js";
import type { Host } from "../host/host.js";
import type { Deadline } from "../core/deadline.js";
import type { Imds, ImdsNicInfo, InstanceIdentity } from "../cloud/imds.js";
import type { Logger } from "../core/log.js";
import type { State } from "../core/state.js";

export type Stage = "eni" | "host" | "sriov" | "nodeeni";

export interface Action {
  stage: Stage;
  /** verb: create, adopt, attach, set-delete-on-termination, load-module, enable-noiommu, hugepages, bind, rebind, unbind, set-mtu, link-up, write-networkd, write-sriov, patch-status … */
  kind: string;
  /** what it acts on: ENI name, BDF, file path */
  target: string;
  /** one human line: why and what exactly */
  detail: string;
}

/** Everything a stage needs. The EC2 client is behind a lazy factory so a no-op boot never loads the SDK. */
export interface StageContext {
  host: Host;
  imds: Imds;
  log: Logger;
  deadline: Deadline;
  config: Config;
  instance: InstanceIdentity;
  /** the IMDS macs tree as read at the start of this apply */
  imdsNics: ImdsNicInfo[];
  state: State;
  dryRun: boolean;
}

/** What a CLI command handler gets. Handlers return the exit code. */
export interface CommandContext {
  host: Host;
  log: Logger;
  /** --config PATH (host path of the main config file), when given */
  configPath?: string;
  /** stdout writer (tests capture it) */
  out: (text: string) => void;
}

export function formatActions(actions: Action[]): string {
  if (actions.length === 0) return "nothing to do: the node matches the desired state\n";
  const w = Math.max(...actions.map((a) => a.kind.length));
  return actions.map((a) => `  ${a.stage.padEnd(6)} ${a.kind.padEnd(w)}  ${a.target}  ${a.detail}`).join("\n") + "\n";
}
