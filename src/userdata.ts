// EC2 user-data, decoded the way nodeadm decodes it: a base64 heuristic on the whole blob, gzip by
// magic bytes, then MIME multipart from the top-level Content-Type; each part again through base64
// and gzip. Our part type is application/eni-dpdk+toml; nodeadm's is application/node.eks.aws.
import { lazyZlib } from "./lazy.js";

export const OUR_MEDIA_TYPE = "application/eni-dpdk+toml";
export const NODEADM_MEDIA_TYPE = "application/node.eks.aws";

export interface UserDataPart {
  /** 1-based position in the multipart document; 0 for a single document */
  index: number;
  /** media type, lower-case, without parameters; "" for a single document that had no MIME headers */
  contentType: string;
  /** how messages name this part, e.g. `user-data part 2 (application/eni-dpdk+toml)` */
  label: string;
  body: Buffer;
  text: string;
}

const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/** nodeadm's heuristic: if the whole blob is valid base64, use the decoded bytes. */
function maybeBase64(data: Buffer): Buffer {
  const s = data.toString("latin1").replace(/[\r\n]/g, "");
  if (s.length === 0 || s.length % 4 !== 0 || !BASE64_RE.test(s)) return data;
  return Buffer.from(s, "base64");
}

function maybeGzip(data: Buffer, label: string): Buffer {
  if (data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b) {
    try {
      return lazyZlib().gunzipSync(data);
    } catch (e) {
      throw new Error(`${label}: gzip data is corrupt (${(e as Error).message})`);
    }
  }
  return data;
}

function unwrap(data: Buffer, label: string): Buffer {
  return maybeGzip(maybeBase64(data), label);
}

interface Headers {
  map: Map<string, string>;
  bodyStart: number;
}

/** RFC 5322-style header block at the start of `text` (with folded lines), or undefined. */
function readHeaders(text: string): Headers | undefined {
  const m = /\r?\n\r?\n/.exec(text);
  const block = m ? text.slice(0, m.index) : text;
  const lines = block.split(/\r?\n/);
  if (!/^[A-Za-z0-9-]+:/.test(lines[0] ?? "")) return undefined;
  const map = new Map<string, string>();
  let last = "";
  for (const line of lines) {
    if (/^[ \t]/.test(line) && last) {
      map.set(last, `${map.get(last)} ${line.trim()}`);
      continue;
    }
    const i = line.indexOf(":");
    if (i <= 0) return undefined;
    last = line.slice(0, i).trim().toLowerCase();
    map.set(last, line.slice(i + 1).trim());
  }
  return { map, bodyStart: m ? m.index + m[0].length : text.length };
}

function mediaType(contentType: string | undefined): { type: string; params: Record<string, string> } {
  if (!contentType) return { type: "", params: {} };
  const [type, ...rest] = contentType.split(";");
  const params: Record<string, string> = {};
  for (const p of rest) {
    const i = p.indexOf("=");
    if (i < 0) continue;
    params[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim().replace(/^"(.*)"$/, "$1");
  }
  return { type: type!.trim().toLowerCase(), params };
}

function splitMultipart(body: string, boundary: string): string[] {
  const delim = `--${boundary}`;
  const parts: string[] = [];
  const lines = body.split(/\r?\n/);
  let current: string[] | undefined;
  for (const line of lines) {
    if (line === `${delim}--` || line.startsWith(`${delim}--`) && line.trimEnd() === `${delim}--`) {
      if (current) parts.push(current.join("\n"));
      current = undefined;
      break;
    }
    if (line.trimEnd() === delim) {
      if (current) parts.push(current.join("\n"));
      current = [];
      continue;
    }
    current?.push(line);
  }
  if (current) parts.push(current.join("\n"));
  return parts;
}

/** Decode user-data into parts. A non-multipart document is a single part with index 0. */
export function decodeUserData(raw: Buffer): UserDataPart[] {
  const data = unwrap(raw, "user-data");
  const text = data.toString("utf8");
  const headers = readHeaders(text);
  const top = mediaType(headers?.map.get("content-type"));
  if (!headers || !top.type.startsWith("multipart/")) {
    const contentType = headers?.map.get("content-type") ? top.type : "";
    const body = headers?.map.get("content-type") ? Buffer.from(text.slice(headers.bodyStart)) : data;
    const decoded = contentType ? decodeTransfer(body, headers!.map.get("content-transfer-encoding"), "user-data") : body;
    const docText = decoded.toString("utf8");
    // nodeadm also accepts a bare NodeConfig document; label it as its part type so consumers need one check.
    const type = contentType || (sniffDocument(docText) === "nodeadm" ? NODEADM_MEDIA_TYPE : "");
    return [{ index: 0, contentType: type, label: "user-data", body: decoded, text: docText }];
  }
  const boundary = top.params.boundary;
  if (!boundary) throw new Error(`user-data: multipart Content-Type has no boundary parameter`);
  return splitMultipart(text.slice(headers.bodyStart), boundary).map((chunk, i) => {
    const h = readHeaders(chunk);
    const type = mediaType(h?.map.get("content-type")).type || "text/plain";
    const label = `user-data part ${i + 1} (${type})`;
    const rawBody = Buffer.from(h ? chunk.slice(h.bodyStart) : chunk.replace(/^\r?\n/, ""));
    const body = decodeTransfer(rawBody, h?.map.get("content-transfer-encoding"), label);
    return { index: i + 1, contentType: type, label, body, text: body.toString("utf8") };
  });
}

function decodeTransfer(body: Buffer, encoding: string | undefined, label: string): Buffer {
  const enc = encoding?.toLowerCase().trim();
  if (enc === "base64") return maybeGzip(Buffer.from(body.toString("latin1").replace(/\s+/g, ""), "base64"), label);
  if (enc === "quoted-printable") {
    const s = body.toString("latin1").replace(/=\r?\n/g, "").replace(/=([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(s, "latin1");
  }
  return unwrap(body, label);
}

/** What a single, non-MIME document most likely is. */
export function sniffDocument(text: string): "script" | "cloud-config" | "nodeadm" | "other" {
  const t = text.trimStart();
  if (t.startsWith("#!")) return "script";
  if (t.startsWith("#cloud-config") || t.startsWith("#include") || t.startsWith("#cloud-boothook")) return "cloud-config";
  if (/^apiVersion:\s*node\.eks\.aws\//m.test(t) || /^kind:\s*NodeConfig\b/m.test(t)) return "nodeadm";
  return "other";
}

/** Render a MIME multipart document: nodeadm's NodeConfig first, then our TOML part. */
export function renderUserData(nodeConfigYaml: string, toml: string, boundary = "==ENI-DPDK-BOUNDARY=="): string {
  const part = (type: string, body: string) =>
    `--${boundary}\nContent-Type: ${type}; charset="us-ascii"\n\n${body.endsWith("\n") ? body : body + "\n"}\n`;
  return (
    `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="${boundary}"\n\n` +
    part(NODEADM_MEDIA_TYPE, nodeConfigYaml) +
    part(OUR_MEDIA_TYPE, toml) +
    `--${boundary}--\n`
  );
}
