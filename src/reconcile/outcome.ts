// What one pass did, as data: its actions, ENIs, devices, SR-IOV result, timings, warnings and error;
// the one Status line systemd shows; and the status file every apply writes for `status`.
import type { Config } from "../config/model.js";
import { errorMessage } from "../core/errors.js";
import { STATUS_PATH, type EniRecord } from "../host/state.js";
import type { Host } from "../host/host.js";
import type { SriovApplyResult } from "../host/sriov-model.js";
import type { HostDeviceResult, MaxPodsResult } from "./stage.js";
import type { HugepageProblem } from "../host/kernel.js";
import type { Action, StageName } from "../core/action.js";
import { collectStatus } from "./status.js";
import type { SriovCheckReport } from "../host/sriov-check.js";

export interface ApplyOutcome {
  ok: boolean;
  dryRun: boolean;
  startedAt: string;
  actions: Action[];
  enis: EniRecord[];
  devices: HostDeviceResult[];
  sriov?: SriovApplyResult;
  /** milliseconds per stage, in the order they ran */
  timings: Partial<Record<"sources" | "observe" | StageName | "total", number>>;
  warnings: string[];
  /** kubelet's maxPods drop-in for nodeadm */
  maxPods?: MaxPodsResult;
  /** devices on a DPDK driver without usable hugepages (also one of the warnings) */
  hugepages?: HugepageProblem;
  error?: {
    message: string;
    next: string;
    exitCode: number;
    /** what this run changed before it failed */ changes?: string[];
  };
  /** one line for systemd's STATUS= */
  summary: string;
  ec2Loaded: boolean;
}

/** The Status line: ready or degraded, with the counts an SRE checks first. */
export function summaryLine(o: ApplyOutcome, config: Config): string {
  const bound = o.devices.filter((d) => d.state === "bound");
  const drivers = [...new Set(bound.map((d) => d.driver))].join("/") || config.dpdk.driver;
  const noiommu = bound.some((d) => d.deviceNode?.includes("noiommu")) ? " (noiommu)" : "";
  const resources = o.sriov?.resources.length ?? 0;
  const parts = [
    `${o.enis.length} ENI${o.enis.length === 1 ? "" : "s"} attached`,
    `${bound.length} bound to ${drivers}${noiommu}`,
    config.sriov.enabled
      ? `${resources} SR-IOV resource${resources === 1 ? "" : "s"} ${o.sriov?.changed ? "written" : "unchanged"}`
      : "SR-IOV off",
  ];
  const head = o.error ? `degraded: ${o.error.message}` : "ready";
  const cached = o.warnings.some((w) => w.includes("USING CACHED"))
    ? "; WARNING: NodeENI API unreachable, applied the cached NodeENI set"
    : "";
  const hugepages = o.hugepages ? `; WARNING: no hugepages (${o.hugepages.short})` : "";
  return `${head}: ${parts.join(", ")}${cached}${hugepages}${o.warnings.length ? ` (${o.warnings.length} warning${o.warnings.length === 1 ? "" : "s"})` : ""}`;
}

/**
 * /run/eni-dpdk/status.json: the status document as this apply leaves the node, and the apply itself.
 * The document's last apply is this one, and the SR-IOV check the sriov stage made after its write
 * is not made again.
 */
export async function writeStatusFile(
  host: Host,
  o: ApplyOutcome,
  config: Config,
  found: { sriovCheck?: SriovCheckReport; hugepageProblem?: HugepageProblem | null } = {},
): Promise<void> {
  const { gathered: _g, ...plain } = o as ApplyOutcome & { gathered?: unknown };
  void _g;
  let doc: Record<string, unknown>;
  try {
    doc = (await collectStatus(host, {
      config,
      last: { apply: plain, devices: plain.devices },
      ...found,
    })) as unknown as Record<string, unknown>;
  } catch (e) {
    doc = { statusError: errorMessage(e) };
  }
  await host.writeFileAtomic(
    STATUS_PATH,
    JSON.stringify({ ...doc, apply: plain }, null, 2) + "\n",
    0o644,
  );
}
