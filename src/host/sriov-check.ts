// `eni-dpdk sriov check`'s I/O: the host's PCI devices as the SR-IOV device plugin discovers them
// (sysfs and the main routing table under the root), and its config file, handed to the pure
// selection model (sriov-select.ts). Reads only.
import { BDF_RE } from "../config/facts.js";
import { errorMessage } from "../core/errors.js";
import type { Host } from "./host.js";
import { readRoutes } from "./guard.js";
import { PCI_DEVICES } from "./pci.js";
import {
  formatPluginVersion,
  parseConfigJson,
  PLUGIN_DEFAULT_PREFIX,
  type PluginVersion,
} from "./sriov-model.js";
import { selectDevices, type PluginDevice, type Selection } from "./sriov-select.js";

/** ghw refuses a modalias shorter than this (pci:vVVVVVVVVdDDDDDDDDsv…sd…bcCCscSSiII plus newline). */
const MODALIAS_MIN = 54;
/** netlink's names for the ARPHRD_* link types that matter here (IfInfomsg.EncapType). */
const LINK_TYPES: Record<string, string> = { "1": "ether", "32": "infiniband" };

export interface SriovCheckReport extends Selection {
  path: string;
  exists: boolean;
  /** the release the rules were applied for */
  pluginVersion: string;
  ok: boolean;
}

/** A sysfs read that treats anything unreadable (a directory, EACCES on a hostile root) as absent. */
async function safely<T>(f: () => Promise<T>, fallback: T): Promise<T> {
  try {
    return await f();
  } catch {
    return fallback;
  }
}

/** Every PCI device as the plugin's discovery sees it: modalias ids, driver, netdevs, routes, VF facts. */
export async function readPluginDevices(host: Host): Promise<PluginDevice[]> {
  const routes = await readRoutes(host);
  const out: PluginDevice[] = [];
  for (const bdf of await host.list(PCI_DEVICES)) {
    // sysfs names are BDFs; anything else is not a path we build on
    if (!BDF_RE.test(bdf)) continue;
    const dir = `${PCI_DEVICES}/${bdf}`;
    const attr = (f: string) => safely(() => host.attr(`${dir}/${f}`), undefined);
    const modalias = await safely(() => host.read(`${dir}/modalias`), undefined);
    const ids =
      modalias !== undefined && modalias.length >= MODALIAS_MIN
        ? {
            vendor: modalias.slice(9, 13).toLowerCase(),
            device: modalias.slice(18, 22).toLowerCase(),
            baseClass: parseInt(modalias.slice(44, 46), 16),
          }
        : undefined;
    // Without modalias the plugin never sees the device; only network-class ones are worth naming.
    if (!ids && !((await attr("class")) ?? "").startsWith("0x02")) continue;
    if (ids && Number.isNaN(ids.baseClass)) continue;
    const netdevs = await safely(() => host.list(`${dir}/net`), []);
    const pfAddr = (await safely(() => host.linkName(`${dir}/physfn`), undefined)) ?? "";
    let pfName = "";
    let funcId = -1;
    if (pfAddr) {
      pfName = (await safely(() => host.list(`${dir}/physfn/net`), []))[0] ?? "";
      for (const v of await safely(() => host.list(`${dir}/physfn`), [])) {
        const m = /^virtfn(\d+)$/.exec(v);
        if (m && (await safely(() => host.linkName(`${dir}/physfn/${v}`), undefined)) === bdf)
          funcId = Number(m[1]);
      }
    }
    const typeOf = netdevs[0] ?? pfName;
    const arphrd = typeOf
      ? await safely(() => host.attr(`/sys/class/net/${typeOf}/type`), undefined)
      : undefined;
    const linkType = !typeOf ? "" : arphrd !== undefined ? LINK_TYPES[arphrd] : undefined;
    const numVfs = Number((await attr("sriov_numvfs")) ?? "0");
    out.push({
      bdf,
      ...(ids ?? {}),
      driver: await safely(() => host.linkName(`${dir}/driver`), undefined),
      netdevs,
      defaultRoute: netdevs.filter((n) => routes.defaultV4.has(n)),
      pfWithVfs: (await attr("sriov_totalvfs")) !== undefined && numVfs > 0,
      acpiIndex: (await attr("acpi_index")) ?? "",
      pfName,
      pfAddr,
      funcId,
      ...(linkType !== undefined ? { linkType } : {}),
    });
  }
  return out;
}

/**
 * What the plugin will advertise from `filePath` on this host. A missing or unreadable file is a
 * finding (the plugin exits), not an exception.
 */
export async function checkSriov(
  host: Host,
  filePath: string,
  opts: { owned?: Set<string>; version?: PluginVersion } = {},
): Promise<SriovCheckReport> {
  const pluginVersion = opts.version
    ? formatPluginVersion(opts.version)
    : "v3.6.0 or later (assumed; --plugin-version sets it)";
  const devices = await readPluginDevices(host);
  let text: string | undefined;
  let readError: string | undefined;
  try {
    text = await host.read(filePath);
  } catch (e) {
    readError = errorMessage(e);
  }
  const failed = (why: string) => {
    const sel = selectDevices(null, devices, { version: opts.version });
    const fatal = [
      `${filePath} ${why}: the plugin logs an error and exits, and its DaemonSet restarts it over and over`,
    ];
    return {
      ...sel,
      fatal,
      resources: [],
      errors: fatal.map((f) => `the plugin serves nothing: ${f}`),
      warnings: [],
    };
  };
  let sel: Selection;
  if (readError !== undefined) sel = failed(`cannot be read (${readError})`);
  else if (text === undefined) sel = failed("does not exist");
  else {
    const read = parseConfigJson(text);
    sel =
      "error" in read
        ? failed(`is ${read.error}`)
        : selectDevices(read.doc, devices, {
            owned: opts.owned,
            version: opts.version,
            defaultPrefix: PLUGIN_DEFAULT_PREFIX,
          });
  }
  return {
    path: filePath,
    exists: text !== undefined,
    pluginVersion,
    ...sel,
    ok: sel.errors.length === 0,
  };
}
