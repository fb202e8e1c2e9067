// An IMDSv2 emulator: a real HTTP server with IMDSv2 semantics (PUT token with TTL header, 401
// without or with an expired token), the meta-data tree eni-dpdk reads, instance tags (or 404 when
// disabled), user-data (or 404), and fault injection (late start, 500s, slow answers).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";

export interface ImdsNic {
  mac: string;
  deviceNumber: number;
  /** undefined → `network-card` answers 404 (which means card 0) */
  networkCard?: number;
  interfaceId: string;
  subnetId: string;
  vpcId: string;
  securityGroupIds: string[];
  localIpv4s: string[];
  subnetCidr: string;
  /** delegated /28 prefixes (the VPC CNI with prefix delegation); none → `ipv4-prefix` answers 404 */
  ipv4Prefixes?: string[];
}

export interface ImdsInstance {
  instanceId: string;
  instanceType: string;
  region: string;
  az: string;
  /** primary ENI MAC */
  mac: string;
  localHostname: string;
  nics: ImdsNic[];
  /** null → instance metadata tags disabled (404) */
  tags: Record<string, string> | null;
  /** null → no user-data (404) */
  userData: Buffer | string | null;
}

export interface ImdsFaults {
  /** answer the next N requests with 500 */
  fail500: number;
  /** answer the next N requests with 429 Too Many Requests (a throttling front, a proxy) */
  fail429?: number;
  /** delay every answer by this many ms */
  slowMs: number;
  /** for MAC → number of reads that answer device-number 0 (hot-plug settling) */
  deviceNumberZeroReads: Record<string, number>;
  /** answer 404 for the instance identity document (clients must fall back to the single paths) */
  noIdentityDocument?: boolean;
}

export interface ImdsRequestLog {
  method: string;
  path: string;
  status: number;
}

export function defaultInstance(over: Partial<ImdsInstance> = {}): ImdsInstance {
  const mac = over.mac ?? "02:00:00:00:00:01";
  return {
    instanceId: "i-0123456789abcdef0",
    instanceType: "c6in.4xlarge",
    region: "us-west-2",
    az: "us-west-2a",
    mac,
    localHostname: "ip-10-0-1-10.us-west-2.compute.internal",
    nics: [
      {
        mac,
        deviceNumber: 0,
        networkCard: 0,
        interfaceId: "eni-0000000000000primary".slice(0, 21),
        subnetId: "subnet-0a1b2c3d4e5f60718",
        vpcId: "vpc-0a1b2c3d4e5f60718",
        securityGroupIds: ["sg-0a1b2c3d4e5f60718"],
        localIpv4s: ["10.0.1.10"],
        subnetCidr: "10.0.1.0/24",
      },
    ],
    tags: {},
    userData: null,
    ...over,
  };
}

export class ImdsEmulator {
  readonly faults: ImdsFaults = { fail500: 0, slowMs: 0, deviceNumberZeroReads: {} };
  readonly requests: ImdsRequestLog[] = [];
  /** TCP connections accepted (clients that reuse sockets open few) */
  connections = 0;
  /** how long the server keeps an idle keep-alive connection (Node's default: 5 s) */
  keepAliveMs?: number;
  private readonly tokens = new Map<string, number>();
  private server?: http.Server;
  private port = 0;

  constructor(readonly instance: ImdsInstance = defaultInstance()) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Listen on `port` (0 = any). With `delayMs`, the URL is known at once but the socket opens late. */
  async start(opts: { port?: number; delayMs?: number } = {}): Promise<this> {
    const port = opts.port ?? (opts.delayMs ? await freePort() : 0);
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on("connection", () => this.connections++);
    if (this.keepAliveMs) this.server.keepAliveTimeout = this.keepAliveMs;
    const listen = () =>
      new Promise<void>((resolve) => {
        this.server!.listen(port, "127.0.0.1", () => {
          this.port = (this.server!.address() as AddressInfo).port;
          resolve();
        });
      });
    if (opts.delayMs) {
      this.port = port;
      setTimeout(() => void listen(), opts.delayMs);
    } else {
      await listen();
    }
    return this;
  }

  async close(): Promise<void> {
    if (!this.server?.listening) return;
    this.server.closeAllConnections?.();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }

  /** Expire every token issued so far (the next read answers 401). */
  expireTokens(): void {
    for (const t of this.tokens.keys()) this.tokens.set(t, 0);
  }

  addNic(nic: ImdsNic): void {
    this.instance.nics = this.instance.nics.filter((n) => n.mac !== nic.mac).concat(nic);
  }

  removeNic(mac: string): void {
    this.instance.nics = this.instance.nics.filter((n) => n.mac !== mac);
  }

  count(pathPrefix: string): number {
    return this.requests.filter((r) => r.path.startsWith(pathPrefix)).length;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    const answer = (
      status: number,
      body: string | Buffer = "",
      headers: Record<string, string> = {},
    ) => {
      this.requests.push({ method: req.method ?? "", path, status });
      res.writeHead(status, { "content-type": "text/plain", ...headers });
      res.end(body);
    };
    for await (const _ of req) void _;
    if (this.faults.slowMs) await new Promise((r) => setTimeout(r, this.faults.slowMs));
    if (this.faults.fail500 > 0) {
      this.faults.fail500--;
      return answer(500, "Internal Server Error");
    }
    if (this.faults.fail429) {
      this.faults.fail429--;
      return answer(429, "Too Many Requests");
    }
    if (req.headers["x-forwarded-for"]) return answer(403, "Forbidden");

    if (path === "/latest/api/token") {
      if (req.method !== "PUT") return answer(405, "Method Not Allowed");
      const ttlHeader = req.headers["x-aws-ec2-metadata-token-ttl-seconds"];
      const ttl = Number(ttlHeader);
      if (ttlHeader === undefined || !Number.isInteger(ttl) || ttl < 1 || ttl > 21600)
        return answer(400, "Bad Request");
      const token = randomBytes(24).toString("base64url");
      this.tokens.set(token, Date.now() + ttl * 1000);
      return answer(200, token, { "x-aws-ec2-metadata-token-ttl-seconds": String(ttl) });
    }
    if (req.method !== "GET") return answer(405, "Method Not Allowed");
    const token = req.headers["x-aws-ec2-metadata-token"];
    const exp = typeof token === "string" ? this.tokens.get(token) : undefined;
    if (exp === undefined || exp < Date.now()) return answer(401, "Unauthorized");

    const body = this.lookup(path.replace(/^\/latest\//, ""));
    if (body === undefined) return answer(404, "Not Found");
    return answer(200, body);
  }

  /** The answer for a path below /latest/ (undefined = 404); MemoryImds serves the same tree in-process. */
  lookup(p: string): string | Buffer | undefined {
    const i = this.instance;
    if (p === "user-data" || p === "user-data/")
      return i.userData === null ? undefined : i.userData;
    const m = p.replace(/\/$/, "");
    const simple: Record<string, string> = {
      "meta-data/instance-id": i.instanceId,
      "meta-data/instance-type": i.instanceType,
      "meta-data/placement/region": i.region,
      "meta-data/placement/availability-zone": i.az,
      "meta-data/mac": i.mac,
      "meta-data/local-hostname": i.localHostname,
      "meta-data/hostname": i.localHostname,
    };
    if (simple[m] !== undefined) return simple[m];
    if (m === "dynamic/instance-identity/document") {
      if (this.faults.noIdentityDocument) return undefined;
      // The fields EC2 documents for the identity document (a subset of them).
      return JSON.stringify(
        {
          accountId: "123456789012",
          architecture: "x86_64",
          availabilityZone: i.az,
          imageId: "ami-0123456789abcdef0",
          instanceId: i.instanceId,
          instanceType: i.instanceType,
          pendingTime: "2026-11-27T00:00:00Z",
          privateIp: i.nics[0]?.localIpv4s[0] ?? "10.0.1.10",
          region: i.region,
          version: "2017-09-30",
        },
        null,
        2,
      );
    }
    if (m === "meta-data/network/interfaces/macs") return i.nics.map((n) => `${n.mac}/`).join("\n");
    const nicPath = /^meta-data\/network\/interfaces\/macs\/([0-9a-f:]{17})(?:\/(.*))?$/.exec(m);
    if (nicPath) {
      const nic = i.nics.find((n) => n.mac === nicPath[1]);
      if (!nic) return undefined;
      const leaf = nicPath[2];
      const fields: Record<string, string | undefined> = {
        "device-number": String(this.deviceNumberRead(nic)),
        "network-card": nic.networkCard === undefined ? undefined : String(nic.networkCard),
        "interface-id": nic.interfaceId,
        "subnet-id": nic.subnetId,
        "vpc-id": nic.vpcId,
        "security-group-ids": nic.securityGroupIds.join("\n"),
        "local-ipv4s": nic.localIpv4s.join("\n"),
        "subnet-ipv4-cidr-block": nic.subnetCidr,
        "ipv4-prefix": nic.ipv4Prefixes?.length ? nic.ipv4Prefixes.join("\n") : undefined,
        mac: nic.mac,
      };
      if (!leaf)
        return Object.keys(fields)
          .filter((k) => fields[k] !== undefined)
          .join("\n");
      return fields[leaf];
    }
    if (m === "meta-data/tags/instance")
      return i.tags === null ? undefined : Object.keys(i.tags).join("\n");
    const tag = /^meta-data\/tags\/instance\/(.+)$/.exec(m);
    // As real IMDS: the key is matched as sent, never percent-decoded (`eni-dpdk%3Aeni` is not `eni-dpdk:eni`).
    if (tag) return i.tags !== null && Object.hasOwn(i.tags, tag[1]) ? i.tags[tag[1]] : undefined;
    return undefined;
  }

  private deviceNumberRead(nic: ImdsNic): number {
    const left = this.faults.deviceNumberZeroReads[nic.mac] ?? 0;
    if (left > 0) {
      this.faults.deviceNumberZeroReads[nic.mac] = left - 1;
      return 0;
    }
    return nic.deviceNumber;
  }
}

export async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
