// The SR-IOV device plugin's config file (default /etc/pcidp/config.json): read, merged and written
// atomically, an unusable file moved aside (never overwritten), our entries removed on reset, the
// plugin restarted on request. Ownership of entries is recorded per file in the state.
import { type Config } from "../config/model.js";
import { errorMessage } from "../core/errors.js";
import { isoTime } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import { run } from "../core/process.js";
import { saveState, type State } from "./state.js";
import { type Host } from "./host.js";
import {
  analyzeSriovDoc,
  goGet,
  isObject,
  mergeText,
  parseConfigJson,
  PLUGIN_DEFAULT_PREFIX,
  type Merge,
  type RenderedEntry,
  type SriovApplyResult,
  type SriovFinding,
} from "./sriov-model.js";

/** Entries we own in `filePath`: ownership is recorded per file, so a changed config_path owns nothing yet. */
export function ownedIn(state: State, filePath: string): Set<string> {
  const p = state.sriov.configPath;
  return new Set(p === undefined || p === filePath ? state.sriov.owned : []);
}

export function previousPath(state: State, filePath: string): string | undefined {
  const p = state.sriov.configPath;
  return p !== undefined && p !== filePath && state.sriov.owned.length > 0 ? p : undefined;
}

function stamp(): string {
  return isoTime()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
}

/** Rename a file we must not overwrite to `<path>.invalid-<UTC timestamp>`; returns the new host path. */
async function moveAside(host: Host, filePath: string): Promise<string> {
  const base = `${filePath}.invalid-${stamp()}`;
  let target = base;
  for (let i = 1; await host.exists(target); i++) target = `${base}-${i}`;
  await host.rename(filePath, target);
  return target;
}

/** Read, merge and write one file. Returns the merge, and the moved-aside path when the old file was unusable. */
export async function writeMerged(
  host: Host,
  filePath: string,
  desired: RenderedEntry[],
  owned: Set<string>,
  state: State,
  log: Logger,
  strict: boolean,
): Promise<{ m: Merge; changed: boolean; movedAside?: string }> {
  const m = mergeText(filePath, await host.read(filePath), desired, owned, strict);
  // Loud when we touch the file; `status`/`validate` show them every time.
  for (const w of m.warnings)
    (m.changed ? log.warn : log.debug).call(log, `SR-IOV config: ${w}`, { path: filePath });
  if (m.invalid && m.existed && !m.changed)
    log.warn(
      "SR-IOV device plugin config is not usable; eni-dpdk has nothing to write there and leaves it untouched",
      { path: filePath, reason: m.invalid },
    );
  if (!m.changed) return { m, changed: false };
  let movedAside: string | undefined;
  if (m.invalid && m.existed) {
    movedAside = await moveAside(host, filePath);
    log.warn(
      "SR-IOV device plugin config could not be merged; moved it aside instead of overwriting it",
      { path: filePath, reason: m.invalid, moved_to: movedAside },
    );
  }
  // Record intent first (owned ∪ new), so a crash between the two writes leaves no orphan of ours.
  const intent = [...new Set([...owned, ...m.ours])].sort();
  if (!sameList(intent, state.sriov.owned) || state.sriov.configPath !== filePath) {
    state.sriov = { configPath: filePath, owned: intent };
    await saveState(host, state);
  }
  const changed = await host.writeFileAtomic(filePath, m.text, 0o644);
  log.info("SR-IOV device plugin config written", {
    path: filePath,
    added: m.added,
    updated: m.updated,
    removed: m.removed,
    adopted: m.adopted,
  });
  return { m, changed: changed || movedAside !== undefined, movedAside };
}

export const sameList = (a: string[], b: string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** For `reset`: remove only our entries. Never rewrites an unparsable file. Returns true when the file changed. */
export async function removeOwnedSriov(
  host: Host,
  config: Config,
  state: State,
  log: Logger,
): Promise<boolean> {
  const filePath = state.sriov.configPath ?? config.sriov.config_path;
  if (state.sriov.owned.length === 0) return false;
  const m = mergeText(filePath, await host.read(filePath), [], new Set(state.sriov.owned), false);
  if (m.invalid) {
    log.warn("SR-IOV device plugin config is not valid; leaving it untouched", {
      path: filePath,
      reason: m.invalid,
    });
    return false;
  }
  const changed = m.changed && (await host.writeFileAtomic(filePath, m.text, 0o644));
  if (changed)
    log.info("removed eni-dpdk's entries from the SR-IOV device plugin config", {
      path: filePath,
      removed: m.removed,
    });
  state.sriov = { configPath: filePath, owned: [] };
  await saveState(host, state);
  return changed;
}

/** For `status`/`validate`: what the plugin would make of the file, as readable warnings. */
export async function inspectSriov(
  host: Host,
  filePath: string,
  defaultPrefix = PLUGIN_DEFAULT_PREFIX,
): Promise<{ exists: boolean; valid: boolean; warnings: string[]; entries: unknown[] }> {
  const text = await host.read(filePath);
  if (text === undefined) return { exists: false, valid: true, warnings: [], entries: [] };
  const read = parseConfigJson(text);
  if ("error" in read) {
    return {
      exists: true,
      valid: false,
      warnings: [
        `${host.path(filePath)} is ${read.error}: the device plugin serves nothing; eni-dpdk will move it aside, never overwrite it`,
      ],
      entries: [],
    };
  }
  const doc = read.doc;
  const findings = analyzeSriovDoc(doc, defaultPrefix);
  const list = isObject(doc) ? goGet(doc, "resourceList") : undefined;
  const tag = (f: SriovFinding) =>
    f.severity === "fatal"
      ? "plugin serves nothing: "
      : f.severity === "dropped"
        ? "entry dropped: "
        : "";
  return {
    exists: true,
    valid: !findings.some((f) => f.severity === "fatal"),
    warnings: findings.map((f) => `${tag(f)}${f.message}`),
    entries: Array.isArray(list) ? list : [],
  };
}

// ---- plugin restart --------------------------------------------------------------------------------

/** Run [sriov].restart_command (argv, never a shell). */
export async function restartDevicePlugin(
  argv: string[],
  log: Logger,
): Promise<{ ok: boolean; detail: string }> {
  if (argv.length === 0) return { ok: false, detail: "no [sriov].restart_command configured" };
  try {
    const r = await run(argv, { timeoutMs: 60_000 });
    const out = (r.stderr.trim() || r.stdout.trim()).split("\n").slice(-3).join(" | ");
    const detail = `${argv.join(" ")} exited ${r.code}${out ? `: ${out}` : ""}`;
    if (r.code === 0) log.info("restarted the SR-IOV device plugin", { command: argv });
    else
      log.error("SR-IOV device plugin restart command failed", {
        command: argv,
        code: r.code,
        output: out,
      });
    return { ok: r.code === 0, detail };
  } catch (e) {
    const detail = `${argv[0]} could not be started: ${errorMessage(e)}`;
    log.error("SR-IOV device plugin restart command failed", {
      command: argv,
      error: errorMessage(e),
    });
    return { ok: false, detail };
  }
}

/** The status-line/log text when our entries changed while the plugin may already be running. */
export function sriovRestartNotice(result: SriovApplyResult): string {
  return `SR-IOV config ${result.path} changed (${result.resources.join(", ") || "eni-dpdk entries removed"}); restart the device plugin to advertise it (it reads its config only at start), or set [sriov].restart_command`;
}

/**
 * After applySriov: at boot the plugin starts after us and needs nothing. Later (`run`), a change
 * needs a restart: run restart_command when configured, else log and return the status text.
 */
export async function afterSriovChange(
  config: Config,
  result: SriovApplyResult,
  log: Logger,
  opts: { atBoot: boolean },
): Promise<{ restartNeeded: boolean; restarted: boolean; status?: string }> {
  if (!result.changed || opts.atBoot) return { restartNeeded: false, restarted: false };
  if (config.sriov.restart_command.length > 0) {
    const r = await restartDevicePlugin(config.sriov.restart_command, log);
    if (r.ok) return { restartNeeded: false, restarted: true };
    const status = `SR-IOV config changed but the device plugin restart failed (${r.detail}); restart it by hand`;
    return { restartNeeded: true, restarted: false, status };
  }
  const status = sriovRestartNotice(result);
  log.warn(status, { path: result.path });
  return { restartNeeded: true, restarted: false, status };
}
