// The ENI stage: get each configured ENI created (or adopted), attached at its device index, with
// DeleteOnTermination and the attributes as configured, and its NIC visible to the OS. Observe (IMDS,
// then EC2 only when IMDS cannot prove convergence), pre-flight every check before the first mutating
// call, then run all ENIs concurrently with bounded waits. Each step is recorded in the state file for
// crash safety. ENIs someone else attaches (attach = "external") are found through IMDS alone
// (eni-external.ts).
// The attachment is awaited where it shows: the hot-plugged NIC and IMDS, never by polling EC2.
import type { _InstanceType, NetworkInterface } from "@aws-sdk/client-ec2";
import type { Config, EniConfig, LayerOrigin } from "../config/model.js";
import { TAG_NO_MANAGE } from "../config/facts.js";
import {
  Ec2Error,
  allPages,
  tagsOf,
  withEc2Retry,
  type Ec2Api,
  type Ec2Factory,
} from "../cloud/ec2.js";
import { InputError, OpError, type Problem } from "../core/errors.js";
import { Deadline, isoTime, monotonicMs, pollUntil, type Backoff } from "../core/deadline.js";
import { readNic, readNicNetwork } from "../cloud/imds.js";
import { listNetdevs, readPciDevice } from "../host/pci.js";
import { lazyCrypto } from "../core/lazy.js";
import { type Stage, type StageContext, type StagePlan } from "./stage.js";
import { type Action, type ActionKind } from "../core/action.js";
import { saveState, type EniAttributes, type EniRecord } from "../host/state.js";
import { ensureNetworkdFile, reloadNetworkd } from "../host/networkd.js";
import {
  afterStep,
  attachAttributes,
  attributeSteps,
  attributesMatch,
  describeStep,
  desiredAttributes,
  hasAttributes,
  modifyInput,
  observedAttributes,
  queueCountProblem,
  type AttributeStep,
} from "./eni-attributes.js";
import { checkExternal, externalNicAt, waitExternal } from "./eni-external.js";

export const TAG_INSTANCE = "eni-dpdk:instance-id";
export const TAG_NAME = "eni-dpdk:name";
export { TAG_NO_MANAGE };
/** When the ENI was created (RFC 3339): `gc` leaves younger ENIs alone for its grace period. */
export const TAG_CREATED_AT = "eni-dpdk:created-at";

export type EniStep =
  | "create"
  | "adopt"
  | "attach"
  | "wait-attached"
  | "set-delete-on-termination"
  | AttributeStep
  | "wait-nic"
  | "wait-external"
  | "use-external";

const ATTRIBUTE_STEPS: readonly EniStep[] = ["set-ena-express", "set-source-dest-check"];

/** What EC2 showed about an ENI we will act on. */
export interface ObservedEni {
  eniId: string;
  mac: string;
  subnetId: string;
  attachmentId?: string;
  attachmentStatus?: string;
  deleteOnTermination?: boolean;
  createdByUs: boolean;
  attributes: EniAttributes;
}

export interface EniPlanItem {
  eni: EniConfig;
  /** in execution order; empty when converged */
  steps: EniStep[];
  /** resolved subnet and security groups (set when a create is planned) */
  subnetId?: string;
  securityGroupIds?: string[];
  clientToken?: string;
  existing?: ObservedEni;
  /** set when nothing must change: the record the host stage gets */
  record?: EniRecord;
}

export interface EniPlan {
  actions: Action[];
  items: EniPlanItem[];
  /** false when IMDS alone proved convergence and EC2 was never consulted */
  usedEc2: boolean;
}

/** Deterministic, so a create retried after a lost response returns the same ENI. */
export function clientToken(instanceId: string, name: string, subnetId: string): string {
  return (
    "eni-dpdk-" +
    lazyCrypto()
      .createHash("sha256")
      .update(`${instanceId}\n${name}\n${subnetId}`)
      .digest("hex")
      .slice(0, 48)
  );
}

function isOurs(n: NetworkInterface, instanceId: string, name?: string): boolean {
  const t = tagsOf(n);
  return t[TAG_INSTANCE] === instanceId && (name === undefined || t[TAG_NAME] === name);
}

function slotOf(n: NetworkInterface): string {
  return `${n.Attachment?.NetworkCardIndex ?? 0}/${n.Attachment?.DeviceIndex}`;
}

function observed(n: NetworkInterface, instanceId: string): ObservedEni {
  return {
    eniId: n.NetworkInterfaceId!,
    mac: (n.MacAddress ?? "").toLowerCase(),
    subnetId: n.SubnetId ?? "",
    attachmentId: n.Attachment?.AttachmentId,
    attachmentStatus: n.Attachment?.Status,
    deleteOnTermination: n.Attachment?.DeleteOnTermination,
    createdByUs: isOurs(n, instanceId),
    attributes: observedAttributes(n),
  };
}

/** The IMDS-only proof: the state file's ENI id sits at the desired slot, with the settings we last applied. */
function provenByImds(ctx: StageContext, e: EniConfig): EniRecord | undefined {
  if (ctx.state.instanceId && ctx.state.instanceId !== ctx.instance.instanceId) return undefined;
  const rec = ctx.state.enis[e.name];
  if (!rec?.attachmentId || rec.attach === "external") return undefined;
  if (!attributesMatch(desiredAttributes(e), rec.attributes)) return undefined;
  const nic = ctx.imdsNics.find((n) => n.interfaceId === rec.eniId);
  if (!nic || nic.deviceNumber !== e.device_index || nic.networkCard !== e.network_card_index)
    return undefined;
  if (rec.deviceIndex !== e.device_index || rec.networkCardIndex !== e.network_card_index)
    return undefined;
  if (rec.deleteOnTermination !== e.delete_on_termination) return undefined;
  // An ENI never changes subnet, so the one recorded at create/adopt (from EC2) is still its subnet.
  if (e.subnet_id ? rec.subnetId !== e.subnet_id : rec.subnetName !== e.subnet_name)
    return undefined;
  return { ...rec, mac: nic.mac.toLowerCase() };
}

function imdsShows(ctx: StageContext, mac: string, e: EniConfig): boolean {
  return ctx.imdsNics.some(
    (n) =>
      n.mac.toLowerCase() === mac &&
      n.deviceNumber === e.device_index &&
      n.networkCard === e.network_card_index,
  );
}

async function describeAll(
  ec2: Ec2Api,
  ctx: StageContext,
  filters: { Name: string; Values: string[] }[],
): Promise<NetworkInterface[]> {
  const pages = await allPages(
    "DescribeNetworkInterfaces",
    (NextToken) => ec2.describeNetworkInterfaces({ Filters: filters, NextToken }),
    { deadline: ctx.deadline, log: ctx.log },
  );
  return pages.flatMap((p) => p.NetworkInterfaces ?? []);
}

/**
 * The ENIs attached to this instance, as DescribeInstances lists them (no tags there). Asked of
 * DescribeInstances rather than a second DescribeNetworkInterfaces: at boot a whole node group
 * asks at once, and two buckets serve it twice as fast as one.
 */
async function attachedEnis(ec2: Ec2Api, ctx: StageContext): Promise<NetworkInterface[]> {
  const pages = await allPages(
    "DescribeInstances",
    (NextToken) =>
      ec2.describeInstances({
        Filters: [{ Name: "instance-id", Values: [ctx.instance.instanceId] }],
        NextToken,
      }),
    { deadline: ctx.deadline, log: ctx.log },
  );
  const nics = pages.flatMap((p) =>
    (p.Reservations ?? []).flatMap((r) =>
      (r.Instances ?? []).flatMap((i) => i.NetworkInterfaces ?? []),
    ),
  );
  return nics.map((n) => {
    const a = n.Attachment;
    return {
      NetworkInterfaceId: n.NetworkInterfaceId,
      MacAddress: n.MacAddress,
      SubnetId: n.SubnetId,
      VpcId: n.VpcId,
      Status: n.Status,
      Attachment: a && {
        AttachmentId: a.AttachmentId,
        DeviceIndex: a.DeviceIndex,
        NetworkCardIndex: a.NetworkCardIndex,
        Status: a.Status,
        DeleteOnTermination: a.DeleteOnTermination,
        InstanceId: ctx.instance.instanceId,
      },
    };
  });
}

export async function planEnis(ctx: StageContext, ec2: Ec2Factory): Promise<EniPlan> {
  const external = await planExternals(
    ctx,
    ec2,
    ctx.config.eni.filter((e) => e.attach === "external"),
  );
  const managed = await planManaged(
    ctx,
    ec2,
    ctx.config.eni.filter((e) => e.attach !== "external"),
  );
  const byName = new Map([...external.items, ...managed.items].map((it) => [it.eni.name, it]));
  const items = ctx.config.eni.map((e) => byName.get(e.name)!);
  return {
    actions: items.flatMap((it) => actionsFor(ctx, it)),
    items,
    usedEc2: external.usedEc2 || managed.usedEc2,
  };
}

/**
 * External ENIs: IMDS shows each at its slot now (checked, recorded) or a wait is planned. Only
 * with external_ec2 and configured attributes not yet known to hold is EC2 asked (one Describe).
 */
async function planExternals(
  ctx: StageContext,
  ec2: Ec2Factory,
  desired: EniConfig[],
): Promise<{ items: EniPlanItem[]; usedEc2: boolean }> {
  const items: EniPlanItem[] = [];
  for (const e of desired) {
    const nic = externalNicAt(ctx.imdsNics, e);
    if (!nic) {
      items.push({ eni: e, steps: ["wait-external"] });
      continue;
    }
    const rec = await checkExternal(ctx, e, nic);
    const prev = ctx.state.enis[e.name];
    const same =
      prev?.attach === "external" &&
      prev.eniId === rec.eniId &&
      prev.mac === rec.mac &&
      prev.deviceIndex === rec.deviceIndex &&
      prev.networkCardIndex === rec.networkCardIndex &&
      prev.subnetId === rec.subnetId;
    if (same && prev.attributes) rec.attributes = prev.attributes;
    items.push({ eni: e, steps: same ? [] : ["use-external"], record: rec });
  }
  const check = items.filter(
    (it) =>
      it.record &&
      it.eni.external_ec2 &&
      !attributesMatch(desiredAttributes(it.eni), it.record.attributes),
  );
  if (!check.length) return { items, usedEc2: false };
  const api = await ec2();
  const out = await withEc2Retry(
    "DescribeNetworkInterfaces",
    () =>
      api.describeNetworkInterfaces({ NetworkInterfaceIds: check.map((it) => it.record!.eniId) }),
    { deadline: ctx.deadline, log: ctx.log },
  );
  const problems: Problem[] = [];
  for (const it of check) {
    const n = out.NetworkInterfaces?.find((x) => x.NetworkInterfaceId === it.record!.eniId);
    const known = n ? observedAttributes(n) : undefined;
    const q = queueCountProblem(desiredAttributes(it.eni), known, it.record!.eniId);
    if (q)
      problems.push({
        source: `EC2 (instance ${ctx.instance.instanceId})`,
        key: `eni.${it.eni.name}.ena_queue_count`,
        message: q,
      });
    it.existing = {
      eniId: it.record!.eniId,
      mac: it.record!.mac,
      subnetId: it.record!.subnetId,
      createdByUs: false,
      attributes: known ?? {},
    };
    it.record!.attributes = known;
    const steps = attributeSteps(desiredAttributes(it.eni), known);
    it.steps = [...it.steps, ...steps];
  }
  if (problems.length) throw new InputError(problems, "fix the [[eni]] configuration");
  return { items, usedEc2: true };
}

/** The ENIs eni-dpdk attaches: proven by IMDS, or observed through EC2 and planned. */
async function planManaged(
  ctx: StageContext,
  ec2: Ec2Factory,
  desired: EniConfig[],
): Promise<{ items: EniPlanItem[]; usedEc2: boolean }> {
  const proven = desired.map((e) => provenByImds(ctx, e));
  if (proven.every((r) => r !== undefined)) {
    if (desired.length)
      ctx.log.debug("ENIs proven by IMDS; EC2 not consulted", { enis: desired.length });
    return {
      items: desired.map((eni, i) => ({ eni, steps: [], record: proven[i] })),
      usedEc2: false,
    };
  }

  const api = await ec2();
  const inst = ctx.instance;
  const retry = { deadline: ctx.deadline, log: ctx.log };
  // What this node will ask of each bucket: a throttled describe now tells the pacer how crowded
  // the creates will be (the same nodes come to them next).
  const unproven = proven.filter((r) => r === undefined).length;
  api.pacer?.expect({
    DescribeNetworkInterfaces: 1,
    DescribeInstances: 1,
    DescribeSubnets: 1,
    DescribeSecurityGroups: 1,
    DescribeInstanceTypes: 1,
    CreateNetworkInterface: unproven,
    AttachNetworkInterface: unproven,
    ModifyNetworkInterfaceAttribute: unproven,
  });
  const [listed, ours] = await Promise.all([
    attachedEnis(api, ctx),
    describeAll(api, ctx, [{ Name: `tag:${TAG_INSTANCE}`, Values: [inst.instanceId] }]),
  ]);
  // Attached ENIs with their tags where they are ours (DescribeInstances shows none).
  const oursById = new Map(ours.map((n) => [n.NetworkInterfaceId, n]));
  const attached = listed.map((n) => {
    const o = oursById.get(n.NetworkInterfaceId);
    return o?.Attachment?.InstanceId === inst.instanceId ? o : n;
  });
  const source = `EC2 (instance ${inst.instanceId}, ${inst.az})`;
  const problems: Problem[] = [];
  const problem = (e: EniConfig, key: string, message: string) =>
    problems.push({ source, key: `eni.${e.name}.${key}`, message });

  const primary = attached.find(
    (n) => n.Attachment?.DeviceIndex === 0 && (n.Attachment?.NetworkCardIndex ?? 0) === 0,
  );
  const vpcId = primary?.VpcId ?? (await readNicNetwork(ctx.imds, inst.primaryMac)).vpcId;
  if (!vpcId)
    throw new OpError(
      `cannot tell the VPC of ${inst.instanceId}: no primary ENI in DescribeNetworkInterfaces or IMDS`,
      "check the instance in the EC2 console",
    );

  // Classify each ENI against what is attached now.
  const items: EniPlanItem[] = [];
  for (const [i, e] of desired.entries()) {
    if (proven[i]) {
      items.push({ eni: e, steps: [], record: proven[i] });
      continue;
    }
    const slot = `${e.network_card_index}/${e.device_index}`;
    const atSlot = attached.find((n) => slotOf(n) === slot);
    const mineElsewhere = attached.find(
      (n) => isOurs(n, inst.instanceId, e.name) && slotOf(n) !== slot,
    );
    if (atSlot && !isOurs(atSlot, inst.instanceId, e.name)) {
      const t = tagsOf(atSlot);
      const whose =
        t[TAG_NAME] && t[TAG_INSTANCE] === inst.instanceId
          ? `eni-dpdk's ENI "${t[TAG_NAME]}"`
          : "an ENI eni-dpdk did not create";
      problem(
        e,
        "device_index",
        `conflict: device index ${e.device_index} on network card ${e.network_card_index} already holds ${atSlot.NetworkInterfaceId} (${whose}); eni-dpdk never touches it. Choose a free device_index, detach that ENI yourself, or set attach = "external" if the launch template or a lifecycle hook attaches it for eni-dpdk to bind`,
      );
      continue;
    }
    if (mineElsewhere) {
      problem(
        e,
        "device_index",
        `${mineElsewhere.NetworkInterfaceId} (created by eni-dpdk for "${e.name}") is attached at network card ${mineElsewhere.Attachment?.NetworkCardIndex ?? 0}, device index ${mineElsewhere.Attachment?.DeviceIndex}, not at the configured ${e.network_card_index}/${e.device_index}; set device_index back or detach it (aws ec2 detach-network-interface)`,
      );
      continue;
    }
    if (atSlot) {
      const ex = observed(atSlot, inst.instanceId);
      const steps: EniStep[] = [];
      if (ex.attachmentStatus !== "attached") steps.push("wait-attached");
      if (ex.deleteOnTermination !== e.delete_on_termination)
        steps.push("set-delete-on-termination");
      const q = queueCountProblem(desiredAttributes(e), ex.attributes, ex.eniId);
      if (q) problem(e, "ena_queue_count", q);
      steps.push(...attributeSteps(desiredAttributes(e), ex.attributes));
      if (!imdsShows(ctx, ex.mac, e)) steps.push("wait-nic");
      items.push({ eni: e, steps, existing: ex, subnetId: ex.subnetId });
      continue;
    }
    const steps: EniStep[] = ["create", "attach", "wait-attached"];
    if (e.delete_on_termination) steps.push("set-delete-on-termination");
    // A new ENI has source/dest check on; ENA Express and the queue count go on the attach.
    if (e.source_dest_check === false) steps.push("set-source-dest-check");
    steps.push("wait-nic");
    items.push({ eni: e, steps });
  }

  // Pre-flight for ENIs still to attach: subnet, security groups, AZ, limits.
  const toAttach = items.filter((it) => it.steps.includes("attach"));
  if (toAttach.length) {
    const subnetIds = [...new Set(toAttach.map((it) => it.eni.subnet_id).filter(Boolean))];
    const subnetNames = [...new Set(toAttach.map((it) => it.eni.subnet_name).filter(Boolean))];
    const sgIds = [...new Set(toAttach.flatMap((it) => it.eni.security_group_ids))];
    const sgNames = [...new Set(toAttach.flatMap((it) => it.eni.security_group_names))];
    const [byId, byName, sgById, sgByGroupName, types] = await Promise.all([
      subnetIds.length
        ? withEc2Retry(
            "DescribeSubnets",
            () => api.describeSubnets({ Filters: [{ Name: "subnet-id", Values: subnetIds }] }),
            retry,
          )
        : undefined,
      subnetNames.length
        ? withEc2Retry(
            "DescribeSubnets",
            () =>
              api.describeSubnets({
                Filters: [
                  { Name: "tag:Name", Values: subnetNames },
                  { Name: "vpc-id", Values: [vpcId] },
                ],
              }),
            retry,
          )
        : undefined,
      sgIds.length
        ? withEc2Retry(
            "DescribeSecurityGroups",
            () => api.describeSecurityGroups({ Filters: [{ Name: "group-id", Values: sgIds }] }),
            retry,
          )
        : undefined,
      sgNames.length
        ? withEc2Retry(
            "DescribeSecurityGroups",
            () =>
              api.describeSecurityGroups({
                Filters: [
                  { Name: "group-name", Values: sgNames },
                  { Name: "vpc-id", Values: [vpcId] },
                ],
              }),
            retry,
          )
        : undefined,
      withEc2Retry(
        "DescribeInstanceTypes",
        () => api.describeInstanceTypes({ InstanceTypes: [inst.instanceType as _InstanceType] }),
        retry,
      ),
    ]);
    // Security groups named only by a Name tag: a second look, only when needed.
    const missingSgNames = sgNames.filter(
      (n) => !(sgByGroupName?.SecurityGroups ?? []).some((g) => g.GroupName === n),
    );
    const sgByTag = missingSgNames.length
      ? await withEc2Retry(
          "DescribeSecurityGroups",
          () =>
            api.describeSecurityGroups({
              Filters: [
                { Name: "tag:Name", Values: missingSgNames },
                { Name: "vpc-id", Values: [vpcId] },
              ],
            }),
          retry,
        )
      : undefined;

    for (const it of toAttach) {
      const e = it.eni;
      // subnet
      if (e.subnet_id) {
        const s = byId?.Subnets?.find((x) => x.SubnetId === e.subnet_id);
        if (!s)
          problem(
            e,
            "subnet_id",
            `subnet ${e.subnet_id} does not exist (DescribeSubnets found nothing)`,
          );
        else if (s.VpcId !== vpcId)
          problem(
            e,
            "subnet_id",
            `subnet ${e.subnet_id} is in ${s.VpcId}, but the instance is in ${vpcId}`,
          );
        else if (s.AvailabilityZone !== inst.az) {
          problem(
            e,
            "subnet_id",
            `subnet ${e.subnet_id} is in ${s.AvailabilityZone}, but the instance is in ${inst.az}; an ENI can only attach in its own AZ`,
          );
        } else it.subnetId = s.SubnetId;
      } else {
        const named = (byName?.Subnets ?? []).filter((s) =>
          (s.Tags ?? []).some((t) => t.Key === "Name" && t.Value === e.subnet_name),
        );
        const here = named.filter((s) => s.AvailabilityZone === inst.az);
        if (here.length === 1) it.subnetId = here[0].SubnetId;
        else if (here.length > 1) {
          problem(
            e,
            "subnet_name",
            `ambiguous: ${here.length} subnets named "${e.subnet_name}" in ${vpcId}/${inst.az} (${here.map((s) => s.SubnetId).join(", ")}); use subnet_id`,
          );
        } else if (named.length) {
          problem(
            e,
            "subnet_name",
            `subnet "${e.subnet_name}" exists only in ${named.map((s) => `${s.AvailabilityZone} (${s.SubnetId})`).join(", ")}, but the instance is in ${inst.az}; an ENI can only attach in its own AZ`,
          );
        } else problem(e, "subnet_name", `no subnet with tag Name="${e.subnet_name}" in ${vpcId}`);
      }
      // security groups
      const sgs: string[] = [];
      for (const id of e.security_group_ids) {
        const g = sgById?.SecurityGroups?.find((x) => x.GroupId === id);
        if (!g) problem(e, "security_group_ids", `security group ${id} does not exist`);
        else if (g.VpcId !== vpcId)
          problem(
            e,
            "security_group_ids",
            `security group ${id} is in ${g.VpcId}, but the instance is in ${vpcId}`,
          );
        else sgs.push(id);
      }
      for (const name of e.security_group_names) {
        let found = (sgByGroupName?.SecurityGroups ?? []).filter((g) => g.GroupName === name);
        if (!found.length)
          found = (sgByTag?.SecurityGroups ?? []).filter((g) =>
            (g.Tags ?? []).some((t) => t.Key === "Name" && t.Value === name),
          );
        if (found.length === 1) sgs.push(found[0].GroupId!);
        else if (found.length > 1)
          problem(
            e,
            "security_group_names",
            `ambiguous: ${found.length} security groups named "${name}" in ${vpcId} (${found.map((g) => g.GroupId).join(", ")}); use security_group_ids`,
          );
        else
          problem(
            e,
            "security_group_names",
            `no security group with group name or tag Name "${name}" in ${vpcId}`,
          );
      }
      it.securityGroupIds = [...new Set(sgs)];
    }

    // limits: everything attached now plus what we add, overall and per network card
    const net = types.InstanceTypes?.[0]?.NetworkInfo;
    for (const it of toAttach) {
      const e = it.eni;
      if (e.ena_express && net?.EnaSrdSupported === false)
        problem(
          e,
          "ena_express",
          `${inst.instanceType} does not support ENA Express (DescribeInstanceTypes EnaSrdSupported=false); remove ena_express or use an instance type that has it`,
        );
      if (e.ena_queue_count === undefined || !net) continue;
      const card = net.NetworkCards?.find((c) => c.NetworkCardIndex === e.network_card_index);
      const max = card?.MaximumEnaQueueCountPerInterface;
      if (net.FlexibleEnaQueuesSupport !== "supported" || max === undefined)
        problem(
          e,
          "ena_queue_count",
          `${inst.instanceType} does not support flexible ENA queues (DescribeInstanceTypes FlexibleEnaQueuesSupport=${net.FlexibleEnaQueuesSupport ?? "absent"}); remove ena_queue_count`,
        );
      else if (e.ena_queue_count > max)
        problem(
          e,
          "ena_queue_count",
          `${e.ena_queue_count} exceeds ${inst.instanceType}'s maximum of ${max} ENA queues per interface on network card ${e.network_card_index}`,
        );
    }
    if (net?.MaximumNetworkInterfaces !== undefined) {
      const total = attached.length + toAttach.length;
      if (total > net.MaximumNetworkInterfaces) {
        for (const it of toAttach) {
          problem(
            it.eni,
            "device_index",
            `limit exceeded: ${inst.instanceType} takes at most ${net.MaximumNetworkInterfaces} ENIs; ${attached.length} attached + ${toAttach.length} to attach = ${total}. Use fewer ENIs or a larger instance type`,
          );
        }
      }
      const cards = net.NetworkCards ?? [];
      for (const it of toAttach) {
        const card = it.eni.network_card_index;
        const max = cards.find((c) => c.NetworkCardIndex === card)?.MaximumNetworkInterfaces;
        if (card >= (net.MaximumNetworkCards ?? 1)) {
          problem(
            it.eni,
            "network_card_index",
            `${inst.instanceType} has ${net.MaximumNetworkCards ?? 1} network card(s); index ${card} does not exist`,
          );
          continue;
        }
        const onCard =
          attached.filter((n) => (n.Attachment?.NetworkCardIndex ?? 0) === card).length +
          toAttach.filter((x) => x.eni.network_card_index === card).length;
        if (max !== undefined && onCard > max && total <= net.MaximumNetworkInterfaces) {
          problem(
            it.eni,
            "network_card_index",
            `limit exceeded: network card ${card} of ${inst.instanceType} takes at most ${max} ENIs; this would make ${onCard}`,
          );
        }
      }
    }
    if (!problems.length) {
      // adopt an available ENI created earlier for this instance and name in the same subnet (crash before attach)
      for (const it of toAttach) {
        const candidates = ours
          .filter(
            (n) =>
              !n.Attachment && n.Status === "available" && isOurs(n, inst.instanceId, it.eni.name),
          )
          .sort((a, b) => (a.NetworkInterfaceId! < b.NetworkInterfaceId! ? -1 : 1));
        const same = candidates.find((n) => n.SubnetId === it.subnetId);
        for (const n of candidates.filter((n) => n !== same)) {
          ctx.log.warn("an available ENI eni-dpdk created for this instance is left unused", {
            eni: it.eni.name,
            eni_id: n.NetworkInterfaceId,
            subnet: n.SubnetId,
          });
        }
        if (same) {
          it.existing = observed(same, inst.instanceId);
          it.steps[0] = "adopt";
          if (it.existing.attributes.sourceDestCheck === it.eni.source_dest_check)
            it.steps = it.steps.filter((s) => s !== "set-source-dest-check");
        } else {
          it.clientToken = clientToken(inst.instanceId, it.eni.name, it.subnetId!);
        }
      }
    }
  }
  if (problems.length)
    throw new InputError(
      problems,
      "fix the [[eni]] configuration or the instance, then run `eni-dpdk apply` again",
    );

  for (const it of items) {
    if (it.steps.length === 0 && it.existing) it.record = recordFor(it, it.existing);
  }
  return { items, usedEc2: true };
}

function recordFor(it: EniPlanItem, ex: ObservedEni): EniRecord {
  return {
    name: it.eni.name,
    eniId: ex.eniId,
    mac: ex.mac,
    deviceIndex: it.eni.device_index,
    networkCardIndex: it.eni.network_card_index,
    subnetId: ex.subnetId,
    attachmentId: ex.attachmentId,
    createdByUs: ex.createdByUs,
    deleteOnTermination: ex.deleteOnTermination,
    ...(it.eni.subnet_name ? { subnetName: it.eni.subnet_name } : {}),
    attributes: ex.attributes,
  };
}

function actionsFor(ctx: StageContext, it: EniPlanItem): Action[] {
  const e = it.eni;
  const id = it.existing?.eniId ?? "the new ENI";
  const a = (kind: ActionKind, detail: string): Action => ({
    stage: "eni",
    kind,
    target: e.name,
    detail,
  });
  return it.steps.flatMap((s): Action[] => {
    switch (s) {
      case "create":
        return [
          a(
            "create",
            `CreateNetworkInterface in ${it.subnetId} with ${it.securityGroupIds?.join(",")}, tagged ${TAG_INSTANCE}=${ctx.instance.instanceId} ${TAG_NAME}=${e.name} ${TAG_NO_MANAGE}=true`,
          ),
        ];
      case "adopt":
        return [
          a(
            "adopt",
            `reuse ${id}, available and created by eni-dpdk for this instance earlier (a run stopped before attaching it)`,
          ),
        ];
      case "attach":
        return [
          a(
            "attach",
            `AttachNetworkInterface ${id} at device index ${e.device_index}, network card ${e.network_card_index}`,
          ),
        ];
      case "wait-attached":
        return it.steps.includes("attach")
          ? []
          : [
              a(
                "wait-attached",
                `${id} is "${it.existing?.attachmentStatus}"; wait for "attached"`,
              ),
            ];
      case "set-delete-on-termination":
        return [
          a(
            "set-delete-on-termination",
            `ModifyNetworkInterfaceAttribute ${id} DeleteOnTermination=${e.delete_on_termination}${it.existing?.attachmentId ? ` (now ${it.existing.deleteOnTermination})` : ""}`,
          ),
        ];
      case "set-ena-express":
      case "set-source-dest-check":
        return [
          a(
            s,
            `ModifyNetworkInterfaceAttribute ${id} ${describeStep(s, e, it.existing?.attributes)}`,
          ),
        ];
      case "wait-nic":
        return [
          a(
            "wait-nic",
            `wait for the NIC with ${it.existing?.mac ? `MAC ${it.existing.mac}` : "its MAC"} under /sys/class/net and IMDS device-number ${e.device_index}`,
          ),
        ];
      case "wait-external":
        return [
          a(
            "wait-external",
            `wait for the external ENI at network card ${e.network_card_index}, device index ${e.device_index} (the launch template or a lifecycle hook attaches it); found through IMDS, no EC2 call`,
          ),
        ];
      case "use-external":
        return [
          a(
            "use-external",
            `external ENI ${it.record?.eniId} (MAC ${it.record?.mac}) at network card ${e.network_card_index}, device index ${e.device_index}, found through IMDS; recorded as external (never detached or deleted)`,
          ),
        ];
    }
  });
}

// ---- apply ---------------------------------------------------------------------------------------

/**
 * The ENIs, each as far as it got. One that failed (an external ENI that never came, an attach EC2
 * refused) is in `failed`, and the others go on to be bound: one missing ENI does not leave a node
 * without every DPDK device. Bad input found on the way (InputError) is thrown, as ever: nothing
 * is bound after it.
 */
export async function applyEachEni(
  ctx: StageContext,
  ec2: Ec2Factory,
  plan: EniPlan,
): Promise<{ enis: EniRecord[]; failed: FailedEni[] }> {
  const records = new Map<string, EniRecord>();
  for (const it of plan.items) if (it.record) records.set(it.eni.name, it.record);
  if (ctx.dryRun) return { enis: [...records.values()], failed: [] };

  // One writer at a time: concurrent ENIs would otherwise race on the state file's temp name.
  let saving: Promise<void> = Promise.resolve();
  const persist = () => (saving = saving.then(() => saveState(ctx.host, ctx.state)));

  ctx.state.instanceId = ctx.instance.instanceId;
  let changed = false;
  for (const r of records.values()) {
    keepOrigins(ctx, r);
    if (JSON.stringify(ctx.state.enis[r.name]) !== JSON.stringify(r)) {
      ctx.state.enis[r.name] = r;
      changed = true;
    }
  }
  const work = plan.items.filter((it) => it.steps.length > 0);
  if (changed || work.length) await persist();
  const inConfigOrder = () => ctx.config.eni.map((e) => records.get(e.name)!).filter(Boolean);
  if (!work.length) return { enis: inConfigOrder(), failed: [] };

  // The SDK loads only when an ENI needs EC2: external ENIs usually never do.
  let apiP: Promise<Ec2Api> | undefined;
  const api = () => (apiP ??= ec2());
  const results = await Promise.allSettled(
    work.map((it) =>
      it.eni.attach === "external"
        ? runExternal(ctx, api, it, persist)
        : api().then((a) => runItem(ctx, a, it, persist)),
    ),
  );
  await saving;
  const failed = results.flatMap((r, i) =>
    r.status === "rejected" ? [{ name: work[i].eni.name, err: r.reason as Error }] : [],
  );
  results.forEach((r, i) => r.status === "fulfilled" && records.set(work[i].eni.name, r.value));
  const bad = failed.find((f) => f.err instanceof InputError);
  if (bad) throw bad.err;
  // A failed ENI that was attached when the pass began (a new attribute EC2 refused, say) is
  // handed on as it was recorded: its device stays bound and advertised. One that was not (an
  // external ENI that never came, an attach that failed) is not: there is nothing to bind.
  const attachedAtStart = new Set(ctx.imdsNics.map((n) => n.mac.toLowerCase()));
  for (const f of failed) {
    const was = ctx.state.enis[f.name];
    if (was?.mac && attachedAtStart.has(was.mac.toLowerCase())) records.set(f.name, was);
    else records.delete(f.name);
  }
  return { enis: inConfigOrder(), failed };
}

interface FailedEni {
  name: string;
  err: Error;
}

/** The ENIs that failed as one error: one ENI's own, named when its message does not say it. */
function eniFailure(failed: FailedEni[]): Error {
  if (failed.length > 1)
    return new OpError(
      `${failed.length} ENIs failed:\n` +
        failed.map((f) => `  ${f.name}: ${f.err.message}`).join("\n"),
      (failed[0].err as OpError).hint ?? "see the log lines above",
      { enis: failed.map((f) => f.name) },
    );
  const [f] = failed;
  if (f.err.message.includes(`"${f.name}"`)) return f.err;
  return new OpError(
    `ENI "${f.name}": ${f.err.message}`,
    f.err instanceof OpError ? f.err.hint : "see the log lines above",
    f.err instanceof OpError ? f.err.fields : {},
    { cause: f.err },
  );
}

/** Every ENI ready, or the first failure thrown (benchmarks and tests of the stage alone). */
export async function applyEnis(
  ctx: StageContext,
  ec2: Ec2Factory,
  plan: EniPlan,
): Promise<EniRecord[]> {
  const { enis, failed } = await applyEachEni(ctx, ec2, plan);
  if (failed.length === 1) throw failed[0].err;
  if (failed.length) throw eniFailure(failed);
  return enis;
}

/**
 * An external ENI: wait for it through IMDS (bounded), check and record it, keep networkd off it;
 * with external_ec2, set the attributes that differ. No EC2 call otherwise.
 */
async function runExternal(
  ctx: StageContext,
  api: () => Promise<Ec2Api>,
  it: EniPlanItem,
  persist: () => Promise<void>,
): Promise<EniRecord> {
  const e = it.eni;
  const log = ctx.log.child({ eni: e.name });
  const rec = it.record ?? (await waitExternal(ctx, e));
  const prev = ctx.state.enis[e.name];
  if (!rec.attributes && prev?.attach === "external" && prev.eniId === rec.eniId && prev.attributes)
    rec.attributes = prev.attributes;
  ctx.state.enis[e.name] = keepOrigins(ctx, rec);
  // As for an ENI we attach: networkd must leave it alone as soon as its MAC is known.
  if (e.dpdk.enabled && (await ensureNetworkdFile(ctx.host, ctx.state, e.name, rec.mac)))
    await reloadNetworkd(ctx.host, log);
  await persist();
  let steps = it.steps.filter((s): s is AttributeStep => ATTRIBUTE_STEPS.includes(s));
  const desired = desiredAttributes(e);
  if (
    e.external_ec2 &&
    hasAttributes(e) &&
    it.steps.includes("wait-external") &&
    !attributesMatch(desired, rec.attributes)
  ) {
    const n = await describeOne(await api(), ctx, rec.eniId);
    rec.attributes = n ? observedAttributes(n) : undefined;
    const q = queueCountProblem(desired, rec.attributes, rec.eniId);
    if (q)
      throw new InputError(
        [
          {
            source: `EC2 (instance ${ctx.instance.instanceId})`,
            key: `eni.${e.name}.ena_queue_count`,
            message: q,
          },
        ],
        "fix the [[eni]] configuration or the launch template",
      );
    steps = attributeSteps(desired, rec.attributes);
  }
  for (const step of steps) {
    await withEc2Retry(
      "ModifyNetworkInterfaceAttribute",
      async () => (await api()).modifyNetworkInterfaceAttribute(modifyInput(rec.eniId, step, e)),
      { deadline: ctx.deadline, log: ctx.log },
    );
    rec.attributes = afterStep(rec.attributes, step, e);
    log.info("set ENI attribute", { eni_id: rec.eniId, step });
    await persist();
  }
  log.info("external ENI ready", { eni_id: rec.eniId, mac: rec.mac });
  return rec;
}

async function runItem(
  ctx: StageContext,
  api: Ec2Api,
  it: EniPlanItem,
  persist: () => Promise<void>,
): Promise<EniRecord> {
  const e = it.eni;
  const inst = ctx.instance;
  const retry = { deadline: ctx.deadline, log: ctx.log };
  const log = ctx.log.child({ eni: e.name });
  let rec: EniRecord;
  if (it.steps[0] === "create") {
    const out = await withEc2Retry(
      "CreateNetworkInterface",
      () =>
        api.createNetworkInterface({
          SubnetId: it.subnetId,
          Groups: it.securityGroupIds,
          Description: e.description || `eni-dpdk ${e.name} for ${inst.instanceId}`,
          ClientToken: it.clientToken,
          TagSpecifications: [
            {
              ResourceType: "network-interface",
              Tags: [
                ...Object.entries(e.tags).map(([Key, Value]) => ({ Key, Value })),
                { Key: TAG_INSTANCE, Value: inst.instanceId },
                { Key: TAG_NAME, Value: e.name },
                { Key: TAG_NO_MANAGE, Value: "true" },
                { Key: TAG_CREATED_AT, Value: isoTime() },
              ],
            },
          ],
        }),
      retry,
    );
    const n = out.NetworkInterface!;
    rec = {
      name: e.name,
      eniId: n.NetworkInterfaceId!,
      mac: (n.MacAddress ?? "").toLowerCase(),
      deviceIndex: e.device_index,
      networkCardIndex: e.network_card_index,
      subnetId: n.SubnetId ?? it.subnetId!,
      createdByUs: true,
      ...(e.subnet_name ? { subnetName: e.subnet_name } : {}),
      ...(n.SourceDestCheck !== undefined
        ? { attributes: { sourceDestCheck: n.SourceDestCheck } }
        : {}),
    };
    log.info("created ENI", { eni_id: rec.eniId, mac: rec.mac, subnet: rec.subnetId });
  } else {
    const ex = it.existing!;
    rec = recordFor(it, ex);
    if (it.steps[0] === "adopt")
      log.info("adopting ENI created earlier", { eni_id: ex.eniId, subnet: ex.subnetId });
  }
  ctx.state.enis[e.name] = keepOrigins(ctx, rec);
  if (e.dpdk.enabled && rec.mac && it.steps.includes("attach")) {
    // Before the NIC exists: networkd must already have our Unmanaged=yes file when the link
    // appears, or it configures it (nodeadm's template adds a default route) and the route guard
    // then refuses to bind it on this first boot.
    if (await ensureNetworkdFile(ctx.host, ctx.state, e.name, rec.mac))
      await reloadNetworkd(ctx.host, log);
  }
  await persist();

  if (it.steps.includes("attach")) {
    try {
      const out = await withEc2Retry(
        "AttachNetworkInterface",
        () =>
          api.attachNetworkInterface({
            NetworkInterfaceId: rec.eniId,
            InstanceId: inst.instanceId,
            DeviceIndex: e.device_index,
            // Always explicit: multi-card instances fail without it (cilium PR #42512).
            NetworkCardIndex: e.network_card_index,
            ...attachAttributes(e),
          }),
        retry,
      );
      rec.attachmentId = out.AttachmentId;
    } catch (err) {
      // A retried attach whose first try took effect answers "in use": accept it if it is ours, where we want it.
      if (!(err instanceof Ec2Error) || err.code === "RequestLimitExceeded") throw err;
      const n = await describeOne(api, ctx, rec.eniId);
      const a = n?.Attachment;
      if (
        a?.InstanceId !== inst.instanceId ||
        a.DeviceIndex !== e.device_index ||
        (a.NetworkCardIndex ?? 0) !== e.network_card_index
      )
        throw err;
      rec.attachmentId = a.AttachmentId;
    }
    rec.deleteOnTermination = false;
    const d = desiredAttributes(e);
    rec.attributes = {
      ...rec.attributes,
      ...(d.enaSrd !== undefined ? { enaSrd: d.enaSrd, enaSrdUdp: d.enaSrdUdp ?? false } : {}),
      ...(d.enaQueueCount !== undefined ? { enaQueueCount: d.enaQueueCount } : {}),
    };
    await persist();
    log.info("attaching ENI", {
      eni_id: rec.eniId,
      device_index: e.device_index,
      network_card: e.network_card_index,
      attachment_id: rec.attachmentId,
    });
  }

  // DeleteOnTermination as soon as the attach is accepted (the VPC CNI does the same): the window
  // in which a terminated node leaves its ENI behind is one call long, not the attachment's delay.
  if (it.steps.includes("set-delete-on-termination")) {
    await withEc2Retry(
      "ModifyNetworkInterfaceAttribute",
      () =>
        api.modifyNetworkInterfaceAttribute({
          NetworkInterfaceId: rec.eniId,
          Attachment: {
            AttachmentId: rec.attachmentId,
            DeleteOnTermination: e.delete_on_termination,
          },
        }),
      retry,
    );
    log.info("set DeleteOnTermination", { eni_id: rec.eniId, value: e.delete_on_termination });
  }
  rec.deleteOnTermination = e.delete_on_termination;
  await persist();

  for (const step of it.steps.filter((s): s is AttributeStep => ATTRIBUTE_STEPS.includes(s))) {
    await withEc2Retry(
      "ModifyNetworkInterfaceAttribute",
      () => api.modifyNetworkInterfaceAttribute(modifyInput(rec.eniId, step, e)),
      retry,
    );
    rec.attributes = afterStep(rec.attributes, step, e);
    log.info("set ENI attribute", { eni_id: rec.eniId, step });
    await persist();
  }

  if (it.steps.includes("wait-attached") || it.steps.includes("wait-nic")) {
    const ifname = await waitFor(
      ctx,
      api,
      rec,
      `a NIC with MAC ${rec.mac} (${rec.eniId}, ${e.name}) under ${ctx.host.path("/sys/class/net")}`,
      async () => {
        const dev = (await listNetdevs(ctx.host)).find((n) => n.mac === rec.mac.toLowerCase());
        if (dev) return { done: dev.ifname };
        // Bound to a DPDK driver by an earlier run, it has no netdev, and never will: it is there.
        const bound = ctx.state.bindings[rec.mac.toLowerCase()];
        const driver =
          bound && (await ctx.host.linkName(`/sys/bus/pci/devices/${bound.bdf}/driver`));
        return bound && driver === bound.driver
          ? { done: `${bound.bdf} (on ${driver})` }
          : { state: "no such NIC yet" };
      },
      { firstMs: 50, maxMs: 500, growth: 1.6, jitter: 0.2 },
    );
    await waitFor(
      ctx,
      api,
      rec,
      `IMDS to show ${rec.mac} (${e.name}) at device-number ${e.device_index}, network-card ${e.network_card_index}`,
      async () => {
        const nic = await readNic(ctx.imds, rec.mac);
        if (nic && nic.deviceNumber === e.device_index && nic.networkCard === e.network_card_index)
          return { done: nic };
        return {
          state: nic
            ? `device-number ${nic.deviceNumber}, network-card ${nic.networkCard}`
            : "MAC not listed",
        };
      },
      { firstMs: 100, maxMs: 1000, growth: 1.6, jitter: 0.2 },
    );
    log.info("ENI ready", { eni_id: rec.eniId, mac: rec.mac, ifname });
  }
  return rec;
}

async function describeOne(
  api: Ec2Api,
  ctx: StageContext,
  eniId: string,
): Promise<NetworkInterface | undefined> {
  const out = await withEc2Retry(
    "DescribeNetworkInterfaces",
    () => api.describeNetworkInterfaces({ NetworkInterfaceIds: [eniId] }),
    {
      deadline: ctx.deadline,
      log: ctx.log,
    },
  );
  return out.NetworkInterfaces?.[0];
}

/**
 * Wait until `probe` is done, bounded by the stage deadline. On timeout say what was last seen, and
 * what EC2 says of the attachment: one describe, made only then and only if it is due at once.
 */
async function waitFor<T>(
  ctx: StageContext,
  api: Ec2Api,
  rec: EniRecord,
  what: string,
  probe: () => Promise<{ done: T } | { state: string }>,
  backoff: Backoff,
): Promise<T> {
  const t0 = monotonicMs();
  let last = "not polled yet";
  const r = await pollUntil(
    async () => {
      const x = await probe();
      if ("done" in x) return x;
      last = x.state;
      return undefined;
    },
    { deadline: ctx.deadline, backoff },
  );
  if (r) return r.done;
  const attachment = await withEc2Retry(
    "DescribeNetworkInterfaces",
    () => api.describeNetworkInterfaces({ NetworkInterfaceIds: [rec.eniId] }),
    { deadline: new Deadline(2000) },
  ).then(
    (o) => o.NetworkInterfaces?.[0]?.Attachment?.Status ?? "none (detached)",
    () => undefined,
  );
  const stuck = attachment !== undefined && attachment !== "attached";
  throw new OpError(
    `timed out after ${((monotonicMs() - t0) / 1000).toFixed(1)} s waiting for ${what}; last seen: ${last}${attachment ? `; EC2 shows its attachment as "${attachment}"` : ""}`,
    stuck
      ? "check the ENI in the EC2 console (a stuck attachment may need `aws ec2 detach-network-interface --force`), then run `eni-dpdk apply` again; raise service.timeout_seconds if EC2 is slow"
      : "check the ENI in the EC2 console and the instance's kernel log (dmesg) for the hot-plug; raise service.timeout_seconds if EC2 is slow",
    { waited_ms: Math.round(monotonicMs() - t0), eni_id: rec.eniId },
  );
}

/** ENIs the state already knows with their MACs: what a dry run hands the host stage (nothing is created). */
function knownEnis(ctx: StageContext): EniRecord[] {
  return ctx.config.eni
    .map((e) => ctx.state.enis[e.name])
    .filter((r): r is EniRecord => !!r && !!r.mac);
}

/** The record with the sources that configure its ENI in this pass (none known: as it was). */
function keepOrigins(ctx: StageContext, rec: EniRecord): EniRecord {
  const from = ctx.eniOrigins?.[rec.name];
  if (from?.length) rec.configuredBy = from;
  return rec;
}

/** How a warning names a source that configured an ENI. */
function describeOrigin(o: LayerOrigin): string {
  switch (o.source) {
    case "nodeeni":
      return `NodeENI ${o.name}, now deleted or no longer selecting this node`;
    case "tags":
      return `the instance tag ${o.name}`;
    case "file": // its path
    case "user-data": // its part: "user-data part 2 (application/eni-dpdk+toml)"
    case "env":
      return o.name;
  }
}

/** The names the config has and the MACs IMDS lists (lowercase). */
function configuredAndListed(ctx: StageContext): {
  configured: Set<string>;
  attached: Set<string>;
} {
  return {
    configured: new Set(ctx.config.eni.map((e) => e.name)),
    attached: new Set(ctx.imdsNics.map((n) => n.mac.toLowerCase())),
  };
}

/** The records of ENIs that no source configures (with a MAC), each with whether IMDS lists it. */
function unconfiguredRecords(
  ctx: StageContext,
  { configured, attached } = configuredAndListed(ctx),
): { rec: EniRecord; mac: string; attached: boolean }[] {
  return Object.values(ctx.state.enis).flatMap((rec) => {
    const mac = rec.mac.toLowerCase();
    return configured.has(rec.name) || !mac ? [] : [{ rec, mac, attached: attached.has(mac) }];
  });
}

/**
 * The ENIs on record that no source configures any more (taken out of the file, a NodeENI deleted
 * or no longer selecting this node) and that are still attached. eni-dpdk leaves them as they are:
 * a removal never detaches, deletes or unbinds, since an app may still use the device. Each warning
 * says where the ENI was left and what releases it.
 */
export function leftOverEnis(ctx: StageContext): string[] {
  const out: string[] = [];
  for (const { rec: r, mac, attached } of unconfiguredRecords(ctx)) {
    if (!attached) continue;
    const b = ctx.state.bindings[mac];
    const device = b
      ? `; its device ${b.bdf} stays on ${b.driver}, and no SR-IOV resource of eni-dpdk's offers it now: \`eni-dpdk unbind ${r.name}\` returns it to ${b.originalDriver || "its kernel driver"}`
      : "";
    const release =
      r.attach === "external"
        ? "attached by the launch template or lifecycle hook that owns it"
        : `attached: \`aws ec2 detach-network-interface --attachment-id ${r.attachmentId ?? "<its attachment>"}\`${r.createdByUs ? ` then \`aws ec2 delete-network-interface --network-interface-id ${r.eniId}\`` : ""} release it`;
    const was = r.configuredBy?.length
      ? ` (it came from ${r.configuredBy.map(describeOrigin).join("; ")})`
      : "";
    out.push(
      `ENI ${r.eniId} ("${r.name}", MAC ${mac}) is no longer configured${was}; eni-dpdk left it as it was, ${release}${device}`,
    );
  }
  return out;
}

/** An ENI gone from this instance that no source configures: its records, to be forgotten. */
export interface ReleasedEni {
  name?: string;
  eniId?: string;
  mac: string;
  /** the device it was bound on, now absent from sysfs */
  bdf?: string;
}

/**
 * The recorded ENIs (and bindings) that no source configures, that IMDS no longer lists and whose
 * recorded device is gone from sysfs: released (detached, as the left-over warning says, or by
 * someone else). Their records would otherwise stay for ever: `status` would show them missing and
 * every boot's early rebind would wait for a device that cannot come back. A record whose device
 * is still there is kept, whatever IMDS says.
 */
export async function releasedEnis(ctx: StageContext): Promise<ReleasedEni[]> {
  const view = configuredAndListed(ctx);
  const { configured, attached } = view;
  const deviceGone = async (mac: string) => {
    const b = ctx.state.bindings[mac];
    return !b || !(await readPciDevice(ctx.host, b.bdf));
  };
  const out: ReleasedEni[] = [];
  for (const { rec: r, mac, attached: listed } of unconfiguredRecords(ctx, view))
    if (!listed && (await deviceGone(mac)))
      out.push({ name: r.name, eniId: r.eniId, mac, bdf: ctx.state.bindings[mac]?.bdf });
  // a binding without an ENI record (a `bind` by hand) of a device that left
  const recorded = new Set(Object.values(ctx.state.enis).map((r) => r.mac.toLowerCase()));
  for (const [mac, b] of Object.entries(ctx.state.bindings)) {
    if (recorded.has(mac) || configured.has(b.eniName) || attached.has(mac)) continue;
    if (await deviceGone(mac))
      out.push({ ...(b.eniName ? { name: b.eniName } : {}), mac, bdf: b.bdf });
  }
  return out;
}

function forgetAction(r: ReleasedEni): Action {
  const what = [r.eniId, `MAC ${r.mac}`].filter(Boolean).join(", ");
  return {
    stage: "eni",
    kind: "forget",
    target: r.name ?? r.mac,
    detail: `${r.name ? `${r.name} (${what})` : what}: configured by no source and no longer on this instance (IMDS lists no such NIC${r.bdf ? `, and ${r.bdf} is gone from sysfs` : ""}): its records go, so no boot waits for its device`,
  };
}

/** What the ENI stage leaves of the pass for binding and the SR-IOV file: a quarter, at most 10 s. */
export const hostReserveMs = (config: Pick<Config, "service">): number =>
  Math.min(10_000, (config.service.timeout_seconds * 1000) / 4);

export const eniStage: Stage<EniPlan & StagePlan & { released: ReleasedEni[] }> = {
  name: "eni",
  enabled: () => true,
  async plan(ctx) {
    const plan = await planEnis(ctx, ctx.ec2);
    const planned = new Map(
      plan.items.flatMap((it) => (it.record ? [[it.eni.name, it.record]] : [])),
    );
    const released = await releasedEnis(ctx);
    const forgotten = new Set(released.flatMap((r) => (r.name ? [r.name] : [])));
    const expected = [
      ...planned.values(),
      ...knownEnis(ctx).filter((r) => !planned.has(r.name) && !forgotten.has(r.name)),
    ];
    const leftOver = leftOverEnis(ctx);
    return {
      ...plan,
      actions: [...plan.actions, ...released.map(forgetAction)],
      released,
      expected: { enis: expected },
      ...(leftOver.length ? { warnings: leftOver } : {}),
    };
  },
  async apply(ctx, plan) {
    if (plan.released.length) {
      for (const r of plan.released) {
        if (r.name && ctx.state.enis[r.name]?.mac.toLowerCase() === r.mac)
          delete ctx.state.enis[r.name];
        delete ctx.state.bindings[r.mac];
        ctx.log.info("forgot an ENI no longer on this instance", {
          eni: r.name ?? "",
          mac: r.mac,
          ...(r.bdf ? { bdf: r.bdf } : {}),
        });
      }
      await saveState(ctx.host, ctx.state);
    }
    // Waits for ENIs (an external one, an attach) end early enough that the ENIs which did come
    // are still bound in this pass.
    const forEnis = ctx.deadline.within(ctx.deadline.remaining() - hostReserveMs(ctx.config));
    const { enis, failed } = await applyEachEni({ ...ctx, deadline: forEnis }, ctx.ec2, plan);
    return { enis, ...(failed.length ? { eniFailure: eniFailure(failed) } : {}) };
  },
};
