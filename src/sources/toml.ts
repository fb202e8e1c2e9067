// TOML documents into Layers: parsed with integers as BigInt (so a float is never taken for an
// integer), key positions for line:column, and a memo of parse results by exact text for the next boot.
import { loadTomlParser } from "../core/lazy.js";
import { safeNumber, type Layer } from "../config/model.js";
import { own } from "../core/records.js";
import { InputError, type Problem } from "../core/errors.js";
import type { Host } from "../host/host.js";

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
  const err = e as {
    line?: number;
    column?: number;
    location?: { start?: { line?: number; column?: number } };
    message?: string;
  };
  const line = err.line ?? err.location?.start?.line;
  const column = err.column ?? err.location?.start?.column ?? 1;
  const where = line ? `${source}:${line}:${column}` : source;
  const atLine =
    err.line !== undefined
      ? [...positions].find(([, pos]) => pos.startsWith(`${line}:`))?.[0]
      : undefined;
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
export const tomlUsed = new Set<string>();
/** roots whose memo file was read in this process */
const tomlMemoRoots = new Set<string>();

/** Bumped when what a memo entry holds changes (2: integers are BigInt). */
const TOML_MEMO_VERSION = 2;

let tomlParse: ((text: string) => unknown) | undefined;

/** A caller parsed before loadToml(): our bug, never to be mistaken for a user's syntax error. */
export class TomlNotLoaded extends Error {
  constructor() {
    super("internal error: the TOML parser was not loaded (call loadToml first)");
  }
}

/** Load the toml parser (70 KB of code) — only needed when some text is not in the memo. */
export async function loadToml(): Promise<void> {
  if (tomlParse) return;
  const { parse } = await loadTomlParser();
  // Every integer as BigInt: no integer is taken for a float (or the reverse), none past 2^53 is lost.
  tomlParse = (text) => parse(text, { bigint: true });
}

/** Load the parser unless every text is in the memo. */
export async function loadTomlFor(texts: string[]): Promise<void> {
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
  if (v === null || typeof v === "string" || typeof v === "boolean" || typeof v === "bigint")
    return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every(jsonSafe);
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return (
      !Object.hasOwn(v, BIGINT_BOX) &&
      !Object.hasOwn(v, FLOAT_BOX) &&
      Object.values(v).every(jsonSafe)
    );
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
  if (v !== null && typeof v === "object")
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toMemoJson(x)]));
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
    const doc = JSON.parse(raw) as {
      version?: number;
      parser?: string;
      entries?: { text?: unknown; data?: unknown }[];
    };
    if (
      doc.version !== TOML_MEMO_VERSION ||
      doc.parser !== TOML_PARSER ||
      !Array.isArray(doc.entries)
    )
      return;
    for (const e of doc.entries) {
      if (
        typeof e.text === "string" &&
        e.data &&
        typeof e.data === "object" &&
        !Array.isArray(e.data)
      ) {
        tomlMemo.set(e.text, fromMemoJson(e.data) as Record<string, unknown>);
      }
    }
  } catch {
    // A torn or hand-edited memo only costs a parse.
  }
}

/** Keep the documents this process used (and only those) for the next boot; no write when unchanged. */
export async function saveTomlMemo(host: Host): Promise<boolean> {
  const entries = [...tomlUsed]
    .sort()
    .map((text) => ({ text, data: toMemoJson(tomlMemo.get(text)) }));
  if (!entries.length) return false;
  return host.writeFileAtomic(
    TOML_MEMO_PATH,
    JSON.stringify({ version: TOML_MEMO_VERSION, parser: TOML_PARSER, entries }) + "\n",
    0o600,
  );
}

/**
 * toml returns null-prototype objects; make them ordinary so deep-equality and spreading behave.
 * Object.fromEntries defines properties, so a `__proto__` key stays an own key (checkLayer rejects it).
 */
export function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === "object" && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

/** `table.key` / `eni.<i>.key` / `eni.<i>.dpdk.key` → "line:col" (1-based). Lines inside multi-line strings are text, not keys. */
export function scanKeyPositions(text: string): Map<string, string> {
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
    const header = /^\s*(\[\[?)\s*([A-Za-z0-9_.\-"' :]+?)\s*\]\]?/.exec(line);
    if (header) {
      const parts = header[2].split(".").map(unquote);
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
    const kv = /^(\s*)([A-Za-z0-9_\-."' :]+?)\s*=/.exec(line);
    if (kv) {
      const keyParts = kv[2].split(".").map(unquote);
      pos.set([...prefix, ...keyParts].join("."), `${i + 1}:${kv[1].length + 1}`);
    }
  });
  return pos;
}
