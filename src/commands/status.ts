// `eni-dpdk status`: the status document as text, like `dpdk-devbind.py --status`, or as JSON.
import { collectStatus, type StatusDoc } from "../reconcile/status.js";
import { localConfig, type CommandContext } from "./context.js";
import { formatProblem } from "../core/errors.js";
import { renderSriovCheck } from "./sriov.js";
import { label, perNode } from "../host/kernel.js";
import { devicesHolders, inUseBy } from "../host/pci.js";
import { isDpdkDriver } from "../config/facts.js";
import { holderText } from "../host/host.js";

/** Text like `dpdk-devbind.py --status`: managed devices, other NICs, host readiness. */
export function renderStatus(doc: StatusDoc): string {
  const out: string[] = [];
  const section = (t: string) => out.push("", t, "=".repeat(t.length));
  if (doc.running)
    out.push(
      "",
      `A pass is running: ${holderText(doc.running)} holds the host lock; what follows may be mid-change.`,
    );
  section("ENIs managed by eni-dpdk");
  if (doc.devices.length === 0) out.push("<none>");
  else {
    const head = [
      "NAME",
      "ENI",
      "IDX",
      "MAC",
      "BDF",
      "VEN:DEV",
      "DRIVER",
      "ORIGINAL",
      "DEVICE NODE",
      "RESOURCE",
      "STATE",
    ];
    const rows = doc.devices.map((d) => [
      d.name,
      d.eniId || "-",
      d.deviceIndex === null ? "-" : `${d.networkCardIndex ?? 0}/${d.deviceIndex}`,
      d.mac || "-",
      d.bdf || "-",
      d.vendor ? `${d.vendor}:${d.device}` : "-",
      d.driver || "-",
      d.originalDriver || "-",
      d.deviceNode || (d.ifname ? `if=${d.ifname}` : "-"),
      d.resourceName || "-",
      d.state,
    ]);
    out.push(...table([head, ...rows]));
    for (const d of doc.devices.filter((d) => d.detail)) out.push(`  ${d.name}: ${d.detail}`);
    for (const d of doc.devices.filter((d) => d.holders?.length))
      out.push(`  ${d.name}: ${inUseBy(d.holders!)}`);
  }
  section("Other network devices");
  if (doc.otherDevices.length === 0) out.push("<none>");
  for (const d of doc.otherDevices) {
    out.push(
      `${d.bdf} '${d.vendor}:${d.device}'${d.ifname ? ` if=${d.ifname}` : ""} drv=${d.driver || "none"}${d.mac ? ` mac=${d.mac}` : ""}${d.active.length ? ` *Active* (${d.active.join(", ")})` : ""}`,
    );
  }
  section("Host");
  const h = doc.host;
  const hp =
    h.hugepages
      .map((p) => {
        const got =
          p.requested > 0
            ? `${p.total} of ${p.requested} requested`
            : `${p.total} total (none requested)`;
        const nodes = p.nodes.length > 1 || p.total > 0 ? `; ${perNode(p)}` : "";
        return `${label(p.sizeKb)}: ${got}, ${p.free} free${nodes}`;
      })
      .join(" | ") || "not supported";
  const noiommu = {
    Y: "enabled",
    N: "disabled",
    absent: "not supported by this kernel (CONFIG_VFIO_NOIOMMU unset)",
    "not-loaded": "vfio not loaded",
  }[h.noiommu];
  out.push(
    ...table([
      ["NOIOMMU:", noiommu],
      ["IOMMU present:", h.iommuPresent ? "yes" : "no"],
      ["DPDK drivers:", h.dpdkDrivers.join(", ") || "none loaded"],
      ["Hugepages:", hp],
      ["hugetlbfs:", h.hugetlbfs.join(", ") || "not mounted"],
      ["Write-combining:", `${h.writeCombining.state}: ${h.writeCombining.detail}`],
      ["kubelet maxPods:", maxPodsLine(h.maxPods)],
      [
        "SR-IOV config:",
        `${h.sriov.configPath} (${h.sriov.exists === undefined ? "unknown" : h.sriov.exists ? (h.sriov.valid ? "valid" : "INVALID") : "absent"})`,
      ],
    ]),
  );
  if (h.hugepageProblem)
    out.push(`  warning: ${h.hugepageProblem.message}`, `  fix: ${h.hugepageProblem.fix}`);
  if (h.writeCombining.check) out.push(`  check: ${h.writeCombining.check}`);
  if (h.writeCombining.fix) out.push(`  fix: ${h.writeCombining.fix}`);
  for (const w of h.sriov.warnings) out.push(`  sriov: ${w}`);
  if (h.maxPods.detail) out.push(`  maxPods: ${h.maxPods.detail}`);
  if (h.sriov.check) {
    section("SR-IOV device plugin: what it will advertise");
    // the file's own findings are listed under Host already
    const check = {
      ...h.sriov.check,
      warnings: h.sriov.check.warnings.filter((w) => !h.sriov.warnings.some((x) => x.endsWith(w))),
    };
    out.push(...renderSriovCheck(check, { verdict: false }).trimEnd().split("\n").slice(1));
    if (!h.sriov.check.ok) out.push("  fix: see `eni-dpdk sriov check` (exit 1 until it is fixed)");
  }
  if (doc.lastApply)
    out.push(
      "",
      `Last apply: ${doc.lastApply.startedAt ?? "?"} ${doc.lastApply.summary ?? ""}`.trimEnd(),
      ...(doc.lastApply.unchangedSince
        ? [
            `  planned nothing: every input read as the apply of ${doc.lastApply.unchangedSince} found it (\`apply --full\` plans)`,
          ]
        : []),
      ...(doc.lastApply.warnings ?? []).map((w) => `  warning: ${w}`),
    );
  for (const p of doc.configProblems) out.push(`config: ${p}`);
  return out.slice(1).join("\n") + "\n";
}

function maxPodsLine(m: StatusDoc["host"]["maxPods"]): string {
  const alone = m.nodeadmMaxPods !== undefined ? ` (nodeadm alone: ${m.nodeadmMaxPods})` : "";
  switch (m.dropIn) {
    case "ours":
      return `${m.maxPods ?? "?"}, set by ${m.path}${alone}`;
    case "foreign":
      return `not adjusted: ${m.path} is not eni-dpdk's`;
    case "none":
      return `nodeadm's own, no eni-dpdk drop-in${alone}`;
    case "no-dir":
      return "nodeadm's own: this nodeadm reads no drop-ins";
  }
}

function table(rows: string[][]): string[] {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join("  "));
}

// ---- the command ---

export async function statusCommand(ctx: CommandContext, opts: { json: boolean }): Promise<number> {
  const { config, problems } = await localConfig(ctx);
  const doc = await collectStatus(ctx.host, {
    config,
    configProblems: problems.map(formatProblem),
  });
  // a pass under way (the boot's, a reload's): the lock file says who took the lock
  const holder = ctx.host.lockHolder();
  if (holder && (await ctx.host.lockHeld()) !== false) doc.running = holder;
  // who uses each bound device: here only, as a boot's status file has no use for a /proc scan
  const bound = doc.devices.filter((d) => d.bdf && isDpdkDriver(d.driver));
  const holders = await devicesHolders(ctx.host, bound);
  for (const d of bound) if (holders.get(d.bdf)?.length) d.holders = holders.get(d.bdf);
  ctx.out(opts.json ? JSON.stringify(doc, null, 2) + "\n" : renderStatus(doc));
  return 0;
}
