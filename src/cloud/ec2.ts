// The EC2 seam: the few EC2 calls eni-dpdk makes, behind a small interface. @aws-sdk/client-ec2 is
// imported only when the first call is made, so a boot where IMDS proves nothing must change never
// pays its ~0.5-0.8 s load time. Retries live here too (`withEc2Retry`), bounded by the caller's deadline.
import type {
  AttachNetworkInterfaceCommandInput,
  AttachNetworkInterfaceCommandOutput,
  CreateNetworkInterfaceCommandInput,
  CreateNetworkInterfaceCommandOutput,
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
import { Deadline, delayFor, sleep } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import { loadEc2Sdk } from "../core/lazy.js";
import { nullRecord } from "../core/records.js";

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
}

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
        retryMode: "standard",
        maxAttempts: opts.maxAttempts ?? 1,
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
      };
      return api;
    })();
    // A failed load (e.g. missing module) may be retried by a later call.
    client.catch(() => (client = undefined));
    return client;
  };
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
}

export function classifyEc2Error(e: unknown): Ec2ErrorInfo {
  const err = e as {
    name?: string;
    Code?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = err?.$metadata?.httpStatusCode;
  const code = err?.Code ?? err?.name ?? err?.code ?? "Error";
  const message = err?.message ?? String(e);
  let kind: Ec2ErrorKind = "permanent";
  if (THROTTLE_CODES.has(code) || status === 503 || status === 429) kind = "throttle";
  else if (TRANSIENT_CODES.has(code) || (status !== undefined && status >= 500)) kind = "transient";
  else if (
    status === undefined &&
    (NETWORK_CODES.has(err?.code ?? "") ||
      /socket hang up|ECONNRESET|ECONNREFUSED|timed? ?out/i.test(message))
  ) {
    kind = "transient";
  }
  return { code: NETWORK_CODES.has(err?.code ?? "") ? err.code! : code, status, kind, message };
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
  if (code === "IdempotentParameterMismatch")
    return "an earlier create with the same name and subnet used other parameters; delete the available ENI tagged eni-dpdk:name or rename the ENI";
  return "see the EC2 error code in the AWS documentation, fix the cause and run `eni-dpdk apply` again";
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
      const wait = delayFor(
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
      opts.onRetry?.(info, attempt + 1);
      if (attempt === 0 || attempt % 5 === 4) {
        opts.log?.debug("retrying EC2 call", {
          action,
          attempt: attempt + 1,
          code: info.code,
          wait_ms: Math.round(wait),
        });
      }
      await sleep(wait);
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
  let nextToken: string | undefined;
  do {
    const out = await withEc2Retry(
      "DescribeTags",
      () =>
        ec2.describeTags({
          Filters: [{ Name: "resource-id", Values: [instanceId] }],
          NextToken: nextToken,
        }),
      { deadline, log: opts.log },
    );
    for (const t of out.Tags ?? []) if (t.Key !== undefined) tags[t.Key] = t.Value ?? "";
    nextToken = out.NextToken;
  } while (nextToken);
  return tags;
}
