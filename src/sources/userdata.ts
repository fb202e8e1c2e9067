// The user-data source: our parts of the user-data (decoded as nodeadm does, in mime.ts) as Layers.
// Someone else's document means "no config here"; one meant for us but unreadable is an error.
import { TOP_LEVEL_KEYS, type Layer } from "../config/model.js";
import { NODEADM_MEDIA_TYPE, OUR_MEDIA_TYPE } from "../config/facts.js";
import { InputError, type Problem } from "../core/errors.js";
import { decodeUserData, PLAIN_TYPES, sniffDocument, type UserDataPart } from "./mime.js";
import { loadTomlFor, parseToml, tomlLayer, TomlNotLoaded } from "./toml.js";
import { utf8Problem } from "../host/trusted.js";
import { type Source } from "./source.js";
import { readUserData } from "../cloud/imds.js";

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
export async function loadUserDataLayers(raw: Buffer | undefined): Promise<UserDataResult> {
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
      const typed =
        part.contentType === "text/plain"
          ? "typed text/plain (or untyped)"
          : `typed ${part.contentType}`;
      problems.push({
        source: part.label,
        key: "Content-Type",
        message:
          `holds eni-dpdk tables but is ${typed}; inside MIME user-data eni-dpdk reads only parts with ` +
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
      else
        layers.push({
          ...tomlLayer(part.text, source),
          origin: { source: "user-data", name: part.label },
        });
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
    throw new InputError([
      { source: "user-data", key: "(encoding)", message: (e as Error).message },
    ]);
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

export const userDataSource: Source = {
  name: "user-data",
  needsInstance: true,
  async provide(ctx) {
    const ud = await loadUserDataLayers(await readUserData(ctx.instance!.imds));
    return { layers: ud.layers, note: ud.summary, userDataParts: ud.parts };
  },
};
