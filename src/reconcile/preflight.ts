// Before the first change of an apply: everything that can be checked about the host is checked
// here, so a problem is bad input (exit 2, nothing changed) rather than a failure after EC2 calls.
import { statSync } from "node:fs";
import type { ImdsNicInfo, InstanceIdentity } from "../cloud/imds.js";
import { InputError, type Problem } from "../core/errors.js";
import type { State } from "../host/state.js";
import type { Host } from "../host/host.js";
import type { Gathered } from "../sources/chain.js";
import type { StageContext } from "./stage.js";
import { listNetdevs, netdevByMac } from "../host/pci.js";
import { preflightSriov } from "./sriov.js";

/** The primary ENI as IMDS and sysfs show it now, in the state (saved with the next write). */
export async function notePrimary(
  host: Host,
  state: State,
  instance: InstanceIdentity,
  nics: ImdsNicInfo[],
): Promise<void> {
  const bdf =
    (await netdevByMac(host, instance.primaryMac))?.bdf ??
    (state.primary?.mac === instance.primaryMac ? state.primary.bdf : undefined);
  const deviceZeroMacs = [
    ...new Set(nics.filter((n) => n.deviceNumber === 0).map((n) => n.mac.toLowerCase())),
  ].sort();
  state.primary = { mac: instance.primaryMac, ...(bdf ? { bdf } : {}), deviceZeroMacs };
}

/**
 * Everything about the host that can be checked before the first mutation: the programs we would
 * run as root, pci_address pins against the devices that exist now, and the SR-IOV file's entries
 * that would clash with ours. A problem here is bad input: exit 2, nothing changed.
 */
export async function preflight(ctx: StageContext, gathered: Gathered): Promise<void> {
  const { config, host } = ctx;
  const problems: Problem[] = [];
  const at = (key: string) => gathered.origin[key] ?? "default";
  const programs: [string, string | undefined][] = [
    ["dpdk.binding_script", config.dpdk.binding_script || undefined],
    ["sriov.restart_command", config.sriov.restart_command[0]],
  ];
  for (const [key, prog] of programs) {
    const why = prog && programProblem(prog);
    if (why) problems.push({ source: at(key), key, message: why });
  }
  const primaryBdf =
    (await netdevByMac(host, ctx.instance.primaryMac))?.bdf ?? ctx.state.primary?.bdf;
  const netdevs = await listNetdevs(host);
  for (const e of config.eni.filter((x) => x.dpdk.enabled && x.dpdk.pci_address)) {
    const key = `eni.${e.name}.dpdk.pci_address`;
    const pin = e.dpdk.pci_address;
    const own = ctx.state.enis[e.name]?.mac;
    if (pin === primaryBdf) {
      problems.push({
        source: at(key),
        key,
        message: `${pin} is the primary ENI's device; eni-dpdk never binds it`,
      });
      continue;
    }
    const there = netdevs.find((n) => n.bdf === pin);
    const other =
      there && there.mac !== own
        ? ctx.imdsNics.find((n) => n.mac.toLowerCase() === there.mac)
        : undefined;
    if (there && (other || (own && there.mac !== own))) {
      problems.push({
        source: at(key),
        key,
        message: `${pin} is the device of ${there.ifname} (MAC ${there.mac}${other ? `, device-number ${other.deviceNumber}${other.interfaceId ? `, ${other.interfaceId}` : ""}` : ""}), not of ENI "${e.name}"${own ? ` (MAC ${own})` : ""}; remove pci_address or set it to this ENI's own device`,
      });
    }
  }
  if (problems.length) throw new InputError(problems, "fix the configuration");
  if (config.sriov.enabled) {
    await preflightSriov(ctx);
  }
}

/** Why a program we would run as root must not be run; undefined when it may. */
function programProblem(file: string): string | undefined {
  let st;
  try {
    st = statSync(file);
  } catch {
    return `${file} does not exist`;
  }
  if (!st.isFile()) return `${file} is not a regular file`;
  if (!(st.mode & 0o111))
    return `${file} is not executable (mode ${(st.mode & 0o777).toString(8)}); chmod +x it`;
  if (st.mode & 0o022)
    return `${file} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); a root service will not run it: chmod go-w ${file}`;
  const euid = process.geteuid?.();
  if (euid !== undefined && st.uid !== 0 && st.uid !== euid)
    return `${file} is owned by uid ${st.uid}, not root; a root service will not run it`;
  return undefined;
}
