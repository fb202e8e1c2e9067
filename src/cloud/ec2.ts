// The EC2 seam: the few EC2 calls eni-dpdk makes, behind a small interface. @aws-sdk/client-ec2 is
// imported only when the first call is made, so a boot where IMDS proves nothing must change never
// pays its ~0.5-0.8 s load time. Retries live here too (`withEc2Retry`), bounded by the caller's
// deadline, and the pacing of every call by EC2's per-action request buckets (`Ec2Pacer`).
import type {
  AttachNetworkInterfaceCommandInput,
  AttachNetworkInterfaceCommandOutput,
  CreateNetworkInterfaceCommandInput,
  CreateNetworkInterfaceCommandOutput,
  DeleteNetworkInterfaceCommandInput,
  DeleteNetworkInterfaceCommandOutput,
  DescribeInstancesCommandInput,
  DescribeInstancesCommandOutput,
  DescribeInstanceTypesCommandInput,
  DescribeInstanceTypesCommandOutput,
  DescribeNetworkInterfacesCommandInput,
  DescribeNetworkInterfacesCommandOutput,
  DescribeSecurityGroupsCommandInput,
  DescribeSecurityGroupsCommandOutput,
  DescribeSubnetsCommandInput,
  DescribeSubnetsCommandOutput,
  DescribeTagsCommandInput,
  DescribeTagsCommandOutput,
  ModifyNetworkInterfaceAttributeCommandInput,
  ModifyNetworkInterfaceAttributeCommandOutput,
} from "@aws-sdk/client-ec2";
import { OpError } from "../core/errors.js";
import {
  BacklogPacer,
  Deadline,
  delayFor,
  sleep,
  steadyNow,
  type BucketSize,
  type PaceState,
} from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import { lazyCrypto, loadEc2Sdk } from "../core/lazy.js";
import { nullRecord } from "../core/records.js";
import { ec2Bucket, ec2BucketKey, isEc2ReadAction, type Ec2Action } from "../config/facts.js";

/** Only the calls eni-dpdk makes. Each is one request (no hidden retries, see lazyEc2). */
export interface Ec2Api {
  describeNetworkInterfaces(
    input: DescribeNetworkInterfacesCommandInput,
  ): Promise<DescribeNetworkInterfacesCommandOutput>;
  createNetworkInterface(
    input: CreateNetworkInterfaceCommandInput,
  ): Promise<CreateNetworkInterfaceCommandOutput>;
  attachNetworkInterface(
    input: AttachNetworkInterfaceCommandInput,
  ): Promise<AttachNetworkInterfaceCommandOutput>;
  modifyNetworkInterfaceAttribute(
    input: ModifyNetworkInterfaceAttributeCommandInput,
  ): Promise<ModifyNetworkInterfaceAttributeCommandOutput>;
  describeSubnets(input: DescribeSubnetsCommandInput): Promise<DescribeSubnetsCommandOutput>;
  describeSecurityGroups(
    input: DescribeSecurityGroupsCommandInput,
  ): Promise<DescribeSecurityGroupsCommandOutput>;
  describeInstanceTypes(
    input: DescribeInstanceTypesCommandInput,
  ): Promise<DescribeInstanceTypesCommandOutput>;
  describeTags(input: DescribeTagsCommandInput): Promise<DescribeTagsCommandOutput>;
  describeInstances(input: DescribeInstancesCommandInput): Promise<DescribeInstancesCommandOutput>;
  deleteNetworkInterface(
    input: DeleteNetworkInterfaceCommandInput,
  ): Promise<DeleteNetworkInterfaceCommandOutput>;
  /** The pacer every call of this client goes through, when it has one. */
  pacer?: Ec2Pacer;
}

// facts.ts EC2_ACTIONS (the actions [ec2.limits] accepts) names exactly the methods above: tsc checks.
type Ec2Method = Capitalize<Exclude<keyof Ec2Api, "pacer">>;
void (true satisfies [Ec2Method, Ec2Action] extends [Ec2Action, Ec2Method] ? true : false);

/** Loads the SDK and builds the client on first use; later calls return the same client. */
export type Ec2Factory = () => Promise<Ec2Api>;

/**
 * The same API, appending one line to `changes` for every mutating call that EC2 accepted, so a
 * failure found afterwards can say exactly what was changed (the ENI id, where it is attached).
 */
export function recordingEc2(api: Ec2Api, changes: string[]): Ec2Api {
  return {
    ...api,
    createNetworkInterface: async (i) => {
      const out = await api.createNetworkInterface(i);
      const name = i.TagSpecifications?.flatMap((t) => t.Tags ?? []).find(
        (t) => t.Key === "eni-dpdk:name",
      )?.Value;
      changes.push(
        `EC2 created ${out.NetworkInterface?.NetworkInterfaceId}${name ? ` (${name})` : ""} in ${i.SubnetId}`,
      );
      return out;
    },
    attachNetworkInterface: async (i) => {
      const out = await api.attachNetworkInterface(i);
      changes.push(
        `EC2 attached ${i.NetworkInterfaceId} to ${i.InstanceId} at network card ${i.NetworkCardIndex ?? 0}, device index ${i.DeviceIndex} (${out.AttachmentId})`,
      );
      return out;
    },
    modifyNetworkInterfaceAttribute: async (i) => {
      const out = await api.modifyNetworkInterfaceAttribute(i);
      const srd = i.EnaSrdSpecification;
      const what = i.Attachment
        ? `DeleteOnTermination=${i.Attachment.DeleteOnTermination}`
        : i.SourceDestCheck
          ? `SourceDestCheck=${i.SourceDestCheck.Value}`
          : srd
            ? `EnaSrdEnabled=${srd.EnaSrdEnabled}${srd.EnaSrdUdpSpecification ? ` EnaSrdUdpEnabled=${srd.EnaSrdUdpSpecification.EnaSrdUdpEnabled}` : ""}`
            : Object.keys(i)
                .filter((k) => k !== "NetworkInterfaceId")
                .join(",");
      changes.push(`EC2 set ${what} on ${i.NetworkInterfaceId}`);
      return out;
    },
    deleteNetworkInterface: async (i) => {
      const out = await api.deleteNetworkInterface(i);
      changes.push(`EC2 deleted ${i.NetworkInterfaceId}`);
      return out;
    },
  };
}

export interface Ec2Options {
  region: string;
  /** Explicit endpoint (tests, emulators). Without it the SDK honours AWS_ENDPOINT_URL_EC2 itself. */
  endpoint?: string;
  logger?: Logger;
  /**
   * SDK attempts per call. Default 1: `withEc2Retry` owns retrying, because the SDK's standard mode
   * stops after a fixed number of attempts and a per-client retry quota, and its back-off does not
   * know our deadline; under an account-wide throttling storm it would give up long before the boot
   * deadline. One retry layer, deadline-aware, with full jitter.
   */
  maxAttempts?: number;
  /** Per-request socket timeout, so a dropped or hung connection becomes a retryable error. */
  requestTimeoutMs?: number;
  /** Paces every call by EC2's per-action buckets; the product always passes one (Session). */
  pacer?: Ec2Pacer;
  /** Bounds the pacer's waits: the pass's deadline (asked at each call: a pass may narrow it). */
  deadline?: Deadline | (() => Deadline);
  /**
   * The SDK's own `retryMode: "adaptive"` (a client-side rate limiter that backs off on
   * throttling) with this many attempts, in place of one attempt per call. Kept for the measured
   * comparison in docs/benchmarks.md (`scripts/bench/fleet.ts --client sdk|both`).
   */
  sdkAdaptiveAttempts?: number;
}

export const SDK_WARNING_ENV = "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED";

/**
 * The SDK prints a multi-line NodeVersionSupportWarning on Node < 22 each time a process builds its
 * first client, which would land in the journal on every boot. We set the SDK's own switch (read by
 * @aws-sdk/core's emitWarningIfUnsupportedVersion; unless the operator set it either way) before the
 * first client is built, and log one short info line instead, once per process.
 */
function quietNodeVersionWarning(log?: Logger): void {
  if (process.env[SDK_WARNING_ENV] !== undefined) return;
  process.env[SDK_WARNING_ENV] = "true";
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) {
    log?.info(
      "AWS SDK releases after early January 2027 need Node >= 22; this build pins its SDK version",
      {
        node: process.versions.node,
      },
    );
  }
}

export function lazyEc2(opts: Ec2Options): Ec2Factory {
  let client: Promise<Ec2Api> | undefined;
  return () => {
    client ??= (async () => {
      quietNodeVersionWarning(opts.logger);
      const sdk = await loadEc2Sdk();
      const c = new sdk.EC2Client({
        region: opts.region,
        ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
        retryMode: opts.sdkAdaptiveAttempts ? "adaptive" : "standard",
        maxAttempts: opts.sdkAdaptiveAttempts ?? opts.maxAttempts ?? 1,
        // Without throwOnRequestTimeout the SDK only logs a warning and keeps waiting on a hung request.
        requestHandler: {
          connectionTimeout: 3000,
          requestTimeout: opts.requestTimeoutMs ?? 15_000,
          throwOnRequestTimeout: true,
        },
      });
      opts.logger?.debug("EC2 client ready", {
        region: opts.region,
        endpoint: opts.endpoint ?? process.env.AWS_ENDPOINT_URL_EC2,
      });
      const api: Ec2Api = {
        describeNetworkInterfaces: (i) => c.send(new sdk.DescribeNetworkInterfacesCommand(i)),
        createNetworkInterface: (i) => c.send(new sdk.CreateNetworkInterfaceCommand(i)),
        attachNetworkInterface: (i) => c.send(new sdk.AttachNetworkInterfaceCommand(i)),
        modifyNetworkInterfaceAttribute: (i) =>
          c.send(new sdk.ModifyNetworkInterfaceAttributeCommand(i)),
        describeSubnets: (i) => c.send(new sdk.DescribeSubnetsCommand(i)),
        describeSecurityGroups: (i) => c.send(new sdk.DescribeSecurityGroupsCommand(i)),
        describeInstanceTypes: (i) => c.send(new sdk.DescribeInstanceTypesCommand(i)),
        describeTags: (i) => c.send(new sdk.DescribeTagsCommand(i)),
        describeInstances: (i) => c.send(new sdk.DescribeInstancesCommand(i)),
        deleteNetworkInterface: (i) => c.send(new sdk.DeleteNetworkInterfaceCommand(i)),
      };
      return opts.pacer ? pacedEc2(api, opts.pacer, opts.deadline) : api;
    })();
    // A failed load (e.g. missing module) may be retried by a later call.
    client.catch(() => (client = undefined));
    return client;
  };
}

// ---- pacing ------------------------------------------------------------------------------------

/**
 * One caller's pacing of its EC2 calls: a BacklogPacer per request bucket (core/deadline.ts), sized
 * as EC2 documents (config/facts.ts), its queue slot from a hash of the instance id. A throttle in
 * one bucket also raises the others this caller still expects to use, by calls per node
 * (`expect`): the nodes that crowd the describes at boot crowd the creates next, and learning that
 * from a describe costs no mutating call. A throttled describe also means a storm (a node group
 * booting at once): from then on a throttle adds two bucket-fulls; before, half of one (a lone
 * throttle in a busy account clears soon). The state, turns included, lives on in /run across the
 * unit's restarts (`load`/`save`); it is saved only once this process has sent a mutating call, so
 * a run rejected in pre-flight writes nothing. A restarted process does not let its describes'
 * throttles raise the other buckets again: it meets the same storm its predecessor counted.
 */
export class Ec2Pacer {
  private readonly pacers = new Map<string, BacklogPacer>();
  private bucketOf: (key: string) => BucketSize;
  private perNode: Record<string, number> = {};
  private loaded?: Promise<void>;
  private slot = 0.5;
  private mutatingSent = false;
  /** a describe was throttled in this boot: many nodes at once (kept in /run as STORM_KEY) */
  private storm = false;
  /** the saved state held mutating buckets: this process goes on from an earlier one's queue */
  private resumed = false;
  private saving: Promise<void> = Promise.resolve();
  /** calls delayed, and throttles seen (tests and benchmarks read them) */
  readonly stats = { paced: 0, pacedMs: 0, throttled: 0 };

  constructor(
    private readonly opts: {
      /** what places this caller in the queue (the instance id) */
      identity: () => Promise<string>;
      /** the bucket sizes to pace by; EC2's documented ones unless told otherwise */
      bucketOf?: (key: string) => BucketSize;
      load?: () => Promise<Record<string, PaceState> | undefined>;
      save?: (state: Record<string, PaceState>) => Promise<void>;
      log?: Logger;
      now?: () => number;
    },
  ) {
    this.bucketOf = opts.bucketOf ?? ec2Bucket;
  }

  /**
   * Pace by these bucket sizes from now on (the account's `[ec2.limits]`, known once the sources
   * are merged, and again after a reload); what was learned of each bucket is kept.
   */
  useBuckets(bucketOf: (key: string) => BucketSize): void {
    this.bucketOf = bucketOf;
    for (const [key, p] of this.pacers) p.resize(bucketOf(key));
  }

  /** The size `key`'s bucket is paced by (tests, status). */
  bucket(key: string): BucketSize {
    return this.bucketOf(key);
  }

  /** The calls per bucket key this caller will make in the pass ahead (default 1). */
  expect(calls: Record<string, number>): void {
    this.perNode = { ...this.perNode, ...calls };
  }

  /** Wait for this caller's slot in `key`'s bucket; past the deadline, wait it out and fail. */
  async before(key: string, action: string, deadline?: Deadline): Promise<void> {
    await this.ready();
    if (!isEc2ReadAction(action)) this.mutatingSent = true;
    const wait = this.pacer(key).delayMs();
    if (wait <= 0) return;
    const left = deadline ? deadline.remaining() : Infinity;
    if (wait > left) {
      await deadline!.sleep(left);
      throw new Ec2Error(
        action,
        "RequestLimitExceeded",
        `EC2 ${action}: the account's request rate is exhausted (RequestLimitExceeded); this node's next try is due in ${Math.round(wait / 1000)} s, after this run's deadline`,
        "the unit's next start (or the next reconcile pass) goes on from here and adopts what was created; at fleet scale let the launch template attach the ENIs, or raise service.timeout_seconds",
      );
    }
    this.stats.paced++;
    this.stats.pacedMs += wait;
    await (deadline ? deadline.sleep(wait) : sleep(wait));
  }

  /** A call of `key` was throttled: learn, share with the buckets still ahead, persist. */
  throttled(key: string): void {
    this.stats.throttled++;
    if (isEc2ReadAction(key)) this.storm = true;
    const p = this.pacer(key);
    p.throttled(this.storm ? 2 : 0.5);
    const perNode = p.backlog() / (this.perNode[key] ?? 1);
    // A restarted process already learned the storm its describes meet again: the same nodes, counted.
    if (!(this.resumed && isEc2ReadAction(key)))
      for (const [other, n] of Object.entries(this.perNode))
        if (other !== key) this.pacer(other).atLeast(perNode * n);
    this.opts.log?.debug("EC2 throttled; pacing", {
      bucket: key,
      backlog: Math.round(p.backlog()),
      next_in_ms: Math.round(p.delayMs()),
    });
    if (this.mutatingSent && this.opts.save) {
      const save = this.opts.save;
      this.saving = this.saving
        .then(() => save(this.snapshot()))
        .catch((e: unknown) =>
          this.opts.log?.debug("could not save the EC2 pacing state", { error: String(e) }),
        );
    }
  }

  snapshot(): Record<string, PaceState> {
    const out = Object.fromEntries([...this.pacers].map(([k, p]) => [k, p.snapshot()]));
    if (this.storm) out[STORM_KEY] = { backlog: 1, at: (this.opts.now ?? steadyNow)() };
    return out;
  }

  /** The backlog estimated for `key` now (tests, status). */
  backlog(key: string): number {
    return this.pacer(key).backlog();
  }

  private ready(): Promise<void> {
    this.loaded ??= (async () => {
      this.slot = slotOf(await this.opts.identity());
      const saved = await this.opts.load?.().catch(() => undefined);
      for (const [k, st] of Object.entries(saved ?? {})) {
        if (k === STORM_KEY) this.storm = true;
        else if (Number.isFinite(st?.backlog) && Number.isFinite(st?.at)) {
          this.pacer(k, st);
          if (!isEc2ReadAction(k)) this.resumed = true;
        }
      }
    })();
    return this.loaded;
  }

  private pacer(key: string, state?: PaceState): BacklogPacer {
    let p = this.pacers.get(key);
    if (!p || state) {
      p = new BacklogPacer(
        this.bucketOf(key),
        this.slot,
        state ?? (p ? p.snapshot() : undefined),
        this.opts.now,
      );
      this.pacers.set(key, p);
    }
    return p;
  }
}

/** The entry of the saved pacing state that says a storm was seen. */
const STORM_KEY = "storm";

/** A caller's place in every queue: uniform in [0, 1), the same for the same instance. */
export function slotOf(identity: string): number {
  const h = lazyCrypto().createHash("sha256").update(identity).digest();
  return h.readUInt32BE(0) / 2 ** 32;
}

/** Set on an SDK error whose throttle the pacer has taken into account (withEc2Retry then adds no wait). */
const PACED = Symbol("eni-dpdk.paced");

function filteredOrPaged(input: unknown): boolean {
  const i = input as { Filters?: unknown[]; MaxResults?: number; NextToken?: string } | undefined;
  return !!(i?.Filters?.length || i?.MaxResults !== undefined || i?.NextToken);
}

/** Every call of `api` waits for its slot first and reports throttles to the pacer. */
export function pacedEc2(
  api: Ec2Api,
  pacer: Ec2Pacer,
  deadline?: Deadline | (() => Deadline),
): Ec2Api {
  const wrap =
    <I, O>(action: string, call: (i: I) => Promise<O>) =>
    async (input: I): Promise<O> => {
      const key = ec2BucketKey(action, filteredOrPaged(input));
      await pacer.before(key, action, typeof deadline === "function" ? deadline() : deadline);
      try {
        return await call(input);
      } catch (e) {
        if (classifyEc2Error(e).kind === "throttle") {
          pacer.throttled(key);
          if (e && typeof e === "object") Object.defineProperty(e, PACED, { value: true });
        }
        throw e;
      }
    };
  // Every call of the client, by its action's name (describeTags → DescribeTags).
  const paced: Record<string, unknown> = { pacer };
  for (const [name, fn] of Object.entries(api))
    if (typeof fn === "function")
      paced[name] = wrap(name[0].toUpperCase() + name.slice(1), (i: unknown) =>
        (fn as (i: unknown) => Promise<unknown>).call(api, i),
      );
  return paced as unknown as Ec2Api;
}

// ---- errors and retries -----------------------------------------------------------------------

export type Ec2ErrorKind = "throttle" | "transient" | "permanent";

const THROTTLE_CODES = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "EC2ThrottledException",
]);
const TRANSIENT_CODES = new Set([
  "InternalError",
  "InternalFailure",
  "ServiceUnavailable",
  "Unavailable",
  "RequestTimeout",
  "RequestTimeoutException",
  "TimeoutError",
]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENOTFOUND",
  "ECONNABORTED",
  "EHOSTUNREACH",
]);

export interface Ec2ErrorInfo {
  code: string;
  status?: number;
  kind: Ec2ErrorKind;
  message: string;
  /**
   * EC2 refused the request's signing time (RequestExpired: the node's clock is more than 15
   * minutes off), and the SDK has taken EC2's time from the answer's Date header: the next attempt
   * is signed with it, so it is retried.
   */
  clockCorrected?: boolean;
}

export function classifyEc2Error(e: unknown): Ec2ErrorInfo {
  const err = e as {
    name?: string;
    Code?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number; clockSkewCorrected?: boolean };
  };
  const status = err?.$metadata?.httpStatusCode;
  const code = err?.Code ?? err?.name ?? err?.code ?? "Error";
  const message = err?.message ?? String(e);
  let kind: Ec2ErrorKind = "permanent";
  const clockCorrected = err?.$metadata?.clockSkewCorrected === true;
  if (clockCorrected) kind = "transient";
  else if (THROTTLE_CODES.has(code) || status === 503 || status === 429) kind = "throttle";
  else if (TRANSIENT_CODES.has(code) || (status !== undefined && status >= 500)) kind = "transient";
  else if (
    status === undefined &&
    (NETWORK_CODES.has(err?.code ?? "") ||
      /socket hang up|ECONNRESET|ECONNREFUSED|timed? ?out/i.test(message))
  ) {
    kind = "transient";
  }
  return {
    code: NETWORK_CODES.has(err?.code ?? "") ? err.code! : code,
    status,
    kind,
    message,
    ...(clockCorrected ? { clockCorrected } : {}),
  };
}

/** A failed EC2 call; `code` is EC2's error code (e.g. InvalidSubnetID.NotFound, UnauthorizedOperation). */
export class Ec2Error extends OpError {
  constructor(
    readonly action: string,
    readonly code: string,
    message: string,
    hint: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, hint, { action, ec2_code: code, http_status: status }, options);
    this.name = "Ec2Error";
  }
}

/** The IAM actions the ENI stage and the tag fallback need. */
export const IAM_ACTIONS = [
  "ec2:DescribeNetworkInterfaces",
  "ec2:DescribeSubnets",
  "ec2:DescribeSecurityGroups",
  "ec2:DescribeInstanceTypes",
  "ec2:DescribeTags",
  "ec2:CreateNetworkInterface",
  "ec2:CreateTags",
  "ec2:AttachNetworkInterface",
  "ec2:ModifyNetworkInterfaceAttribute",
  // [gc]: leaked ENIs of instances that are gone
  "ec2:DescribeInstances",
  "ec2:DeleteNetworkInterface",
];

function hintFor(action: string, code: string): string {
  if (
    code === "UnauthorizedOperation" ||
    code === "AuthFailure" ||
    code.startsWith("AccessDenied")
  ) {
    return `grant the node's instance role ec2:${action}; eni-dpdk uses ${IAM_ACTIONS.join(", ")} (CreateTags covers the tags set at creation)`;
  }
  if (code === "AttachmentLimitExceeded")
    return "use fewer ENIs or a larger instance type (DescribeInstanceTypes NetworkInfo)";
  if (code.endsWith(".NotFound"))
    return "check the id in the configuration, and that it is in this instance's VPC and region";
  if (code === "RequestExpired" || code === "SignatureDoesNotMatch")
    return "the node's clock may be more than 15 minutes off AWS's (check `chronyc tracking` and `timedatectl`), and EC2's answer gave no time to correct by; fix the clock and run `eni-dpdk apply` again";
  if (code === "IdempotentParameterMismatch")
    return "an earlier create with the same name and subnet used other parameters; delete the available ENI tagged eni-dpdk:name or rename the ENI";
  return "see the EC2 error code in the AWS documentation, fix the cause and run `eni-dpdk apply` again";
}

let clockWarned = false;
/** Once per process: the node's clock is off, and by how much EC2's Date header says. */
function warnClockOnce(log: Logger | undefined, e: unknown): void {
  if (clockWarned || !log) return;
  clockWarned = true;
  const headers = (e as { $response?: { headers?: Record<string, string> } }).$response?.headers;
  const ec2Time = Date.parse(headers?.date ?? "");
  log.warn("the node's clock is off from EC2's; signing with EC2's time from now on", {
    off_by_s: Number.isNaN(ec2Time) ? "unknown" : Math.round((Date.now() - ec2Time) / 1000),
    next: "check time sync (chronyc tracking, timedatectl); EC2 refuses requests signed more than 15 minutes off",
  });
}

export interface RetryOptions {
  deadline: Deadline;
  log?: Logger;
  /** First back-off step for transient faults; full jitter draws from [0, min(cap, base·2^n)). */
  baseMs?: number;
  /**
   * First back-off step after throttling. Larger than for transient faults: a throttled account
   * stays throttled for seconds, and retrying within 200 ms mostly buys another RequestLimitExceeded.
   */
  throttleBaseMs?: number;
  capMs?: number;
  /** Called on each retry (tests and benchmarks count them). */
  onRetry?: (info: Ec2ErrorInfo, attempt: number) => void;
}

/** A resource's tags as a record (keys are input: a null prototype, `__proto__` is just a key). */
export function tagsOf(r: { TagSet?: { Key?: string; Value?: string }[] }): Record<string, string> {
  const out = nullRecord<string>();
  for (const t of r.TagSet ?? []) if (t.Key) out[t.Key] = t.Value ?? "";
  return out;
}

/** Every page of a paginated describe, each page one `withEc2Retry` call. */
export async function allPages<T extends { NextToken?: string }>(
  action: string,
  page: (nextToken: string | undefined) => Promise<T>,
  opts: RetryOptions,
): Promise<T[]> {
  const pages: T[] = [];
  let next: string | undefined;
  do {
    const got = await withEc2Retry(action, () => page(next), opts);
    pages.push(got);
    next = got.NextToken;
  } while (next);
  return pages;
}

/**
 * Run one EC2 call; retry throttling and transient faults with full jitter until the deadline;
 * fail at once with EC2's code on a permanent error.
 */
export async function withEc2Retry<T>(
  action: string,
  fn: () => Promise<T>,
  opts: RetryOptions,
): Promise<T> {
  const base = opts.baseMs ?? 200;
  const throttleBase = opts.throttleBaseMs ?? opts.baseMs ?? 1000;
  const cap = opts.capMs ?? 10_000;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof Ec2Error) throw e;
      const info = classifyEc2Error(e);
      if (info.kind === "permanent") {
        throw new Ec2Error(
          action,
          info.code,
          `EC2 ${action} failed: ${info.code}: ${info.message}`,
          hintFor(action, info.code),
          info.status,
          { cause: e },
        );
      }
      // A throttle the pacer saw is waited out in the pacer, before the next attempt.
      const paced = info.kind === "throttle" && (e as { [PACED]?: boolean })?.[PACED] === true;
      const wait = paced
        ? 0
        : delayFor(
            { firstMs: info.kind === "throttle" ? throttleBase : base, maxMs: cap, jitter: "full" },
            attempt,
          );
      if (opts.deadline.remaining() <= wait + 50) {
        throw new Ec2Error(
          action,
          info.code,
          `EC2 ${action} still failing when the deadline ran out (${attempt + 1} attempts; last: ${info.code}: ${info.message})`,
          info.kind === "throttle"
            ? "the account's EC2 request rate is exhausted; raise service.timeout_seconds or stagger node launches"
            : "check connectivity to the EC2 endpoint (VPC endpoint, proxy, security groups) and run `eni-dpdk apply` again",
          info.status,
          { cause: e },
        );
      }
      if (info.clockCorrected) warnClockOnce(opts.log, e);
      opts.onRetry?.(info, attempt + 1);
      if (attempt === 0 || attempt % 5 === 4) {
        opts.log?.debug("retrying EC2 call", {
          action,
          attempt: attempt + 1,
          code: info.code,
          wait_ms: Math.round(wait),
        });
      }
      if (wait > 0) await sleep(wait);
    }
  }
}

/**
 * The instance's own tags from DescribeTags, for when IMDS instance tags are disabled or a key holds
 * "/" or a space (IMDS never shows those).
 */
export async function describeInstanceTags(
  ec2: Ec2Api,
  instanceId: string,
  opts: { deadline?: Deadline; log?: Logger } = {},
): Promise<Record<string, string>> {
  const deadline = opts.deadline ?? new Deadline(30_000);
  const tags = nullRecord<string>(); // keys are input: `__proto__` is just a key
  const pages = await allPages(
    "DescribeTags",
    (NextToken) =>
      ec2.describeTags({ Filters: [{ Name: "resource-id", Values: [instanceId] }], NextToken }),
    { deadline, log: opts.log },
  );
  for (const t of pages.flatMap((p) => p.Tags ?? []))
    if (t.Key !== undefined) tags[t.Key] = t.Value ?? "";
  return tags;
}
