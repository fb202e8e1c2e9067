// The IMDS seam: IMDSv2 only, one token reused until near expiry, a per-request timeout, and a
// patient wait at boot bounded by the deadline. It speaks HTTP itself: @aws-sdk/ec2-metadata-service
// builds a new handler and connection for every request, and its first token alone cost about 40 ms
// of a boot (import plus request); docs/benchmarks.md has the figures. The SDK client is kept in
// the tests as the reference that the IMDS emulator answers as real IMDS does.
import { OpError } from "../core/errors.js";
import { Deadline, delayFor, sleep, steadyNow, type Backoff } from "../core/deadline.js";
import { KeepAlivePool } from "./imds-http.js";
import type { Logger } from "../core/log.js";
import { inputs } from "../core/inputs.js";

export const DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254";
const TOKEN_TTL_SECONDS = 21600;

/** What the rest of eni-dpdk needs from IMDS. `get` answers undefined for 404. */
export interface Imds {
  get(path: string): Promise<string | undefined>;
  /** Raw bytes (user-data may be gzip). */
  getBytes(path: string): Promise<Buffer | undefined>;
  /** where readers warn about odd answers (e.g. an unservable tag key) */
  readonly logger?: Pick<Logger, "warn">;
}

export interface InstanceIdentity {
  instanceId: string;
  instanceType: string;
  region: string;
  az: string;
  primaryMac: string;
  /** read only by the NodeENI source, which alone needs it (openNodeEniSession) */
  localHostname?: string;
}

/** The private DNS name, the default Kubernetes node name. */
export async function readLocalHostname(imds: Imds): Promise<string> {
  return (await imds.get("meta-data/local-hostname"))?.trim() ?? "";
}

export interface ImdsNicInfo {
  mac: string;
  deviceNumber: number;
  networkCard: number;
  interfaceId?: string;
}

export interface ImdsOptions {
  endpoint?: string;
  timeoutMs?: number;
  /** Overall bound for waiting on an unreachable IMDS (boot). */
  deadline?: Deadline;
  logger?: Logger;
}

export class ImdsClient implements Imds {
  readonly endpoint: string;
  readonly logger?: Logger;
  private readonly timeoutMs: number;
  private token?: { value: string; expires: number };
  private pendingToken?: Promise<string>;

  constructor(private readonly opts: ImdsOptions = {}) {
    this.endpoint = (
      opts.endpoint ||
      process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT ||
      DEFAULT_IMDS_ENDPOINT
    ).replace(/\/+$/, "");
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.logger = opts.logger;
  }

  private pool?: KeepAlivePool;

  /**
   * One HTTP/1.1 request over a small keep-alive pool. IMDS answers in well under a millisecond, so
   * connection set-up and client overhead dominate: reusing sockets is what keeps boot fast.
   */
  private async request(
    method: "GET" | "PUT",
    path: string,
    headers: Record<string, string>,
  ): Promise<Buffer> {
    this.pool ??= new KeepAlivePool(this.endpoint);
    const a = await this.pool.request(method, `/latest/${path}`, headers, this.timeoutMs);
    if (a.status === 200) return a.body;
    throw Object.assign(new Error(`status code ${a.status}`), {
      $metadata: { httpStatusCode: a.status },
    });
  }

  /** Single-flight: concurrent reads share one token request. Never falls back to IMDSv1. */
  private tokenValue(): Promise<string> {
    if (this.token && this.token.expires - steadyNow() > 60_000)
      return Promise.resolve(this.token.value);
    this.pendingToken ??= (async () => {
      try {
        const body = await this.request("PUT", "api/token", {
          "x-aws-ec2-metadata-token-ttl-seconds": String(TOKEN_TTL_SECONDS),
        });
        const value = body.toString("utf8").trim();
        if (!value) throw new Error("IMDS answered an empty token");
        this.token = { value, expires: steadyNow() + TOKEN_TTL_SECONDS * 1000 };
        return value;
      } finally {
        this.pendingToken = undefined;
      }
    })();
    return this.pendingToken;
  }

  async get(path: string): Promise<string | undefined> {
    return (await this.getBytes(path))?.toString("utf8");
  }

  /** Raw bytes: user-data may be gzip, which a UTF-8 decode would corrupt. */
  async getBytes(path: string): Promise<Buffer | undefined> {
    const rel = path.replace(/^\/+/, "").replace(/^latest\//, "");
    const body = await this.withRetry(rel, async () =>
      this.request("GET", rel, { "x-aws-ec2-metadata-token": await this.tokenValue() }),
    );
    return inputs.observe(
      "imds",
      rel,
      () => body,
      (b) => b?.toString("base64"),
    );
  }

  /**
   * 404 → undefined. 401 → drop the token and retry once. Connection errors, timeouts, 429 and 5xx
   * are retried with capped back-off until the deadline, since IMDS can come up after us at boot.
   */
  private async withRetry<T>(path: string, fn: () => Promise<T>): Promise<T | undefined> {
    const deadline = this.opts.deadline ?? new Deadline(30_000);
    let attempt = 0;
    let reauthed = false;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        // Our own bugs are not an unreachable IMDS: fail at once instead of waiting out the deadline.
        if (e instanceof TypeError || e instanceof ReferenceError) throw e;
        const status = statusOf(e);
        if (status === 404) return undefined;
        if (status === 401 && !reauthed) {
          reauthed = true;
          this.token = undefined;
          continue;
        }
        // an answer that came late, or none: this pass is no proof for a later one
        inputs.spoil(`IMDS ${path}: ${(e as Error).message}`);
        // 429 says "later" (RFC 6585): waited for like a 5xx; every other 4xx is an answer
        if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
          throw new OpError(`IMDS answered ${status} for ${path}`, imdsHint, {
            endpoint: this.endpoint,
          });
        }
        attempt++;
        const wait = delayFor(IMDS_RETRY, attempt - 1);
        if (deadline.remaining() <= wait) {
          throw new OpError(
            `IMDS at ${this.endpoint} did not answer ${path} before the deadline (${attempt} attempts; last error: ${(e as Error).message})`,
            imdsHint,
            { endpoint: this.endpoint },
            { cause: e },
          );
        }
        if (attempt === 1 || attempt % 10 === 0) {
          this.opts.logger?.warn("waiting for IMDS", {
            path,
            attempt,
            error: (e as Error).message,
          });
        }
        await sleep(wait);
      }
    }
  }
}

/** IMDS may come up after us at boot: retry soon, then every second. */
const IMDS_RETRY: Backoff = { firstMs: 100, maxMs: 1000 };

const imdsHint =
  "check that IMDS is reachable and IMDSv2 hop limit allows it (aws ec2 describe-instances --query 'Reservations[].Instances[].MetadataOptions')";

/** The HTTP status of an answered request; undefined for connection errors and timeouts. */
function statusOf(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

async function required(imds: Imds, path: string): Promise<string> {
  const v = await imds.get(path);
  if (v === undefined || v.trim() === "") {
    throw new OpError(
      `IMDS has no ${path}`,
      "is this an EC2 instance? set AWS_EC2_METADATA_SERVICE_ENDPOINT for tests",
    );
  }
  return v.trim();
}

/**
 * The instance identity document answers id, type, region and zone in one round trip (each read
 * counts at boot); the separate paths are the fallback if it is missing or unreadable.
 */
export async function readInstance(imds: Imds): Promise<InstanceIdentity> {
  const [doc, primaryMac] = await Promise.all([
    imds.get("dynamic/instance-identity/document").then(identityDocument),
    required(imds, "meta-data/mac"),
  ]);
  const [instanceId, instanceType, region, az] = doc
    ? [doc.instanceId, doc.instanceType, doc.region, doc.availabilityZone]
    : await Promise.all([
        required(imds, "meta-data/instance-id"),
        required(imds, "meta-data/instance-type"),
        required(imds, "meta-data/placement/region"),
        required(imds, "meta-data/placement/availability-zone"),
      ]);
  return {
    instanceId,
    instanceType,
    region,
    az,
    primaryMac: primaryMac.toLowerCase(),
  };
}

interface IdentityDocument {
  instanceId: string;
  instanceType: string;
  region: string;
  availabilityZone: string;
}

function identityDocument(text: string | undefined): IdentityDocument | undefined {
  if (!text) return undefined;
  try {
    const d = JSON.parse(text) as Partial<IdentityDocument>;
    const fields = [d.instanceId, d.instanceType, d.region, d.availabilityZone];
    return fields.every((f) => typeof f === "string" && f !== "")
      ? (d as IdentityDocument)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One NIC from the macs tree: what observation needs (device-number, network-card, interface-id).
 * `network-card` may 404 (card 0); some docs say `network-card-index`. Subnet and VPC are read
 * only when planning needs them (readNicNetwork), since every read is a round trip at boot.
 */
export async function readNic(
  imds: Imds,
  mac: string,
  knownInterfaceId?: string,
): Promise<ImdsNicInfo | undefined> {
  const base = `meta-data/network/interfaces/macs/${mac}/`;
  const [dn, card, interfaceId] = await Promise.all([
    imds.get(base + "device-number"),
    imds.get(base + "network-card").then((c) => c ?? imds.get(base + "network-card-index")),
    knownInterfaceId ?? imds.get(base + "interface-id"),
  ]);
  if (dn === undefined) return undefined;
  return {
    mac,
    deviceNumber: Number(dn.trim()),
    networkCard: Number((card ?? "0").trim()),
    interfaceId: interfaceId?.trim(),
  };
}

/** A NIC's subnet and VPC from the macs tree (undefined when the MAC is not attached). */
export async function readNicNetwork(
  imds: Imds,
  mac: string,
): Promise<{ subnetId?: string; vpcId?: string }> {
  const base = `meta-data/network/interfaces/macs/${mac}/`;
  const [subnetId, vpcId] = await Promise.all([
    imds.get(base + "subnet-id"),
    imds.get(base + "vpc-id"),
  ]);
  return { subnetId: subnetId?.trim(), vpcId: vpcId?.trim() };
}

/** A NIC's subnet and security groups (one id per line) from the macs tree; undefined where IMDS answers 404. */
export async function readNicPlacement(
  imds: Imds,
  mac: string,
): Promise<{ subnetId?: string; securityGroupIds?: string[] }> {
  const base = `meta-data/network/interfaces/macs/${mac}/`;
  const [subnetId, groups] = await Promise.all([
    imds.get(base + "subnet-id"),
    imds.get(base + "security-group-ids"),
  ]);
  return {
    subnetId: subnetId?.trim(),
    securityGroupIds: groups
      ?.split("\n")
      .map((g) => g.trim())
      .filter(Boolean),
  };
}

/**
 * Every attached NIC. With the primary MAC (`meta-data/mac`, which EC2 documents as device number 0)
 * its three reads are skipped: it is device 0 on card 0 by definition, and no stage needs its
 * interface id. An ENI's MAC never changes, so the interface ids of MACs we recorded are not read
 * again; where a NIC sits (device and card) can change, so that is always read.
 */
export async function readNics(
  imds: Imds,
  primaryMac?: Promise<string>,
  knownInterfaceIds: ReadonlyMap<string, string> = new Map(),
): Promise<ImdsNicInfo[]> {
  const [listing, primary] = await Promise.all([
    imds.get("meta-data/network/interfaces/macs/"),
    primaryMac,
  ]);
  const macs = (listing ?? "")
    .split("\n")
    .map((l) => l.trim().replace(/\/$/, "").toLowerCase())
    .filter(Boolean);
  const nics = await Promise.all(
    macs.map((m): Promise<ImdsNicInfo | undefined> =>
      m === primary?.toLowerCase()
        ? Promise.resolve({ mac: m, deviceNumber: 0, networkCard: 0 })
        : readNic(imds, m, knownInterfaceIds.get(m)),
    ),
  );
  return nics.filter((n): n is ImdsNicInfo => !!n);
}

/**
 * The characters EC2 allows in a tag key that IMDS exposes: letters, digits and `+ - = . , _ : @`.
 * All are legal in a URL path as they are, so keys are requested raw: whether IMDS decodes a
 * percent-encoded key (`%3A`) is not documented.
 */
export const IMDS_TAG_KEY_RE = /^[A-Za-z0-9+\-=.,_:@]+$/;

/**
 * Instance tags from IMDS, or undefined when instance metadata tags are disabled (404). A listed key
 * IMDS could not have served (a character outside IMDS_TAG_KEY_RE) is skipped with a warning; a
 * listed key whose value answers 404 is an error, since the tag exists and would be lost.
 */
export async function readTags(imds: Imds): Promise<Record<string, string> | undefined> {
  const listing = await imds.get("meta-data/tags/instance/");
  if (listing === undefined) return undefined;
  const warn = imds.logger;
  const keys = listing
    .split("\n")
    .map((k) => k.trim())
    .filter((k) => {
      if (!k || IMDS_TAG_KEY_RE.test(k)) return !!k;
      warn?.warn(
        "IMDS listed an instance tag key with characters IMDS does not serve; skipped (DescribeTags would read it)",
        { tag: k },
      );
      return false;
    });
  const values = await Promise.all(keys.map((k) => imds.get(`meta-data/tags/instance/${k}`)));
  const tags: Record<string, string> = Object.create(null) as Record<string, string>;
  keys.forEach((k, i) => {
    const v = values[i];
    if (v === undefined) {
      throw new OpError(
        `IMDS lists instance tag "${k}" but answered 404 for meta-data/tags/instance/${k}`,
        "re-run once the instance's tags have settled; if it persists, turn instance metadata tags off " +
          "so eni-dpdk reads tags with EC2 DescribeTags",
        { tag: k },
      );
    }
    tags[k] = v;
  });
  return { ...tags };
}

export function readUserData(imds: Imds): Promise<Buffer | undefined> {
  return imds.getBytes("user-data");
}
