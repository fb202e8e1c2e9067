// The ENI attributes DPDK users set (ENA Express and its UDP switch, source/dest check, the ENA
// queue count): what the config asks for, what EC2 shows, and the calls that close the gap. ENA
// Express and the queue count go on AttachNetworkInterface; ENA Express and source/dest check
// converge later with ModifyNetworkInterfaceAttribute, one attribute per call as EC2 requires. The
// queue count cannot be changed on an attached ENI of a running instance, so a mismatch is reported.
import type {
  AttachNetworkInterfaceCommandInput,
  ModifyNetworkInterfaceAttributeCommandInput,
  NetworkInterface,
} from "@aws-sdk/client-ec2";
import type { EniConfig } from "../config/model.js";
import type { EniAttributes } from "../host/state.js";

/** Only what the config sets: an absent key is left as EC2 has it. */
export function desiredAttributes(e: EniConfig): EniAttributes {
  return {
    ...(e.ena_express !== undefined ? { enaSrd: e.ena_express } : {}),
    ...(e.ena_express_udp !== undefined ? { enaSrdUdp: e.ena_express_udp } : {}),
    ...(e.source_dest_check !== undefined ? { sourceDestCheck: e.source_dest_check } : {}),
    ...(e.ena_queue_count !== undefined ? { enaQueueCount: e.ena_queue_count } : {}),
  };
}

export function hasAttributes(e: EniConfig): boolean {
  return Object.keys(desiredAttributes(e)).length > 0;
}

/** What DescribeNetworkInterfaces shows. ENA Express absent from an attachment means off. */
export function observedAttributes(n: NetworkInterface): EniAttributes {
  const srd = n.Attachment?.EnaSrdSpecification;
  return {
    ...(n.Attachment
      ? {
          enaSrd: srd?.EnaSrdEnabled ?? false,
          enaSrdUdp: srd?.EnaSrdUdpSpecification?.EnaSrdUdpEnabled ?? false,
        }
      : {}),
    ...(n.SourceDestCheck !== undefined ? { sourceDestCheck: n.SourceDestCheck } : {}),
    ...(n.Attachment?.EnaQueueCount !== undefined
      ? { enaQueueCount: n.Attachment.EnaQueueCount }
      : {}),
  };
}

/** Every configured attribute is known to hold its configured value. */
export function attributesMatch(desired: EniAttributes, known: EniAttributes | undefined): boolean {
  return (Object.keys(desired) as (keyof EniAttributes)[]).every((k) => known?.[k] === desired[k]);
}

export type AttributeStep = "set-ena-express" | "set-source-dest-check";

/** The Modify calls that make `known` what `desired` asks (the queue count is not among them). */
export function attributeSteps(
  desired: EniAttributes,
  known: EniAttributes | undefined,
): AttributeStep[] {
  const steps: AttributeStep[] = [];
  if (
    (desired.enaSrd !== undefined && known?.enaSrd !== desired.enaSrd) ||
    (desired.enaSrdUdp !== undefined && known?.enaSrdUdp !== desired.enaSrdUdp)
  )
    steps.push("set-ena-express");
  if (desired.sourceDestCheck !== undefined && known?.sourceDestCheck !== desired.sourceDestCheck)
    steps.push("set-source-dest-check");
  return steps;
}

/** Why an attached ENI's queue count cannot be made what the config asks; undefined when it matches. */
export function queueCountProblem(
  desired: EniAttributes,
  known: EniAttributes | undefined,
  eniId: string,
): string | undefined {
  if (desired.enaQueueCount === undefined || known?.enaQueueCount === desired.enaQueueCount)
    return undefined;
  return `is ${desired.enaQueueCount}, but ${eniId} is attached with ${known?.enaQueueCount === undefined ? "no ENA queue count EC2 reports" : `${known.enaQueueCount} ENA queues`}; EC2 sets the queue count at attach or launch only (changing it needs the instance stopped), and eni-dpdk never detaches an attached ENI. Change ena_queue_count, or detach the ENI so the next apply attaches it again`;
}

/** EnaSrdSpecification and EnaQueueCount for AttachNetworkInterface, as configured. */
export function attachAttributes(
  e: EniConfig,
): Pick<AttachNetworkInterfaceCommandInput, "EnaSrdSpecification" | "EnaQueueCount"> {
  return {
    ...(e.ena_express !== undefined
      ? {
          EnaSrdSpecification: {
            EnaSrdEnabled: e.ena_express,
            ...(e.ena_express_udp !== undefined
              ? { EnaSrdUdpSpecification: { EnaSrdUdpEnabled: e.ena_express_udp } }
              : {}),
          },
        }
      : {}),
    ...(e.ena_queue_count !== undefined ? { EnaQueueCount: e.ena_queue_count } : {}),
  };
}

/** The one-attribute ModifyNetworkInterfaceAttribute request for a step. */
export function modifyInput(
  eniId: string,
  step: AttributeStep,
  e: EniConfig,
): ModifyNetworkInterfaceAttributeCommandInput {
  if (step === "set-source-dest-check")
    return { NetworkInterfaceId: eniId, SourceDestCheck: { Value: e.source_dest_check } };
  return {
    NetworkInterfaceId: eniId,
    EnaSrdSpecification: attachAttributes(e).EnaSrdSpecification,
  };
}

/** What `known` becomes once the step is accepted. */
export function afterStep(
  known: EniAttributes | undefined,
  step: AttributeStep,
  e: EniConfig,
): EniAttributes {
  const d = desiredAttributes(e);
  if (step === "set-source-dest-check") return { ...known, sourceDestCheck: d.sourceDestCheck };
  return {
    ...known,
    enaSrd: d.enaSrd,
    ...(d.enaSrdUdp !== undefined ? { enaSrdUdp: d.enaSrdUdp } : {}),
  };
}

/** One human line for the plan. */
export function describeStep(step: AttributeStep, e: EniConfig, known?: EniAttributes): string {
  if (step === "set-source-dest-check")
    return `SourceDestCheck=${e.source_dest_check}${known?.sourceDestCheck !== undefined ? ` (now ${known.sourceDestCheck})` : ""}`;
  const now =
    known?.enaSrd !== undefined
      ? ` (now ${known.enaSrd}${known.enaSrdUdp !== undefined ? `, UDP ${known.enaSrdUdp}` : ""})`
      : "";
  return `EnaSrdSpecification EnaSrdEnabled=${e.ena_express}${e.ena_express_udp !== undefined ? ` EnaSrdUdpEnabled=${e.ena_express_udp}` : ""}${now}`;
}
