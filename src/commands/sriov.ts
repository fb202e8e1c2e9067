// `eni-dpdk sriov check`: which devices the SR-IOV device plugin will advertise for each resource in
// its config file, ours and foreign, predicted from this host's sysfs before the plugin starts.
// Exit 0 when every resource gets devices, 1 when the plugin would serve nothing, drop a resource,
// advertise one with no device or give a resource's device to an earlier one; 2 for bad usage.
import { InputError } from "../core/errors.js";
import { loadState } from "../host/state.js";
import { ownedIn } from "../host/sriov-file.js";
import { checkSriov, type SriovCheckReport } from "../host/sriov-check.js";
import { parsePluginVersion, type PluginVersion } from "../host/sriov-model.js";
import type { SelectedDevice } from "../host/sriov-select.js";
import { localConfig, type CommandContext } from "./context.js";

const deviceLine = (d: SelectedDevice) =>
  `${d.bdf}  ${d.vendor}:${d.device}  ${d.driver || "no driver"}${d.netdev ? `  ${d.netdev}` : ""}`;

/** The report as text: one block per resource, then what the plugin leaves out, then the verdict. */
export function renderSriovCheck(r: SriovCheckReport, opts: { verdict?: boolean } = {}): string {
  const out: string[] = [
    `SR-IOV device plugin config ${r.path}, as plugin ${r.pluginVersion} selects on this host:`,
  ];
  if (!r.exists) out.push("  (the file does not exist)");
  for (const res of r.resources) {
    const head = `${res.full} (${res.owner}, resourceList[${res.index}])`;
    const n = res.devices.length;
    const state = {
      advertised: `${n} device${n === 1 ? "" : "s"}${res.notEvaluated.length ? " at most" : ""}; pods read ${res.envVar}`,
      empty: "NO DEVICE: not advertised",
      dropped: "DROPPED by the plugin: not advertised",
      "not-served": "not served: the plugin serves nothing",
      "not-evaluated": "not evaluated",
    }[res.state];
    out.push(`${head}: ${state}`);
    for (const d of res.devices) out.push(`  ${deviceLine(d)}`);
    for (const l of res.lost) out.push(`  ${l.bdf}  taken by ${l.claimedBy}`);
    for (const w of res.why) out.push(`  why: ${w}`);
  }
  if (r.excluded.length) {
    out.push("Left out by the plugin:");
    for (const x of r.excluded) out.push(`  ${x.bdf}  ${x.reason}`);
  }
  if (r.unclaimed.length) {
    out.push("Offered, but in no resource:");
    for (const d of r.unclaimed) out.push(`  ${deviceLine(d)}`);
  }
  for (const e of r.errors) out.push(`error: ${e}`);
  for (const w of r.warnings) out.push(`warning: ${w}`);
  if (opts.verdict !== false) {
    const adv = r.resources.filter((x) => x.state === "advertised").length;
    out.push(
      r.ok
        ? `ok: ${adv} of ${r.resources.length} resource${r.resources.length === 1 ? "" : "s"} advertised`
        : `FAILED: ${r.errors.length} problem${r.errors.length === 1 ? "" : "s"}; pods requesting the resources above will not get these devices`,
    );
  }
  return out.join("\n") + "\n";
}

export function pluginVersionOption(v: string | undefined): PluginVersion | undefined {
  if (v === undefined) return undefined;
  const parsed = parsePluginVersion(v);
  if (!parsed)
    throw new InputError(
      [
        {
          source: "--plugin-version",
          key: "(value)",
          message: `"${v}" is not a release like v3.5.1`,
        },
      ],
      "pass the device plugin's image tag, e.g. --plugin-version v3.5.1",
    );
  return parsed;
}

export async function sriovCheckCommand(
  ctx: CommandContext,
  opts: { json: boolean; pluginVersion?: string },
): Promise<number> {
  const version = pluginVersionOption(opts.pluginVersion);
  const { config } = await localConfig(ctx);
  const state = await loadState(ctx.host);
  const filePath = state.sriov.configPath ?? config.sriov.config_path;
  const report = await checkSriov(ctx.host, filePath, {
    owned: ownedIn(state, filePath),
    version,
  });
  ctx.out(opts.json ? JSON.stringify(report, null, 2) + "\n" : renderSriovCheck(report));
  return report.ok ? 0 : 1;
}
