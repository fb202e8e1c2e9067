// The emulated instance shared by the host harness and the guest program: which NICs exist, their
// models, MACs, PCI slots and the ENI device numbers the IMDS emulator reports for them.

export type NicModel = "virtio-net-pci" | "e1000" | "e1000e";

export interface NicSpec {
  /** ENI name in the scenario configs (and the QEMU device id) */
  name: string;
  model: NicModel;
  mac: string;
  /** PCI slot on the q35 root complex: the BDF is 0000:00:<slot>.0 */
  slot: number;
  deviceNumber: number;
  interfaceId: string;
  /** PCI vendor/device ids the model presents (what the SR-IOV config must list) */
  vendor: string;
  device: string;
}

const ids: Record<NicModel, { vendor: string; device: string }> = {
  "virtio-net-pci": { vendor: "1af4", device: "1000" },
  e1000: { vendor: "8086", device: "100e" },
  e1000e: { vendor: "8086", device: "10d3" },
};

function nic(
  name: string,
  model: NicModel,
  n: number,
  slot: number,
  deviceNumber: number,
): NicSpec {
  const hex = n.toString(16).padStart(2, "0");
  return {
    name,
    model,
    mac: `02:e2:e0:00:00:${hex}`,
    slot,
    deviceNumber,
    interfaceId: `eni-0e2e000000000${hex.padStart(4, "0")}`,
    ...ids[model],
  };
}

/** The cold-plugged NICs: the primary (device-number 0, default route), two DPDK ENIs, a kernel ENI
 * and one more ENI that the guard scenario gives a default route. */
export const NICS: NicSpec[] = [
  nic("primary", "virtio-net-pci", 0x01, 3, 0),
  nic("dpdk1", "e1000", 0x11, 4, 1),
  nic("dpdk2", "e1000e", 0x12, 5, 2),
  nic("kern1", "e1000", 0x13, 6, 3),
  nic("routed", "e1000e", 0x14, 7, 4),
];

/**
 * The external-mode scenario's data-plane NIC: cold-plugged at boot (present when the guest starts),
 * as an ENI the launch template attached at launch; EC2 knows it untagged, DeleteOnTermination on.
 */
export const EXTERNAL_NIC: NicSpec = nic("ext1", "e1000", 0x31, 4, 1);

/** The NIC the hot-plug scenario attaches at run time (QMP device_add onto a pcie-root-port). */
export const HOTPLUG_NIC: NicSpec = nic("hot1", "e1000", 0x21, 0, 1);

export const bdfOf = (n: NicSpec): string => `0000:00:${n.slot.toString(16).padStart(2, "0")}.0`;

export const SUBNET_ID = "subnet-0e2e0000000000001";
export const VPC_ID = "vpc-0e2e0000000000001";
export const SG_ID = "sg-0e2e0000000000001";
export const INSTANCE_ID = "i-0e2e0000000000001";
export const REGION = "us-west-2";
export const AZ = "us-west-2a";

/** Guest-side addresses of emulators the host runs (QEMU user networking guestfwd targets). */
export const GUEST_PRIMARY_IP = "10.0.2.15";
export const GUEST_GATEWAY = "10.0.2.2";
export const HOST_FWD_IMDS = { ip: "10.0.2.100", port: 80 };
export const HOST_FWD_EC2 = { ip: "10.0.2.101", port: 8080 }; // distinct port: QEMU names each guestfwd by it

/** What the host tells one boot of the guest (written to /opt/e2e/plan.json in the overlay). */
export interface BootPlan {
  boot: string;
  /** scenario ids to run, in order */
  steps: string[];
  nics: NicSpec[];
  /** IMDS on the host (via guestfwd) instead of in the guest */
  hostImds?: string;
  hostEc2?: string;
  /** true when the kernel's vfio.ko has NOIOMMU (informational; the guest checks sysfs itself) */
  noiommuKernel: boolean;
  /** NICs EC2 knows as attached at launch by a launch template, not as eni-dpdk's own */
  external?: string[];
}

export interface StepResult {
  scenario: string;
  title: string;
  status: "PASS" | "FAIL" | "NOT DONE";
  evidence: string[];
  /** how long the scenario took (in the guest, from its first step to its verdict) */
  ms?: number;
}
