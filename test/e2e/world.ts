// The emulated AWS side of one guest: IMDS (MAC → device-number, primary = device-number 0) and
// EC2 seeded so it matches the NICs QEMU presents. Used in the guest (scenarios 1–5) and on the host
// (hot-plug and systemd boots, reached through QEMU guestfwd).
import { Ec2Emulator } from "../../src/sim/ec2.js";
import { defaultInstance, ImdsEmulator, type ImdsNic } from "../../src/sim/imds.js";
import { AZ, INSTANCE_ID, REGION, SG_ID, SUBNET_ID, VPC_ID, type NicSpec } from "./topology.js";

export function imdsNic(n: NicSpec, i: number): ImdsNic {
  return {
    mac: n.mac,
    deviceNumber: n.deviceNumber,
    networkCard: 0,
    interfaceId: n.interfaceId,
    subnetId: SUBNET_ID,
    vpcId: VPC_ID,
    securityGroupIds: [SG_ID],
    localIpv4s: [`10.0.1.${10 + i}`],
    subnetCidr: "10.0.1.0/24",
  };
}

export function makeImds(nics: NicSpec[]): ImdsEmulator {
  const primary = nics.find((n) => n.deviceNumber === 0)!;
  return new ImdsEmulator(
    defaultInstance({
      instanceId: INSTANCE_ID,
      region: REGION,
      az: AZ,
      mac: primary.mac,
      nics: nics.map(imdsNic),
    }),
  );
}

/**
 * EC2 with the instance and its primary ENI, plus each other NIC as an ENI eni-dpdk created on an
 * earlier run (tagged as its own) attached at its device index, or, for the NICs named in
 * `external`, as an ENI a launch template attached at launch (untagged by eni-dpdk,
 * DeleteOnTermination on). Creating and attaching (with hot-plug) is what the hot-plug scenario
 * exercises.
 */
export function makeEc2(nics: NicSpec[], external: string[] = []): Ec2Emulator {
  const primary = nics.find((n) => n.deviceNumber === 0)!;
  const ec2 = new Ec2Emulator({
    subnets: [{ subnetId: SUBNET_ID, vpcId: VPC_ID, az: AZ, cidr: "10.0.1.0/24" }],
    securityGroups: [{ groupId: SG_ID, groupName: "e2e", vpcId: VPC_ID }],
    instanceTypes: [{ instanceType: "c6in.4xlarge", maxEnis: 8 }],
    instances: [
      {
        instanceId: INSTANCE_ID,
        instanceType: "c6in.4xlarge",
        az: AZ,
        vpcId: VPC_ID,
        subnetId: SUBNET_ID,
        primaryEniId: primary.interfaceId,
        primaryMac: primary.mac,
      },
    ],
  });
  for (const n of nics.filter((x) => x.deviceNumber !== 0 && external.includes(x.name))) {
    ec2.attachAtLaunch(INSTANCE_ID, {
      deviceIndex: n.deviceNumber,
      subnetId: SUBNET_ID,
      groups: [SG_ID],
      id: n.interfaceId,
      mac: n.mac,
      description: `launch template ${n.name}`,
      tags: { "node.k8s.amazonaws.com/no_manage": "true" },
    });
  }
  for (const n of nics.filter((x) => x.deviceNumber !== 0 && !external.includes(x.name))) {
    ec2.addEni({
      id: n.interfaceId,
      subnetId: SUBNET_ID,
      mac: n.mac,
      groups: [SG_ID],
      description: `eni-dpdk ${n.name}`,
      tags: { "eni-dpdk:instance-id": INSTANCE_ID, "eni-dpdk:name": n.name },
      createdByApi: true,
      attachment: {
        attachmentId: `eni-attach-0e2e00000000000${n.deviceNumber}`,
        instanceId: INSTANCE_ID,
        deviceIndex: n.deviceNumber,
        networkCardIndex: 0,
        status: "attached",
        deleteOnTermination: true,
        attachTime: new Date().toISOString(),
      },
    });
  }
  return ec2;
}

export const CLI_AWS_ENV = {
  AWS_ACCESS_KEY_ID: "AKIAE2EEXAMPLE",
  AWS_SECRET_ACCESS_KEY: "e2e-secret",
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
};
