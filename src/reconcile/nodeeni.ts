// The NodeENI stage: after the other stages, cache the NodeENI set that was applied (for API
// outages at the next boot) and report this node's attachments in each NodeENI's status.
// API trouble here is a warning: the devices are already in place.
import { saveState } from "../core/state.js";
import { rememberNodeEnis, reportNodeEniStatus, type NodeEniEniResult } from "../sources/nodeeni.js";
import type { Stage } from "./stage.js";

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
      for (const e of (layer.data.eni as { name: string }[] | undefined) ?? []) owner.set(e.name, layer.origin.name);
    }
    const results = ctx.config.eni.flatMap((e): NodeEniEniResult[] => {
      const nodeEniName = owner.get(e.name);
      if (!nodeEniName) return [];
      const rec = up.enis.find((x) => x.name === e.name);
      const dev = up.devices.find((d) => d.name === e.name);
      const status = !rec ? "pending" : dev?.state === "failed" ? `failed: ${dev.error ?? "bind failed"}` : "attached";
      return [{
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
      }];
    });
    const report = await reportNodeEniStatus({ log: ctx.log, session: r.session }, results);
    for (const w of report.warnings) ctx.log.warn(w, { next: "check deploy/rbac.yaml is applied; status will be retried at the next reconcile" });
    return {};
  },
};
