// The NodeENI stage: after the other stages, cache the NodeENI set that was applied (for API
// outages at the next boot) and report this node's attachments in each NodeENI's status.
// API trouble here is a warning: the devices are already in place.
import { saveState } from "../host/state.js";
import {
  checkNodeEniItems,
  explain,
  listWithWait,
  type NodeEniInput,
  openNodeEniSession,
  rememberNodeEnis,
} from "../sources/nodeeni.js";
import type { NodeEniSession } from "../sources/source.js";
import type { NodeIdentity } from "../sources/nodeconfig.js";
import { KubeApiError, type NodeEniAttachment, type NodeEniObject } from "../cloud/kube.js";
import { stableJson } from "../core/records.js";
import type { Stage } from "./stage.js";
import { InputError } from "../core/errors.js";
import { isoTime } from "../core/deadline.js";

export const nodeEniStage: Stage = {
  name: "nodeeni",
  enabled: (ctx) => !!ctx.nodeEni && (ctx.nodeEni.layers.length > 0 || !!ctx.nodeEni.session),
  // What it reports depends on what the other stages did: nothing to plan ahead.
  async plan() {
    return { actions: [], expected: {} };
  },
  async apply(ctx, _plan, up) {
    const r = ctx.nodeEni!;
    if (!r.fromCache) {
      rememberNodeEnis(ctx.state, r);
      await saveState(ctx.host, ctx.state);
    }
    // Which NodeENI each ENI came from, as its layer says.
    const owner = new Map<string, string>();
    for (const layer of r.layers) {
      if (layer.origin?.source !== "nodeeni") continue;
      for (const e of (layer.data.eni as { name: string }[] | undefined) ?? [])
        owner.set(e.name, layer.origin.name);
    }
    const results = ctx.config.eni.flatMap((e): NodeEniEniResult[] => {
      const nodeEniName = owner.get(e.name);
      if (!nodeEniName) return [];
      const rec = up.enis.find((x) => x.name === e.name);
      const dev = up.devices.find((d) => d.name === e.name);
      const status = !rec
        ? "pending"
        : dev?.state === "failed"
          ? `failed: ${dev.error ?? "bind failed"}`
          : "attached";
      return [
        {
          eniName: e.name,
          nodeEniName,
          eniId: rec?.eniId,
          attachmentId: rec?.attachmentId,
          subnetId: rec?.subnetId,
          deviceIndex: e.device_index,
          mtu: e.mtu,
          status,
          dpdkBound: dev?.state === "bound",
          dpdkDriver: dev?.state === "bound" ? dev.driver : undefined,
          dpdkPCIAddress: dev?.bdf || undefined,
          dpdkResourceName: dev?.resourceName || undefined,
        },
      ];
    });
    const report = await reportNodeEniStatus({ log: ctx.log, session: r.session }, results);
    for (const w of report.warnings)
      ctx.log.warn(w, {
        next: "check deploy/rbac.yaml is applied; status will be retried at the next reconcile",
      });
    return {};
  },
};

export interface NodeEniEniResult {
  eniName: string;
  nodeEniName: string;
  eniId?: string;
  attachmentId?: string;
  subnetId?: string;
  subnetCidr?: string;
  deviceIndex: number;
  mtu: number;
  /** e.g. attached, failed: <reason> */
  status: string;
  dpdkBound: boolean;
  dpdkDriver?: string;
  dpdkPCIAddress?: string;
  dpdkResourceName?: string;
}

function attachmentFor(r: NodeEniEniResult, node: NodeIdentity, now: string): NodeEniAttachment {
  const a: NodeEniAttachment = {
    nodeID: node.name,
    instanceID: node.instanceId,
    eniID: r.eniId ?? "",
    attachmentID: r.attachmentId ?? "",
    deviceIndex: r.deviceIndex,
    mtu: r.mtu,
    status: r.status,
    lastUpdated: now,
    dpdkBound: r.dpdkBound,
  };
  if (r.subnetId) a.subnetID = r.subnetId;
  if (r.subnetCidr) a.subnetCIDR = r.subnetCidr;
  if (r.dpdkDriver) a.dpdkDriver = r.dpdkDriver;
  if (r.dpdkPCIAddress) a.dpdkPCIAddress = r.dpdkPCIAddress;
  if (r.dpdkResourceName) a.dpdkResourceName = r.dpdkResourceName;
  return a;
}

const withoutTime = (a: NodeEniAttachment) => stableJson({ ...a, lastUpdated: undefined });

/**
 * The new status.attachments: every other node's entry untouched and in place, this node's
 * replaced by `ours` (sorted by device index). An entry whose content did not change keeps its
 * lastUpdated; `changed` is false when nothing but time would differ, so no write is needed.
 */
export function mergeAttachments(
  existing: NodeEniAttachment[],
  nodeName: string,
  ours: NodeEniAttachment[],
): { attachments: NodeEniAttachment[]; changed: boolean } {
  const mineBefore = existing.filter((a) => a.nodeID === nodeName);
  const others = existing.filter((a) => a.nodeID !== nodeName);
  const oldByContent = new Map(mineBefore.map((a) => [withoutTime(a), a]));
  const mine = [...ours]
    .sort((a, b) => (a.deviceIndex ?? 0) - (b.deviceIndex ?? 0))
    .map((a) => oldByContent.get(withoutTime(a)) ?? a);
  const changed = mine.length !== mineBefore.length || mine.some((a, i) => a !== mineBefore[i]);
  return { attachments: [...others, ...mine], changed };
}

export interface StatusReport {
  patched: string[];
  unchanged: string[];
  warnings: string[];
}

/**
 * Patch status.attachments of every NodeENI whose entries for this node differ from `results`
 * (those that no longer apply lose this node's entries). Conditional on resourceVersion, re-read
 * and retried on 409. Never throws for API trouble: the devices are already in place, so a
 * failure here is a warning.
 */
export async function reportNodeEniStatus(
  input: Pick<NodeEniInput, "log"> &
    Partial<NodeEniInput> & { session?: NodeEniSession; now?: () => Date },
  results: NodeEniEniResult[],
): Promise<StatusReport> {
  const report: StatusReport = { patched: [], unchanged: [], warnings: [] };
  const session =
    input.session ??
    (input.imds && (await openNodeEniSession(input as NodeEniInput, report.warnings)));
  if (!session) return report;
  const now = () => isoTime(input.now?.().getTime()).replace(/\.\d{3}Z$/, "Z");
  const byNodeEni = new Map<string, NodeEniEniResult[]>();
  for (const r of results)
    byNodeEni.set(r.nodeEniName, [...(byNodeEni.get(r.nodeEniName) ?? []), r]);
  let items: NodeEniObject[];
  try {
    items = checkNodeEniItems(
      await listWithWait(session, 10_000, input.log),
      `from ${session.client.target.server}`,
    );
  } catch (e) {
    if (e instanceof InputError) {
      report.warnings.push(`NodeENI status not reported: ${e.message}`);
      for (const w of report.warnings) input.log.warn(w);
      return report;
    }
    const { message, hint } = await explain(e, session);
    report.warnings.push(`NodeENI status not reported: ${message} (${hint})`);
    return report;
  }
  const known = new Set(items.map((o) => o.metadata.name));
  for (const name of byNodeEni.keys()) {
    if (!known.has(name))
      report.warnings.push(`NodeENI ${name}: deleted since it was read; status not reported`);
  }
  for (const item of items) {
    const name = item.metadata.name;
    let obj = item;
    for (let attempt = 1; ; attempt++) {
      const ours = (byNodeEni.get(name) ?? []).map((r) => attachmentFor(r, session.node, now()));
      const { attachments, changed } = mergeAttachments(
        obj.status?.attachments ?? [],
        session.node.name,
        ours,
      );
      if (!changed) {
        if (ours.length) report.unchanged.push(name);
        break;
      }
      try {
        await session.client.patchNodeEniStatus(
          name,
          obj.metadata.resourceVersion ?? "",
          attachments,
        );
        report.patched.push(name);
        break;
      } catch (e) {
        let failure = e;
        if (e instanceof KubeApiError && e.status === 409 && attempt < 6) {
          input.log.debug("NodeENI status conflict; re-reading", { nodeeni: name, attempt });
          try {
            obj = await session.client.getNodeEni(name);
            continue;
          } catch (reread) {
            failure = reread;
          }
        }
        if (failure instanceof KubeApiError && failure.status === 404) break; // deleted meanwhile
        const { message, hint } = await explain(failure, session);
        report.warnings.push(`NodeENI ${name}: status not reported: ${message} (${hint})`);
        break;
      }
    }
  }
  for (const w of report.warnings) input.log.warn(w);
  return report;
}
