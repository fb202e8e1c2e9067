// Leaked ENIs: an ENI eni-dpdk created for an instance that is gone (terminated before the attach,
// or before DeleteOnTermination was set) stays "available" for ever, holding an address. Any later
// boot in the account and region finds and deletes such ENIs (`run` once after READY, or `eni-dpdk
// gc`), as the VPC CNI does for its own: found by our tags, older than a grace period by the
// creation-time tag, bounded per pass and paced like every EC2 call. An ENI is deleted only when
// every rule holds; anything else is kept and the reason said:
//   - status "available", no attachment, a plain interface (not requester-managed);
//   - all of eni-dpdk's creation tags, well-formed: instance id, ENI name, no_manage, created-at;
//   - created at least grace_minutes ago (clock skew or a forged future time: kept);
//   - its owner is not this instance (the ENI stage adopts its own);
//   - DescribeInstances shows the owner terminated, or not at all.
import type { NetworkInterface } from "@aws-sdk/client-ec2";
import {
  Ec2Error,
  allPages,
  tagsOf,
  withEc2Retry,
  type Ec2Api,
  type Ec2Factory,
} from "../cloud/ec2.js";
import type { InstanceIdentity } from "../cloud/imds.js";
import type { GcConfig } from "../config/model.js";
import { ENI_NAME_RE, INSTANCE_ID_RE } from "../config/facts.js";
import type { Deadline } from "../core/deadline.js";
import type { Logger } from "../core/log.js";
import { TAG_CREATED_AT, TAG_INSTANCE, TAG_NAME, TAG_NO_MANAGE } from "./eni.js";

export interface GcContext {
  instance: Pick<InstanceIdentity, "instanceId">;
  log: Logger;
  deadline: Deadline;
}

export interface GcEni {
  eniId: string;
  owner: string;
  name: string;
  createdAt: string;
  subnetId: string;
  /** why it may go: the owner's state as DescribeInstances shows it */
  ownerState: "terminated" | "not found";
}

export interface GcResult {
  /** deleted now (a dry run deletes nothing and lists these as `wouldDelete`) */
  deleted: GcEni[];
  wouldDelete: GcEni[];
  /** deleted meanwhile by someone else (another node's pass) */
  alreadyGone: GcEni[];
  kept: { eniId: string; reason: string }[];
  /** leaked ENIs left for a later pass by max_deletes */
  deferred: number;
  errors: { eniId: string; message: string }[];
}

/** The one read of a gc pass: the unattached ENIs that carry eni-dpdk's instance tag. */
export const GC_FILTERS = [
  { Name: "tag-key", Values: [TAG_INSTANCE] },
  { Name: "status", Values: ["available"] },
];

/** One pass. Reads, then deletes at most `max_deletes` ENIs one at a time (none in a dry run). */
export async function runGc(
  ctx: GcContext,
  ec2: Ec2Factory,
  opts: { config: GcConfig; dryRun: boolean; now?: () => number; random?: () => number },
): Promise<GcResult> {
  const now = opts.now ?? Date.now;
  const graceMs = opts.config.grace_minutes * 60_000;
  const api = await ec2();
  const retry = { deadline: ctx.deadline, log: ctx.log };
  const result: GcResult = {
    deleted: [],
    wouldDelete: [],
    alreadyGone: [],
    kept: [],
    deferred: 0,
    errors: [],
  };

  const found = (
    await allPages(
      "DescribeNetworkInterfaces",
      (NextToken) =>
        api.describeNetworkInterfaces({
          Filters: GC_FILTERS,
          MaxResults: 1000,
          NextToken,
        }),
      retry,
    )
  ).flatMap((p) => p.NetworkInterfaces ?? []);

  const keep = (n: NetworkInterface, reason: string) =>
    result.kept.push({ eniId: n.NetworkInterfaceId ?? "?", reason });
  const maybe: (GcEni & { created: number })[] = [];
  for (const n of found) {
    const tags = tagsOf(n);
    const owner = tags[TAG_INSTANCE] ?? "";
    const created = Date.parse(tags[TAG_CREATED_AT] ?? "");
    if (n.Status !== "available" || n.Attachment)
      keep(n, `in use (status ${n.Status}, attachment ${n.Attachment?.Status ?? "none"})`);
    else if (n.RequesterManaged || (n.InterfaceType && n.InterfaceType !== "interface"))
      keep(n, `not a plain ENI (${n.InterfaceType}, requester-managed ${n.RequesterManaged})`);
    else if (!INSTANCE_ID_RE.test(owner))
      keep(n, `its ${TAG_INSTANCE} tag "${owner.slice(0, 40)}" is not an instance id`);
    else if (!ENI_NAME_RE.test(tags[TAG_NAME] ?? ""))
      keep(n, `no valid ${TAG_NAME} tag: not created by eni-dpdk`);
    else if (tags[TAG_NO_MANAGE] !== "true")
      keep(n, `no ${TAG_NO_MANAGE}=true tag: not created by eni-dpdk`);
    else if (!/^\d{4}-\d\d-\d\dT/.test(tags[TAG_CREATED_AT] ?? "") || Number.isNaN(created))
      keep(n, `no valid ${TAG_CREATED_AT} tag (created by an older eni-dpdk, or not by eni-dpdk)`);
    else if (now() - created < graceMs)
      keep(
        n,
        `created ${Math.round((now() - created) / 1000)} s ago, inside the ${opts.config.grace_minutes} min grace period`,
      );
    else if (owner === ctx.instance.instanceId)
      keep(n, "created for this instance: the ENI stage adopts it");
    else
      maybe.push({
        eniId: n.NetworkInterfaceId!,
        owner,
        name: tags[TAG_NAME],
        createdAt: tags[TAG_CREATED_AT],
        subnetId: n.SubnetId ?? "",
        ownerState: "not found",
        created,
      });
  }

  // The owners' fate: terminated or absent means gone; any other state (even shutting-down) keeps.
  const owners = [...new Set(maybe.map((m) => m.owner))];
  const states = new Map<string, string>();
  for (let i = 0; i < owners.length; i += 100) {
    const ids = owners.slice(i, i + 100);
    const pages = await allPages(
      "DescribeInstances",
      (NextToken) =>
        api.describeInstances({ Filters: [{ Name: "instance-id", Values: ids }], NextToken }),
      retry,
    );
    for (const r of pages.flatMap((p) => p.Reservations ?? []))
      for (const inst of r.Instances ?? [])
        if (inst.InstanceId) states.set(inst.InstanceId, inst.State?.Name ?? "unknown");
  }
  const gone: GcEni[] = [];
  for (const { created: _c, ...m } of maybe) {
    void _c;
    const state = states.get(m.owner);
    if (state !== undefined && state !== "terminated")
      result.kept.push({ eniId: m.eniId, reason: `its instance ${m.owner} is ${state}` });
    else gone.push({ ...m, ownerState: state === undefined ? "not found" : "terminated" });
  }

  // Nodes that run their pass at the same time should not all go for the same ENIs first.
  const random = opts.random ?? Math.random;
  for (let i = gone.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [gone[i], gone[j]] = [gone[j], gone[i]];
  }
  const batch = gone.slice(0, opts.config.max_deletes);
  result.deferred = gone.length - batch.length;
  for (const m of batch) {
    if (opts.dryRun) {
      result.wouldDelete.push(m);
      continue;
    }
    await deleteOne(api, m, retry, result);
  }
  if (result.deleted.length || result.deferred || result.errors.length)
    ctx.log.info("gc: leaked ENIs of instances that are gone", {
      deleted: result.deleted.map((d) => d.eniId).join(","),
      deferred: result.deferred,
      errors: result.errors.length,
    });
  else ctx.log.debug("gc: nothing to delete", { kept: result.kept.length, dry_run: opts.dryRun });
  return result;
}

async function deleteOne(
  api: Ec2Api,
  m: GcEni,
  retry: { deadline: Deadline; log: Logger },
  result: GcResult,
): Promise<void> {
  try {
    await withEc2Retry(
      "DeleteNetworkInterface",
      () => api.deleteNetworkInterface({ NetworkInterfaceId: m.eniId }),
      retry,
    );
    result.deleted.push(m);
  } catch (e) {
    const code = e instanceof Ec2Error ? e.code : "";
    if (code === "InvalidNetworkInterfaceID.NotFound") result.alreadyGone.push(m);
    else if (code === "InvalidParameterValue" && /in use/i.test((e as Error).message))
      result.kept.push({ eniId: m.eniId, reason: "in use by now (attached since it was listed)" });
    else result.errors.push({ eniId: m.eniId, message: (e as Error).message });
  }
}
