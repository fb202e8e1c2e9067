// A fake Kubernetes API server for NodeENI objects: real HTTPS with its own CA (made with openssl at
// test time), bearer-token and client-certificate authentication, list / get / status PATCH with
// resourceVersion conflicts (409), RBAC denials (403), and outages (reset connections, 503s). No
// watch: eni-dpdk polls.
// EKS tokens are verified the way aws-iam-authenticator checks their shape, and their SigV4
// signature is recomputed here from the documented algorithm (an oracle independent of the SDK).
import { execFileSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import type { NodeEniObject } from "../cloud/kube.js";

export const GROUP_VERSION = "networking.k8s.aws/v1alpha1";
const BASE = "/apis/networking.k8s.aws/v1alpha1/nodeenis";

export interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** a client certificate for CN=system:node:<name>, O=system:nodes */
  clientCert: string;
  clientKey: string;
  /** a CA that did not sign the server (for "wrong CA" tests) */
  otherCaCert: string;
}

let pkiCache: Pki | undefined;

/** Generate a throw-away CA, server and client certificates with openssl (argv, no shell). */
export function testPki(): Pki {
  if (pkiCache) return pkiCache;
  const dir = mkdtempSync(path.join(os.tmpdir(), "kube-pki-"));
  const ossl = (...args: string[]) =>
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const key = (name: string) =>
    ossl(
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-out",
      `${name}.key`,
    );
  key("ca");
  ossl(
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=fake-kube-ca",
  );
  key("other");
  ossl(
    "req",
    "-x509",
    "-new",
    "-key",
    "other.key",
    "-out",
    "other.crt",
    "-days",
    "2",
    "-subj",
    "/CN=someone-else-ca",
  );
  const leaf = (name: string, subj: string, ext: string) => {
    key(name);
    ossl("req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", subj);
    writeFileSync(path.join(dir, `${name}.ext`), ext);
    ossl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  };
  leaf(
    "server",
    "/CN=kube-apiserver",
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  leaf(
    "client",
    "/O=system:nodes/CN=system:node:ip-10-0-1-10.us-west-2.compute.internal",
    "extendedKeyUsage=clientAuth\n",
  );
  const read = (f: string) => readFileSync(path.join(dir, f), "utf8");
  pkiCache = {
    dir,
    caCert: read("ca.crt"),
    serverCert: read("server.crt"),
    serverKey: read("server.key"),
    clientCert: read("client.crt"),
    clientKey: read("client.key"),
    otherCaCert: read("other.crt"),
  };
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  return pkiCache;
}

/** The wire shape, shared with the client's types so tests can hand objects either way. */
export type NodeEniObj = NodeEniObject;

export interface KubeFaults {
  /** reset every connection (API unreachable) */
  down: boolean;
  /** answer the next N requests with 503 */
  fail503: number;
  /** on the next N status PATCHes, another writer updates the object first, so ours gets 409 */
  conflictNext: number;
  /** verbs answered 403 (list, get, patch) */
  forbid: Set<string>;
  /** the CRD is not installed: its paths answer 404 */
  crdMissing: boolean;
}

export interface KubeRequest {
  method: string;
  path: string;
  status: number;
  user?: string;
  body?: unknown;
}

export interface EksAuthConfig {
  clusterName: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** accepted STS host names */
  stsHosts: string[];
  /** username for a valid token */
  user: string;
}

export class KubeApiEmulator {
  readonly pki = testPki();
  readonly faults: KubeFaults = {
    down: false,
    fail503: 0,
    conflictNext: 0,
    forbid: new Set(),
    crdMissing: false,
  };
  readonly requests: KubeRequest[] = [];
  /** static bearer tokens → user name */
  readonly tokens = new Map<string, string>();
  eks?: EksAuthConfig;
  /** why the last EKS token was refused (for assertions) */
  lastTokenError?: string;
  private readonly objects = new Map<string, NodeEniObj>();
  private rv = 100;
  private readonly sockets = new Set<Socket>();
  private server?: https.Server;
  url = "";

  constructor(objects: NodeEniObj[] = []) {
    for (const o of objects) this.upsert(o);
  }

  async start(port = 0): Promise<this> {
    this.server = https.createServer(
      {
        cert: this.pki.serverCert,
        key: this.pki.serverKey,
        ca: this.pki.caCert,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => void this.handle(req, res),
    );
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    this.server.on("secureConnection", (s: TLSSocket) => {
      if (this.faults.down) s.destroy();
    });
    await new Promise<void>((r) => this.server!.listen(port, "127.0.0.1", r));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  // ---- object store ----------------------------------------------------------------------------

  get(name: string): NodeEniObj | undefined {
    const o = this.objects.get(name);
    return o && structuredClone(o);
  }

  list(): NodeEniObj[] {
    return [...this.objects.values()].map((o) => structuredClone(o));
  }

  upsert(obj: NodeEniObj): NodeEniObj {
    const o: NodeEniObj = structuredClone({ apiVersion: GROUP_VERSION, kind: "NodeENI", ...obj });
    o.metadata = {
      uid: `uid-${obj.metadata.name}`,
      ...o.metadata,
      resourceVersion: String(++this.rv),
    };
    this.objects.set(o.metadata.name, o);
    return structuredClone(o);
  }

  delete(name: string): void {
    if (this.objects.delete(name)) this.rv++;
  }

  /** Another writer (e.g. another node) changes the status. */
  setStatus(name: string, status: NodeEniObj["status"]): void {
    const o = this.objects.get(name)!;
    this.upsert({ ...o, status: structuredClone(status) });
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://x");
    const log: KubeRequest = {
      method: req.method ?? "",
      path: url.pathname + url.search,
      status: 0,
    };
    this.requests.push(log);
    const send = (status: number, body: unknown) => {
      log.status = status;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    const statusBody = (code: number, reason: string, message: string) =>
      send(code, {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message,
        reason,
        code,
      });

    if (this.faults.down) {
      req.socket.destroy();
      return;
    }
    if (this.faults.fail503 > 0) {
      this.faults.fail503--;
      return statusBody(
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
      );
    }
    const user = this.authenticate(req);
    log.user = user;
    if (!user) return statusBody(401, "Unauthorized", "Unauthorized");

    const rest = url.pathname.startsWith(BASE) ? url.pathname.slice(BASE.length) : undefined;
    if (rest === undefined || this.faults.crdMissing)
      return statusBody(404, "NotFound", "the server could not find the requested resource");
    const [, name, sub] = rest.split("/");
    const watch = url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1";
    if (watch) return statusBody(405, "MethodNotAllowed", "watch is not emulated: eni-dpdk polls");
    const verb =
      req.method === "GET"
        ? name
          ? "get"
          : "list"
        : req.method === "PATCH"
          ? "patch"
          : req.method === "PUT"
            ? "update"
            : "other";
    if (this.faults.forbid.has(verb)) {
      return statusBody(
        403,
        "Forbidden",
        `nodeenis.networking.k8s.aws${name ? ` "${name}"` : ""} is forbidden: User "${user}" cannot ${verb} resource "nodeenis${sub ? "/" + sub : ""}" in API group "networking.k8s.aws" at the cluster scope`,
      );
    }

    if (req.method === "GET" && !name) {
      return send(200, {
        apiVersion: GROUP_VERSION,
        kind: "NodeENIList",
        metadata: { resourceVersion: String(this.rv) },
        items: this.list(),
      });
    }
    if (req.method === "GET" && name && (!sub || sub === "status")) {
      const o = this.get(name);
      return o
        ? send(200, o)
        : statusBody(404, "NotFound", `nodeenis.networking.k8s.aws "${name}" not found`);
    }
    if (req.method === "PATCH" && name && sub === "status") {
      if (req.headers["content-type"] !== "application/merge-patch+json") {
        return statusBody(
          415,
          "UnsupportedMediaType",
          `the body of the request was in an unknown format: ${req.headers["content-type"]}`,
        );
      }
      const body = JSON.parse(await readBody(req)) as NodeEniObj;
      log.body = body;
      const cur = this.objects.get(name);
      if (!cur)
        return statusBody(404, "NotFound", `nodeenis.networking.k8s.aws "${name}" not found`);
      if (this.faults.conflictNext > 0) {
        this.faults.conflictNext--;
        const other = {
          nodeID: "ip-10-9-9-9.us-west-2.compute.internal",
          instanceID: "i-0ffffffffffffffff",
          eniID: "eni-0ffffffffffffffff",
          attachmentID: "eni-attach-0fff",
          status: "attached",
          lastUpdated: new Date().toISOString(),
        };
        this.setStatus(name, {
          ...cur.status,
          attachments: [...(cur.status?.attachments ?? []), other],
        });
      }
      const now = this.objects.get(name)!;
      const want = body.metadata?.resourceVersion;
      if (want !== undefined && want !== now.metadata.resourceVersion) {
        return statusBody(
          409,
          "Conflict",
          `Operation cannot be fulfilled on nodeenis.networking.k8s.aws "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        );
      }
      // The status subresource ignores everything but .status (and metadata for preconditions).
      const merged = {
        ...now,
        status: mergePatch(now.status ?? {}, body.status ?? {}) as NodeEniObj["status"],
      };
      return send(200, this.upsert(merged));
    }
    return statusBody(
      405,
      "MethodNotAllowed",
      `${req.method} ${url.pathname} is not supported by this emulator`,
    );
  }

  private authenticate(req: IncomingMessage): string | undefined {
    const sock = req.socket as TLSSocket;
    if (sock.authorized) {
      const cn = sock.getPeerCertificate()?.subject?.CN;
      if (cn) return String(cn);
    }
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
    if (!m) return undefined;
    const token = m[1];
    const fixed = this.tokens.get(token);
    if (fixed) return fixed;
    if (this.eks) {
      const err = verifyEksToken(token, this.eks);
      this.lastTokenError = err;
      if (!err) return this.eks.user;
    }
    return undefined;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = "";
    req.on("data", (c: Buffer) => (s += c.toString()));
    req.on("end", () => resolve(s));
    req.on("error", reject);
  });
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === "object" && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---- EKS token verification (aws-iam-authenticator's checks + an independent SigV4) -----------

const ALLOWED_PARAMS = new Set([
  "action",
  "version",
  "x-amz-algorithm",
  "x-amz-credential",
  "x-amz-date",
  "x-amz-expires",
  "x-amz-security-token",
  "x-amz-signature",
  "x-amz-signedheaders",
]);

/** Undefined when valid; otherwise why not. */
export function verifyEksToken(
  token: string,
  cfg: EksAuthConfig,
  now = new Date(),
): string | undefined {
  const prefix = "k8s-aws-v1.";
  if (!token.startsWith(prefix)) return `token is missing the ${prefix} prefix`;
  const b64 = token.slice(prefix.length);
  if (/[=+/]/.test(b64)) return "token is not unpadded base64url";
  let url: URL;
  try {
    url = new URL(Buffer.from(b64, "base64url").toString("utf8"));
  } catch {
    return "token does not hold a URL";
  }
  if (url.protocol !== "https:") return `unexpected scheme ${url.protocol}`;
  if (!cfg.stsHosts.includes(url.host)) return `unexpected hostname ${url.host}`;
  if (url.pathname !== "/") return "unexpected path";
  const q = new Map<string, string>();
  for (const [k, v] of url.searchParams) {
    if (!ALLOWED_PARAMS.has(k.toLowerCase())) return `non-whitelisted query parameter ${k}`;
    if (q.has(k.toLowerCase())) return "query parameter with multiple values";
    q.set(k.toLowerCase(), v);
  }
  if (q.get("action") !== "GetCallerIdentity") return "unexpected action";
  const signed = (q.get("x-amz-signedheaders") ?? "").split(";");
  if (!signed.includes("x-k8s-aws-id")) return "x-k8s-aws-id is not signed";
  const expires = Number(q.get("x-amz-expires"));
  if (!Number.isInteger(expires) || expires < 0 || expires > 900) return "invalid X-Amz-Expires";
  const date = q.get("x-amz-date") ?? "";
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
  if (!m) return "bad X-Amz-Date";
  const signedAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  if (now.getTime() > signedAt + 15 * 60_000) return "token expired";
  const [akid, day, region, service, term] = (q.get("x-amz-credential") ?? "").split("/");
  if (akid !== cfg.accessKeyId) return "unknown access key";
  if (service !== "sts" || term !== "aws4_request" || day !== date.slice(0, 8))
    return "bad credential scope";
  const expected = sigv4PresignedSignature(
    url,
    { host: url.host, "x-k8s-aws-id": cfg.clusterName },
    signed,
    cfg.secretAccessKey,
    region,
  );
  if (expected !== q.get("x-amz-signature"))
    return "signature mismatch (wrong cluster name or secret)";
  return undefined;
}

/** A GET has no body; SigV4 signs the hash of the empty payload (S3 alone uses UNSIGNED-PAYLOAD). */
const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");

/** SigV4 for a presigned GET, written from the documented algorithm (test oracle only). */
export function sigv4PresignedSignature(
  url: URL,
  headers: Record<string, string>,
  signedHeaders: string[],
  secret: string,
  region: string,
): string {
  const enc = (s: string) =>
    encodeURIComponent(s).replace(
      /[!'()*]/g,
      (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
    );
  const params = [...url.searchParams]
    .filter(([k]) => k !== "X-Amz-Signature")
    .map(([k, v]) => [enc(k), enc(v)] as const);
  params.sort(([a, av], [b, bv]) => (a === b ? (av < bv ? -1 : 1) : a < b ? -1 : 1));
  const canonicalQuery = params.map(([k, v]) => `${k}=${v}`).join("&");
  const canonicalHeaders = signedHeaders.map((h) => `${h}:${(headers[h] ?? "").trim()}\n`).join("");
  const canonicalRequest = [
    "GET",
    url.pathname,
    canonicalQuery,
    canonicalHeaders,
    signedHeaders.join(";"),
    EMPTY_SHA256,
  ].join("\n");
  const date = url.searchParams.get("X-Amz-Date")!;
  const scope = `${date.slice(0, 8)}/${region}/sts/aws4_request`;
  const toSign = [
    "AWS4-HMAC-SHA256",
    date,
    scope,
    createHash("sha256").update(canonicalRequest).digest("hex"),
  ].join("\n");
  const hmac = (k: Buffer | string, d: string) => createHmac("sha256", k).update(d).digest();
  const kSigning = hmac(
    hmac(hmac(hmac(`AWS4${secret}`, date.slice(0, 8)), region), "sts"),
    "aws4_request",
  );
  return createHmac("sha256", kSigning).update(toSign).digest("hex");
}
