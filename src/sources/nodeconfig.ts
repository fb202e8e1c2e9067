// nodeadm's NodeConfig, as far as NodeENI needs it: where the cluster is (spec.cluster), and this
// node's name and labels as kubelet will register them (its flags, the InstanceIdNodeName gate).
import { loadYaml } from "../core/lazy.js";
import { nullRecord, own } from "../core/records.js";
import { NODEADM_MEDIA_TYPE } from "../config/facts.js";
import type { Config } from "../config/model.js";
import type { InstanceIdentity } from "../cloud/imds.js";
import type { NodeConfigCluster } from "../cloud/kube.js";

/** The part of a decoded user-data part we read (mime.ts UserDataPart fits). */
export interface NodeConfigPartLike {
  contentType: string;
  label: string;
  text: string;
}

export interface NodeIdentity {
  name: string;
  /** why this name: `[kubernetes].node_name`, `kubelet --hostname-override`, `InstanceIdNodeName`, `private DNS name` */
  nameFrom: string;
  labels: Record<string, string>;
  instanceId: string;
}

export interface NodeConfigInfo {
  cluster?: NodeConfigCluster;
  kubeletFlags: string[];
  instanceIdNodeName: boolean;
  /**
   * Every place that sets kubelet's max pods, with the value as written (not checked: whoever set
   * it meant it): spec.kubelet.config.maxPods, spec.kubelet.maxPodsExpression, a --max-pods flag.
   */
  maxPods: { from: string; key: string; value: unknown }[];
}

/**
 * Merge every NodeConfig document in the nodeadm parts (later documents win field by field,
 * kubelet flags accumulate, as nodeadm merges them). Unparseable parts are warned about and skipped:
 * nodeadm itself will fail on them and say so.
 */
export async function parseNodeConfigs(
  parts: NodeConfigPartLike[],
  warnings: string[],
  /** what the parts are read for, in the warnings */
  use = "NodeENI",
): Promise<NodeConfigInfo> {
  const info: NodeConfigInfo = { kubeletFlags: [], instanceIdNodeName: false, maxPods: [] };
  const mine = parts.filter((p) => p.contentType === NODEADM_MEDIA_TYPE);
  if (mine.length === 0) return info;
  const YAML = await loadYaml();
  for (const part of mine) {
    for (const doc of YAML.parseAllDocuments(part.text)) {
      if (doc.errors.length) {
        warnings.push(
          `${part.label}: not valid YAML (${doc.errors[0].message.split("\n")[0]}); ignored for ${use}`,
        );
        continue;
      }
      let js: { kind?: unknown; spec?: unknown } | null;
      try {
        js = doc.toJS() as typeof js;
      } catch (e) {
        // e.g. an alias bomb, which yaml refuses to expand
        warnings.push(
          `${part.label}: YAML cannot be read (${(e as Error).message.split("\n")[0]}); ignored for ${use}`,
        );
        continue;
      }
      if (!isObject(js) || own(js, "kind") !== "NodeConfig" || !isObject(own(js, "spec"))) continue;
      const spec = own(js, "spec") as Record<string, unknown>;
      const cluster = isObject(own(spec, "cluster"))
        ? (own(spec, "cluster") as Record<string, unknown>)
        : {};
      const c: NodeConfigCluster = { ...info.cluster, source: part.label };
      for (const k of ["name", "apiServerEndpoint", "certificateAuthority"] as const) {
        const v = own(cluster, k);
        if (typeof v === "string" && v) c[k] = v;
      }
      info.cluster = c;
      const kubelet = own(spec, "kubelet");
      const flags = isObject(kubelet) ? own(kubelet, "flags") : undefined;
      const docFlags = Array.isArray(flags)
        ? flags.filter((f): f is string => typeof f === "string")
        : [];
      info.kubeletFlags.push(...docFlags);
      const kconfig = isObject(kubelet) ? own(kubelet, "config") : undefined;
      const set = (key: string, value: unknown) =>
        info.maxPods.push({ from: part.label, key, value });
      if (isObject(kconfig) && own(kconfig, "maxPods") !== undefined)
        set("spec.kubelet.config.maxPods", own(kconfig, "maxPods"));
      if (isObject(kubelet) && own(kubelet, "maxPodsExpression") !== undefined)
        set("spec.kubelet.maxPodsExpression", own(kubelet, "maxPodsExpression"));
      for (const v of flagValues(docFlags, "max-pods")) set("spec.kubelet.flags --max-pods", v);
      const gates = own(spec, "featureGates");
      const gate = isObject(gates) ? own(gates, "InstanceIdNodeName") : undefined;
      if (typeof gate === "boolean") info.instanceIdNodeName = gate;
    }
  }
  return info;
}

/** Values of a kubelet flag given as `--flag=value` or `--flag value` (inside one or two strings). */
export function flagValues(flags: string[], name: string): string[] {
  const out: string[] = [];
  const words = flags.flatMap((f) => f.trim().split(/\s+/));
  for (let i = 0; i < words.length; i++) {
    const w = words[i].replace(/^--?/, "-").replace(/^-/, "--");
    if (w === `--${name}` && i + 1 < words.length) out.push(words[++i]);
    else if (w.startsWith(`--${name}=`)) out.push(w.slice(name.length + 3));
  }
  return out;
}

/** `--node-labels=a=b,c=d` → {a: "b", c: "d"} (later flags win). */
export function labelsFromKubeletFlags(flags: string[]): Record<string, string> {
  const labels = nullRecord<string>();
  for (const v of flagValues(flags, "node-labels")) {
    for (const pair of v.replace(/^["']|["']$/g, "").split(",")) {
      const i = pair.indexOf("=");
      if (i > 0) labels[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    }
  }
  return { ...labels };
}

/** The GOARCH-style name kubelet uses for kubernetes.io/arch. */
export function kubeArch(nodeArch: string): string {
  return nodeArch === "x64" ? "amd64" : nodeArch === "ia32" ? "386" : nodeArch;
}

/**
 * This node's name and labels as kubelet will register them. Name: [kubernetes].node_name, else
 * kubelet's --hostname-override from NodeConfig flags, else the instance id when nodeadm's
 * InstanceIdNodeName gate is on, else the private DNS name (IMDS local-hostname).
 * Labels, later winning: well-known ones (kubelet and the AWS cloud controller), NodeConfig's
 * --node-labels, [kubernetes].node_labels.
 */
export function nodeIdentity(a: {
  instance: InstanceIdentity;
  nodeConfig: NodeConfigInfo;
  k8s: Config["kubernetes"];
  arch: string;
  zoneId?: string;
}): NodeIdentity {
  const override = flagValues(a.nodeConfig.kubeletFlags, "hostname-override").at(-1);
  let name: string;
  let nameFrom: string;
  if (a.k8s.node_name) [name, nameFrom] = [a.k8s.node_name, "[kubernetes].node_name"];
  else if (override) [name, nameFrom] = [override, "kubelet --hostname-override in NodeConfig"];
  else if (a.nodeConfig.instanceIdNodeName)
    [name, nameFrom] = [a.instance.instanceId, "NodeConfig featureGates.InstanceIdNodeName"];
  else if (a.instance.localHostname)
    [name, nameFrom] = [a.instance.localHostname, "private DNS name (IMDS local-hostname)"];
  else [name, nameFrom] = [a.instance.instanceId, "instance id (IMDS has no local-hostname)"];
  const arch = kubeArch(a.arch);
  const labels: Record<string, string> = {
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": arch,
    "kubernetes.io/hostname": name.toLowerCase(),
    "beta.kubernetes.io/os": "linux",
    "beta.kubernetes.io/arch": arch,
    "node.kubernetes.io/instance-type": a.instance.instanceType,
    "beta.kubernetes.io/instance-type": a.instance.instanceType,
    "topology.kubernetes.io/zone": a.instance.az,
    "topology.kubernetes.io/region": a.instance.region,
    "failure-domain.beta.kubernetes.io/zone": a.instance.az,
    "failure-domain.beta.kubernetes.io/region": a.instance.region,
    ...(a.zoneId ? { "topology.k8s.aws/zone-id": a.zoneId } : {}),
    ...labelsFromKubeletFlags(a.nodeConfig.kubeletFlags),
    ...a.k8s.node_labels,
  };
  return { name, nameFrom, labels, instanceId: a.instance.instanceId };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
