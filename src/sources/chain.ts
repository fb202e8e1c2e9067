// The chain of sources, as nodeadm's config providers: the file first (it says which other sources
// to consult, and in which order), the instance's sources concurrently, each able to wait for what
// the sources before it gave (NodeENI needs [kubernetes] and the NodeConfig); then one merge,
// validated as a whole. Every problem of every source is reported in one run.
import type { SourceName } from "../config/facts.js";
import { buildConfig, defaults, type EffectiveConfig, type Layer } from "../config/model.js";
import { InputError, type Problem } from "../core/errors.js";
import type { UserDataPart } from "./mime.js";
import { envSource } from "./env.js";
import { fileSource } from "./file.js";
import { nodeEniSource } from "./nodeeni.js";
import { tagSource } from "./tags.js";
import type { NodeEniResult, Prior, Provided, Source, SourceContext } from "./source.js";
import { userDataSource } from "./userdata.js";
import { loadTomlMemo, tomlUsed } from "./toml.js";

export interface Gathered extends EffectiveConfig {
  userDataParts: UserDataPart[];
  /** which sources were consulted, with a short note each */
  consulted: { source: SourceName | "env"; note: string }[];
  /** the NodeENI source's result (for its status write-back and the cache), when it ran */
  nodeEni?: NodeEniResult;
}

/** The sources, by name. */
const SOURCES: Readonly<Record<SourceName | "env", Source>> = {
  file: fileSource,
  "user-data": userDataSource,
  tags: tagSource,
  nodeeni: nodeEniSource,
  env: envSource,
};

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
/** Start a promise now without an unhandled rejection if its consumer is not reached. */
const settle = <T>(p: Promise<T>): Promise<Settled<T>> =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );

/** The sources read without the instance: the file (which names the others) and the environment. */
export interface LocalSources {
  file: Provided;
  env: Provided;
  /** their merge, once built without a problem */
  merged?: EffectiveConfig;
}

/** Read the local sources. A command that read them for its session hands them to gather. */
export async function readLocal(ctx: SourceContext): Promise<LocalSources> {
  await loadTomlMemo(ctx.host);
  tomlUsed.clear();
  const noPrior = () => Promise.reject(new Error("internal: the file source has no prior"));
  return {
    file: await SOURCES.file.provide(ctx, noPrior),
    env: await SOURCES.env.provide(ctx, noPrior),
  };
}

/**
 * Read every configured source and merge. The file always comes first, because it says which other
 * sources to consult and in what order; its layers sit at the position "file" has in that list, and
 * the environment's last, above all.
 */
export async function gather(ctx: SourceContext, local?: LocalSources): Promise<Gathered> {
  const { file, env, merged } = local ?? (await readLocal(ctx));
  const problems: Problem[] = [];
  let order: SourceName[] = defaults().service.sources;
  try {
    order = (merged ?? buildConfig([...file.layers, ...env.layers])).config.service.sources;
  } catch (e) {
    // Keep going with the default sources so one run reports every problem.
    if (!(e instanceof InputError)) throw e;
    problems.push(...e.problems);
  }
  if (!order.includes("file")) order = ["file", ...order];

  const results = new Map<SourceName, Promise<Settled<Provided>>>([
    ["file", Promise.resolve({ ok: true, value: file })],
  ]);
  const layersBefore = async (
    name: SourceName,
  ): Promise<{ layers: Layer[]; parts: UserDataPart[] }> => {
    const layers: Layer[] = [];
    let parts: UserDataPart[] = [];
    for (const n of order.slice(0, order.indexOf(name))) {
      const r = await results.get(n);
      if (!r?.ok) continue;
      layers.push(...r.value.layers);
      parts = r.value.userDataParts ?? parts;
    }
    return { layers, parts };
  };
  const priorOf = (name: SourceName) => async (): Promise<Prior> => {
    const { layers, parts } = await layersBefore(name);
    return { config: buildConfig([...layers, ...env.layers]), userDataParts: parts };
  };
  for (const name of order) {
    if (name === "file") continue;
    const src = SOURCES[name];
    if (src.needsInstance && !ctx.instance) continue;
    results.set(name, settle(src.provide(ctx, priorOf(name))));
  }

  const consulted: Gathered["consulted"] = [];
  const layers: Layer[] = [];
  const warnings: Problem[] = [];
  let userDataParts: UserDataPart[] = [];
  let nodeEni: NodeEniResult | undefined;
  for (const name of order) {
    const r = await results.get(name);
    if (!r) continue;
    if (!r.ok) {
      if (!(r.error instanceof InputError)) throw r.error;
      problems.push(...r.error.problems);
      continue;
    }
    layers.push(...r.value.layers);
    warnings.push(...(r.value.warnings ?? []));
    userDataParts = r.value.userDataParts ?? userDataParts;
    nodeEni = r.value.nodeEni ?? nodeEni;
    consulted.push({ source: name, note: r.value.note });
  }
  if (env.layers.length) consulted.push({ source: "env", note: env.note });
  if (problems.length)
    throw withFinalProblems(problems, () => buildConfig([...layers, ...env.layers]));
  const eff = buildConfig([...layers, ...env.layers]);
  eff.warnings.push(...warnings);
  return { ...eff, userDataParts, consulted, ...(nodeEni ? { nodeEni } : {}) };
}

/** Combine problems found so far with those of a final build, without repeating any. */
function withFinalProblems(problems: Problem[], build: () => unknown): InputError {
  try {
    build();
  } catch (e) {
    if (e instanceof InputError) problems.push(...e.problems);
  }
  const seen = new Set<string>();
  return new InputError(
    problems.filter((p) => {
      const k = `${p.source}|${p.key}|${p.message}`;
      return seen.has(k) ? false : (seen.add(k), true);
    }),
  );
}
