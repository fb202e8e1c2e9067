// Per-process handles to IMDS and EC2, created once and shared by every pass of `run`: one IMDS
// token and keep-alive pool, one EC2 client (loaded only when a call is really made), and one EC2
// pacer whose learned state is kept in /run, so a restarted unit goes on from what this boot learned.
// The pacer paces by the account's EC2 request limits where the config names them ([ec2.limits]),
// by EC2's documented sizes elsewhere.
import { Ec2Pacer, type Ec2Api, type Ec2Factory, lazyEc2, recordingEc2 } from "../cloud/ec2.js";
import { ImdsClient, readInstance, type Imds, type InstanceIdentity } from "../cloud/imds.js";
import { ec2BucketOf, type Ec2Config } from "../config/model.js";
import type { Deadline } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import type { Host } from "../host/host.js";
import { loadPacing, savePacing } from "../host/state.js";
import type { InstanceAccess } from "../sources/source.js";
import { inputs } from "../core/inputs.js";

export class Session implements InstanceAccess {
  readonly imds: Imds;
  private instanceP?: Promise<InstanceIdentity>;
  private ec2F?: Ec2Factory;
  private pacerP?: Ec2Pacer;
  /** the stage deadline of the pass in progress, when narrower than the session's */
  private narrowed?: Deadline;
  /** set when the EC2 SDK was loaded in this process (tests and the status document read it) */
  ec2Loaded = false;
  /** mutating EC2 calls EC2 accepted in this session, one line each */
  readonly changes: string[] = [];

  constructor(
    readonly log: Logger,
    readonly deadline: Deadline,
    imds?: Imds,
    private readonly shared: {
      host?: Host;
      pacer?: Ec2Pacer;
      /** the [ec2] config known when the session starts (the file's, before the sources merge) */
      ec2?: Ec2Config;
    } = {},
  ) {
    this.imds = imds ?? new ImdsClient({ deadline, logger: log });
    this.pacerP = shared.pacer;
  }

  /** The same IMDS client, token and EC2 pacer, under a new deadline (the next pass of `run`). */
  next(deadline: Deadline): Session {
    return new Session(this.log, deadline, this.imds, { ...this.shared, pacer: this.pacer });
  }

  /**
   * The merged config's [ec2] (the pass's sources are read): from now on the pacer paces by its
   * limits, keeping what it learned. A call made while the sources were read (DescribeTags) was
   * paced by what the session started with.
   */
  useConfig(ec2: Ec2Config): void {
    this.shared.ec2 = ec2;
    this.pacerP?.useBuckets(ec2BucketOf(ec2));
  }

  /** From now on EC2's pacing waits end by `deadline` too (the pass's stage deadline). */
  narrow(deadline: Deadline): void {
    this.narrowed = deadline;
  }

  identity(): Promise<InstanceIdentity> {
    this.instanceP ??= readInstance(this.imds);
    return this.instanceP;
  }

  /** Paces every EC2 call of this process by the account's per-action buckets ([ec2.limits], else EC2's documented sizes). */
  get pacer(): Ec2Pacer {
    const host = this.shared.host;
    this.pacerP ??= new Ec2Pacer({
      identity: async () => (await this.identity()).instanceId,
      bucketOf: ec2BucketOf(this.shared.ec2 ?? { limits: {} }),
      ...(host ? { load: () => loadPacing(host), save: (s) => savePacing(host, s) } : {}),
      log: this.log,
    });
    return this.pacerP;
  }

  /** The EC2 client factory; the SDK itself loads on the first call, not here. */
  ec2Factory(): Ec2Factory {
    this.ec2F ??= (() => {
      let api: Promise<Ec2Api> | undefined;
      return () => {
        this.ec2Loaded = true;
        inputs.spoil("called EC2");
        api ??= (async () => {
          const client = await lazyEc2({
            region: (await this.identity()).region,
            logger: this.log,
            pacer: this.pacer,
            deadline: () => this.narrowed ?? this.deadline,
          })();
          return recordingEc2(client, this.changes);
        })();
        api.catch(() => (api = undefined));
        return api;
      };
    })();
    return this.ec2F;
  }

  ec2(): Promise<Ec2Api> {
    return this.ec2Factory()();
  }
}
