// Config sources, as a chain of providers: the file baked into the AMI, EC2 user-data, instance tags,
// NodeENI objects (src/nodeeni.ts), and the seed's environment variables. Each yields Layers that
// buildConfig merges in the precedence order of [service].sources (later wins).
import { readFileSync, statSync, type Stats } from "node:fs";
import path from "node:path";
import { interop } from "../core/lazy.js";
import { buildConfig, defaults, safeNumber, schema, TOP_LEVEL_KEYS, type EffectiveConfig, type Layer } from "../config/model.js";
import { CONFIG_DIR, CONFIG_FILE, NODEADM_MEDIA_TYPE, OUR_MEDIA_TYPE, type SourceName } from "../config/facts.js";
import { FORBIDDEN_KEY_MESSAGE, isForbiddenKey, nullRecord, own } from "../core/records.js";
import { InputError, type Problem } from "../core/errors.js";
import type { Host } from "../host/host.js";
import { decodeUserData, PLAIN_TYPES, sniffDocument, type UserDataPart } from "./mime.js";

export const CONFIG_HOME = "/etc/eni-dpdk";

// ---- TOML --------------------------------------------------------------------------------------

/**
 * Parse a TOML document into a Layer whose `locate` maps key paths to `source:line:col`.
 * toml has positions only for syntax errors, so key positions come from a light scan of the text.
 */
export function tomlLayer(text: string, source: string): Layer {
  let data: Record<string, unknown>;
  const positions = scanKeyPositions(text);
  try {
    data = parseToml(text);
  } catch (e) {
    if (e instanceof TomlNotLoaded) throw e;
    throw new InputError([syntaxProblem(e, source, positions)]);
  }
  return {
    source,
    data,
    tomlTyped: true,
    locate: (keyPath) => {
      for (let n = keyPath.length; n > 0; n--) {
        const pos = positions.get(keyPath.slice(0, n).join("."));
        if (pos) return `${source}:${pos}`;
      }
      return source;
    },
  };
}

/**
 * A parse error as a Problem at `source:line:col`. Grammar errors carry `location.start`; the
 * compiler's (a redefined key, an integer beyond 64 bits) carry `line`/`column`, and name the key
 * defined on that line when there is one.
 */
function syntaxProblem(e: unknown, source: string, positions: Map<string, string>): Problem {
  const err = e as { line?: number; column?: number; location?: { start?: { line?: number; column?: number } }; message?: string };
  const line = err.line ?? err.location?.start?.line;
  const column = err.column ?? err.location?.start?.column ?? 1;
  const where = line ? `${source}:${line}:${column}` : source;
  const atLine = err.line !== undefined ? [...positions].find(([, pos]) => pos.startsWith(`${line}:`))?.[0] : undefined;
  const key = atLine?.replace(/^eni\.(\d+)/, "eni[$1]") ?? "(syntax)";
  return { source: where, key, message: `not valid TOML: ${err.message ?? String(e)}` };
}

// ---- parsed-TOML memo ----------------------------------------------------------------------------
// The toml parser is slow on a cold process (about 10 ms for the first small document), and every
// boot parses the same config file and user-data again. A successful apply therefore keeps the
// parse results by exact text in TOML_MEMO_PATH; the next boot reuses them when the text is
// byte-identical. Only parsing is skipped: every layer is still validated and merged each time.
// Integers are BigInt (the parser's bigint mode) and floats numbers; the memo keeps both apart so a
// hit gives the same types as a parse: a JSON number is an integer (one past 2^53 is
// {"$bigint": "…"}), and a float is {"$float": x}, since JSON would write the float 2.0 as 2.

export const TOML_MEMO_PATH = "/var/lib/eni-dpdk/toml-memo.json";
/** The parser the memo's results came from; a memo from another parser is ignored (a test keeps it in step with package.json). */
export const TOML_PARSER = "toml 5.0.1";
const tomlMemo = new Map<string, Record<string, unknown>>();
/** texts parsed or reused in this process: what the next saveTomlMemo keeps */
const tomlUsed = new Set<string>();
/** roots whose memo file was read in this process */
const tomlMemoRoots = new Set<string>();

/** Bumped when what a memo entry holds changes (2: integers are BigInt). */
const TOML_MEMO_VERSION = 2;

let tomlParse: ((text: string) => unknown) | undefined;

/** A caller parsed before loadToml(): our bug, never to be mistaken for a user's syntax error. */
class TomlNotLoaded extends Error {
  constructor() {
    super("internal error: the TOML parser was not loaded (call loadToml first)");
  }
}

/** Load the toml parser (70 KB of code) — only needed when some text is not in the memo. */
export async function loadToml(): Promise<void> {
  if (tomlParse) return;
  const { parse } = interop(await import("toml"), "parse");
  // Every integer as BigInt: no integer is taken for a float (or the reverse), none past 2^53 is lost.
  tomlParse = (text) => parse(text, { bigint: true });
}

/** Load the parser unless every text is in the memo. */
async function loadTomlFor(texts: string[]): Promise<void> {
  if (texts.some((t) => !tomlMemo.has(t))) await loadToml();
}

/** Parse TOML (memoised by exact text) into ordinary objects, integers as BigInt. Needs loadToml() first on a miss. */
export function parseToml(text: string): Record<string, unknown> {
  const hit = tomlMemo.get(text);
  if (hit) {
    tomlUsed.add(text);
    return structuredClone(hit);
  }
  if (!tomlParse) throw new TomlNotLoaded();
  const data = plain(tomlParse(text)) as Record<string, unknown>;
  // Dates, non-finite numbers and a key spelled like one of our boxes would not survive JSON: such documents are not memoised.
  if (jsonSafe(data)) {
    tomlMemo.set(text, structuredClone(data));
    tomlUsed.add(text);
  }
  return data;
}

function jsonSafe(v: unknown): boolean {
  if (v === null || typeof v === "string" || typeof v === "boolean" || typeof v === "bigint") return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every(jsonSafe);
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return !Object.hasOwn(v, BIGINT_BOX) && !Object.hasOwn(v, FLOAT_BOX) && Object.values(v as object).every(jsonSafe);
  }
  return false;
}

const BIGINT_BOX = "$bigint";
const FLOAT_BOX = "$float";
/** Parsed TOML as memo JSON: a safe integer as a JSON number, a larger one and every float boxed. */
function toMemoJson(v: unknown): unknown {
  if (typeof v === "bigint") return safeNumber(v) ?? { [BIGINT_BOX]: v.toString() };
  if (typeof v === "number") return { [FLOAT_BOX]: v };
  if (Array.isArray(v)) return v.map(toMemoJson);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toMemoJson(x)]));
  return v;
}

/** The inverse of toMemoJson; a non-integral JSON number (a hand-edited memo) stays a float. */
function fromMemoJson(v: unknown): unknown {
  if (typeof v === "number") return Number.isSafeInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) return v.map(fromMemoJson);
  if (v === null || typeof v !== "object") return v;
  const box = v as Record<string, unknown>;
  if (Object.keys(box).length === 1) {
    const digits = own(box, BIGINT_BOX);
    if (typeof digits === "string" && /^-?\d+$/.test(digits)) return BigInt(digits);
    const float = own(box, FLOAT_BOX);
    if (typeof float === "number") return float;
  }
  return Object.fromEntries(Object.entries(box).map(([k, x]) => [k, fromMemoJson(x)]));
}

/** Load the memo a previous apply left (once per root). A damaged file is ignored, never an error. */
export async function loadTomlMemo(host: Host): Promise<void> {
  if (tomlMemoRoots.has(host.root)) return;
  tomlMemoRoots.add(host.root);
  const raw = await host.read(TOML_MEMO_PATH).catch(() => undefined);
  if (!raw) return;
  try {
    const doc = JSON.parse(raw) as { version?: number; parser?: string; entries?: { text?: unknown; data?: unknown }[] };
    if (doc.version !== TOML_MEMO_VERSION || doc.parser !== TOML_PARSER || !Array.isArray(doc.entries)) return;
    for (const e of doc.entries) {
      if (typeof e.text === "string" && e.data && typeof e.data === "object" && !Array.isArray(e.data)) {
        tomlMemo.set(e.text, fromMemoJson(e.data) as Record<string, unknown>);
      }
    }
  } catch {
    // A torn or hand-edited memo only costs a parse.
  }
}

/** Keep the documents this process used (and only those) for the next boot; no write when unchanged. */
export async function saveTomlMemo(host: Host): Promise<boolean> {
  const entries = [...tomlUsed].sort().map((text) => ({ text, data: toMemoJson(tomlMemo.get(text)) }));
  if (!entries.length) return false;
  return host.writeFileAtomic(TOML_MEMO_PATH, JSON.stringify({ version: TOML_MEMO_VERSION, parser: TOML_PARSER, entries }) + "\n", 0o600);
}

/**
 * toml returns null-prototype objects; make them ordinary so deep-equality and spreading behave.
 * Object.fromEntries defines properties, so a `__proto__` key stays an own key (checkLayer rejects it).
 */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === "object" && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

/** `table.key` / `eni.<i>.key` / `eni.<i>.dpdk.key` → "line:col" (1-based). Lines inside multi-line strings are text, not keys. */
function scanKeyPositions(text: string): Map<string, string> {
  const pos = new Map<string, string>();
  let prefix: string[] = [];
  let eniIndex = -1;
  let openString: string | undefined;
  const unquote = (p: string) => p.trim().replace(/^"(.*)"$|^'(.*)'$/, "$1$2");
  text.split(/\r?\n/).forEach((line, i) => {
    if (openString) {
      if (line.split(openString).length % 2 === 0) openString = undefined;
      return;
    }
    for (const q of ['"""', "'''"]) if (line.split(q).length % 2 === 0) openString = q;
    const header = /^\s*(\[\[?)\s*([A-Za-z0-9_.\-"' ]+?)\s*\]\]?/.exec(line);
    if (header) {
      const parts = header[2]!.split(".").map(unquote);
      if (header[1] === "[[" && parts.join(".") === "eni") {
        eniIndex++;
        prefix = ["eni", String(eniIndex)];
      } else if (parts[0] === "eni" && eniIndex >= 0) {
        prefix = ["eni", String(eniIndex), ...parts.slice(1)];
      } else {
        prefix = parts;
      }
      const key = prefix.join(".");
      if (!pos.has(key)) pos.set(key, `${i + 1}:${line.indexOf("[") + 1}`);
      return;
    }
    const kv = /^(\s*)([A-Za-z0-9_\-."' ]+?)\s*=/.exec(line);
    if (kv) {
      const keyParts = kv[2]!.split(".").map(unquote);
      pos.set([...prefix, ...keyParts].join("."), `${i + 1}:${kv[1]!.length + 1}`);
    }
  });
  return pos;
}

// ---- file source ---------------------------------------------------------------------------------
// A root service must not take its config from a file others can change (sshd's StrictModes): every
// file and directory it reads here must be owned by root (or by us) and not group- or world-writable.

/** The path as messages show it: under a root other than /, with the resolved path too. */
export function shownPath(host: Host, abs: string): string {
  return host.root === "/" ? abs : `${abs} (resolved under --root as ${host.path(abs)})`;
}

/** Why the file or directory at `abs` must not be trusted (undefined when it may). */
export function trustProblem(host: Host, abs: string, st: Stats): string | undefined {
  const real = host.path(abs);
  const mode = `0${(st.mode & 0o7777).toString(8)}`;
  const euid = process.geteuid?.() ?? 0;
  if ((st.mode & 0o022) !== 0) {
    const who = (st.mode & 0o022) === 0o022 ? "group- and world-writable" : st.mode & 0o002 ? "world-writable" : "group-writable";
    return `is ${who} (mode ${mode}); eni-dpdk runs as root and refuses input that others can change: chmod go-w ${real}`;
  }
  if (st.uid !== 0 && st.uid !== euid) {
    return `is owned by uid ${st.uid}, not root; eni-dpdk refuses input that another user can change: chown root ${real}`;
  }
  return undefined;
}

/** stat, or undefined when absent; anything else the caller reports. */
function statOrAbsent(real: string): Stats | undefined {
  try {
    return statSync(real);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw e;
  }
}

/**
 * TOML must be UTF-8; a decode that replaced bytes with U+FFFD would change strings in silence.
 * Says where the first invalid byte is, as line:col.
 */
export function utf8Problem(bytes: Buffer): string | undefined {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return undefined;
  } catch {
    const text = bytes.toString("utf8");
    const at = text.indexOf("\uFFFD");
    const before = text.slice(0, Math.max(0, at));
    const line = before.split("\n").length;
    const col = at - before.lastIndexOf("\n");
    return `is not valid UTF-8 (first bad byte at ${line}:${col}); save it as UTF-8`;
  }
}

/** What a read error means for the user, or undefined when it is not theirs to fix. */
function readErrorMessage(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM") {
    return `cannot be read: permission denied (${code}); check its mode, owner and any SELinux/AppArmor policy`;
  }
  if (code === "ELOOP") return "is a symlink loop";
  if (code === "ENAMETOOLONG") return "has a name that is too long";
  return undefined;
}

/** A directory we read config from: absent is fine; a non-directory or an untrusted one is a problem. */
function checkConfigDir(host: Host, abs: string, problems: Problem[]): boolean {
  const add = (message: string) => problems.push({ source: shownPath(host, abs), key: "(directory)", message });
  let st: Stats | undefined;
  try {
    st = statOrAbsent(host.path(abs));
  } catch (e) {
    const m = readErrorMessage(e);
    if (!m) throw e;
    add(m);
    return false;
  }
  if (!st) return false;
  if (!st.isDirectory()) {
    add("is not a directory; it should hold *.toml files");
    return false;
  }
  const m = trustProblem(host, abs, st);
  if (m) add(m);
  return !m;
}

/** Read one config file: undefined when absent; problems for a directory, a non-file, an untrusted file. */
function readConfigFile(host: Host, abs: string, what: string, problems: Problem[]): string | undefined {
  const add = (message: string) => problems.push({ source: shownPath(host, abs), key: "(file)", message });
  const real = host.path(abs);
  try {
    const st = statOrAbsent(real);
    if (!st) return undefined;
    if (st.isDirectory()) return void add(`is a directory; ${what}`);
    if (!st.isFile()) return void add(`is not a regular file; ${what}`);
    const m = trustProblem(host, abs, st);
    if (m) return void add(m);
    const bytes = readFileSync(real);
    const bad = utf8Problem(bytes);
    if (bad) return void add(bad);
    return bytes.toString("utf8");
  } catch (e) {
    const m = readErrorMessage(e);
    if (!m) throw e;
    add(m);
    return undefined;
  }
}

/**
 * A file that configures or authenticates eni-dpdk (a kubeconfig, a CA): undefined when absent, an
 * InputError naming `key` when it is a directory, not a regular file, unreadable, or untrusted.
 */
export function readTrustedFile(host: Host, abs: string, key: string, what: string): string | undefined {
  const problems: Problem[] = [];
  const text = readConfigFile(host, abs, what, problems);
  if (problems.length) throw new InputError(problems.map((p) => ({ ...p, key })));
  return text;
}

/**
 * /etc/eni-dpdk/config.toml then /etc/eni-dpdk/config.d/*.toml in lexical order. `--config PATH`
 * replaces the first; an explicitly named file must exist, the default one may be absent.
 */
export async function fileLayers(host: Host, configPath?: string): Promise<Layer[]> {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  if (configPath !== undefined && !configPath.startsWith("/")) {
    throw new InputError(
      [{ source: `--config ${configPath}`, key: "(file)", message: `must be absolute; it is resolved under --root (${host.root})` }],
      "pass --config /etc/eni-dpdk/NAME.toml (an absolute path)",
    );
  }
  const main = configPath ?? CONFIG_FILE;
  checkConfigDir(host, CONFIG_HOME, problems);
  const text = readConfigFile(host, main, configPath ? "--config names one TOML file" : "expected the TOML config file", problems);
  if (text === undefined && configPath && !problems.length) {
    throw new InputError([{ source: shownPath(host, main), key: "(file)", message: "no such file" }], "pass an existing file to --config");
  }
  const docs: [string, string][] = text === undefined ? [] : [[text, main]];
  if (checkConfigDir(host, CONFIG_DIR, problems)) {
    let names: string[] = [];
    try {
      names = await host.list(CONFIG_DIR);
    } catch (e) {
      const m = readErrorMessage(e);
      if (!m) throw e;
      problems.push({ source: shownPath(host, CONFIG_DIR), key: "(directory)", message: m });
    }
    for (const name of names) {
      if (!name.endsWith(".toml")) continue;
      const p = path.posix.join(CONFIG_DIR, name);
      const t = readConfigFile(host, p, "config.d holds *.toml files only", problems);
      if (t !== undefined) docs.push([t, p]);
    }
  }
  if (problems.length) throw new InputError(problems, "fix the files named above, then run `eni-dpdk validate` again");
  await loadTomlFor(docs.map(([t]) => t));
  for (const [t, source] of docs) {
    try {
      layers.push(tomlLayer(t, source));
    } catch (e) {
      if (e instanceof InputError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length) throw new InputError(problems);
  return layers;
}

// ---- user-data source ------------------------------------------------------------------------------

export interface UserDataResult {
  layers: Layer[];
  parts: UserDataPart[];
  /** human note on what was found, e.g. "2 eni-dpdk parts, 1 NodeConfig, 1 skipped" */
  summary: string;
}

/**
 * Our parts become Layers, in order. Someone else's user-data (a script, cloud-config, nodeadm YAML,
 * a TOML document without our tables) means "no config here"; a document meant for us but broken is
 * an error.
 */
export function userDataLayers(raw: Buffer | undefined): UserDataResult {
  if (!raw || raw.length === 0) return { layers: [], parts: [], summary: "no user-data" };
  return partLayers(decodeParts(raw));
}

/** userDataLayers for the boot path: decodes once, and loads the parser only if the memo lacks a document. */
async function loadUserDataLayers(raw: Buffer | undefined): Promise<UserDataResult> {
  if (!raw || raw.length === 0) return userDataLayers(raw);
  const parts = decodeParts(raw);
  await loadTomlFor(tomlCandidates(parts));
  return partLayers(parts);
}

function partLayers(parts: UserDataPart[]): UserDataResult {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  let skipped = 0;
  for (const part of parts) {
    const ours = part.contentType === OUR_MEDIA_TYPE || isOurDocument(part);
    if (ours && part.index > 0 && part.contentType !== OUR_MEDIA_TYPE) {
      const typed = part.contentType === "text/plain" ? "typed text/plain (or untyped)" : `typed ${part.contentType}`;
      problems.push({
        source: part.label,
        key: "Content-Type",
        message: `holds eni-dpdk tables but is ${typed}; inside MIME user-data eni-dpdk reads only parts with ` +
          `Content-Type: ${OUR_MEDIA_TYPE}`,
      });
      continue;
    }
    if (!ours) {
      skipped++;
      continue;
    }
    try {
      const source = part.index === 0 ? "user-data" : part.label;
      const bad = utf8Problem(part.body);
      if (bad) problems.push({ source, key: "(encoding)", message: bad });
      else layers.push(tomlLayer(part.text, source));
    } catch (e) {
      if (e instanceof InputError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length) throw new InputError(problems);
  const nodeadm = parts.filter((p) => p.contentType === NODEADM_MEDIA_TYPE).length;
  return {
    layers,
    parts,
    summary: `${layers.length} eni-dpdk part(s), ${nodeadm} NodeConfig part(s), ${skipped - nodeadm} other part(s) skipped`,
  };
}

function decodeParts(raw: Buffer): UserDataPart[] {
  try {
    return decodeUserData(raw);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError([{ source: "user-data", key: "(encoding)", message: (e as Error).message }]);
  }
}

/** The user-data texts partLayers may parse as TOML: our parts, and plain documents that may be ours. */
function tomlCandidates(parts: UserDataPart[]): string[] {
  return parts.filter((p) => p.contentType === OUR_MEDIA_TYPE || mayBeOurs(p)).map((p) => p.text);
}

/** A plain (untyped, text/plain, TOML-typed) document that is not clearly a script, cloud-config or NodeConfig. */
function mayBeOurs(part: UserDataPart): boolean {
  if (!PLAIN_TYPES.has(part.contentType)) return false;
  const kind = sniffDocument(part.text);
  return kind === "eni-dpdk" || kind === "other";
}

/**
 * A plain document is ours when it has our table headers (then its parse errors are reported), or
 * parses as TOML with one of our top-level keys (dotted keys, inline tables). TOML that is not
 * ours, or text that is not TOML and has none of our headers, belongs to someone else.
 */
function isOurDocument(part: UserDataPart): boolean {
  if (!mayBeOurs(part)) return false;
  if (sniffDocument(part.text) === "eni-dpdk") return true;
  try {
    const data = parseToml(part.text);
    return TOP_LEVEL_KEYS.some((k) => Object.hasOwn(data, k));
  } catch (e) {
    if (e instanceof TomlNotLoaded) throw e;
    // Broken TOML that sets our keys (`dpdk.enabled = …`) is ours too: its parse error is reported.
    return OUR_KEY_LINE_RE.test(part.text);
  }
}

const OUR_KEY_LINE_RE = new RegExp(`^\\s*(${TOP_LEVEL_KEYS.join("|")})\\s*[.=]`, "m");

// ---- tag source ----------------------------------------------------------------------------------

export const TAG_PREFIX = "eni-dpdk:";

/**
 * Instance tags: `eni-dpdk:eni:<name>` = "device_index=1;subnet_id=subnet-…;dpdk.driver=vfio-pci",
 * and `eni-dpdk:dpdk|sriov|service|kubernetes` = "key=value;…". Lists are comma-separated; nested
 * keys dotted. Keys avoid "/" because IMDS cannot expose them.
 */
export function tagLayers(tags: Record<string, string>): Layer[] {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  for (const key of Object.keys(tags).sort()) {
    if (!key.startsWith(TAG_PREFIX)) continue;
    const source = `tag ${key}`;
    const rest = key.slice(TAG_PREFIX.length);
    const value = own(tags, key)!;
    const parsed = parseTagValue(value, source, rest.startsWith("eni:") ? `eni.${rest.slice(4)}` : rest, problems);
    if (!parsed) continue;
    if (rest.startsWith("eni:")) {
      const name = rest.slice(4);
      const named = own(parsed, "name");
      if (named !== undefined && named !== name) {
        problems.push({ source, key: "name", message: `the ENI name comes from the tag key ("${name}"); remove name= from the value` });
        continue;
      }
      layers.push({ source, stringly: true, data: { eni: [{ ...parsed, name }] } });
    } else if (own(schema, rest)) {
      layers.push({ source, stringly: true, data: { [rest]: parsed } });
    } else {
      const known = [...Object.keys(schema).map((k) => TAG_PREFIX + k), `${TAG_PREFIX}eni:<name>`];
      const why = isForbiddenKey(rest) ? `"${rest}" ${FORBIDDEN_KEY_MESSAGE}` : "unknown eni-dpdk tag";
      problems.push({ source, key, message: `${why}; expected one of ${known.join(", ")}` });
    }
  }
  if (problems.length) throw new InputError(problems);
  return layers;
}

/**
 * `a=1;b.c=2` → {a: "1", b: {c: "2"}} (null-prototype records). Every key path is checked: no empty
 * segment, no Object.prototype name, no key set twice, and no key both a value and a table.
 * Whitespace around `;`, `=` and `.` is ignored.
 */
function parseTagValue(value: string, source: string, keyPrefix: string, problems: Problem[]): Record<string, unknown> | undefined {
  const out = nullRecord();
  /** dotted key → "value" or "table", for the repeat and shape checks */
  const seen = new Map<string, "value" | "table">();
  let ok = true;
  const bad = (key: string, message: string) => {
    problems.push({ source, key: `${keyPrefix}.${key}`, message });
    ok = false;
  };
  for (const pair of value.split(";")) {
    if (pair.trim() === "") continue;
    const i = pair.indexOf("=");
    if (i <= 0) {
      bad(pair.trim(), `expected key=value, got "${pair.trim()}"`);
      continue;
    }
    const dotted = pair.slice(0, i).trim();
    const keyPath = dotted.split(".").map((k) => k.trim());
    if (keyPath.some((k) => k === "")) {
      bad(dotted, `empty key segment in "${dotted}"; expected names joined by single dots, e.g. dpdk.driver`);
      continue;
    }
    const forbidden = keyPath.find(isForbiddenKey);
    if (forbidden) {
      bad(dotted, `unknown key: "${forbidden}" ${FORBIDDEN_KEY_MESSAGE}`);
      continue;
    }
    const conflict = shapeConflict(seen, keyPath);
    if (conflict) {
      bad(dotted, conflict);
      continue;
    }
    let node = out;
    keyPath.slice(0, -1).forEach((k, depth) => {
      seen.set(keyPath.slice(0, depth + 1).join("."), "table");
      node = (own(node, k) as Record<string, unknown> | undefined) ?? (node[k] = nullRecord());
    });
    seen.set(keyPath.join("."), "value");
    node[keyPath.at(-1)!] = pair.slice(i + 1).trim();
  }
  return ok ? out : undefined;
}

/** Why setting `keyPath` clashes with keys set earlier in the same tag value (undefined when it does not). */
function shapeConflict(seen: Map<string, "value" | "table">, keyPath: string[]): string | undefined {
  const full = keyPath.join(".");
  const was = seen.get(full);
  if (was === "value") return `"${full}" is set twice in this tag value; set each key once`;
  if (was === "table") return `"${full}" is set as a value, but "${full}.…" keys are also set; use one form`;
  for (let n = 1; n < keyPath.length; n++) {
    const prefix = keyPath.slice(0, n).join(".");
    if (seen.get(prefix) === "value") return `"${full}" descends into "${prefix}", which is already set as a value; use one form`;
  }
  return undefined;
}

// ---- environment (the seed's variables) --------------------------------------------------------------

const ENV_KEYS: Record<string, [string, string]> = {
  ENABLE_DPDK: ["dpdk", "enabled"],
  DEFAULT_DPDK_DRIVER: ["dpdk", "driver"],
  DPDK_BINDING_SCRIPT: ["dpdk", "binding_script"],
  SRIOV_DP_CONFIG_PATH: ["sriov", "config_path"],
};

/** The seed's environment variables override every other source, so its unit snippets keep working. */
export function envLayers(env: NodeJS.ProcessEnv): Layer[] {
  return Object.entries(ENV_KEYS)
    .filter(([name]) => env[name] !== undefined)
    .map(([name, [table, key]]) => ({ source: `env ${name}`, stringly: true, data: { [table]: { [key]: env[name] } } }));
}

// ---- the chain -------------------------------------------------------------------------------------

/** Providers for the sources that need the instance; absent in standalone validation. */
export interface InstanceSources {
  userData(): Promise<Buffer | undefined>;
  tags(): Promise<Record<string, string>>;
  /** NodeENI layers, given the merged config of the other sources (for [kubernetes]) and the user-data parts. */
  nodeEni?(base: EffectiveConfig, parts: UserDataPart[]): Promise<{ layers: Layer[]; warnings: string[] }>;
}

export interface Gathered extends EffectiveConfig {
  userDataParts: UserDataPart[];
  /** which sources were consulted, with a short note each */
  consulted: { source: SourceName | "env"; note: string }[];
}

/**
 * Read every configured source and merge. The file is always read first, because it says which
 * other sources to consult and in what order; its layers sit at the position "file" has in that list.
 */
export async function gather(host: Host, opts: { configPath?: string; env?: NodeJS.ProcessEnv; instance?: InstanceSources }): Promise<Gathered> {
  const env = opts.env ?? process.env;
  await loadTomlMemo(host);
  tomlUsed.clear();
  const files = await fileLayers(host, opts.configPath);
  const envL = envLayers(env);
  const problems: Problem[] = [];
  let sources: SourceName[] = defaults().service.sources;
  try {
    sources = buildConfig([...files, ...envL]).config.service.sources;
  } catch (e) {
    // Keep going with the default sources so one run reports every problem.
    if (e instanceof InputError) problems.push(...e.problems);
    else throw e;
  }
  const consulted: Gathered["consulted"] = [{ source: "file", note: `${files.length} file(s)` }];
  const bySource = new Map<SourceName, Layer[]>([["file", files]]);
  let parts: UserDataPart[] = [];
  const collect = async (fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      if (e instanceof InputError) problems.push(...e.problems);
      else throw e;
    }
  };
  // Both IMDS reads go out at once; their results are used in precedence order below.
  const userDataP = opts.instance && sources.includes("user-data") ? settle(opts.instance.userData()) : undefined;
  const tagsP = opts.instance && sources.includes("tags") ? settle(opts.instance.tags()) : undefined;
  if (userDataP) {
    await collect(async () => {
      const ud = await loadUserDataLayers(await unsettle(userDataP));
      parts = ud.parts;
      bySource.set("user-data", ud.layers);
      consulted.push({ source: "user-data", note: ud.summary });
    });
  }
  if (tagsP) {
    await collect(async () => {
      const tags = await unsettle(tagsP);
      const l = tagLayers(tags);
      bySource.set("tags", l);
      consulted.push({ source: "tags", note: `${l.length} eni-dpdk tag(s)` });
    });
  }
  if (problems.length) throw withFinalProblems(problems, () => buildConfig([...files, ...[...bySource.values()].flat().filter((l) => !files.includes(l)), ...envL]));
  const ordered = (list: SourceName[]) => [
    ...(sources.includes("file") ? [] : files),
    ...list.flatMap((s) => bySource.get(s) ?? []),
  ];
  let warnings: string[] = [];
  if (opts.instance?.nodeEni && sources.includes("nodeeni")) {
    const base = buildConfig([...ordered(sources.filter((s) => s !== "nodeeni")), ...envL]);
    const ne = await opts.instance.nodeEni(base, parts);
    bySource.set("nodeeni", ne.layers);
    warnings = ne.warnings;
    consulted.push({ source: "nodeeni", note: `${ne.layers.length} NodeENI object(s) apply` });
  }
  if (envL.length) consulted.push({ source: "env", note: envL.map((l) => l.source.slice(4)).join(", ") });
  const eff = buildConfig([...ordered(sources), ...envL]);
  eff.warnings.push(...warnings.map((message) => ({ source: "nodeeni", key: "", message })));
  return { ...eff, userDataParts: parts, consulted };
}

/** Combine problems found so far with those of a final build, without repeating any. */
function withFinalProblems(problems: Problem[], build: () => unknown): InputError {
  try {
    build();
  } catch (e) {
    if (e instanceof InputError) problems.push(...e.problems);
  }
  const seen = new Set<string>();
  return new InputError(problems.filter((p) => {
    const k = `${p.source}|${p.key}|${p.message}`;
    return seen.has(k) ? false : (seen.add(k), true);
  }));
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
/** Start a promise now without an unhandled rejection if its consumer is not reached. */
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));
}
async function unsettle<T>(p: Promise<Settled<T>>): Promise<T> {
  const r = await p;
  if (r.ok) return r.value;
  throw r.error;
}
