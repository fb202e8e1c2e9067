// EC2 user-data, decoded the way nodeadm decodes it (nodeadm/internal/configprovider): a base64
// heuristic on the whole blob, gzip by magic bytes, then MIME multipart from the top-level
// Content-Type; each part again through base64 and gzip. Only top-level parts count, as in
// nodeadm, which skips a nested multipart part like any other foreign type. Our part type is
// application/eni-dpdk+toml; nodeadm's is application/node.eks.aws.
//
// Content meant for eni-dpdk is never dropped in silence: a part that holds it but cannot be read
// (a boundary that matches no part, nesting, a wrong Content-Type, a gzip bomb) is an InputError
// naming the part.
import { TOP_LEVEL_KEYS } from "../config/model.js";
import { InputError } from "../core/errors.js";
import { lazyZlib } from "../core/lazy.js";
import { NODEADM_MEDIA_TYPE, OUR_MEDIA_TYPE } from "../config/facts.js";

/**
 * The most bytes gzip may inflate all of user-data to, summed over every layer and part. IMDS
 * serves at most 16 KiB of user-data, and gzip reaches about 1000:1, so without a cap a few KiB
 * become a GiB before anything fails. A real config is a few KiB of text; 1 MiB is 64 times the
 * largest raw user-data and still bounds the boot's memory. docs/user-data.md says the same.
 */
export const MAX_INFLATED_BYTES = 1024 * 1024;

/** How deep nested multipart parts are searched for misplaced eni-dpdk content. */
const MAX_NESTING = 4;

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

/** Bytes gzip may still produce in this decode. */
interface Budget {
  left: number;
}

/** Media types that may carry a plain TOML document, and so may hold our tables by mistake. */
export const PLAIN_TYPES: ReadonlySet<string> = new Set([
  "",
  "text/plain",
  "application/toml",
  "text/x-toml",
]);

const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/** nodeadm's heuristic: if the whole blob is valid base64, use the decoded bytes. */
function maybeBase64(data: Buffer): Buffer {
  const s = data.toString("latin1").replace(/[\r\n]/g, "");
  if (s.length === 0 || s.length % 4 !== 0 || !BASE64_RE.test(s)) return data;
  return Buffer.from(s, "base64");
}

function maybeGzip(data: Buffer, label: string, budget: Budget): Buffer {
  if (data.length < 2 || data[0] !== 0x1f || data[1] !== 0x8b) return data;
  let out: Buffer;
  try {
    out = lazyZlib().gunzipSync(data, { maxOutputLength: Math.max(1, budget.left) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw problem(
        label,
        `gzip data inflates past the ${MAX_INFLATED_BYTES / 1024 / 1024} MiB limit for all of user-data ` +
          "(IMDS serves at most 16 KiB raw; a real config inflates to a few KiB): compress only the config, once",
      );
    }
    throw problem(label, `gzip data is corrupt (${(e as Error).message})`);
  }
  budget.left -= out.length;
  return out;
}

function problem(label: string, message: string, key = "(encoding)"): InputError {
  return new InputError([{ source: label, key, message }]);
}

function unwrap(data: Buffer, label: string, budget: Budget): Buffer {
  return maybeGzip(maybeBase64(data), label, budget);
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

function mediaType(contentType: string | undefined): { type: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  if (!contentType) return { type: "", params };
  const [type, ...rest] = contentType.split(";");
  for (const p of rest) {
    const i = p.indexOf("=");
    if (i < 0) continue;
    params.set(
      p.slice(0, i).trim().toLowerCase(),
      p
        .slice(i + 1)
        .trim()
        .replace(/^"(.*)"$/, "$1"),
    );
  }
  return { type: type.trim().toLowerCase(), params };
}

/**
 * The parts between `--boundary` lines (transport padding allowed), up to `--boundary--`, as Go's
 * mime/multipart reads them; undefined when no line is a delimiter at all.
 */
function splitMultipart(body: string, boundary: string): string[] | undefined {
  const delim = `--${boundary}`;
  const parts: string[] = [];
  let current: string[] | undefined;
  let found = false;
  for (const line of body.split(/\r?\n/)) {
    const bare = line.replace(/[ \t]+$/, "");
    if (bare === `${delim}--`) {
      found = true;
      if (current) parts.push(current.join("\n"));
      current = undefined;
      break;
    }
    if (bare === delim) {
      found = true;
      if (current) parts.push(current.join("\n"));
      current = [];
      continue;
    }
    current?.push(line);
  }
  if (current) parts.push(current.join("\n"));
  return found ? parts : undefined;
}

/** Decode user-data into its top-level parts. A non-multipart document is a single part with index 0. */
export function decodeUserData(raw: Buffer): UserDataPart[] {
  const budget: Budget = { left: MAX_INFLATED_BYTES };
  const data = unwrap(raw, "user-data", budget);
  // Split as latin1 (one char per byte): headers and boundaries are ASCII, and each part keeps its exact bytes.
  const text = data.toString("latin1");
  const headers = readHeaders(text);
  const top = mediaType(headers?.map.get("content-type"));
  if (!headers || !top.type.startsWith("multipart/")) {
    const contentType = headers?.map.get("content-type") ? top.type : "";
    const body = contentType ? Buffer.from(text.slice(headers!.bodyStart), "latin1") : data;
    const decoded = contentType
      ? decodeTransfer(body, headers!.map.get("content-transfer-encoding"), "user-data", budget)
      : body;
    const docText = decoded.toString("utf8");
    // nodeadm also accepts a bare NodeConfig document; label it as its part type so consumers need one check.
    const type = contentType || (sniffDocument(docText) === "nodeadm" ? NODEADM_MEDIA_TYPE : "");
    return [{ index: 0, contentType: type, label: "user-data", body: decoded, text: docText }];
  }
  const body = text.slice(headers.bodyStart);
  const parts = readMultipart(body, top.params.get("boundary"), {
    prefix: "user-data",
    depth: 0,
    budget,
  });
  // A part of ours whose delimiter is not the declared boundary hides inside another part's body.
  const declared = body.match(new RegExp(OUR_CONTENT_TYPE_LINE_RE.source, "gim"))?.length ?? 0;
  const read = parts.filter((p) => p.contentType === OUR_MEDIA_TYPE).length;
  if (declared > read) {
    throw problem(
      "user-data",
      `${declared} line(s) say Content-Type: ${OUR_MEDIA_TYPE}, but only ${read} part(s) of that type start with the declared ` +
        `boundary "--${top.params.get("boundary")}"; start every part with that boundary line`,
      "(mime)",
    );
  }
  return parts;
}

interface MultipartContext {
  /** label of the enclosing document: `user-data` or `user-data part 2` */
  prefix: string;
  depth: number;
  budget: Budget;
}

function readMultipart(
  body: string,
  boundary: string | undefined,
  cx: MultipartContext,
): UserDataPart[] {
  const chunks = boundary ? splitMultipart(body, boundary) : undefined;
  if (!chunks) {
    const why = boundary
      ? `its Content-Type declares boundary "${boundary}", but no line is "--${boundary}"`
      : "its multipart Content-Type has no boundary parameter";
    // nodeadm fails on such user-data too; it is our error only when our content is in it.
    if (holdsOurContent(body))
      throw problem(cx.prefix, `${why}, so the eni-dpdk content in it cannot be read`, "(mime)");
    return [];
  }
  const numbering = cx.depth === 0 ? "user-data part " : `${cx.prefix}.`;
  return chunks.map((chunk, i): UserDataPart => {
    const h = readHeaders(chunk);
    const { type: declared, params } = mediaType(h?.map.get("content-type"));
    const type = declared || "text/plain";
    const name = `${numbering}${i + 1}`;
    const label = `${name} (${type})`;
    const rawBody = Buffer.from(
      h ? chunk.slice(h.bodyStart) : chunk.replace(/^\r?\n/, ""),
      "latin1",
    );
    if (type.startsWith("multipart/")) {
      checkNested(
        rawBody.toString("latin1"),
        params.get("boundary"),
        { prefix: name, depth: cx.depth + 1, budget: cx.budget },
        label,
      );
      return {
        index: i + 1,
        contentType: type,
        label,
        body: rawBody,
        text: rawBody.toString("utf8"),
      };
    }
    // Foreign parts (scripts, cloud-config) are left as they are: neither tool inflates them.
    const decode = type === OUR_MEDIA_TYPE || type === NODEADM_MEDIA_TYPE || PLAIN_TYPES.has(type);
    const body = decode
      ? decodeTransfer(rawBody, h?.map.get("content-transfer-encoding"), label, cx.budget)
      : rawBody;
    return { index: i + 1, contentType: type, label, body, text: body.toString("utf8") };
  });
}

/** A nested multipart part is skipped, as nodeadm skips it, unless eni-dpdk content sits inside. */
function checkNested(
  body: string,
  boundary: string | undefined,
  cx: MultipartContext,
  outerLabel: string,
): void {
  if (cx.depth > MAX_NESTING) {
    const why = `multipart parts nest more than ${MAX_NESTING} deep; put the ${OUR_MEDIA_TYPE} part at the top level`;
    if (holdsOurContent(body)) throw problem(outerLabel, why, "(mime)");
    return;
  }
  for (const part of readMultipart(body, boundary, cx)) {
    if (
      part.contentType === OUR_MEDIA_TYPE ||
      (PLAIN_TYPES.has(part.contentType) && hasOurTableHeaders(part.text))
    ) {
      throw problem(
        part.label,
        `is nested inside ${outerLabel}; nodeadm reads only top-level parts, and so does eni-dpdk: ` +
          `move it to the top-level multipart document as Content-Type: ${OUR_MEDIA_TYPE}`,
        "(mime)",
      );
    }
  }
}

function decodeTransfer(
  body: Buffer,
  encoding: string | undefined,
  label: string,
  budget: Budget,
): Buffer {
  const enc = encoding?.toLowerCase().trim();
  if (enc === "base64")
    return maybeGzip(
      Buffer.from(body.toString("latin1").replace(/\s+/g, ""), "base64"),
      label,
      budget,
    );
  if (enc === "quoted-printable") {
    const s = body
      .toString("latin1")
      .replace(/=\r?\n/g, "")
      .replace(/=([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(s, "latin1");
  }
  return unwrap(body, label, budget);
}

// ---- what a document is --------------------------------------------------------------------------

/** The lines of `text` that are not inside a TOML multi-line string ("""…""" or '''…'''). */
function linesOutsideMultilineStrings(text: string): string[] {
  const out: string[] = [];
  let open: string | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (open) {
      if (line.split(open).length % 2 === 0) open = undefined;
      continue;
    }
    out.push(line);
    for (const q of ['"""', "'''"]) if (line.split(q).length % 2 === 0) open = q;
  }
  return out;
}

const OUR_TABLE_HEADER_RE = new RegExp(
  `^\\s*\\[\\[?\\s*(${TOP_LEVEL_KEYS.join("|")})(\\s*\\.\\s*[A-Za-z0-9_"-]+)*\\s*\\]\\]?\\s*(#.*)?$`,
);

/** A table header of ours (`[dpdk]`, `[[eni]]`, `[eni.dpdk]`, …) on a line of its own, outside strings. */
export function hasOurTableHeaders(text: string): boolean {
  return linesOutsideMultilineStrings(text).some((l) => OUR_TABLE_HEADER_RE.test(l));
}

/** Our Content-Type as a header line anywhere: a sign that some part meant for us is in there. */
const OUR_CONTENT_TYPE_LINE_RE = new RegExp(
  `^content-type:\\s*${OUR_MEDIA_TYPE.replace(/[.+]/g, "\\$&")}\\b`,
  "im",
);

function holdsOurContent(text: string): boolean {
  return OUR_CONTENT_TYPE_LINE_RE.test(text) || hasOurTableHeaders(text);
}

/**
 * A NodeConfig as nodeadm decodes it: YAML whose top level has `apiVersion: node.eks.aws/…` and
 * `kind: NodeConfig`. Only column-0 lines count (top level), and never those inside a TOML
 * multi-line string, so a TOML string that mentions a NodeConfig does not make one.
 */
export function isNodeConfigYaml(text: string): boolean {
  const lines = linesOutsideMultilineStrings(text);
  const apiVersion = lines.some((l) =>
    /^apiVersion:\s*["']?node\.eks\.aws\/[^\s"']+["']?\s*(#.*)?$/.test(l),
  );
  const kind = lines.some((l) => /^kind:\s*["']?NodeConfig["']?\s*(#.*)?$/.test(l));
  return apiVersion && kind;
}

/**
 * What a single, non-MIME document most likely is. A document with our table headers is ours even
 * when a string in it mentions a NodeConfig; "other" may still be TOML holding our tables as
 * dotted keys, which only a parse can tell (src/sources.ts does).
 */
export function sniffDocument(
  text: string,
): "script" | "cloud-config" | "eni-dpdk" | "nodeadm" | "other" {
  const t = text.trimStart();
  if (t.startsWith("#!")) return "script";
  if (t.startsWith("#cloud-config") || t.startsWith("#include") || t.startsWith("#cloud-boothook"))
    return "cloud-config";
  if (hasOurTableHeaders(t)) return "eni-dpdk";
  if (isNodeConfigYaml(t)) return "nodeadm";
  return "other";
}

/** Render a MIME multipart document: nodeadm's NodeConfig first, then our TOML part. */
export function renderUserData(
  nodeConfigYaml: string,
  toml: string,
  boundary = "==ENI-DPDK-BOUNDARY==",
): string {
  const part = (type: string, body: string) =>
    `--${boundary}\nContent-Type: ${type}; charset="us-ascii"\n\n${body.endsWith("\n") ? body : body + "\n"}\n`;
  return (
    `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="${boundary}"\n\n` +
    part(NODEADM_MEDIA_TYPE, nodeConfigYaml) +
    part(OUR_MEDIA_TYPE, toml) +
    `--${boundary}--\n`
  );
}
