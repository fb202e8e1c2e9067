// ENIs that someone else attaches (attach = "external"): the launch template at launch, or an Auto
// Scaling lifecycle hook's Lambda. eni-dpdk finds each one through IMDS alone, by network card and
// device index, checks it against the configured subnet and security groups, and records it as
// external. It makes no EC2 call for them (unless external_ec2 opts in to attribute checks), and
// never detaches or deletes them.
import { readNicPlacement, readNics, type ImdsNicInfo } from "../cloud/imds.js";
import type { EniConfig } from "../config/model.js";
import { InputError, OpError, type Problem } from "../core/errors.js";
import { monotonicMs, pollUntil } from "../core/deadline.js";
import type { EniRecord } from "../host/state.js";
import type { StageContext } from "./stage.js";

const slotText = (e: EniConfig) =>
  `network card ${e.network_card_index}, device index ${e.device_index}`;

const listedText = (nics: ImdsNicInfo[]) =>
  nics.map((n) => `${n.mac} (card ${n.networkCard}, device ${n.deviceNumber})`).join(", ");

/** The NIC IMDS shows at the ENI's slot, if any. */
export function externalNicAt(nics: ImdsNicInfo[], e: EniConfig): ImdsNicInfo | undefined {
  return nics.find(
    (n) => n.deviceNumber === e.device_index && n.networkCard === e.network_card_index,
  );
}

/**
 * The external ENI at its slot, checked: never the primary (meta-data/mac, or a MAC IMDS shows at
 * device-number 0), an interface id, and the configured subnet and security groups, all as IMDS
 * shows them. A mismatch is an InputError (nothing was changed for this ENI).
 */
export async function checkExternal(
  ctx: StageContext,
  e: EniConfig,
  nic: ImdsNicInfo,
  nics: ImdsNicInfo[] = ctx.imdsNics,
): Promise<EniRecord> {
  const mac = nic.mac.toLowerCase();
  const deviceZero = nics.some((n) => n.mac.toLowerCase() === mac && n.deviceNumber === 0);
  if (mac === ctx.instance.primaryMac.toLowerCase() || deviceZero) {
    throw new OpError(
      `ENI "${e.name}": IMDS shows the primary ENI (${mac}) at ${slotText(e)}; eni-dpdk never binds the primary`,
      "check the instance's network interfaces (IMDS meta-data/network/interfaces/macs); nothing was changed",
      { eni: e.name, mac },
    );
  }
  if (!nic.interfaceId) {
    throw new OpError(
      `ENI "${e.name}": IMDS lists ${mac} at ${slotText(e)} without an interface-id`,
      "retry once the attachment settles; nothing was changed",
      { eni: e.name, mac },
    );
  }
  const at = await readNicPlacement(ctx.imds, mac);
  const problems: Problem[] = [];
  const source = `IMDS (instance ${ctx.instance.instanceId}, ${nic.interfaceId} ${mac} at ${slotText(e)})`;
  if (e.subnet_id && at.subnetId !== e.subnet_id) {
    problems.push({
      source,
      key: `eni.${e.name}.subnet_id`,
      message: `the external ENI is in ${at.subnetId ?? "no subnet IMDS reports"}, not in ${e.subnet_id}; fix subnet_id or the launch template (eni-dpdk launch-template prints its NetworkInterfaces)`,
    });
  }
  if (e.security_group_ids.length) {
    const want = [...new Set(e.security_group_ids)].sort();
    const have = [...new Set(at.securityGroupIds ?? [])].sort();
    if (want.join(",") !== have.join(",")) {
      problems.push({
        source,
        key: `eni.${e.name}.security_group_ids`,
        message: `the external ENI has security groups [${have.join(", ")}], configured [${want.join(", ")}]; fix security_group_ids or the launch template`,
      });
    }
  }
  if (problems.length)
    throw new InputError(
      problems,
      "the ENI is not what the config describes: no device was touched; fix the config or the launch template, then run `eni-dpdk apply` again",
    );
  return {
    name: e.name,
    eniId: nic.interfaceId,
    mac,
    deviceIndex: e.device_index,
    networkCardIndex: e.network_card_index,
    subnetId: at.subnetId ?? "",
    createdByUs: false,
    attach: "external",
  };
}

/**
 * Wait, bounded by the deadline, for the external ENI to appear at its slot in IMDS (a lifecycle
 * hook attaches after boot; a launch template's is there at once). IMDS only: no EC2 call.
 */
export async function waitExternal(ctx: StageContext, e: EniConfig): Promise<EniRecord> {
  const t0 = monotonicMs();
  let seen: ImdsNicInfo[] = ctx.imdsNics;
  const found = await pollUntil(
    async () => {
      seen = await readNics(ctx.imds, Promise.resolve(ctx.instance.primaryMac));
      const nic = externalNicAt(seen, e);
      return nic ? { nic } : undefined;
    },
    {
      deadline: ctx.deadline,
      ...(ctx.periodic ? { within: 0 } : {}),
      backoff: { firstMs: 100, maxMs: 1000, growth: 1.5, jitter: 0.2 },
    },
  );
  if (!found && ctx.periodic) {
    throw new OpError(
      `the external ENI "${e.name}" is not at ${slotText(e)}: IMDS lists ${listedText(seen) || "no NIC"}; a timer pass looks once, and the other ENIs are kept as they are`,
      "check the launch template's NetworkInterfaces or the lifecycle hook's logs; `systemctl reload eni-dpdk` (or a restart) waits for it again",
      { eni: e.name },
    );
  }
  if (!found) {
    throw new OpError(
      `timed out after ${((monotonicMs() - t0) / 1000).toFixed(1)} s waiting for the external ENI "${e.name}" at ${slotText(e)}: IMDS lists ${listedText(seen) || "no NIC"}; attach = "external" means the launch template or a lifecycle hook attaches it, and eni-dpdk makes no EC2 call for it`,
      "check the launch template's NetworkInterfaces (`eni-dpdk launch-template` prints the block) or the lifecycle hook's logs; raise service.timeout_seconds if the hook is slow",
      { eni: e.name, waited_ms: Math.round(monotonicMs() - t0) },
    );
  }
  ctx.log.info("external ENI appeared", {
    eni: e.name,
    mac: found.nic.mac,
    eni_id: found.nic.interfaceId,
    ms: Math.round(monotonicMs() - t0),
  });
  return checkExternal(ctx, e, found.nic, seen);
}
