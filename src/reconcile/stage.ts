// A stage, as nodeadm's daemons and aspects: it plans from the desired config and what the node
// shows (reading only), then applies that plan. The reconcile loop runs the stages in order; each
// reads what the stages before it produced (`Upstream`), and in a dry run what they expect to.
// `plan`/`apply --dry-run` print the stages' own plans; a converged node yields no actions.
import type { Ec2Factory } from "../cloud/ec2.js";
import type { Imds, ImdsNicInfo, InstanceIdentity } from "../cloud/imds.js";
import type { Config } from "../config/model.js";
import type { Deadline } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import type { EniRecord, State } from "../core/state.js";
import type { Host } from "../host/host.js";
import type { SriovApplyResult } from "../host/sriov-model.js";
import type { NodeEniResult } from "../sources/nodeeni.js";
import type { HostDeviceResult } from "./host.js";

export type StageName = "eni" | "host" | "sriov" | "nodeeni";

export type ActionKind =
  | "create"
  | "adopt"
  | "attach"
  | "wait-attached"
  | "set-delete-on-termination"
  | "wait-nic"
  | "recover"
  | "load-module"
  | "enable-noiommu"
  | "hugepages"
  | "write-networkd"
  | "bind"
  | "unbind"
  | "set-mtu"
  | "link-up"
  | "move-aside"
  | "write-sriov"
  | "patch-status";

export interface Action {
  stage: StageName;
  kind: ActionKind;
  /** what it acts on: ENI name, BDF, file path */
  target: string;
  /** one human line: why and what exactly */
  detail: string;
}

/** Everything a stage may use. The EC2 client is behind a lazy factory so a no-op boot never loads the SDK. */
export interface StageContext {
  host: Host;
  imds: Imds;
  ec2: Ec2Factory;
  log: Logger;
  deadline: Deadline;
  config: Config;
  instance: InstanceIdentity;
  /** the IMDS macs tree as read, holding the lock, at the start of this pass */
  imdsNics: ImdsNicInfo[];
  state: State;
  dryRun: boolean;
  /** the NodeENI source's result, when it ran */
  nodeEni?: NodeEniResult;
}

/** What the stages hand on: ENIs attached, devices bound (or kept on a kernel driver), the SR-IOV file. */
export interface Upstream {
  enis: EniRecord[];
  devices: HostDeviceResult[];
  sriov?: SriovApplyResult;
}

export interface StagePlan {
  actions: Action[];
  /** what the next stages see in a dry run, in place of this stage's apply */
  expected: Partial<Upstream>;
}

export interface Stage<P extends StagePlan = StagePlan> {
  readonly name: StageName;
  /** false: the stage is off for this config (SR-IOV disabled, no NodeENI) and is skipped */
  enabled(ctx: StageContext): boolean;
  plan(ctx: StageContext, up: Upstream): Promise<P>;
  apply(ctx: StageContext, plan: P, up: Upstream): Promise<Partial<Upstream>>;
}

export function formatActions(actions: Action[]): string {
  if (actions.length === 0) return "nothing to do: the node matches the desired state\n";
  const w = Math.max(...actions.map((a) => a.kind.length));
  return (
    actions
      .map((a) => `  ${a.stage.padEnd(6)} ${a.kind.padEnd(w)}  ${a.target}  ${a.detail}`)
      .join("\n") + "\n"
  );
}
