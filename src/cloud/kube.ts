// The Kubernetes seam: a small typed client over node:https for the one resource we use, NodeENI
// (list, get, merge-patch of the status subresource). @kubernetes/client-node would cost ~0.6 s
// and ~120 MB at import for the same three calls; boot time is a product feature.
// Finding the cluster (nodeadm's NodeConfig or [kubernetes] / a kubeconfig) also lives here.
import type https from "node:https";
import type { IncomingMessage } from "node:http";
import { type KubernetesConfig } from "../config/model.js";
import { own } from "../core/records.js";
import { steadyNow } from "../core/deadline.js";
import { InputError, OpError } from "../core/errors.js";
import type { Host } from "../host/host.js";
import { type CredentialSource, eksToken } from "./ekstoken.js";
import { readTrustedFile } from "../host/trusted.js";
import { lazyHttps, loadYaml } from "../core/lazy.js";
import { inputs } from "../core/inputs.js";

export const NODEENI_GROUP = "networking.k8s.aws";
export const NODEENI_VERSION = "v1alpha1";
export const NODEENI_PLURAL = "nodeenis";
export const NODEENI_PATH = `/apis/${NODEENI_GROUP}/${NODEENI_VERSION}/${NODEENI_PLURAL}`;

export interface NodeEniAttachment {
  nodeID: string;
  instanceID: string;
  eniID: string;
  attachmentID: string;
  subnetID?: string;
  subnetCIDR?: string;
  mtu?: number;
  deviceIndex?: number;
  status: string;
  lastUpdated: string;
  dpdkBound?: boolean;
  dpdkDriver?: string;
  dpdkPCIAddress?: string;
  dpdkResourceName?: string;
}

export interface NodeEniObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; resourceVersion?: string; uid?: string; generation?: number };
  spec?: Record<string, unknown>;
  status?: { attachments?: NodeEniAttachment[] };
}

export type KubeAuth =
  | {
      kind: "eks";
      clusterName: string;
      region: string;
      credentials?: CredentialSource;
      stsHost?: string;
    }
  | { kind: "token"; token: string }
  | { kind: "cert"; cert: string; key: string };

export interface KubeTarget {
  server: string;
  /** PEM; undefined → the system trust store */
  ca?: string;
  auth: KubeAuth;
  /** where the settings came from, for messages: `user-data part 1 (application/node.eks.aws)`, `/etc/eni-dpdk/kubeconfig` */
  source: string;
}

/** The API answered with an HTTP error. */
export class KubeApiError extends OpError {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(
      message,
      "see the API server's answer above; `eni-dpdk validate` shows the cluster eni-dpdk found",
      { status, reason },
    );
    this.name = "KubeApiError";
  }
}

/** The API could not be reached (refused, reset, timed out, DNS) or answered 5xx/429. */
export class KubeUnreachableError extends OpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(
      message,
      "check that the API server is reachable from the node (security groups, endpoint access, proxy)",
      {},
      options,
    );
    this.name = "KubeUnreachableError";
  }
}

/** Transient: worth waiting for. Auth, TLS trust and 4xx are not. */
export function isTransient(e: unknown): boolean {
  if (e instanceof KubeUnreachableError) return true;
  return e instanceof KubeApiError && (e.status >= 500 || e.status === 429);
}

const TLS_TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
]);

export class KubeClient {
  private readonly agent: https.Agent;
  /** expiresAt on core/deadline's steady clock, which a step of the wall clock does not move */
  private token?: { value: string; expiresAt: number };

  constructor(
    readonly target: KubeTarget,
    private readonly opts: { timeoutMs?: number } = {},
  ) {
    const auth = target.auth;
    this.agent = new (lazyHttps().Agent)({
      keepAlive: true,
      ca: target.ca,
      ...(auth.kind === "cert" ? { cert: auth.cert, key: auth.key } : {}),
    });
  }

  close(): void {
    this.agent.destroy();
  }

  /** Drop a cached token (after a 401, a fresh one may be accepted). */
  forgetToken(): void {
    this.token = undefined;
  }

  private async authorization(): Promise<string | undefined> {
    const auth = this.target.auth;
    if (auth.kind === "token") return `Bearer ${auth.token}`;
    if (auth.kind === "cert") return undefined;
    // Tokens last 15 minutes; renew well before, so a long watch reconnect never sends a stale one.
    if (!this.token || this.token.expiresAt - steadyNow() < 5 * 60_000) {
      const t = await eksToken({
        clusterName: auth.clusterName,
        region: auth.region,
        credentials: auth.credentials,
        stsHost: auth.stsHost,
      }).catch((e: Error) => {
        throw new OpError(
          `cannot make the EKS token for cluster "${auth.clusterName}": no AWS credentials (${e.message})`,
          "attach an instance profile whose role is mapped into the cluster, or set [kubernetes].kubeconfig",
          {},
          { cause: e },
        );
      });
      // the token's lifetime as signed, counted from now
      this.token = {
        value: t.token,
        expiresAt: steadyNow() + (t.expiresAt.getTime() - Date.now()),
      };
    }
    return `Bearer ${this.token.value}`;
  }

  private async open(
    method: string,
    path: string,
    body?: unknown,
    contentType?: string,
    timeoutMs?: number,
    signal?: AbortSignal,
  ): Promise<IncomingMessage> {
    inputs.spoil(`called the Kubernetes API: ${method} ${path}`);
    const url = new URL(path, this.target.server);
    const authz = await this.authorization();
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = lazyHttps().request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            accept: "application/json",
            "user-agent": "eni-dpdk",
            ...(authz ? { authorization: authz } : {}),
            ...(payload
              ? {
                  "content-type": contentType ?? "application/json",
                  "content-length": payload.length,
                }
              : {}),
          },
          timeout: timeoutMs ?? this.opts.timeoutMs ?? 10_000,
          signal,
        },
        resolve,
      );
      req.on("timeout", () =>
        req.destroy(
          Object.assign(
            new Error(`no answer within ${timeoutMs ?? this.opts.timeoutMs ?? 10_000} ms`),
            { code: "ETIMEDOUT" },
          ),
        ),
      );
      req.on("error", (e: NodeJS.ErrnoException) => reject(this.networkError(e)));
      req.end(payload);
    });
  }

  private networkError(e: NodeJS.ErrnoException): Error {
    const where = `${this.target.server} (from ${this.target.source})`;
    if (e.code && TLS_TRUST_CODES.has(e.code)) {
      return new OpError(
        `the API server ${where} presented a certificate we do not trust (${e.code}: ${e.message})`,
        "check the cluster CA: NodeConfig spec.cluster.certificateAuthority, [kubernetes].ca_file or the kubeconfig's certificate-authority-data",
        { server: this.target.server },
      );
    }
    return new KubeUnreachableError(
      `cannot reach the API server ${where}: ${e.code ? `${e.code} ` : ""}${e.message}`,
      { cause: e },
    );
  }

  /** One JSON request; throws KubeApiError, KubeUnreachableError or OpError (TLS trust). */
  async request<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const res = await this.open(method, path, body, contentType);
    let text: string;
    try {
      text = await readAll(res);
    } catch (e) {
      throw this.networkError(e as NodeJS.ErrnoException);
    }
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return this.parseJson<T>(text, `${method} ${path}`);
    let reason = "";
    let message = text.slice(0, 300);
    try {
      const s = JSON.parse(text) as { reason?: string; message?: string };
      reason = s.reason ?? "";
      message = s.message ?? message;
    } catch {
      /* not a Status object */
    }
    const what = `${method} ${path} on ${this.target.server}`;
    if (status >= 500 || status === 429)
      throw new KubeUnreachableError(`${what} answered ${status} ${reason}: ${message}`);
    throw new KubeApiError(
      status,
      reason,
      `${what} answered ${status}${reason ? ` ${reason}` : ""}: ${message}`,
    );
  }

  /** A 2xx body as JSON; anything else (a proxy's HTML page) is an OpError naming the server. */
  private parseJson<T>(text: string, what: string): T {
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new OpError(
        `${what} on ${this.target.server} answered a body that is not JSON (${JSON.stringify(text.slice(0, 80))})`,
        "check that the server is the cluster's API server and that no proxy answers in its place",
        { server: this.target.server },
      );
    }
  }

  /** The list's items as the API answered them: each still to be checked (see nodeeni.ts checkNodeEniItems). */
  async listNodeEnis(): Promise<{ items: NodeEniObject[]; resourceVersion: string }> {
    const list = await this.request<unknown>("GET", NODEENI_PATH);
    const items =
      list !== null && typeof list === "object" ? (list as { items?: unknown }).items : undefined;
    if (!Array.isArray(items)) {
      throw new OpError(
        `the API server ${this.target.server} answered the NodeENI list (GET ${NODEENI_PATH}) without an items array ` +
          `(items is ${items === null ? "null" : Array.isArray(list) ? "missing; the answer is an array" : typeof items})`,
        "expected a NodeENIList ({kind: NodeENIList, items: [...]}); check that the server is the cluster's API server " +
          "and the CRD is served",
        { server: this.target.server },
      );
    }
    const rv = (list as { metadata?: { resourceVersion?: unknown } }).metadata?.resourceVersion;
    return { items: items as NodeEniObject[], resourceVersion: typeof rv === "string" ? rv : "" };
  }

  getNodeEni(name: string): Promise<NodeEniObject> {
    return this.request<NodeEniObject>("GET", `${NODEENI_PATH}/${encodeURIComponent(name)}`);
  }

  /**
   * JSON merge patch of the status subresource. With `resourceVersion` the write is conditional:
   * the API answers 409 when someone else wrote in between (merge patch replaces arrays whole).
   */
  patchNodeEniStatus(
    name: string,
    resourceVersion: string,
    attachments: NodeEniAttachment[],
  ): Promise<NodeEniObject> {
    return this.request<NodeEniObject>(
      "PATCH",
      `${NODEENI_PATH}/${encodeURIComponent(name)}/status`,
      { metadata: { resourceVersion }, status: { attachments } },
      "application/merge-patch+json",
    );
  }
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

// ---- finding the cluster ------------------------------------------------------------------------

/** What nodeadm's NodeConfig says about the cluster (already merged across parts). */
export interface NodeConfigCluster {
  name?: string;
  apiServerEndpoint?: string;
  /** base64 of the PEM, as in NodeConfig */
  certificateAuthority?: string;
  /** where it came from */
  source: string;
}

function decodeCa(b64: string, where: string): string {
  const pem = Buffer.from(b64.replace(/\s+/g, ""), "base64").toString("utf8");
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new OpError(
      `${where}: the certificate authority is not base64 of a PEM certificate`,
      "copy it from `aws eks describe-cluster --query cluster.certificateAuthority.data`",
    );
  }
  return pem;
}

/**
 * Where to reach the API and how to authenticate, or undefined when nothing says there is a
 * cluster (then the NodeENI source has nothing to do). Precedence: [kubernetes].kubeconfig, then
 * [kubernetes].api_server (+ ca_file, cluster_name), then nodeadm's NodeConfig; [kubernetes]
 * values fill in or override NodeConfig's field by field.
 */
export async function resolveKubeTarget(input: {
  k8s: KubernetesConfig;
  nodeConfig?: NodeConfigCluster;
  region: string;
  host: Host;
}): Promise<KubeTarget | undefined> {
  const { k8s, nodeConfig, region, host } = input;
  if (k8s.kubeconfig)
    return loadKubeconfig(host, k8s.kubeconfig, { region, apiServer: k8s.api_server || undefined });
  const server = k8s.api_server || nodeConfig?.apiServerEndpoint;
  if (!server) return undefined;
  const source = k8s.api_server ? "[kubernetes].api_server" : nodeConfig!.source;
  let ca: string | undefined;
  if (k8s.ca_file) {
    ca = readTrustedFile(
      host,
      k8s.ca_file,
      "kubernetes.ca_file",
      "expected the cluster CA as a PEM file",
    );
    if (ca === undefined) {
      throw new InputError(
        [
          {
            source: `[kubernetes].ca_file ${host.path(k8s.ca_file)}`,
            key: "kubernetes.ca_file",
            message: "no such file",
          },
        ],
        "point ca_file at the cluster CA PEM, or remove it to use NodeConfig's certificateAuthority",
      );
    }
  } else if (nodeConfig?.certificateAuthority) {
    ca = decodeCa(
      nodeConfig.certificateAuthority,
      `${nodeConfig.source}: spec.cluster.certificateAuthority`,
    );
  }
  const clusterName = k8s.cluster_name || nodeConfig?.name;
  if (!clusterName) {
    throw new OpError(
      `${source} gives the API server but no cluster name, which the EKS token must sign`,
      "set [kubernetes].cluster_name, or use [kubernetes].kubeconfig with a token or client certificate",
    );
  }
  return {
    server: server.replace(/\/+$/, ""),
    ca,
    auth: { kind: "eks", clusterName, region },
    source,
  };
}

type YamlMap = Record<string, unknown>;
const isMap = (v: unknown): v is YamlMap =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * A kubeconfig: server + CA, and a token, token file, client certificate, or an EKS exec plugin.
 * Every shape is checked (a list where a map belongs is the usual slip) and every problem names the
 * kubeconfig and the YAML path; files it names are read only if no one else can change them.
 */
export async function loadKubeconfig(
  host: Host,
  file: string,
  opts: { region: string; apiServer?: string },
): Promise<KubeTarget> {
  const where = `kubeconfig ${host.path(file)}`;
  const fail = (key: string, msg: string): never => {
    const hint =
      "fix the kubeconfig (kubectl --kubeconfig FILE config view) or point [kubernetes].kubeconfig elsewhere";
    throw new InputError([{ source: where, key, message: msg }], hint);
  };
  const text = readTrustedFile(
    host,
    file,
    "kubernetes.kubeconfig",
    "expected a kubeconfig YAML file",
  );
  if (text === undefined) return fail("kubernetes.kubeconfig", "does not exist");
  let parsed: unknown;
  try {
    parsed = (await loadYaml()).parse(text) ?? {};
  } catch (e) {
    return fail("(syntax)", `is not valid YAML (${(e as Error).message.split("\n")[0]})`);
  }
  if (!isMap(parsed))
    return fail(
      "(document)",
      "expected a mapping (apiVersion, clusters, contexts, users, current-context)",
    );
  const doc = parsed;
  /** A named list (clusters, contexts, users): each entry a map with a string name and a map under `inner`. */
  const named = (list: string, inner: string): Map<string, YamlMap> => {
    const v = own(doc, list);
    const out = new Map<string, YamlMap>();
    if (v === undefined || v === null) return out;
    if (!Array.isArray(v))
      return fail(list, `expected a list of {name, ${inner}} entries, got ${typeof v}`);
    v.forEach((entry: unknown, i) => {
      const name = isMap(entry) ? own(entry, "name") : undefined;
      if (typeof name !== "string" || name === "")
        return fail(`${list}[${i}].name`, "expected a non-empty string");
      const body = own(entry as YamlMap, inner) ?? {};
      if (!isMap(body))
        return fail(
          `${list}[${i}].${inner}`,
          `expected a mapping, got ${Array.isArray(body) ? "a list" : typeof body}`,
        );
      if (!out.has(name)) out.set(name, body);
    });
    return out;
  };
  const clusters = named("clusters", "cluster");
  const contexts = named("contexts", "context");
  const users = named("users", "user");
  const current = own(doc, "current-context");
  if (current !== undefined && current !== null && typeof current !== "string")
    fail("current-context", "expected a string");
  const ctxName = (current as string | undefined) || [...contexts.keys()][0];
  const ctx = ctxName === undefined ? undefined : contexts.get(ctxName);
  if (!ctx) return fail("current-context", `has no context "${ctxName ?? ""}"`);
  const str = (o: YamlMap, k: string, key: string): string | undefined => {
    const v = own(o, k);
    if (v === undefined || v === null) return undefined;
    return typeof v === "string"
      ? v
      : fail(key, `expected a string, got ${Array.isArray(v) ? "a list" : typeof v}`);
  };
  const clusterName = str(ctx, "cluster", `contexts[${ctxName}].context.cluster`);
  const userName = str(ctx, "user", `contexts[${ctxName}].context.user`);
  const cluster = clusterName === undefined ? undefined : clusters.get(clusterName);
  if (!cluster) {
    return fail(
      `contexts[${ctxName}].context.cluster`,
      `context "${ctxName}" names cluster "${clusterName ?? ""}", which is not defined`,
    );
  }
  const user = (userName !== undefined ? users.get(userName) : undefined) ?? {};
  const fileOrData = (
    o: YamlMap,
    fileKey: string,
    dataKey: string,
    at: string,
  ): string | undefined => {
    const data = str(o, dataKey, `${at}.${dataKey}`);
    if (data) return Buffer.from(data, "base64").toString("utf8");
    const f = str(o, fileKey, `${at}.${fileKey}`);
    if (!f) return undefined;
    const abs = f.startsWith("/") ? f : `${file.replace(/[^/]*$/, "")}${f}`;
    const text = readTrustedFile(
      host,
      abs,
      `${at}.${fileKey}`,
      `expected the file ${fileKey} names`,
    );
    return text ?? fail(`${at}.${fileKey}`, `${f} does not exist`);
  };
  const clusterAt = `clusters[${clusterName}].cluster`;
  const userAt = `users[${userName ?? ""}].user`;
  const server = opts.apiServer ?? str(cluster, "server", `${clusterAt}.server`);
  if (!server?.startsWith("https://")) {
    return fail(
      `${clusterAt}.server`,
      `cluster "${clusterName}" needs an https:// server, got "${server ?? ""}"`,
    );
  }
  const ca = fileOrData(cluster, "certificate-authority", "certificate-authority-data", clusterAt);

  let auth: KubeAuth | undefined;
  const token =
    str(user, "token", `${userAt}.token`) ??
    fileOrData(user, "tokenFile", "__none__", userAt)?.trim();
  const cert = fileOrData(user, "client-certificate", "client-certificate-data", userAt);
  const key = fileOrData(user, "client-key", "client-key-data", userAt);
  const exec = own(user, "exec");
  if (token) auth = { kind: "token", token };
  else if (cert && key) auth = { kind: "cert", cert, key };
  else if (exec !== undefined && exec !== null) {
    if (!isMap(exec)) return fail(`${userAt}.exec`, "expected a mapping (command, args, env)");
    // `aws eks get-token --cluster-name X` and `aws-iam-authenticator token -i X` make the same token
    // we make ourselves; run no external program at boot.
    const rawArgs = own(exec, "args") ?? [];
    if (!Array.isArray(rawArgs) || !rawArgs.every((a) => typeof a === "string")) {
      return fail(`${userAt}.exec.args`, "expected a list of strings");
    }
    const args = rawArgs;
    const rawEnv = own(exec, "env") ?? [];
    const isPair = (e: unknown) =>
      isMap(e) && typeof own(e, "name") === "string" && typeof own(e, "value") === "string";
    const envOk = Array.isArray(rawEnv) && rawEnv.every(isPair);
    if (!envOk) return fail(`${userAt}.exec.env`, "expected a list of {name, value} string pairs");
    const env = rawEnv as { name: string; value: string }[];
    const after = (...flags: string[]) => {
      for (let i = 0; i < args.length; i++) {
        for (const f of flags) {
          if (args[i] === f) return args[i + 1];
          if (args[i].startsWith(`${f}=`)) return args[i].slice(f.length + 1);
        }
      }
      return undefined;
    };
    const eksCluster = after("--cluster-name", "-i", "--cluster-id");
    if (!eksCluster) {
      const other = `user "${userName}" uses an exec plugin other than aws eks get-token / aws-iam-authenticator`;
      return fail(`${userAt}.exec`, `${other}; use a token or client certificate`);
    }
    const region =
      after("--region") ??
      env.find((e) => e.name === "AWS_REGION" || e.name === "AWS_DEFAULT_REGION")?.value ??
      opts.region;
    auth = { kind: "eks", clusterName: eksCluster, region };
  }
  if (!auth)
    return fail(
      userAt,
      `user "${userName ?? ""}" has no token, tokenFile, client certificate, or EKS exec plugin`,
    );
  return { server: server.replace(/\/+$/, ""), ca, auth, source: where };
}
