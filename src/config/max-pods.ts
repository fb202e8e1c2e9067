// kubelet's maxPods as nodeadm derives it, and as the VPC CNI can serve it. Read in awslabs/
// amazon-eks-ami nodeadm/internal/kubelet/eni_max_pods.go (calculateStandardMaxPods) and config.go
// (withDefaultReservedResources):
//   ENIs on the default network card × (IPv4 addresses per ENI − 1) + 2
// Each ENI's first address is its own; +2 for the host-network pods (aws-node, kube-proxy). nodeadm
// applies no ceiling (the 110/250 cap was AL2's max-pods-calculator.sh) and ignores prefix
// delegation; for a type missing from its data it asks EC2, and falls back to 110.
import { ENI_LIMITS_TABLE } from "./eni-limits.js";

export interface EniLimits {
  /** ENIs on the default network card (nodeadm's defaultMaxENIs) */
  enis: number;
  ipv4PerEni: number;
}

/** With prefix delegation the VPC CNI puts a /28 (16 addresses) in each secondary-address slot. */
export const IPS_PER_PREFIX = 16;

/**
 * nodeadm's data for an instance type, or undefined when it is not in eni-dpdk's copy. The rows of
 * the type's size are read, not all 1384 types put in a map: a boot looks up one type.
 */
export function eniLimits(instanceType: string): EniLimits | undefined {
  const dot = instanceType.lastIndexOf(".");
  if (dot <= 0) return undefined;
  const family = instanceType.slice(0, dot);
  const size = instanceType.slice(dot + 1);
  for (const row of ENI_LIMITS_TABLE) {
    const m = /^(\d+)\/(\d+) (\S+): (.+)$/.exec(row);
    if (!m) throw new Error(`internal: bad ENI limits row "${row}"`);
    if (m[3] === size && m[4].split(" ").includes(family))
      return { enis: Number(m[1]), ipv4PerEni: Number(m[2]) };
  }
  return undefined;
}

/** Pods the VPC CNI can address on `enis` ENIs (nodeadm's formula, or with /28 prefixes). */
export function maxPodsFor(enis: number, ipv4PerEni: number, prefixDelegation = false): number {
  return enis * (ipv4PerEni - 1) * (prefixDelegation ? IPS_PER_PREFIX : 1) + 2;
}
