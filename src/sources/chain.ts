// The chain of sources: the file first (it says which other sources to consult, in which order),
// the instance's sources concurrently, NodeENI once the others are merged; then one merge, validated.
import { buildConfig, defaults, type EffectiveConfig, type Layer } from "../config/model.js";
import { type SourceName } from "../config/facts.js";
import { InputError, type Problem } from "../core/errors.js";
import type { Host } from "../host/host.js";
import { type UserDataPart } from "./mime.js";
import { loadTomlMemo, tomlUsed } from "./toml.js";
import { fileLayers } from "./file.js";
import { loadUserDataLayers } from "./userdata.js";
import { tagLayers } from "./tags.js";
import { envLayers } from "./env.js";

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
