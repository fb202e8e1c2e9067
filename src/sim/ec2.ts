// An EC2 emulator: a real HTTP server speaking the EC2 Query protocol (form-encoded POST in, XML out,
// EC2 error XML) to the real SDK. It keeps ENIs, attachments, subnets, security groups, instances
// (which can be terminated), instance types and launch templates; adds per-action latency, an
// attaching→attached delay, account-wide token buckets (per action with EC2's documented sizes, or
// the older pooled ones per category), fault injection, a hot-plug hook, ENIs attached at launch as
// a launch template does, and an observer API (every request's parameters as the wire carried them).
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { ec2Bucket, ec2BucketKey, isEc2ReadAction } from "../config/facts.js";
import type { BucketSize } from "../core/deadline.js";

export interface SubnetSeed {
  subnetId: string;
  vpcId: string;
  az: string;
  cidr?: string;
  /** the Name tag */
  name?: string;
  tags?: Record<string, string>;
}
export interface SecurityGroupSeed {
  groupId: string;
  groupName: string;
  vpcId: string;
  tags?: Record<string, string>;
}
export interface InstanceSeed {
  instanceId: string;
  /** "running" unless terminated (terminateInstance) */
  state?: "running" | "terminated";
  instanceType: string;
  az: string;
  vpcId: string;
  subnetId: string;
  primaryEniId: string;
  primaryMac: string;
  tags?: Record<string, string>;
}
export interface InstanceTypeSeed {
  instanceType: string;
  maxEnis: number;
  /** per network card maximum; default one card holding maxEnis */
  cards?: number[];
  /** ENA Express (EnaSrdSupported); default true */
  enaSrd?: boolean;
  /** flexible ENA queues, per interface; undefined: unsupported */
  enaQueues?: { default: number; maxPerInterface: number; max: number };
}
export interface Ec2Seed {
  subnets?: SubnetSeed[];
  securityGroups?: SecurityGroupSeed[];
  instances?: InstanceSeed[];
  instanceTypes?: InstanceTypeSeed[];
}

export interface EmuAttachment {
  attachmentId: string;
  instanceId: string;
  deviceIndex: number;
  networkCardIndex: number;
  status: "attaching" | "attached" | "detaching";
  deleteOnTermination: boolean;
  attachTime: string;
  /** ENA Express as set at attach or by ModifyNetworkInterfaceAttribute */
  enaSrd?: { enabled: boolean; udp: boolean };
  enaQueueCount?: number;
  /** attached by RunInstances (a launch template), not by AttachNetworkInterface */
  atLaunch?: boolean;
}
export interface EmuEni {
  id: string;
  subnetId: string;
  vpcId: string;
  az: string;
  description: string;
  groups: string[];
  mac: string;
  privateIp: string;
  tags: Record<string, string>;
  attachment?: EmuAttachment;
  /** EC2's default for a new ENI is true */
  sourceDestCheck: boolean;
  /** created through CreateNetworkInterface (not seeded) */
  createdByApi: boolean;
  clientToken?: string;
  createdAt: number;
}

export interface AttachedEvent {
  eni: EmuEni;
  instanceId: string;
  deviceIndex: number;
  networkCardIndex: number;
}

export type Category = "mutating" | "describe";
/** One bucket per category, shared by every action in it (the benchmark's model before issue 14). */
export type PooledBuckets = Record<Category, BucketSize>;
/**
 * One bucket per action as EC2 has them (config/facts.ts `ec2Bucket`): `refillScale` multiplies every
 * refill (the fleet benchmark's time scaling), `override` replaces sizes by bucket key.
 */
export interface PerActionBuckets {
  perAction: true;
  refillScale?: number;
  override?: Record<string, BucketSize>;
}
/** EC2's own buckets, per action, at their documented sizes. */
export const EC2_THROTTLE: PerActionBuckets = { perAction: true };

export interface InjectedError {
  status: number;
  code: string;
  message: string;
  /** how many requests it applies to (Infinity for all) */
  count: number;
}

/** How far a request's signing time may be from the service's clock (EC2's RequestExpired). */
const REQUEST_EXPIRY_MS = 15 * 60_000;

/** SigV4's X-Amz-Date (YYYYMMDDTHHMMSSZ) as epoch ms; undefined when absent or not of that form. */
function amzDate(v: string | string[] | undefined): number | undefined {
  const m = typeof v === "string" && /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(v);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : undefined;
}

export interface Ec2Faults {
  /** action (or "*") → number of next requests answered 500 InternalError */
  error500: Record<string, number>;
  /** action (or "*") → number of next requests whose connection is dropped before acting */
  dropBefore: Record<string, number>;
  /** action → number of next requests that take effect but whose connection is dropped (response lost) */
  dropAfter: Record<string, number>;
  /** action → an injected EC2 error (e.g. UnauthorizedOperation) */
  errors: Record<string, InjectedError>;
  /** attachments never leave "attaching" */
  stuckAttach: boolean;
  /** DescribeNetworkInterfaces does not show an ENI until it is this old (EC2's eventual consistency) */
  describeLagMs: number;
}

export interface RequestRecord {
  action: string;
  status: number;
  code?: string;
  at: number;
  /** the form parameters as sent (Action and Version included) */
  params: Record<string, string>;
}

/** One entry of a launch template's NetworkInterfaces, as the emulator decoded it from the wire. */
export interface LaunchTemplateInterface {
  DeviceIndex?: number;
  NetworkCardIndex?: number;
  SubnetId?: string;
  Groups?: string[];
  DeleteOnTermination?: boolean;
  Description?: string;
  InterfaceType?: string;
  EnaSrdSpecification?: {
    EnaSrdEnabled?: boolean;
    EnaSrdUdpSpecification?: { EnaSrdUdpEnabled?: boolean };
  };
  EnaQueueCount?: number;
}
export interface LaunchTemplateRecord {
  launchTemplateId: string;
  name: string;
  networkInterfaces: LaunchTemplateInterface[];
  tagSpecifications: { ResourceType: string; Tags: { Key: string; Value: string }[] }[];
}

/** What a launch template (or a lifecycle hook's attach) gives one ENI at launch. */
export interface AtLaunchSpec {
  deviceIndex: number;
  networkCardIndex?: number;
  subnetId: string;
  groups?: string[];
  description?: string;
  tags?: Record<string, string>;
  /** default true, as a launch template's interfaces usually have */
  deleteOnTermination?: boolean;
  enaSrd?: { enabled: boolean; udp: boolean };
  enaQueueCount?: number;
  id?: string;
  mac?: string;
}

const isMutating = (action: string) => !isEc2ReadAction(action);

class TokenBucket {
  private tokens: number;
  private last = Date.now();
  constructor(readonly spec: BucketSize) {
    this.tokens = spec.capacity;
  }
  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(
      this.spec.capacity,
      this.tokens + ((now - this.last) / 1000) * this.spec.refillPerSec,
    );
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Ec2Emulator {
  readonly subnets = new Map<string, SubnetSeed>();
  readonly securityGroups = new Map<string, SecurityGroupSeed>();
  readonly instances = new Map<string, InstanceSeed>();
  readonly instanceTypes = new Map<string, InstanceTypeSeed>();
  readonly enis = new Map<string, EmuEni>();
  readonly launchTemplates = new Map<string, LaunchTemplateRecord>();
  readonly faults: Ec2Faults = {
    error500: {},
    dropBefore: {},
    dropAfter: {},
    errors: {},
    stuckAttach: false,
    describeLagMs: 0,
  };
  /** ms of latency per action ("*" = default) */
  latency: Record<string, number> = {};
  /** ms from attaching to attached */
  attachDelayMs = 0;
  /** Answer DescribeNetworkInterfaces, DescribeInstances and DescribeTags in pages of this many
   * (MaxResults, when smaller, wins), as EC2 does for large accounts; unset: one page unless
   * MaxResults asks */
  pageSize?: number;
  /** Hot-plug hook: runs when an attachment becomes "attached". */
  onAttached?: (ev: AttachedEvent) => void | Promise<void>;
  /** Hot-unplug hook: runs when an attachment is detached (the NIC leaves the instance). */
  onDetached?: (ev: AttachedEvent) => void;
  /** Runs after an action took effect and before its answer is sent (crash tests kill the caller here). */
  afterDispatch?: (action: string, params: URLSearchParams) => void | Promise<void>;
  /** Every request as answered, in order. */
  readonly requests: RequestRecord[] = [];
  /** Keep each request's parameters in `requests` (a fleet of thousands of nodes may turn it off). */
  recordParams = true;
  private buckets?: { spec: PooledBuckets | PerActionBuckets; tokens: Map<string, TokenBucket> };
  private server?: http.Server;
  private readonly sockets = new Set<Socket>();
  private port = 0;
  private seq = 0;
  private readonly tokens = new Map<string, string>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(seed: Ec2Seed = {}) {
    this.seed(seed);
  }

  seed(seed: Ec2Seed): this {
    for (const s of seed.subnets ?? []) this.subnets.set(s.subnetId, s);
    for (const g of seed.securityGroups ?? []) this.securityGroups.set(g.groupId, g);
    for (const t of seed.instanceTypes ?? []) this.instanceTypes.set(t.instanceType, t);
    for (const i of seed.instances ?? []) this.addInstance(i);
    return this;
  }

  /** An instance with its primary ENI attached at device index 0. */
  addInstance(i: InstanceSeed): void {
    this.instances.set(i.instanceId, i);
    const subnet = this.subnets.get(i.subnetId);
    this.enis.set(i.primaryEniId, {
      id: i.primaryEniId,
      subnetId: i.subnetId,
      vpcId: i.vpcId,
      az: i.az,
      description: "Primary network interface",
      groups: [],
      mac: i.primaryMac,
      privateIp: this.nextIp(subnet?.cidr),
      tags: {},
      sourceDestCheck: true,
      createdByApi: false,
      createdAt: Date.now(),
      attachment: {
        attachmentId: this.newId("eni-attach-"),
        instanceId: i.instanceId,
        deviceIndex: 0,
        networkCardIndex: 0,
        status: "attached",
        deleteOnTermination: true,
        attachTime: new Date().toISOString(),
        atLaunch: true,
      },
    });
  }

  /**
   * An ENI created and attached at launch, as RunInstances does for a launch template's
   * NetworkInterfaces (or as a lifecycle hook's Lambda leaves it): attached at once, with
   * DeleteOnTermination (default true), no API request recorded and no hot-plug hook run (the NIC is
   * there at boot; the caller puts it in IMDS and sysfs). Refuses what EC2 refuses at launch.
   */
  attachAtLaunch(instanceId: string, spec: AtLaunchSpec): EmuEni {
    const inst = this.instances.get(instanceId);
    if (!inst) throw new Error(`attachAtLaunch: no instance ${instanceId}`);
    const card = spec.networkCardIndex ?? 0;
    if (spec.deviceIndex === 0 && card === 0)
      throw new Error("attachAtLaunch: device index 0 on card 0 is the primary ENI");
    const taken = this.attachedTo(instanceId).find(
      (e) =>
        e.attachment!.deviceIndex === spec.deviceIndex && e.attachment!.networkCardIndex === card,
    );
    if (taken)
      throw new Error(
        `attachAtLaunch: ${instanceId} already has ${taken.id} at card ${card}, device index ${spec.deviceIndex}`,
      );
    const subnet = this.subnets.get(spec.subnetId);
    if (!subnet) throw new Error(`attachAtLaunch: no subnet ${spec.subnetId}`);
    if (subnet.az !== inst.az)
      throw new Error(`attachAtLaunch: subnet ${spec.subnetId} is not in ${inst.az}`);
    const eni = this.addEni({
      subnetId: spec.subnetId,
      description: spec.description ?? "",
      groups: spec.groups ?? [],
      tags: { ...(spec.tags ?? {}) },
      ...(spec.id ? { id: spec.id } : {}),
      ...(spec.mac ? { mac: spec.mac } : {}),
    });
    eni.attachment = {
      attachmentId: this.newId("eni-attach-"),
      instanceId,
      deviceIndex: spec.deviceIndex,
      networkCardIndex: card,
      status: "attached",
      deleteOnTermination: spec.deleteOnTermination ?? true,
      attachTime: new Date().toISOString(),
      atLaunch: true,
      ...(spec.enaSrd ? { enaSrd: { ...spec.enaSrd } } : {}),
      ...(spec.enaQueueCount !== undefined ? { enaQueueCount: spec.enaQueueCount } : {}),
    };
    return eni;
  }

  /**
   * Launch-time attachment of a stored launch template's secondary interfaces (device index 0 on
   * card 0 is the instance's primary, already there), tagged with its network-interface
   * TagSpecifications. Returns the ENIs attached, by device index.
   */
  launchFromTemplate(instanceId: string, templateName: string): EmuEni[] {
    const lt = this.launchTemplates.get(templateName);
    if (!lt) throw new Error(`launchFromTemplate: no launch template ${templateName}`);
    const inst = this.instances.get(instanceId);
    if (!inst) throw new Error(`launchFromTemplate: no instance ${instanceId}`);
    const tags: Record<string, string> = {};
    for (const ts of lt.tagSpecifications.filter((t) => t.ResourceType === "network-interface"))
      for (const t of ts.Tags) tags[t.Key] = t.Value;
    const primary = this.enis.get(inst.primaryEniId);
    if (primary) Object.assign(primary.tags, tags);
    return lt.networkInterfaces
      .filter((n) => !(n.DeviceIndex === 0 && (n.NetworkCardIndex ?? 0) === 0))
      .map((n) => {
        const srd = n.EnaSrdSpecification;
        return this.attachAtLaunch(instanceId, {
          deviceIndex: n.DeviceIndex!,
          networkCardIndex: n.NetworkCardIndex ?? 0,
          subnetId: n.SubnetId ?? inst.subnetId,
          groups: n.Groups ?? [],
          description: n.Description ?? "",
          tags,
          deleteOnTermination: n.DeleteOnTermination ?? true,
          ...(srd?.EnaSrdEnabled !== undefined
            ? {
                enaSrd: {
                  enabled: srd.EnaSrdEnabled,
                  udp: srd.EnaSrdUdpSpecification?.EnaSrdUdpEnabled ?? false,
                },
              }
            : {}),
          ...(n.EnaQueueCount !== undefined ? { enaQueueCount: n.EnaQueueCount } : {}),
        });
      });
  }

  /** Seed an ENI directly (e.g. someone else's ENI at a device index). */
  addEni(e: Partial<EmuEni> & { subnetId: string }): EmuEni {
    const subnet = this.subnets.get(e.subnetId);
    const eni: EmuEni = {
      id: e.id ?? this.newId("eni-"),
      vpcId: subnet?.vpcId ?? "vpc-unknown",
      az: subnet?.az ?? "unknown",
      description: "",
      groups: [],
      mac: e.mac ?? this.newMac(),
      privateIp: this.nextIp(subnet?.cidr),
      tags: {},
      sourceDestCheck: true,
      createdByApi: false,
      createdAt: Date.now(),
      ...e,
    };
    this.enis.set(eni.id, eni);
    return eni;
  }

  /**
   * Account-wide token buckets: per action (EC2_THROTTLE, EC2's sizes) or pooled per category;
   * undefined turns throttling off. Every bucket starts full.
   */
  setThrottle(b?: PooledBuckets | PerActionBuckets): void {
    this.buckets = b ? { spec: b, tokens: new Map() } : undefined;
  }

  /** The bucket a request draws from, by key, created full on first use. */
  private bucketFor(action: string, params: URLSearchParams): TokenBucket | undefined {
    if (!this.buckets) return undefined;
    const { spec, tokens } = this.buckets;
    let key: string;
    let size: BucketSize;
    if ("perAction" in spec) {
      const paged = [...params.keys()].some(
        (k) => k.startsWith("Filter.") || k === "MaxResults" || k === "NextToken",
      );
      key = ec2BucketKey(action, paged);
      const base = spec.override?.[key] ?? ec2Bucket(key);
      size = { capacity: base.capacity, refillPerSec: base.refillPerSec * (spec.refillScale ?? 1) };
    } else {
      const category: Category = isMutating(action) ? "mutating" : "describe";
      key = category;
      size = spec[category];
    }
    let b = tokens.get(key);
    if (!b) tokens.set(key, (b = new TokenBucket(size)));
    return b;
  }

  /**
   * The instance is terminated, as EC2 does it: ENIs attached with DeleteOnTermination are deleted
   * (the primary too), the others detached and left "available"; DescribeInstances shows it
   * "terminated" until forgetInstance (EC2 keeps it about an hour).
   */
  terminateInstance(instanceId: string): void {
    const inst = this.instances.get(instanceId);
    if (!inst) return;
    inst.state = "terminated";
    for (const e of [...this.enis.values()]) {
      if (e.attachment?.instanceId !== instanceId) continue;
      if (e.attachment.deleteOnTermination) this.enis.delete(e.id);
      else e.attachment = undefined;
    }
  }

  /** A terminated instance no longer shown at all: DescribeInstances answers NotFound for its id. */
  forgetInstance(instanceId: string): void {
    this.terminateInstance(instanceId);
    this.instances.delete(instanceId);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 30_000;
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(port, "127.0.0.1", 4096, () => r()));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (!this.server?.listening) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }

  // ---- observer API ------------------------------------------------------------------------------

  /** Requests received per action (throttled and failed ones included). */
  callsPerAction(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.requests) out[r.action] = (out[r.action] ?? 0) + 1;
    return out;
  }
  /** Mutating requests received (all outcomes), or only those that took effect (`accepted`). */
  mutatingCalls(opts: { accepted?: boolean } = {}): number {
    return this.requests.filter((r) => isMutating(r.action) && (!opts.accepted || r.status === 200))
      .length;
  }
  throttledCalls(category?: Category): number {
    return this.requests.filter(
      (r) =>
        r.code === "RequestLimitExceeded" &&
        (!category || isMutating(r.action) === (category === "mutating")),
    ).length;
  }
  totalCalls(): number {
    return this.requests.length;
  }
  /** ENIs per state: available, attaching, attached (detaching shows as itself). */
  enisByState(): Record<string, number> {
    const out: Record<string, number> = { available: 0, attaching: 0, attached: 0 };
    for (const e of this.enis.values()) {
      const s = e.attachment ? e.attachment.status : "available";
      out[s] = (out[s] ?? 0) + 1;
    }
    return out;
  }
  /** ENIs created through the API that are not attached (never attached, or adopted, or detached). */
  leakedEnis(): EmuEni[] {
    return [...this.enis.values()].filter((e) => e.createdByApi && !e.attachment);
  }
  /** Finish every attachment still "attaching" (once a stuckAttach fault is lifted). */
  completeAttachments(): void {
    for (const eni of this.enis.values()) {
      const a = eni.attachment;
      if (a?.status !== "attaching") continue;
      a.status = "attached";
      void Promise.resolve(
        this.onAttached?.({
          eni,
          instanceId: a.instanceId,
          deviceIndex: a.deviceIndex,
          networkCardIndex: a.networkCardIndex,
        }),
      ).catch(() => {});
    }
  }

  /** ENIs attached to an instance, primary included, by device index. */
  attachedTo(instanceId: string): EmuEni[] {
    return [...this.enis.values()]
      .filter((e) => e.attachment?.instanceId === instanceId)
      .sort(
        (a, b) =>
          a.attachment!.networkCardIndex - b.attachment!.networkCardIndex ||
          a.attachment!.deviceIndex - b.attachment!.deviceIndex,
      );
  }

  // ---- HTTP --------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body = "";
    for await (const c of req) body += c;
    const params = new URLSearchParams(body);
    const action = params.get("Action") ?? "";
    const sent = this.recordParams ? Object.fromEntries(params) : {};
    const record = (status: number, code?: string) =>
      this.requests.push({ action, status, code, at: Date.now(), params: sent });
    const sendError = (status: number, code: string, message: string) => {
      record(status, code);
      res.writeHead(status, { "content-type": "text/xml;charset=UTF-8" });
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${esc(code)}</Code><Message>${esc(message)}</Message></Error></Errors><RequestID>${this.requestId()}</RequestID></Response>`,
      );
    };
    const drop = () => {
      record(0, "DroppedConnection");
      req.socket.destroy();
    };

    if (req.method !== "POST") return sendError(400, "InvalidAction", "Only POST is supported");
    if (!action)
      return sendError(400, "MissingAction", "The request must contain the parameter Action");

    // As EC2: a signature dated more than 15 minutes from the service's clock is refused. The
    // answer carries the service's time in Date (Node's server adds it), which the SDK corrects by.
    const signedAt = amzDate(req.headers["x-amz-date"]);
    if (signedAt !== undefined && Math.abs(signedAt - Date.now()) > REQUEST_EXPIRY_MS)
      return sendError(
        400,
        "RequestExpired",
        `Request has expired. Timestamp date is ${req.headers["x-amz-date"]}`,
      );

    const wait = this.latency[action] ?? this.latency["*"] ?? 0;
    if (wait) await this.delay(wait);

    if (this.bucketFor(action, params)?.take() === false) {
      return sendError(503, "RequestLimitExceeded", "Request limit exceeded.");
    }
    if (takeFault(this.faults.dropBefore, action)) return drop();
    if (takeFault(this.faults.error500, action))
      return sendError(500, "InternalError", "An internal error has occurred");
    const injected = this.faults.errors[action];
    if (injected && injected.count > 0) {
      injected.count--;
      return sendError(injected.status, injected.code, injected.message);
    }

    let xml: string;
    try {
      xml = this.dispatch(action, params);
    } catch (e) {
      if (e instanceof ApiError) return sendError(e.status, e.code, e.message);
      return sendError(500, "InternalError", (e as Error).message);
    }
    await this.afterDispatch?.(action, params);
    if (takeFault(this.faults.dropAfter, action)) return drop();
    record(200);
    res.writeHead(200, { "content-type": "text/xml;charset=UTF-8" });
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${this.requestId()}</requestId>${xml}</${action}Response>`,
    );
  }

  private dispatch(action: string, p: URLSearchParams): string {
    switch (action) {
      case "DescribeNetworkInterfaces":
        return this.describeNetworkInterfaces(p);
      case "CreateNetworkInterface":
        return this.createNetworkInterface(p);
      case "AttachNetworkInterface":
        return this.attachNetworkInterface(p);
      case "DetachNetworkInterface":
        return this.detachNetworkInterface(p);
      case "DeleteNetworkInterface":
        return this.deleteNetworkInterface(p);
      case "ModifyNetworkInterfaceAttribute":
        return this.modifyNetworkInterfaceAttribute(p);
      case "DescribeSubnets":
        return this.describeSubnets(p);
      case "DescribeSecurityGroups":
        return this.describeSecurityGroups(p);
      case "DescribeInstances":
        return this.describeInstances(p);
      case "DescribeInstanceTypes":
        return this.describeInstanceTypes(p);
      case "DescribeTags":
        return this.describeTags(p);
      case "CreateTags":
        return this.createTags(p);
      case "CreateLaunchTemplate":
        return this.createLaunchTemplate(p);
      default:
        throw new ApiError(
          400,
          "InvalidAction",
          `The action ${action} is not valid for this web service.`,
        );
    }
  }

  // ---- actions -----------------------------------------------------------------------------------

  /** One page of `all` from the request's NextToken (an offset here; opaque to the client). */
  private page<T>(p: URLSearchParams, all: T[]): { items: T[]; token: string } {
    const asked = Number(p.get("MaxResults") ?? NaN);
    const size = Math.min(asked > 0 ? asked : Infinity, this.pageSize ?? Infinity);
    const raw = p.get("NextToken");
    const from = raw === null ? 0 : Number(Buffer.from(raw, "base64url").toString());
    if (!Number.isInteger(from) || from < 0 || from > all.length)
      throw new ApiError(400, "InvalidPaginationToken", `The token '${raw}' is invalid.`);
    const items = all.slice(from, from + size);
    const next = from + items.length;
    return {
      items,
      token:
        next < all.length
          ? `<nextToken>${Buffer.from(String(next)).toString("base64url")}</nextToken>`
          : "",
    };
  }

  private describeNetworkInterfaces(p: URLSearchParams): string {
    const ids = list(p, "NetworkInterfaceId");
    for (const id of ids) {
      if (!this.enis.has(id))
        throw new ApiError(
          400,
          "InvalidNetworkInterfaceID.NotFound",
          `The networkInterface ID '${id}' does not exist`,
        );
    }
    const filters = readFilters(p);
    const matchers: Record<string, (e: EmuEni) => string[]> = {
      "network-interface-id": (e) => [e.id],
      "attachment.instance-id": (e) => (e.attachment ? [e.attachment.instanceId] : []),
      "attachment.device-index": (e) => (e.attachment ? [String(e.attachment.deviceIndex)] : []),
      "attachment.network-card-index": (e) =>
        e.attachment ? [String(e.attachment.networkCardIndex)] : [],
      "attachment.status": (e) => (e.attachment ? [e.attachment.status] : []),
      "attachment.attachment-id": (e) => (e.attachment ? [e.attachment.attachmentId] : []),
      status: (e) => [eniStatus(e)],
      "subnet-id": (e) => [e.subnetId],
      "vpc-id": (e) => [e.vpcId],
      "availability-zone": (e) => [e.az],
      "mac-address": (e) => [e.mac],
      "group-id": (e) => e.groups,
      "tag-key": (e) => Object.keys(e.tags),
    };
    const lag = this.faults.describeLagMs;
    const out = (ids.length ? ids.map((id) => this.enis.get(id)!) : [...this.enis.values()]).filter(
      (e) => matchAll(filters, matchers, e.tags, e) && (!lag || Date.now() - e.createdAt >= lag),
    );
    const pg = this.page(p, out);
    return `<networkInterfaceSet>${pg.items.map((e) => `<item>${this.eniXml(e)}</item>`).join("")}</networkInterfaceSet>${pg.token}`;
  }

  /** EC2's answer for an unknown subnet id. */
  private subnetOrThrow(id: string): SubnetSeed {
    const subnet = this.subnets.get(id);
    if (!subnet)
      throw new ApiError(400, "InvalidSubnetID.NotFound", `The subnet ID '${id}' does not exist`);
    return subnet;
  }

  /** EC2's answer for an unknown security group id. */
  private groupOrThrow(id: string): SecurityGroupSeed {
    const sg = this.securityGroups.get(id);
    if (!sg)
      throw new ApiError(400, "InvalidGroup.NotFound", `The security group '${id}' does not exist`);
    return sg;
  }

  private createNetworkInterface(p: URLSearchParams): string {
    const subnetId = p.get("SubnetId") ?? "";
    const subnet = this.subnetOrThrow(subnetId);
    const groups = list(p, "SecurityGroupId");
    for (const g of groups) {
      const sg = this.groupOrThrow(g);
      if (sg.vpcId !== subnet.vpcId) {
        throw new ApiError(
          400,
          "InvalidParameter",
          `Security group ${g} and subnet ${subnetId} belong to different networks.`,
        );
      }
    }
    const token = p.get("ClientToken") ?? undefined;
    if (token) {
      const prior = this.tokens.get(token);
      const existing = prior ? this.enis.get(prior) : undefined;
      if (existing) {
        if (existing.subnetId !== subnetId) {
          throw new ApiError(
            400,
            "IdempotentParameterMismatch",
            "The client token you have provided is associated with a resource that is already deleted or has different parameters.",
          );
        }
        return `<networkInterface>${this.eniXml(existing)}</networkInterface><clientToken>${esc(token)}</clientToken>`;
      }
    }
    const tags: Record<string, string> = {};
    for (const spec of indexed(p, "TagSpecification")) {
      const type = p.get(`${spec}.ResourceType`);
      if (type !== "network-interface") {
        throw new ApiError(
          400,
          "InvalidParameterValue",
          `'${type}' is not a valid taggable resource type for this operation.`,
        );
      }
      for (const t of indexed(p, `${spec}.Tag`))
        tags[p.get(`${t}.Key`) ?? ""] = p.get(`${t}.Value`) ?? "";
    }
    const eni: EmuEni = {
      id: this.newId("eni-"),
      subnetId,
      vpcId: subnet.vpcId,
      az: subnet.az,
      description: p.get("Description") ?? "",
      groups,
      mac: this.newMac(),
      privateIp: this.nextIp(subnet.cidr),
      tags,
      sourceDestCheck: true,
      createdByApi: true,
      clientToken: token,
      createdAt: Date.now(),
    };
    this.enis.set(eni.id, eni);
    if (token) this.tokens.set(token, eni.id);
    return `<networkInterface>${this.eniXml(eni)}</networkInterface>${token ? `<clientToken>${esc(token)}</clientToken>` : ""}`;
  }

  private attachNetworkInterface(p: URLSearchParams): string {
    const eni = this.eniOrThrow(p.get("NetworkInterfaceId"));
    const instanceId = p.get("InstanceId") ?? "";
    const inst = this.instances.get(instanceId);
    if (!inst)
      throw new ApiError(
        400,
        "InvalidInstanceID.NotFound",
        `The instance ID '${instanceId}' does not exist`,
      );
    if (inst.state === "terminated")
      throw new ApiError(
        400,
        "IncorrectInstanceState",
        `The instance '${instanceId}' is not in a state from which it can be attached.`,
      );
    const deviceIndex = intParam(p, "DeviceIndex", 0) ?? NaN;
    const card = intParam(p, "NetworkCardIndex", 0) ?? 0;
    if (Number.isNaN(deviceIndex))
      throw new ApiError(
        400,
        "MissingParameter",
        "The request must contain the parameter DeviceIndex",
      );
    const srd = enaSrdParams(p, "EnaSrdSpecification");
    const queues = intParam(p, "EnaQueueCount", 1);
    if (eni.attachment)
      throw new ApiError(400, "InvalidNetworkInterface.InUse", `Interface: [${eni.id}] in use.`);
    if (eni.az !== inst.az) {
      throw new ApiError(
        400,
        "InvalidParameterCombination",
        `You may not attach a network interface to an instance if they are not in the same availability zone`,
      );
    }
    const type = this.instanceTypes.get(inst.instanceType);
    const cards = type ? (type.cards ?? [type.maxEnis]) : undefined;
    if (srd?.enabled && type && type.enaSrd === false)
      throw new ApiError(
        400,
        "UnsupportedOperation",
        `ENA Express is not supported for instance type ${inst.instanceType}.`,
      );
    if (queues !== undefined && type) {
      if (!type.enaQueues)
        throw new ApiError(
          400,
          "UnsupportedOperation",
          `Instance type ${inst.instanceType} does not support flexible ENA queues.`,
        );
      if (queues > type.enaQueues.maxPerInterface)
        throw new ApiError(
          400,
          "InvalidParameterValue",
          `EnaQueueCount ${queues} exceeds the maximum of ${type.enaQueues.maxPerInterface} per interface for ${inst.instanceType}.`,
        );
    }
    if (cards && card >= cards.length)
      throw new ApiError(
        400,
        "InvalidParameterValue",
        `Network card index ${card} is not valid for instance type ${inst.instanceType}.`,
      );
    const attached = this.attachedTo(instanceId);
    if (
      attached.some(
        (e) => e.attachment!.deviceIndex === deviceIndex && e.attachment!.networkCardIndex === card,
      )
    ) {
      throw new ApiError(
        400,
        "InvalidParameterValue",
        `Instance '${instanceId}' already has an interface attached at device index '${deviceIndex}'.`,
      );
    }
    if (
      type &&
      (attached.length + 1 > type.maxEnis ||
        attached.filter((e) => e.attachment!.networkCardIndex === card).length + 1 > cards![card])
    ) {
      throw new ApiError(
        400,
        "AttachmentLimitExceeded",
        `Interface count ${attached.length + 1} exceeds the limit for ${inst.instanceType}`,
      );
    }
    const att: EmuAttachment = {
      attachmentId: this.newId("eni-attach-"),
      instanceId,
      deviceIndex,
      networkCardIndex: card,
      status: "attaching",
      deleteOnTermination: false,
      attachTime: new Date().toISOString(),
      ...(srd ? { enaSrd: { enabled: srd.enabled ?? false, udp: srd.udp ?? false } } : {}),
      ...(queues !== undefined ? { enaQueueCount: queues } : {}),
    };
    eni.attachment = att;
    const complete = () => {
      if (eni.attachment !== att || this.faults.stuckAttach || inst.state === "terminated") return;
      att.status = "attached";
      void Promise.resolve(
        this.onAttached?.({ eni, instanceId, deviceIndex, networkCardIndex: card }),
      ).catch(() => {});
    };
    if (this.attachDelayMs > 0) this.later(this.attachDelayMs, complete);
    else complete();
    return `<attachmentId>${att.attachmentId}</attachmentId><networkCardIndex>${card}</networkCardIndex>`;
  }

  private detachNetworkInterface(p: URLSearchParams): string {
    const id = p.get("AttachmentId") ?? "";
    const eni = [...this.enis.values()].find((e) => e.attachment?.attachmentId === id);
    if (!eni)
      throw new ApiError(
        400,
        "InvalidAttachmentID.NotFound",
        `The attachment ID '${id}' does not exist`,
      );
    if (eni.attachment!.deviceIndex === 0)
      throw new ApiError(
        400,
        "OperationNotPermitted",
        "The network interface at device index 0 cannot be detached.",
      );
    const a = eni.attachment!;
    eni.attachment = undefined;
    this.onDetached?.({
      eni,
      instanceId: a.instanceId,
      deviceIndex: a.deviceIndex,
      networkCardIndex: a.networkCardIndex,
    });
    return `<return>true</return>`;
  }

  private deleteNetworkInterface(p: URLSearchParams): string {
    const eni = this.eniOrThrow(p.get("NetworkInterfaceId"));
    if (eni.attachment)
      throw new ApiError(
        400,
        "InvalidParameterValue",
        `Network interface '${eni.id}' is currently in use.`,
      );
    this.enis.delete(eni.id);
    return `<return>true</return>`;
  }

  private modifyNetworkInterfaceAttribute(p: URLSearchParams): string {
    const eni = this.eniOrThrow(p.get("NetworkInterfaceId"));
    // EC2 documents one attribute per call.
    const given = [
      "Attachment.",
      "Description.",
      "SourceDestCheck.",
      "SecurityGroupId.",
      "EnaSrdSpecification.",
    ].filter((prefix) => [...p.keys()].some((k) => k.startsWith(prefix)));
    if (given.length !== 1)
      throw new ApiError(
        400,
        given.length ? "InvalidParameterCombination" : "MissingParameter",
        given.length
          ? `Only one attribute can be modified at a time; got ${given.map((g) => g.slice(0, -1)).join(", ")}.`
          : "The request must contain one attribute to modify.",
      );
    const sdc = boolParam(p, "SourceDestCheck.Value");
    if (given[0] === "SourceDestCheck." && sdc === undefined)
      throw new ApiError(400, "MissingParameter", "The request must contain SourceDestCheck.Value");
    const srd = enaSrdParams(p, "EnaSrdSpecification");
    if (srd) {
      if (!eni.attachment)
        throw new ApiError(
          400,
          "InvalidParameterValue",
          `ENA Express applies to an attached network interface; ${eni.id} is not attached.`,
        );
      const cur = eni.attachment.enaSrd ?? { enabled: false, udp: false };
      const next = { enabled: srd.enabled ?? cur.enabled, udp: srd.udp ?? cur.udp };
      if (next.udp && !next.enabled)
        throw new ApiError(
          400,
          "InvalidParameterCombination",
          "ENA Express must be enabled to enable ENA Express for UDP.",
        );
      eni.attachment.enaSrd = next;
    }
    if (sdc !== undefined) eni.sourceDestCheck = sdc;
    const attId = p.get("Attachment.AttachmentId");
    if (p.has("Attachment.EnaQueueCount"))
      throw new ApiError(
        400,
        "IncorrectInstanceState",
        "The ENA queue count of an attachment can be changed only while the instance is stopped.",
      );
    if (attId !== null) {
      if (!eni.attachment || eni.attachment.attachmentId !== attId) {
        throw new ApiError(
          400,
          "InvalidAttachmentID.NotFound",
          `The attachment ID '${attId}' does not exist`,
        );
      }
      const dot = boolParam(p, "Attachment.DeleteOnTermination");
      if (dot !== undefined) eni.attachment.deleteOnTermination = dot;
    }
    const desc = p.get("Description.Value");
    if (desc !== null) eni.description = desc;
    const groups = list(p, "SecurityGroupId");
    if (groups.length) eni.groups = groups;
    return `<return>true</return>`;
  }

  private describeSubnets(p: URLSearchParams): string {
    const ids = list(p, "SubnetId");
    for (const id of ids) this.subnetOrThrow(id);
    const matchers: Record<string, (s: SubnetSeed) => string[]> = {
      "subnet-id": (s) => [s.subnetId],
      "vpc-id": (s) => [s.vpcId],
      "availability-zone": (s) => [s.az],
      "cidr-block": (s) => [s.cidr ?? ""],
      state: () => ["available"],
    };
    const filters = readFilters(p);
    const out = [...this.subnets.values()]
      .filter((s) => ids.length === 0 || ids.includes(s.subnetId))
      .filter((s) => matchAll(filters, matchers, subnetTags(s), s));
    return `<subnetSet>${out
      .map(
        (s) =>
          `<item><subnetId>${s.subnetId}</subnetId><vpcId>${s.vpcId}</vpcId><availabilityZone>${s.az}</availabilityZone><cidrBlock>${s.cidr ?? "10.0.0.0/24"}</cidrBlock><state>available</state><availableIpAddressCount>250</availableIpAddressCount>${tagSet(subnetTags(s))}</item>`,
      )
      .join("")}</subnetSet>`;
  }

  private describeSecurityGroups(p: URLSearchParams): string {
    const ids = list(p, "GroupId");
    for (const id of ids) this.groupOrThrow(id);
    const names = list(p, "GroupName");
    const matchers: Record<string, (g: SecurityGroupSeed) => string[]> = {
      "group-id": (g) => [g.groupId],
      "group-name": (g) => [g.groupName],
      "vpc-id": (g) => [g.vpcId],
    };
    const filters = readFilters(p);
    const out = [...this.securityGroups.values()]
      .filter((g) => ids.length === 0 || ids.includes(g.groupId))
      .filter((g) => names.length === 0 || names.includes(g.groupName))
      .filter((g) => matchAll(filters, matchers, g.tags ?? {}, g));
    return `<securityGroupInfo>${out
      .map(
        (g) =>
          `<item><groupId>${g.groupId}</groupId><groupName>${esc(g.groupName)}</groupName><vpcId>${g.vpcId}</vpcId><groupDescription>${esc(g.groupName)}</groupDescription>${tagSet(g.tags ?? {})}</item>`,
      )
      .join("")}</securityGroupInfo>`;
  }

  private describeInstances(p: URLSearchParams): string {
    const ids = list(p, "InstanceId");
    for (const id of ids)
      if (!this.instances.has(id))
        throw new ApiError(
          400,
          "InvalidInstanceID.NotFound",
          `The instance ID '${id}' does not exist`,
        );
    const matchers: Record<string, (i: InstanceSeed) => string[]> = {
      "instance-id": (i) => [i.instanceId],
      "availability-zone": (i) => [i.az],
      "vpc-id": (i) => [i.vpcId],
      "instance-state-name": (i) => [i.state ?? "running"],
    };
    const filters = readFilters(p);
    const out = [...this.instances.values()]
      .filter((i) => ids.length === 0 || ids.includes(i.instanceId))
      .filter((i) => matchAll(filters, matchers, i.tags ?? {}, i));
    const pg = this.page(p, out);
    return `<reservationSet>${pg.items
      .map(
        (i) =>
          `<item><reservationId>r-${i.instanceId.slice(2)}</reservationId><instancesSet><item><instanceId>${i.instanceId}</instanceId><instanceType>${i.instanceType}</instanceType><placement><availabilityZone>${i.az}</availabilityZone></placement><subnetId>${i.subnetId}</subnetId><vpcId>${i.vpcId}</vpcId><instanceState>${i.state === "terminated" ? "<code>48</code><name>terminated</name>" : "<code>16</code><name>running</name>"}</instanceState>${tagSet(i.tags ?? {})}<networkInterfaceSet>${this.attachedTo(
            i.instanceId,
          )
            .map(
              (e) =>
                `<item><networkInterfaceId>${e.id}</networkInterfaceId><subnetId>${e.subnetId}</subnetId><vpcId>${e.vpcId}</vpcId><macAddress>${e.mac}</macAddress><status>in-use</status><attachment><attachmentId>${e.attachment!.attachmentId}</attachmentId><deviceIndex>${e.attachment!.deviceIndex}</deviceIndex><networkCardIndex>${e.attachment!.networkCardIndex}</networkCardIndex><status>${e.attachment!.status}</status><deleteOnTermination>${e.attachment!.deleteOnTermination}</deleteOnTermination></attachment></item>`,
            )
            .join("")}</networkInterfaceSet></item></instancesSet></item>`,
      )
      .join("")}</reservationSet>${pg.token}`;
  }

  private describeInstanceTypes(p: URLSearchParams): string {
    const names = list(p, "InstanceType");
    for (const n of names) {
      if (!this.instanceTypes.has(n))
        throw new ApiError(
          400,
          "InvalidInstanceType",
          `The following supplied instance types do not exist: [${n}]`,
        );
    }
    const out = [...this.instanceTypes.values()].filter(
      (t) => names.length === 0 || names.includes(t.instanceType),
    );
    return `<instanceTypeSet>${out
      .map((t) => {
        const cards = t.cards ?? [t.maxEnis];
        const q = t.enaQueues;
        const queues = q
          ? `<defaultEnaQueueCountPerInterface>${q.default}</defaultEnaQueueCountPerInterface><maximumEnaQueueCount>${q.max}</maximumEnaQueueCount><maximumEnaQueueCountPerInterface>${q.maxPerInterface}</maximumEnaQueueCountPerInterface>`
          : "";
        return `<item><instanceType>${t.instanceType}</instanceType><networkInfo><maximumNetworkInterfaces>${t.maxEnis}</maximumNetworkInterfaces><maximumNetworkCards>${cards.length}</maximumNetworkCards><defaultNetworkCardIndex>0</defaultNetworkCardIndex><networkCards>${cards
          .map(
            (m, i) =>
              `<item><networkCardIndex>${i}</networkCardIndex><maximumNetworkInterfaces>${m}</maximumNetworkInterfaces>${queues}</item>`,
          )
          .join(
            "",
          )}</networkCards><enaSupport>required</enaSupport><enaSrdSupported>${t.enaSrd ?? true}</enaSrdSupported><flexibleEnaQueuesSupport>${q ? "supported" : "unsupported"}</flexibleEnaQueuesSupport></networkInfo></item>`;
      })
      .join("")}</instanceTypeSet>`;
  }

  private describeTags(p: URLSearchParams): string {
    const rows: { id: string; type: string; key: string; value: string }[] = [];
    for (const i of this.instances.values())
      for (const [k, v] of Object.entries(i.tags ?? {}))
        rows.push({ id: i.instanceId, type: "instance", key: k, value: v });
    for (const e of this.enis.values())
      for (const [k, v] of Object.entries(e.tags))
        rows.push({ id: e.id, type: "network-interface", key: k, value: v });
    for (const s of this.subnets.values())
      for (const [k, v] of Object.entries(subnetTags(s)))
        rows.push({ id: s.subnetId, type: "subnet", key: k, value: v });
    const matchers: Record<string, (r: (typeof rows)[number]) => string[]> = {
      "resource-id": (r) => [r.id],
      "resource-type": (r) => [r.type],
      key: (r) => [r.key],
      value: (r) => [r.value],
    };
    const filters = readFilters(p);
    const pg = this.page(
      p,
      rows.filter((r) => matchAll(filters, matchers, {}, r)),
    );
    return `<tagSet>${pg.items
      .map(
        (r) =>
          `<item><resourceId>${r.id}</resourceId><resourceType>${r.type}</resourceType><key>${esc(r.key)}</key><value>${esc(r.value)}</value></item>`,
      )
      .join("")}</tagSet>${pg.token}`;
  }

  private createTags(p: URLSearchParams): string {
    const ids = list(p, "ResourceId");
    const tags: Record<string, string> = {};
    for (const t of indexed(p, "Tag")) tags[p.get(`${t}.Key`) ?? ""] = p.get(`${t}.Value`) ?? "";
    for (const id of ids) {
      const eni = this.enis.get(id);
      const inst = this.instances.get(id);
      if (eni) Object.assign(eni.tags, tags);
      else if (inst) inst.tags = { ...inst.tags, ...tags };
      else throw new ApiError(400, "InvalidID", `The ID '${id}' is not valid`);
    }
    return `<return>true</return>`;
  }

  /**
   * Decodes LaunchTemplateData's NetworkInterfaces and TagSpecifications (the parts eni-dpdk emits)
   * and refuses malformed values. The stored record is what `launchFromTemplate` launches with.
   */
  private createLaunchTemplate(p: URLSearchParams): string {
    const name = p.get("LaunchTemplateName") ?? "";
    if (!/^[a-zA-Z0-9().\-/_]{3,128}$/.test(name))
      throw new ApiError(
        400,
        "InvalidLaunchTemplateName.MalformedException",
        `Invalid launch template name '${name}'.`,
      );
    if (this.launchTemplates.has(name))
      throw new ApiError(
        400,
        "InvalidLaunchTemplateName.AlreadyExistsException",
        `Launch template name already in use.`,
      );
    const known = new Set([
      "DeviceIndex",
      "NetworkCardIndex",
      "SubnetId",
      "SecurityGroupId",
      "DeleteOnTermination",
      "Description",
      "InterfaceType",
      "EnaSrdSpecification",
      "EnaQueueCount",
    ]);
    const networkInterfaces = indexed(p, "LaunchTemplateData.NetworkInterface").map((prefix) => {
      for (const k of p.keys()) {
        if (!k.startsWith(prefix + ".")) continue;
        const field = k.slice(prefix.length + 1).split(".")[0];
        if (!known.has(field))
          throw new ApiError(400, "InvalidParameterValue", `The emulator does not model ${k}.`);
      }
      const n: LaunchTemplateInterface = {};
      const di = intParam(p, `${prefix}.DeviceIndex`, 0);
      if (di === undefined)
        throw new ApiError(
          400,
          "InvalidParameterValue",
          `${prefix}: each interface of type interface needs a DeviceIndex.`,
        );
      n.DeviceIndex = di;
      const card = intParam(p, `${prefix}.NetworkCardIndex`, 0);
      if (card !== undefined) n.NetworkCardIndex = card;
      const subnet = p.get(`${prefix}.SubnetId`);
      if (subnet !== null) {
        this.subnetOrThrow(subnet);
        n.SubnetId = subnet;
      }
      const groups = list(p, `${prefix}.SecurityGroupId`);
      for (const g of groups) this.groupOrThrow(g);
      if (p.has(`${prefix}.SecurityGroupId.1`)) n.Groups = groups;
      const dot = boolParam(p, `${prefix}.DeleteOnTermination`);
      if (dot !== undefined) n.DeleteOnTermination = dot;
      const desc = p.get(`${prefix}.Description`);
      if (desc !== null) n.Description = desc;
      const type = p.get(`${prefix}.InterfaceType`);
      if (type !== null) {
        if (!["interface", "efa", "efa-only"].includes(type))
          throw new ApiError(
            400,
            "InvalidParameterValue",
            `Invalid value '${type}' for InterfaceType.`,
          );
        n.InterfaceType = type;
      }
      const srd = enaSrdParams(p, `${prefix}.EnaSrdSpecification`);
      if (srd) {
        n.EnaSrdSpecification = {
          ...(srd.enabled !== undefined ? { EnaSrdEnabled: srd.enabled } : {}),
          ...(srd.udp !== undefined
            ? { EnaSrdUdpSpecification: { EnaSrdUdpEnabled: srd.udp } }
            : {}),
        };
      }
      const q = intParam(p, `${prefix}.EnaQueueCount`, 1);
      if (q !== undefined) n.EnaQueueCount = q;
      return n;
    });
    const slots = networkInterfaces.map((n) => `${n.NetworkCardIndex ?? 0}/${n.DeviceIndex}`);
    const dup = slots.find((x, i) => slots.indexOf(x) !== i);
    if (dup)
      throw new ApiError(
        400,
        "InvalidParameterValue",
        `Two network interfaces use network card/device index ${dup}.`,
      );
    const tagSpecifications = indexed(p, "LaunchTemplateData.TagSpecification").map((spec) => {
      const type = p.get(`${spec}.ResourceType`) ?? "";
      if (!["instance", "volume", "network-interface", "spot-instances-request"].includes(type))
        throw new ApiError(
          400,
          "InvalidParameterValue",
          `'${type}' is not a valid taggable resource type for launch templates.`,
        );
      const tags = indexed(p, `${spec}.Tag`).map((t) => ({
        Key: p.get(`${t}.Key`) ?? "",
        Value: p.get(`${t}.Value`) ?? "",
      }));
      for (const t of tags)
        if (t.Key === "" || t.Key.startsWith("aws:") || t.Key.length > 128 || t.Value.length > 256)
          throw new ApiError(400, "InvalidParameterValue", `Invalid tag key '${t.Key}'.`);
      return { ResourceType: type, Tags: tags };
    });
    const rec: LaunchTemplateRecord = {
      launchTemplateId: this.newId("lt-"),
      name,
      networkInterfaces,
      tagSpecifications,
    };
    this.launchTemplates.set(name, rec);
    return `<launchTemplate><launchTemplateId>${rec.launchTemplateId}</launchTemplateId><launchTemplateName>${esc(name)}</launchTemplateName><createTime>${new Date().toISOString()}</createTime><createdBy>arn:aws:iam::123456789012:root</createdBy><defaultVersionNumber>1</defaultVersionNumber><latestVersionNumber>1</latestVersionNumber></launchTemplate>`;
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private eniOrThrow(id: string | null): EmuEni {
    const eni = id ? this.enis.get(id) : undefined;
    if (!eni)
      throw new ApiError(
        400,
        "InvalidNetworkInterfaceID.NotFound",
        `The networkInterface ID '${id}' does not exist`,
      );
    return eni;
  }

  private eniXml(e: EmuEni): string {
    const a = e.attachment;
    const groups = e.groups
      .map(
        (g) =>
          `<item><groupId>${g}</groupId><groupName>${esc(this.securityGroups.get(g)?.groupName ?? g)}</groupName></item>`,
      )
      .join("");
    return (
      `<networkInterfaceId>${e.id}</networkInterfaceId><subnetId>${e.subnetId}</subnetId><vpcId>${e.vpcId}</vpcId>` +
      `<availabilityZone>${e.az}</availabilityZone><description>${esc(e.description)}</description><ownerId>123456789012</ownerId>` +
      `<requesterManaged>false</requesterManaged><status>${eniStatus(e)}</status><macAddress>${e.mac}</macAddress>` +
      `<privateIpAddress>${e.privateIp}</privateIpAddress><sourceDestCheck>${e.sourceDestCheck}</sourceDestCheck><interfaceType>interface</interfaceType>` +
      `<groupSet>${groups}</groupSet>` +
      (a
        ? `<attachment><attachmentId>${a.attachmentId}</attachmentId><instanceId>${a.instanceId}</instanceId><instanceOwnerId>123456789012</instanceOwnerId>` +
          `<deviceIndex>${a.deviceIndex}</deviceIndex><networkCardIndex>${a.networkCardIndex}</networkCardIndex><status>${a.status}</status>` +
          `<attachTime>${a.attachTime}</attachTime><deleteOnTermination>${a.deleteOnTermination}</deleteOnTermination>` +
          (a.enaSrd
            ? `<enaSrdSpecification><enaSrdEnabled>${a.enaSrd.enabled}</enaSrdEnabled><enaSrdUdpSpecification><enaSrdUdpEnabled>${a.enaSrd.udp}</enaSrdUdpEnabled></enaSrdUdpSpecification></enaSrdSpecification>`
            : "") +
          (a.enaQueueCount !== undefined
            ? `<enaQueueCount>${a.enaQueueCount}</enaQueueCount>`
            : "") +
          `</attachment>`
        : "") +
      `<privateIpAddressesSet><item><privateIpAddress>${e.privateIp}</privateIpAddress><primary>true</primary></item></privateIpAddressesSet>` +
      tagSet(e.tags)
    );
  }

  private newId(prefix: string): string {
    this.seq++;
    return (
      prefix + (0x0e000000000000000n + BigInt(this.seq)).toString(16).padStart(17, "0").slice(-17)
    );
  }

  private newMac(): string {
    this.seq++;
    const n = this.seq;
    return ["02", "e0", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255]
      .map((x) => (typeof x === "string" ? x : x.toString(16).padStart(2, "0")))
      .join(":");
  }

  private ipSeq = 10;
  private nextIp(cidr = "10.0.0.0/16"): string {
    const base = cidr.split("/")[0].split(".").map(Number);
    const n = this.ipSeq++;
    return `${base[0]}.${base[1]}.${(base[2] + (n >> 8)) & 255}.${n & 255}`;
  }

  private requestId(): string {
    return `${Date.now().toString(16)}-${(++this.seq).toString(16)}`;
  }

  private delay(ms: number): Promise<void> {
    return new Promise((r) => this.later(ms, r));
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }
}

function eniStatus(e: EmuEni): string {
  return e.attachment ? "in-use" : "available";
}

function subnetTags(s: SubnetSeed): Record<string, string> {
  return { ...(s.name !== undefined ? { Name: s.name } : {}), ...(s.tags ?? {}) };
}

/** An EC2 boolean: "true" or "false", anything else refused as EC2 does; undefined when absent. */
function boolParam(p: URLSearchParams, name: string): boolean | undefined {
  const v = p.get(name);
  if (v === null) return undefined;
  if (v === "true" || v === "false") return v === "true";
  throw new ApiError(
    400,
    "InvalidParameterValue",
    `Invalid value '${v}' for ${name}; expected true or false.`,
  );
}

/** An EC2 integer at least `min`; undefined when absent. */
function intParam(p: URLSearchParams, name: string, min: number): number | undefined {
  const v = p.get(name);
  if (v === null) return undefined;
  if (!/^-?[0-9]+$/.test(v) || Number(v) < min)
    throw new ApiError(400, "InvalidParameterValue", `Invalid value '${v}' for ${name}.`);
  return Number(v);
}

/** `<prefix>.EnaSrdEnabled` and `<prefix>.EnaSrdUdpSpecification.EnaSrdUdpEnabled`; undefined when neither is sent. */
function enaSrdParams(
  p: URLSearchParams,
  prefix: string,
): { enabled?: boolean; udp?: boolean } | undefined {
  for (const k of p.keys()) {
    if (
      k.startsWith(prefix + ".") &&
      k !== `${prefix}.EnaSrdEnabled` &&
      k !== `${prefix}.EnaSrdUdpSpecification.EnaSrdUdpEnabled`
    )
      throw new ApiError(400, "InvalidParameterValue", `Unknown parameter ${k}.`);
  }
  const enabled = boolParam(p, `${prefix}.EnaSrdEnabled`);
  const udp = boolParam(p, `${prefix}.EnaSrdUdpSpecification.EnaSrdUdpEnabled`);
  if (enabled === undefined && udp === undefined) return undefined;
  if (udp === true && enabled === false)
    throw new ApiError(
      400,
      "InvalidParameterCombination",
      "ENA Express must be enabled to enable ENA Express for UDP.",
    );
  return { ...(enabled !== undefined ? { enabled } : {}), ...(udp !== undefined ? { udp } : {}) };
}

function takeFault(m: Record<string, number>, action: string): boolean {
  for (const k of [action, "*"]) {
    if ((m[k] ?? 0) > 0) {
      m[k]--;
      return true;
    }
  }
  return false;
}

/** Prefixes `Name.1`, `Name.2` … present in the form. */
function indexed(p: URLSearchParams, name: string): string[] {
  const out: string[] = [];
  for (let i = 1; ; i++) {
    const prefix = `${name}.${i}`;
    if (![...p.keys()].some((k) => k === prefix || k.startsWith(prefix + "."))) return out;
    out.push(prefix);
  }
}

/** `Name.1=a&Name.2=b` → [a, b] */
function list(p: URLSearchParams, name: string): string[] {
  const out: string[] = [];
  for (let i = 1; p.has(`${name}.${i}`); i++) out.push(p.get(`${name}.${i}`)!);
  return out;
}

function readFilters(p: URLSearchParams): { name: string; values: string[] }[] {
  return indexed(p, "Filter").map((f) => ({
    name: p.get(`${f}.Name`) ?? "",
    values: list(p, `${f}.Value`),
  }));
}

/** EC2 filter semantics: AND across filters, OR across a filter's values, `*` and `?` wildcards. */
function matchAll<T>(
  filters: { name: string; values: string[] }[],
  matchers: Record<string, (x: T) => string[]>,
  tags: Record<string, string>,
  x: T,
): boolean {
  return filters.every((f) => {
    let have: string[];
    if (f.name.startsWith("tag:")) {
      const k = f.name.slice(4);
      have = k in tags ? [tags[k]] : [];
    } else if (f.name === "tag-key") {
      have = Object.keys(tags);
    } else {
      const m = matchers[f.name];
      if (!m) throw new ApiError(400, "InvalidParameterValue", `The filter '${f.name}' is invalid`);
      have = m(x);
    }
    return have.some((h) => valueMatcher(f.values)(h));
  });
}

// Compiled once per value list: the fleet benchmark filters thousands of ENIs per request.
const compiled = new Map<string, (h: string) => boolean>();
function valueMatcher(values: string[]): (h: string) => boolean {
  const key = values.join("\u0000");
  let fn = compiled.get(key);
  if (!fn) {
    const exact = new Set(values.filter((v) => !/[*?]/.test(v)));
    const res = values
      .filter((v) => /[*?]/.test(v))
      .map(
        (v) =>
          new RegExp(
            "^" +
              v
                .replace(/[.+^${}()|[\]\\]/g, "\\$&")
                .replace(/\*/g, ".*")
                .replace(/\?/g, ".") +
              "$",
          ),
      );
    fn = (h) => exact.has(h) || res.some((r) => r.test(h));
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(key, fn);
  }
  return fn;
}

function esc(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function tagSet(tags: Record<string, string>): string {
  return `<tagSet>${Object.entries(tags)
    .map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`)
    .join("")}</tagSet>`;
}
