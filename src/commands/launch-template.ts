// `eni-dpdk launch-template`: the EC2 launch template's NetworkInterfaces block (the shape of
// CreateLaunchTemplate LaunchTemplateData.NetworkInterfaces) and the network-interface
// TagSpecifications for the configured ENIs, so a node group can have EC2 create and attach them at
// launch (no API call at boot, DeleteOnTermination from the start) and eni-dpdk only bind them
// (attach = "external"). Offline: the config file alone, no IMDS, no EC2.
import type { Config, EniConfig } from "../config/model.js";
import { SG_ID_RE, TAG_NO_MANAGE } from "../config/facts.js";
import { InputError, type Problem } from "../core/errors.js";
import { attachAttributes } from "../reconcile/eni-attributes.js";
import { localConfig, type CommandContext } from "./context.js";

/** Marks launch-template ENIs; never eni-dpdk:instance-id, which says "eni-dpdk created it". */
export const TAG_ATTACH = "eni-dpdk:attach";

export interface LaunchTemplateOptions {
  /** security groups of the primary (device index 0): the node's own */
  primaryGroups: string[];
  /** EKS managed node groups refuse SubnetId inside a launch template's network interfaces */
  managedNodeGroup: boolean;
}

/** One LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, as eni-dpdk fills it. */
export interface LaunchTemplateInterface {
  DeviceIndex: number;
  NetworkCardIndex: number;
  SubnetId?: string;
  Groups?: string[];
  DeleteOnTermination: boolean;
  Description: string;
  EnaSrdSpecification?: {
    EnaSrdEnabled?: boolean;
    EnaSrdUdpSpecification?: { EnaSrdUdpEnabled?: boolean };
  };
  EnaQueueCount?: number;
}

export interface LaunchTemplateBlock {
  NetworkInterfaces: LaunchTemplateInterface[];
  TagSpecifications: {
    ResourceType: "network-interface";
    Tags: { Key: string; Value: string }[];
  }[];
}

const PRIMARY_DESCRIPTION =
  "Primary network interface (node traffic). A launch template that lists network interfaces must list device index 0 too: Auto Scaling and EKS cannot add it at launch.";

/**
 * The block for these ENIs, or every problem that keeps one of them out of a launch template (ids
 * only: names resolve per VPC and AZ at boot; one tag set for every interface of the instance).
 * `notes` are for the operator: what the template cannot carry.
 */
export function launchTemplateBlock(
  config: Config,
  opts: LaunchTemplateOptions,
): { block: LaunchTemplateBlock; notes: string[] } {
  const problems: Problem[] = [];
  const notes: string[] = [];
  const source = "launch-template";
  const bad = (e: EniConfig, key: string, message: string) =>
    problems.push({ source, key: `eni.${e.name}.${key}`, message });
  opts.primaryGroups.forEach((g) => {
    if (!SG_ID_RE.test(g))
      problems.push({
        source: "command line",
        key: "--primary-security-group-ids",
        message: `expected "sg-" followed by 8 or 17 hex digits, got "${g}"`,
      });
  });
  if (config.eni.length === 0)
    problems.push({
      source,
      key: "eni",
      message: "no [[eni]] is configured; there is nothing to put in a launch template",
    });
  const tags = new Map<string, { value: string; from: string }>([
    [TAG_NO_MANAGE, { value: "true", from: "eni-dpdk" }],
    [TAG_ATTACH, { value: "launch-template", from: "eni-dpdk" }],
  ]);
  const interfaces: LaunchTemplateInterface[] = [];
  for (const e of config.eni) {
    if (e.subnet_name)
      bad(
        e,
        "subnet_name",
        "a launch template takes subnet ids; names resolve per VPC and AZ at boot: set subnet_id",
      );
    else if (!e.subnet_id && !opts.managedNodeGroup)
      bad(
        e,
        "subnet_id",
        "required for a launch template entry (or pass --managed-node-group, which leaves SubnetId out)",
      );
    if (e.security_group_names.length)
      bad(
        e,
        "security_group_names",
        "a launch template takes security group ids: set security_group_ids",
      );
    else if (!e.security_group_ids.length)
      bad(
        e,
        "security_group_ids",
        "required for a launch template entry (without Groups EC2 would give the ENI the VPC's default group)",
      );
    for (const [k, v] of Object.entries(e.tags)) {
      const had = tags.get(k);
      if (had && had.value !== v)
        bad(
          e,
          "tags",
          `"${k}" = "${v}", but ${had.from} sets "${had.value}": a launch template tags every network interface of the instance alike`,
        );
      else tags.set(k, { value: v, from: `ENI "${e.name}"` });
    }
    if (e.source_dest_check !== undefined)
      notes.push(
        `ENI "${e.name}": source_dest_check has no launch template field; with attach = "external" set external_ec2 = true to have eni-dpdk set it at boot (one ModifyNetworkInterfaceAttribute per ENI), or let a lifecycle hook set it`,
      );
    if (e.attach !== "external")
      notes.push(
        `ENI "${e.name}": set attach = "external" in its [[eni]] once the launch template attaches it, or eni-dpdk finds the slot taken and refuses`,
      );
    interfaces.push({
      DeviceIndex: e.device_index,
      NetworkCardIndex: e.network_card_index,
      ...(e.subnet_id && !opts.managedNodeGroup ? { SubnetId: e.subnet_id } : {}),
      ...(e.security_group_ids.length ? { Groups: [...e.security_group_ids] } : {}),
      DeleteOnTermination: e.delete_on_termination,
      Description: e.description || `eni-dpdk ${e.name}`,
      ...attachAttributes(e),
    });
  }
  if (problems.length)
    throw new InputError(
      problems,
      "fix the [[eni]] configuration, then run `eni-dpdk launch-template` again",
    );
  const primary: LaunchTemplateInterface = {
    DeviceIndex: 0,
    NetworkCardIndex: 0,
    ...(opts.primaryGroups.length ? { Groups: [...opts.primaryGroups] } : {}),
    DeleteOnTermination: true,
    Description: PRIMARY_DESCRIPTION,
  };
  if (!opts.primaryGroups.length)
    notes.push(
      "device index 0 has no Groups: pass --primary-security-group-ids with the node's security groups (with NetworkInterfaces, EC2 refuses instance-level SecurityGroupIds in the same launch)",
    );
  if (opts.managedNodeGroup)
    notes.push(
      "--managed-node-group: no SubnetId in any entry, as EKS requires; the node group's subnets place the node",
    );
  else if (interfaces.some((i) => i.SubnetId))
    notes.push(
      "each SubnetId pins the node group to that subnet's AZ: an Auto Scaling group spanning several AZs needs one launch template per AZ",
    );
  return {
    block: {
      NetworkInterfaces: [primary, ...interfaces],
      TagSpecifications: [
        {
          ResourceType: "network-interface",
          Tags: [...tags].map(([Key, t]) => ({ Key, Value: t.value })),
        },
      ],
    },
    notes,
  };
}

export async function launchTemplateCommand(
  ctx: CommandContext,
  opts: { primarySecurityGroupIds?: string; managedNodeGroup: boolean },
): Promise<number> {
  const { config } = await localConfig(ctx, { strict: true });
  const primaryGroups = (opts.primarySecurityGroupIds ?? "")
    .split(",")
    .map((g) => g.trim())
    .filter(Boolean);
  const { block, notes } = launchTemplateBlock(config, {
    primaryGroups,
    managedNodeGroup: opts.managedNodeGroup,
  });
  ctx.out(JSON.stringify(block, null, 2) + "\n");
  for (const n of notes) ctx.log.info(n);
  return 0;
}
