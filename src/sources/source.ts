// The Source interface, as nodeadm's ConfigProvider: each source returns layers that carry their
// origin as data, and may wait for what the sources before it in the chain gave.
import type { Ec2Api } from "../cloud/ec2.js";
import type { KubeClient, NodeEniObject } from "../cloud/kube.js";
import type { Imds, InstanceIdentity } from "../cloud/imds.js";
import type { SourceName } from "../config/facts.js";
import type { EffectiveConfig, Layer } from "../config/model.js";
import type { Deadline } from "../core/deadline.js";
import type { Problem } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { Host } from "../host/host.js";
import type { UserDataPart } from "./mime.js";
import type { NodeIdentity } from "./nodeconfig.js";

/** The instance behind the sources that need one; absent in standalone validation. */
export interface InstanceAccess {
  imds: Imds;
  identity(): Promise<InstanceIdentity>;
  /** EC2 (DescribeTags); the SDK loads only when a source really calls it */
  ec2(): Promise<Ec2Api>;
  deadline: Deadline;
}

export interface SourceContext {
  host: Host;
  log: Logger;
  env: NodeJS.ProcessEnv;
  /** --config PATH, replacing /etc/eni-dpdk/config.toml */
  configPath?: string;
  instance?: InstanceAccess;
}

/** What the sources before one in the chain gave, merged. */
export interface Prior {
  config: EffectiveConfig;
  userDataParts: UserDataPart[];
}

/** A connection to the cluster plus who we are in it: the NodeENI source's, for status and watch. */
export interface NodeEniSession {
  client: KubeClient;
  node: NodeIdentity;
}

/** What the NodeENI source read (sources/nodeeni.ts), for the stages after it. */
export interface NodeEniResult {
  layers: Layer[];
  warnings: string[];
  fromCache: boolean;
  nodeName: string;
  /** every NodeENI read (name + spec), to cache with rememberNodeEnis after a successful apply */
  items: NodeEniObject[];
  /** when items were read from the API (the cache's time when fromCache) */
  fetchedAt: string;
  /** the NodeENIs that apply to this node */
  applied: string[];
  /** undefined when no cluster is configured (nothing in NodeConfig or [kubernetes]) */
  session?: NodeEniSession;
}

export interface Provided {
  layers: Layer[];
  /** one line on what was found, e.g. "2 eni-dpdk part(s), 1 NodeConfig part(s)" */
  note: string;
  warnings?: Problem[];
  userDataParts?: UserDataPart[];
  nodeEni?: NodeEniResult;
}

export interface Source {
  readonly name: SourceName | "env";
  /** true when there is nothing to read without the instance */
  readonly needsInstance: boolean;
  /** Layers in precedence order, or InputError naming each problem. `prior` waits for the sources before it. */
  provide(ctx: SourceContext, prior: () => Promise<Prior>): Promise<Provided>;
}
