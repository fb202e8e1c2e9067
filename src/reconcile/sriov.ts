// The SR-IOV stage: our resourceList entries for the devices the host stage bound, planned (reads
// only), checked before the first mutation of an apply, and merged into the plugin's file.
import { ENA_VENDOR, fullResourceName } from "../config/facts.js";
import { errorMessage } from "../core/errors.js";
import { saveState } from "../host/state.js";
import {
  ARRAY_SELECTORS_SINCE,
  mergeText,
  renderSriovEntries,
  selectorList,
  type Merge,
  type RenderedEntry,
  type SriovApplyResult,
  type SriovDevice,
} from "../host/sriov-model.js";
import { ownedIn, previousPath, sameList, writeMerged } from "../host/sriov-file.js";
import { checkSriov, type SriovCheckReport } from "../host/sriov-check.js";
import { type HostDeviceResult, type Stage, type StageContext, type StagePlan } from "./stage.js";
import { type Action } from "../core/action.js";

export interface SriovPlan {
  enabled: boolean;
  path: string;
  actions: Action[];
  /** full names of our entries once applied */
  resources: string[];
  added: string[];
  updated: string[];
  removed: string[];
  /** entries identical to ours found without an ownership record (e.g. a lost state file) */
  adopted: string[];
  /** why the existing file cannot be merged; apply moves it aside */
  invalidExisting?: string;
  /** a previous config_path still holding entries we own */
  previousPath?: string;
}

function describe(m: Merge, byName: Map<string, RenderedEntry>): string {
  const count = (f: string) => {
    const e = byName.get(f)?.entry;
    const n = e ? selectorList(e).reduce((s, x) => s + x.pciAddresses.length, 0) : 0;
    const several = e && Array.isArray(e.selectors) ? e.selectors.length : 0;
    // v3.5.x, still in aws-samples' guide, skips an entry whose selectors are an array
    const note = several
      ? `; ${several} selectors, one per driver, as an array: needs device plugin ${ARRAY_SELECTORS_SINCE} or later`
      : "";
    return `${f} (${n} device${n === 1 ? "" : "s"}${note})`;
  };
  const parts: string[] = [];
  if (m.added.length) parts.push(`add ${m.added.map(count).join(", ")}`);
  if (m.updated.length) parts.push(`update ${m.updated.map(count).join(", ")}`);
  if (m.removed.length) parts.push(`remove ${m.removed.join(", ")}`);
  if (m.adopted.length) parts.push(`adopt ${m.adopted.join(", ")}`);
  if (!parts.length) parts.push("rewrite with the same entries");
  return parts.join("; ");
}

/** Compute what applySriov would change. Reads only. Throws InputError/OpError on conflicts. */
export async function planSriov(ctx: StageContext, devices: SriovDevice[]): Promise<SriovPlan> {
  const filePath = ctx.config.sriov.config_path;
  const plan: SriovPlan = {
    enabled: ctx.config.sriov.enabled,
    path: filePath,
    actions: [],
    resources: [],
    added: [],
    updated: [],
    removed: [],
    adopted: [],
  };
  if (!plan.enabled) return plan;
  const desired = renderSriovEntries(devices, ctx.config.sriov.resource_prefix);
  const byName = new Map(desired.map((d) => [d.full, d]));
  const prev = previousPath(ctx.state, filePath);
  if (prev) {
    plan.previousPath = prev;
    plan.actions.push({
      stage: "sriov",
      kind: "write-sriov",
      target: prev,
      detail: `remove eni-dpdk's entries ${ctx.state.sriov.owned.join(", ")} ([sriov].config_path changed to ${filePath})`,
    });
  }
  const m = mergeText(
    filePath,
    await ctx.host.read(filePath),
    desired,
    ownedIn(ctx.state, filePath),
    true,
  );
  Object.assign(plan, {
    resources: m.ours,
    added: m.added,
    updated: m.updated,
    removed: m.removed,
    adopted: m.adopted,
  });
  if (m.invalid && m.existed && m.changed) {
    plan.invalidExisting = m.invalid;
    plan.actions.push({
      stage: "sriov",
      kind: "move-aside",
      target: filePath,
      detail: `${m.invalid}; it is never overwritten: move it to ${filePath}.invalid-<timestamp> and start a new file`,
    });
  }
  if (m.changed)
    plan.actions.push({
      stage: "sriov",
      kind: "write-sriov",
      target: filePath,
      detail: describe(m, byName),
    });
  return plan;
}

/**
 * Before the first mutation of an apply: would our resources clash with entries in the file that
 * we do not own? Checked with stand-in devices, since on a first boot no device is bound yet; the
 * real merge after binding then cannot fail on names. Throws what planSriov would (InputError, OpError).
 */
export async function preflightSriov(ctx: StageContext): Promise<void> {
  const cfg = ctx.config;
  const standIns: SriovDevice[] = cfg.eni
    .filter((e) => e.dpdk.enabled && e.dpdk.resource_name)
    .map((e, i) => ({
      eniName: e.name,
      resource: e.dpdk.resource_name,
      bdf: `ffff:ff:${i.toString(16).padStart(2, "0")}.7`,
      vendor: ENA_VENDOR,
      device: "ec20",
      driver: e.dpdk.driver,
    }));
  if (!standIns.length) return;
  const filePath = cfg.sriov.config_path;
  mergeText(
    filePath,
    await ctx.host.read(filePath),
    renderSriovEntries(standIns, cfg.sriov.resource_prefix),
    ownedIn(ctx.state, filePath),
    true,
  );
}

/**
 * Merge our entries into the plugin config and write it atomically (0644) when it changes. Call
 * with the host lock held. An unmergeable existing file is moved aside, never overwritten.
 */
export async function applySriov(
  ctx: StageContext,
  devices: SriovDevice[],
  plan: SriovPlan,
): Promise<SriovApplyResult> {
  const { host, log, state } = ctx;
  const filePath = ctx.config.sriov.config_path;
  if (!ctx.config.sriov.enabled) return { changed: false, path: filePath, resources: [] };
  const desired = renderSriovEntries(devices, ctx.config.sriov.resource_prefix);
  if (ctx.dryRun) return { changed: false, path: filePath, resources: plan.resources };
  let changed = false;
  const prev = previousPath(state, filePath);
  if (prev) {
    const r = await writeMerged(
      host,
      prev,
      [],
      new Set(state.sriov.owned),
      state,
      log,
      false,
    ).catch((e: unknown) => {
      log.warn("could not remove eni-dpdk's entries from the previous SR-IOV config path", {
        path: prev,
        error: errorMessage(e),
      });
      return undefined;
    });
    if (r && !r.m.invalid) {
      changed ||= r.changed;
      state.sriov = { configPath: filePath, owned: [] };
      await saveState(host, state);
    }
  }
  const owned = ownedIn(state, filePath);
  const r = await writeMerged(host, filePath, desired, owned, state, log, true);
  changed ||= r.changed;
  if (
    !sameList(r.m.ours, state.sriov.owned) ||
    (r.m.ours.length > 0 && state.sriov.configPath !== filePath)
  ) {
    state.sriov = { configPath: filePath, owned: r.m.ours };
    await saveState(host, state);
  }
  return {
    changed,
    path: filePath,
    resources: r.m.ours,
    ...(r.movedAside ? { movedAside: r.movedAside } : {}),
  };
}

/** The devices the host stage bound that carry a resource: only these are advertised. */
function advertised(devices: HostDeviceResult[]): SriovDevice[] {
  return devices
    .filter((d) => d.state === "bound" && d.resourceName)
    .map((d) => ({
      eniName: d.name,
      resource: d.resourceName,
      bdf: d.bdf,
      vendor: d.vendor,
      device: d.device,
      driver: d.driver,
    }));
}

export const sriovStage: Stage<SriovPlan & StagePlan & { devices: SriovDevice[] }> = {
  name: "sriov",
  enabled: (ctx) => ctx.config.sriov.enabled,
  async plan(ctx, up) {
    const devices = advertised(up.devices);
    const p = await planSriov(ctx, devices);
    const actions = [...p.actions];
    if (ctx.dryRun) {
      // DPDK ENIs with no bound device yet: their resources are written once they are bound.
      const waiting = ctx.config.eni.filter(
        (e) => e.dpdk.enabled && !devices.some((d) => d.eniName === e.name),
      );
      for (const r of new Set(
        waiting.map((e) =>
          fullResourceName(e.dpdk.resource_name, ctx.config.sriov.resource_prefix),
        ),
      )) {
        actions.push({
          stage: "sriov",
          kind: "write-sriov",
          target: ctx.config.sriov.config_path,
          detail: `resource ${r}, after its ENIs are bound`,
        });
      }
    }
    return {
      ...p,
      actions,
      devices,
      expected: { sriov: { changed: false, path: p.path, resources: p.resources } },
    };
  },
  async apply(ctx, plan) {
    const sriov = await applySriov(ctx, plan.devices, plan);
    const { warnings, report } = await checkAfterApply(ctx, sriov.path);
    return {
      sriov,
      ...(report ? { sriovCheck: report } : {}),
      ...(warnings.length ? { warnings } : {}),
    };
  },
};

/**
 * After the write, with the devices bound: what the plugin will advertise from the file as it is now
 * (ours and foreign entries). The plugin reads it once, at start, and says nothing when a resource
 * matches no device, so each of `sriov check`'s errors becomes a warning of this apply.
 */
async function checkAfterApply(
  ctx: StageContext,
  filePath: string,
): Promise<{ warnings: string[]; report?: SriovCheckReport }> {
  if (!(await ctx.host.exists(filePath))) return { warnings: [] };
  try {
    const report = await checkSriov(ctx.host, filePath, { owned: ownedIn(ctx.state, filePath) });
    return {
      warnings: report.errors.map((e) => `SR-IOV check: ${e} (see \`eni-dpdk sriov check\`)`),
      report,
    };
  } catch (e) {
    return { warnings: [`SR-IOV check could not run: ${errorMessage(e)}`] };
  }
}
