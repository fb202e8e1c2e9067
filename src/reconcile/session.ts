// Per-process handles to IMDS and EC2, created once and shared by every pass of `run`: one IMDS
// token and keep-alive pool, one EC2 client (loaded only when a call is really made).
import { type Ec2Api, type Ec2Factory, lazyEc2, recordingEc2 } from "../cloud/ec2.js";
import { ImdsClient, readInstance, type Imds, type InstanceIdentity } from "../cloud/imds.js";
import type { Deadline } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import type { InstanceAccess } from "../sources/source.js";

export class Session implements InstanceAccess {
  readonly imds: Imds;
  private instanceP?: Promise<InstanceIdentity>;
  private ec2F?: Ec2Factory;
  /** set when the EC2 SDK was loaded in this process (tests and the status document read it) */
  ec2Loaded = false;
  /** mutating EC2 calls EC2 accepted in this session, one line each */
  readonly changes: string[] = [];

  constructor(
    readonly log: Logger,
    readonly deadline: Deadline,
    imds?: Imds,
  ) {
    this.imds = imds ?? new ImdsClient({ deadline, logger: log });
  }

  /** The same IMDS client and token, under a new deadline (the next pass of `run`). */
  next(deadline: Deadline): Session {
    return new Session(this.log, deadline, this.imds);
  }

  identity(): Promise<InstanceIdentity> {
    this.instanceP ??= readInstance(this.imds);
    return this.instanceP;
  }

  /** The EC2 client factory; the SDK itself loads on the first call, not here. */
  ec2Factory(): Ec2Factory {
    this.ec2F ??= (() => {
      let api: Promise<Ec2Api> | undefined;
      return () => {
        this.ec2Loaded = true;
        api ??= (async () => {
          const client = await lazyEc2({
            region: (await this.identity()).region,
            logger: this.log,
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
