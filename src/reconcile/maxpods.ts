// The kubelet stage: kubelet's maxPods for the ENIs the VPC CNI can still use. nodeadm derives
// maxPods from every ENI the instance type allows on the default network card; the ENIs eni-dpdk
// takes there (a DPDK ENI has no netdev, every ENI eni-dpdk creates is tagged no_manage) serve no
// pod, so kubelet would admit pods the CNI cannot address, and they hang in ContainerCreating. So a
// NodeConfig drop-in, written before nodeadm-run reads its sources (eni-dpdk.service is
// Before=nodeadm-run.service), sets spec.kubelet.config.maxPods to what the remaining ENIs serve.
// A maxPods the user set anywhere nodeadm reads it, and a file at our path that is not ours, are
// left alone. It runs right after the ENI stage: a bind that fails later still leaves the ENI taken.
import { errorMessage } from "../core/errors.js";
import { NODEADM_MEDIA_TYPE } from "../config/facts.js";
import { ENI_LIMITS_SOURCE } from "../config/eni-limits.js";
import { eniLimits, maxPodsFor } from "../config/max-pods.js";
import {
  MAX_PODS_DROPIN,
  MAX_PODS_MARKER,
  NODEADM_BIN,
  NODEADM_DROPIN_DIR,
  readDropins,
  removeMaxPodsDropin,
  renderMaxPodsDropin,
  writeMaxPodsDropin,
  type Dropins,
} from "../host/nodeadm-dropin.js";
import { readUserData } from "../cloud/imds.js";
import { decodeUserData } from "../sources/mime.js";
import { parseNodeConfigs, type NodeConfigPartLike } from "../sources/nodeconfig.js";
import type { MaxPodsResult, Stage, StageContext, StagePlan } from "./stage.js";

export interface MaxPodsPlan extends StagePlan {
  /** the drop-in to have; undefined: none (ours, if there, is removed) */
  text?: string;
  result: MaxPodsResult;
  warnings: string[];
}

interface Desired {
  maxPods?: number;
  /** the comment lines of the drop-in: the computation */
  why: string[];
  reason: string;
  /** needed, but not written (no drop-in directory, unknown type, a foreign file) */
  skipped?: boolean;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

export async function planMaxPods(ctx: StageContext): Promise<MaxPodsPlan> {
  const drop = await readDropins(ctx.host);
  const warnings: string[] = [];
  const type = ctx.instance.instanceType;
  const limits = eniLimits(type);
  const nodeadm = limits && maxPodsFor(limits.enis, limits.ipv4PerEni);
  const d = await desired(ctx, drop, warnings);
  const text = d.maxPods === undefined ? undefined : renderMaxPodsDropin(d.maxPods, d.why);
  const actions: MaxPodsPlan["actions"] = [];
  if (text !== undefined && drop.ourText !== text)
    actions.push({
      stage: "kubelet",
      kind: "write-max-pods",
      target: MAX_PODS_DROPIN,
      detail: `maxPods ${d.maxPods} for nodeadm (alone it would set ${nodeadm}): ${d.reason}`,
    });
  if (text === undefined && drop.ours === "ours")
    actions.push({
      stage: "kubelet",
      kind: "remove-max-pods",
      target: MAX_PODS_DROPIN,
      detail: `no longer needed: ${d.reason}`,
    });
  const result: MaxPodsResult = {
    path: MAX_PODS_DROPIN,
    state:
      text !== undefined
        ? "written"
        : drop.ours === "ours"
          ? "removed"
          : d.skipped
            ? "skipped"
            : "absent",
    changed: actions.length > 0,
    ...(d.maxPods !== undefined ? { maxPods: d.maxPods } : {}),
    ...(nodeadm !== undefined ? { nodeadmMaxPods: nodeadm } : {}),
    reason: d.reason,
  };
  return { actions, expected: { maxPods: result }, text, result, warnings };
}

async function desired(ctx: StageContext, drop: Dropins, warnings: string[]): Promise<Desired> {
  const cfg = ctx.config;
  const type = ctx.instance.instanceType;
  const limits = eniLimits(type);
  // nodeadm counts the default network card only (card 0 on every type in its data)
  const taken = cfg.eni.filter((e) => e.network_card_index === 0);
  if (!cfg.kubernetes.adjust_max_pods)
    return { why: [], reason: "[kubernetes] adjust_max_pods = false" };
  if (taken.length === 0)
    return {
      why: [],
      reason: cfg.eni.length
        ? "eni-dpdk takes no ENI on network card 0, the only card nodeadm counts"
        : "eni-dpdk takes no ENI",
    };
  const remaining = limits ? Math.max(1, limits.enis - taken.length) : 0;
  const target = limits ? maxPodsFor(remaining, limits.ipv4PerEni) : 0;
  const yours = limits
    ? `spec.kubelet.config.maxPods: ${target}`
    : `spec.kubelet.config.maxPods: (ENIs of ${type} on network card 0 − ${taken.length}) × (IPv4 per ENI − 1) + 2`;
  // Not an EKS node (no nodeadm at all): nothing reads a drop-in, and nothing needs parsing.
  const nodeadmHere = drop.dir || (await ctx.host.exists(NODEADM_BIN));
  if (!nodeadmHere) return { why: [], reason: "no nodeadm on this host" };
  const user = await userMaxPods(ctx, drop, warnings);
  if (user.length) {
    const last = user.at(-1)!;
    const set = `${last.key} = ${JSON.stringify(last.value)} in ${last.from}`;
    const n =
      typeof last.value === "number"
        ? last.value
        : typeof last.value === "string" && /^\d+$/.test(last.value.trim())
          ? Number(last.value)
          : NaN;
    if (!last.key.endsWith("Expression") && !(Number.isSafeInteger(n) && n > 0))
      warnings.push(
        `${set} is not a positive integer: nodeadm or kubelet will refuse it; eni-dpdk leaves it alone`,
      );
    else if (limits && n > target)
      warnings.push(
        `${set} is more than the ${target} pods the ${plural(remaining, "ENI")} left to the VPC CNI can address: pods beyond that hang in ContainerCreating; eni-dpdk leaves it alone`,
      );
    return { why: [], reason: `maxPods is yours (${set}); left alone` };
  }
  if (!drop.dir) {
    const reason = `${NODEADM_DROPIN_DIR} does not exist: this nodeadm reads no drop-ins (EKS AMIs from v20251023 do)`;
    warnings.push(
      `kubelet's maxPods not adjusted: ${reason}; nodeadm counts the ${plural(taken.length, "ENI")} eni-dpdk takes, so set ${yours} in your NodeConfig`,
    );
    return { why: [], reason, skipped: true };
  }
  if (!limits) {
    // A guess is worse than nodeadm's own number: too low starves the node, too high is the bug.
    const reason = `${type} is not in eni-dpdk's copy of nodeadm's instance data (${ENI_LIMITS_SOURCE.date})`;
    warnings.push(
      `kubelet's maxPods not adjusted: ${reason}; nodeadm counts the ${plural(taken.length, "ENI")} eni-dpdk takes, so set ${yours} in your NodeConfig`,
    );
    return { why: [], reason, skipped: true };
  }
  if (drop.ours === "foreign") {
    const reason = `${MAX_PODS_DROPIN} is not eni-dpdk's (its first line is not "${MAX_PODS_MARKER}")`;
    warnings.push(
      `kubelet's maxPods not adjusted: ${reason}; it is left alone (maxPods ${target} would fit this node)`,
    );
    return { why: [], reason, skipped: true };
  }
  const names = taken.map((e) => e.name).join(", ");
  const nodeadm = maxPodsFor(limits.enis, limits.ipv4PerEni);
  const why = [
    `kubelet's maxPods for the ENIs the VPC CNI can use. For ${type} nodeadm computes`,
    `${limits.enis} ENIs × (${limits.ipv4PerEni} IPv4 addresses − 1) + 2 = ${nodeadm}; eni-dpdk takes ${taken.length} of`,
    `those ENIs (${names}: no pods on them), leaving ${remaining} × (${limits.ipv4PerEni} − 1) + 2 = ${target}.`,
  ];
  const pd = await prefixDelegation(ctx);
  if (pd) {
    const cap = maxPodsFor(remaining, limits.ipv4PerEni, true);
    if (nodeadm <= cap)
      return {
        why: [],
        reason: `prefix delegation is on (${pd}): nodeadm's ${nodeadm} fits the ${plural(remaining, "ENI")} left to the VPC CNI (${cap} addresses)`,
      };
    return {
      maxPods: cap,
      why: [
        ...why.slice(0, 2),
        `those ENIs (${names}), and prefix delegation is on (${pd}), so ${remaining} × (${limits.ipv4PerEni} − 1) × 16 + 2 = ${cap}.`,
      ],
      reason: `${remaining} of ${limits.enis} ENIs left to the VPC CNI, with /28 prefixes`,
    };
  }
  return {
    maxPods: target,
    why,
    reason: `${remaining} of ${limits.enis} ENIs left to the VPC CNI (${names} are eni-dpdk's)`,
  };
}

/**
 * Where the user set kubelet's max pods: user-data's NodeConfig parts and the other drop-ins,
 * in nodeadm's order (the last one wins). A drop-in may be MIME multipart, as nodeadm allows.
 */
async function userMaxPods(ctx: StageContext, drop: Dropins, warnings: string[]) {
  const parts: NodeConfigPartLike[] = [
    ...(ctx.userDataParts ?? (await ownUserData(ctx, warnings))),
  ];
  for (const f of drop.others) {
    if (f.text === undefined) {
      warnings.push(
        `${f.path}: ${f.why}, so eni-dpdk cannot tell whether it sets maxPods (nodeadm reads it; a maxPods there wins over eni-dpdk's, which sorts first)`,
      );
      continue;
    }
    try {
      for (const p of decodeUserData(Buffer.from(f.text, "utf8")))
        parts.push({
          contentType: p.index === 0 ? NODEADM_MEDIA_TYPE : p.contentType,
          label: p.index === 0 ? f.path : `${f.path} part ${p.index}`,
          text: p.text,
        });
    } catch (e) {
      warnings.push(`${f.path}: ${errorMessage(e)}; nodeadm will fail on it too`);
    }
  }
  return (await parseNodeConfigs(parts, warnings, "kubelet's maxPods")).maxPods;
}

/**
 * nodeadm reads user-data whatever [service].sources says: without the user-data source's parts,
 * read it here (one IMDS request), so a maxPods set there is never overridden.
 */
async function ownUserData(ctx: StageContext, warnings: string[]): Promise<NodeConfigPartLike[]> {
  try {
    const raw = await readUserData(ctx.imds);
    return raw?.length ? decodeUserData(raw) : [];
  } catch (e) {
    warnings.push(`user-data could not be read for kubelet's maxPods: ${errorMessage(e)}`);
    return [];
  }
}

/**
 * Evidence that the VPC CNI runs with prefix delegation: /28 prefixes on the primary ENI, which is
 * where ipamd puts them first. On a first boot the CNI has not run yet, so there is none: the
 * ENABLE_PREFIX_DELEGATION setting lives on the aws-node DaemonSet, not on the node.
 */
async function prefixDelegation(ctx: StageContext): Promise<string | undefined> {
  const mac = ctx.instance.primaryMac.toLowerCase();
  let v: string | undefined;
  try {
    v = await ctx.imds.get(`meta-data/network/interfaces/macs/${mac}/ipv4-prefix`);
  } catch {
    return undefined;
  }
  const prefixes = (v ?? "").split("\n").filter((l) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(l.trim()));
  return prefixes.length
    ? `${prefixes.length} IPv4 prefix${prefixes.length === 1 ? "" : "es"} on the primary ENI, e.g. ${prefixes[0].trim()}`
    : undefined;
}

export async function applyMaxPods(ctx: StageContext, plan: MaxPodsPlan): Promise<MaxPodsResult> {
  const r = { ...plan.result };
  try {
    r.changed =
      plan.text !== undefined
        ? await writeMaxPodsDropin(ctx.host, plan.text)
        : await removeMaxPodsDropin(ctx.host);
  } catch (e) {
    // Never fatal: binding the ENIs matters more than kubelet's number; the warning says what to do.
    plan.warnings.push(
      `kubelet's maxPods not adjusted: writing ${MAX_PODS_DROPIN} failed: ${errorMessage(e)}${r.maxPods ? `; set spec.kubelet.config.maxPods: ${r.maxPods} in your NodeConfig` : ""}`,
    );
    return { ...r, state: "skipped", changed: false };
  }
  if (r.changed)
    ctx.log.info(
      plan.text !== undefined
        ? "kubelet maxPods drop-in written"
        : "kubelet maxPods drop-in removed",
      {
        path: MAX_PODS_DROPIN,
        ...(r.maxPods !== undefined ? { max_pods: r.maxPods } : {}),
        nodeadm_max_pods: r.nodeadmMaxPods,
      },
    );
  return r;
}

export const maxPodsStage: Stage<MaxPodsPlan> = {
  name: "kubelet",
  enabled: () => true,
  plan: (ctx) => planMaxPods(ctx),
  async apply(ctx, plan) {
    return { maxPods: await applyMaxPods(ctx, plan) };
  },
};
