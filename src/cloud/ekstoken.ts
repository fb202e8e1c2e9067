// The EKS bearer token, as aws-iam-authenticator makes it: "k8s-aws-v1." + unpadded base64url of a
// presigned STS GetCallerIdentity URL whose signed headers include x-k8s-aws-id: <cluster name>.
// Signing is the SDK's own SigV4 signer; credentials come from the default provider chain (on EC2:
// the instance role via IMDSv2). Both are imported lazily so a boot without NodeENI never loads them.

export const EKS_TOKEN_PREFIX = "k8s-aws-v1.";
export const CLUSTER_ID_HEADER = "x-k8s-aws-id";
/** STS ignores X-Amz-Expires; the authenticator accepts 0..900 and tokens live 15 min from X-Amz-Date. */
const PRESIGN_EXPIRES_SECONDS = 60;
const TOKEN_LIFETIME_MS = 15 * 60_000;

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}
export type CredentialSource = AwsCredentials | (() => Promise<AwsCredentials>);

export interface EksTokenOptions {
  clusterName: string;
  region: string;
  /** default: the AWS default provider chain with IMDSv1 disabled */
  credentials?: CredentialSource;
  /** signing time; default now */
  now?: Date;
  /** default: the regional endpoint for the region's partition */
  stsHost?: string;
}

export interface EksToken {
  token: string;
  /** the presigned URL inside the token (for diagnostics; it carries a signature, never log it whole) */
  url: string;
  /** when the API server will stop accepting it (15 min after X-Amz-Date), less a minute's cushion */
  expiresAt: Date;
}

/** The regional STS host, which aws-iam-authenticator accepts for every partition. */
export function stsHost(region: string): string {
  if (region.startsWith("cn-")) return `sts.${region}.amazonaws.com.cn`;
  if (region.startsWith("us-iso-")) return `sts.${region}.c2s.ic.gov`;
  if (region.startsWith("us-isob-")) return `sts.${region}.sc2s.sgov.gov`;
  return `sts.${region}.amazonaws.com`;
}

/**
 * Named exports of a lazily imported package that may be CommonJS: plain Node exposes them on the
 * namespace, a code-split esbuild bundle only under `default`. `probe` is one export we need.
 */
import { loadEksSigning } from "../core/lazy.js";

let defaultChain: (() => Promise<AwsCredentials>) | undefined;

async function resolveCredentials(src?: CredentialSource): Promise<AwsCredentials> {
  if (src && typeof src !== "function") return src;
  if (src) return src();
  if (!defaultChain) {
    const { defaultProvider } = await loadEksSigning();
    // The chain memoizes and refreshes before expiry; IMDSv1 stays off (project rule: IMDSv2 only).
    defaultChain = defaultProvider({ ec2MetadataV1Disabled: true, timeout: 2000, maxRetries: 3 });
  }
  return defaultChain();
}

/** RFC 3986 query encoding, as SigV4 canonicalizes it. */
function encode(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

export async function eksToken(opts: EksTokenOptions): Promise<EksToken> {
  if (!opts.clusterName)
    throw new Error("eksToken: the cluster name is required (it is signed as x-k8s-aws-id)");
  const { SignatureV4, Sha256 } = await loadEksSigning();
  const credentials = await resolveCredentials(opts.credentials);
  const host = opts.stsHost ?? stsHost(opts.region);
  const signer = new SignatureV4({
    credentials,
    region: opts.region,
    service: "sts",
    sha256: Sha256,
    uriEscapePath: true,
  });
  const signingDate = opts.now ?? new Date();
  // Only x-amz-* headers are hoisted into the query; x-k8s-aws-id stays a signed header, as the
  // authenticator requires (it sends the header itself when it replays the URL to STS).
  const presigned = await signer.presign(
    {
      method: "GET",
      protocol: "https:",
      hostname: host,
      path: "/",
      query: { Action: "GetCallerIdentity", Version: "2011-06-15" },
      headers: { host, [CLUSTER_ID_HEADER]: opts.clusterName },
    },
    { expiresIn: PRESIGN_EXPIRES_SECONDS, signingDate },
  );
  const query = Object.entries(presigned.query ?? {})
    .flatMap(([k, v]) =>
      Array.isArray(v) ? v.map((x) => [k, x] as const) : v == null ? [] : [[k, v] as const],
    )
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${encode(k)}=${encode(String(v))}`)
    .join("&");
  const url = `https://${host}/?${query}`;
  return {
    token: EKS_TOKEN_PREFIX + Buffer.from(url).toString("base64url"),
    url,
    expiresAt: new Date(signingDate.getTime() + TOKEN_LIFETIME_MS - 60_000),
  };
}

/** The presigned URL inside a token, or undefined when it is not an EKS token. */
export function decodeEksToken(token: string): URL | undefined {
  if (!token.startsWith(EKS_TOKEN_PREFIX)) return undefined;
  try {
    return new URL(Buffer.from(token.slice(EKS_TOKEN_PREFIX.length), "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
}
