// A stage, as nodeadm's daemons and aspects: it plans from the desired config and what the node
// shows (reading only), then applies that plan. The reconcile loop runs the stages in order; each
// reads what the stages before it produced (`Upstream`), and in a dry run what they expect to.
// `plan`/`apply --dry-run` print the stages' own plans; a converged node yields no actions.
import type { Ec2Factory } from "../cloud/ec2.js";
import type { Imds, ImdsNicInfo, InstanceIdentity } from "../cloud/imds.js";
import type { Config, EffectiveConfig } from "../config/model.js";
import type { Deadline } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import type { EniRecord, State } from "../host/state.js";
import type { Host } from "../host/host.js";
import type { SriovApplyResult } from "../host/sriov-model.js";
import type { NodeEniResult } from "../sources/source.js";
import type { NodeConfigPartLike } from "../sources/nodeconfig.js";
import { type Action, type StageName } from "../core/action.js";
import type { SriovCheckReport } from "../host/sriov-check.js";

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
  /** the user-data's decoded parts (nodeadm's NodeConfig among them), when the user-data source read them */
  userDataParts?: NodeConfigPartLike[];
  /** each configured ENI's sources, kept in its record */
  eniOrigins?: EffectiveConfig["eniOrigins"];
  /**
   * `run`'s timer pass: an external ENI is looked for once, not waited for (a boot or a reload
   * waits for the hook that attaches it; a timer pass would hold the host lock for the whole wait)
   */
  periodic?: boolean;
}

/** One ENI's device as the host stage leaves it. */
export interface HostDeviceResult {
  name: string;
  eniId?: string;
  mac: string;
  bdf: string;
  vendor: string;
  device: string;
  /** the driver now */
  driver: string;
  /** the kernel driver it had before eni-dpdk bound it */
  originalDriver: string;
  deviceNode: string;
  /** full `prefix/name`, or "" for kernel-driver ENIs */
  resourceName: string;
  state: "bound" | "kernel" | "failed";
  error?: string;
  ifname?: string;
  /** something was written for this device in this run */
  changed: boolean;
}

/** What the stages hand on: ENIs attached, devices bound (or kept on a kernel driver), the SR-IOV file. */
export interface Upstream {
  enis: EniRecord[];
  /** the ENIs the eni stage could not make ready; the later stages go on with the others */
  eniFailure?: Error;
  devices: HostDeviceResult[];
  sriov?: SriovApplyResult;
  /** what the device plugin will advertise from the file the sriov stage left (its check after the write) */
  sriovCheck?: SriovCheckReport;
  /** what a stage's apply found wrong without failing; the pass collects them into its warnings */
  warnings?: string[];
  maxPods?: MaxPodsResult;
}

export interface StagePlan {
  actions: Action[];
  /** what the next stages see in a dry run, in place of this stage's apply */
  expected: Partial<Upstream>;
  /** what the run must tell (the outcome's warnings; apply logs them, the Status line counts them) */
  warnings?: string[];
}

/** kubelet's maxPods drop-in for nodeadm, as the kubelet stage leaves it. */
export interface MaxPodsResult {
  path: string;
  /** written: ours is in place; removed: ours was taken away; absent: none needed; skipped: needed, not written */
  state: "written" | "removed" | "absent" | "skipped";
  changed: boolean;
  /** the value in our drop-in */
  maxPods?: number;
  /** what nodeadm computes alone for this instance type */
  nodeadmMaxPods?: number;
  /** one line: the computation, or why there is no drop-in */
  reason: string;
}

export interface Stage<P extends StagePlan = StagePlan> {
  readonly name: StageName;
  /** false: the stage is off for this config (SR-IOV disabled, no NodeENI) and is skipped */
  enabled(ctx: StageContext): boolean;
  plan(ctx: StageContext, up: Upstream): Promise<P>;
  apply(ctx: StageContext, plan: P, up: Upstream): Promise<Partial<Upstream>>;
}
