// EC2 and IMDS emulators on the host for boots that reach them through QEMU guestfwd.
import { promises as fs } from "node:fs";
import path from "node:path";
import { HOST_FWD_EC2, HOST_FWD_IMDS, HOTPLUG_NIC, type NicSpec } from "./topology.js";
import type { Vm } from "./vm.js";
import { makeEc2, makeImds } from "./world.js";

/**
 * EC2 and IMDS on the host, reached from the guest through guestfwd. With `hotplug`, an
 * AttachNetworkInterface that completes hot-plugs a NIC with the ENI's MAC via QMP device_add.
 */
export async function hostEmulators(
  nics: NicSpec[],
  opts: { vm?: () => Vm; outDir?: string } = {},
) {
  const imds = await makeImds(nics).start();
  const ec2 = makeEc2(nics);
  ec2.attachDelayMs = 1000;
  const log: string[] = [];
  if (opts.vm) {
    ec2.onAttached = async (ev) => {
      const mac = ev.eni.mac.toLowerCase();
      if (opts.outDir)
        await fs.writeFile(
          path.join(opts.outDir, "hotplug.json"),
          JSON.stringify({ mac, eniId: ev.eni.id, deviceIndex: ev.deviceIndex, qmpAt: Date.now() }),
        );
      try {
        await opts.vm!().hotplugNic({ ...HOTPLUG_NIC, mac }, "rp1", "hpn1");
        log.push(
          `QMP device_add e1000 mac=${mac} (ENI ${ev.eni.id}, device index ${ev.deviceIndex}) onto pcie-root-port rp1`,
        );
      } catch (e) {
        log.push(`QMP device_add failed: ${(e as Error).message}`);
      }
      imds.addNic({
        mac,
        deviceNumber: ev.deviceIndex,
        networkCard: ev.networkCardIndex,
        interfaceId: ev.eni.id,
        subnetId: ev.eni.subnetId,
        vpcId: ev.eni.vpcId,
        securityGroupIds: ev.eni.groups,
        localIpv4s: [ev.eni.privateIp],
        subnetCidr: "10.0.1.0/24",
      });
    };
  }
  await ec2.start();
  const port = (u: string) => new URL(u).port;
  return {
    imds,
    ec2,
    log,
    // "-tcp:" would be ONE chardev connection shared by every guest connection (HTTP requests then
    // interleave and hang); "-cmd:" runs a fresh relay per guest connection, to host loopback only.
    guestfwd: [
      `tcp:${HOST_FWD_IMDS.ip}:${HOST_FWD_IMDS.port}-cmd:/bin/busybox nc 127.0.0.1 ${port(imds.url)}`,
      `tcp:${HOST_FWD_EC2.ip}:${HOST_FWD_EC2.port}-cmd:/bin/busybox nc 127.0.0.1 ${port(ec2.url)}`,
    ],
    close: async () => {
      await ec2.close();
      await imds.close();
    },
  };
}
