// nodeadm's NodeConfig drop-ins: the directory nodeadm-run reads, the other files in it (a user's
// maxPods may be there), and eni-dpdk's own maxPods file, written atomically and removed only when
// its first line is our marker. Read in awslabs/amazon-eks-ami: nodeadm-run.service runs
// `nodeadm init --config-source imds://user-data --config-source file:///etc/eks/nodeadm.d/`;
// configprovider/file.go reads the directory's *.yaml|*.yml|*.json (any case) in name order, fails
// the whole chain on one it cannot parse, and merges them over user-data, later files winning.
import path from "node:path";
import { type Host } from "./host.js";

export const NODEADM_DROPIN_DIR = "/etc/eks/nodeadm.d";
/** Sorts first, so any other drop-in that sets maxPods wins even before eni-dpdk sees it. */
export const MAX_PODS_DROPIN = `${NODEADM_DROPIN_DIR}/00-eni-dpdk-max-pods.yaml`;
/** The first line of our file: only a file that starts with it is ever replaced or removed. */
export const MAX_PODS_MARKER = "# eni-dpdk:max-pods";
/** nodeadm on the EKS AMI: present without the drop-in directory means a nodeadm older than drop-ins. */
export const NODEADM_BIN = "/usr/bin/nodeadm";
/** A NodeConfig is a few KiB; a larger file is not read (nor a FIFO, which would block the boot). */
const MAX_DROPIN_BYTES = 1024 * 1024;

/** The names nodeadm reads from the directory. */
export function isNodeadmConfigFile(name: string): boolean {
  return /\.(ya?ml|json)$/i.test(name);
}

export interface DropinFile {
  path: string;
  /** undefined when it could not be read (too large, not a regular file); `why` says so */
  text?: string;
  why?: string;
}

export interface Dropins {
  /** the directory exists: this nodeadm reads drop-ins (created by the same AMI change) */
  dir: boolean;
  /** what is at our path: our file, someone else's, or nothing */
  ours: "ours" | "foreign" | "none";
  /** our file's text, when it is ours */
  ourText?: string;
  /** every other file nodeadm reads there */
  others: DropinFile[];
}

export async function readDropins(host: Host): Promise<Dropins> {
  const dir = (await host.stat(NODEADM_DROPIN_DIR, { follow: true }))?.kind === "dir";
  const out: Dropins = { dir, ours: "none", others: [] };
  if (!dir) return out;
  const own = await host.stat(MAX_PODS_DROPIN);
  if (own) {
    const text = own.kind === "file" ? await readSmall(host, MAX_PODS_DROPIN) : undefined;
    if (text !== undefined && isOurs(text)) Object.assign(out, { ours: "ours", ourText: text });
    else out.ours = "foreign";
  }
  for (const name of await host.list(NODEADM_DROPIN_DIR)) {
    const p = path.posix.join(NODEADM_DROPIN_DIR, name);
    if (p === MAX_PODS_DROPIN && out.ours === "ours") continue;
    if (!isNodeadmConfigFile(name)) continue;
    const st = await host.stat(p, { follow: true });
    if (st?.kind === "dir") continue; // nodeadm skips directories
    if (st?.kind !== "file") out.others.push({ path: p, why: "not a regular file" });
    else if (st.size > MAX_DROPIN_BYTES)
      out.others.push({ path: p, why: `${st.size} bytes, more than eni-dpdk reads` });
    else out.others.push({ path: p, text: (await readSmall(host, p)) ?? "" });
  }
  return out;
}

async function readSmall(host: Host, abs: string): Promise<string | undefined> {
  const st = await host.stat(abs, { follow: true });
  return st?.kind === "file" && st.size <= MAX_DROPIN_BYTES ? host.read(abs) : undefined;
}

function isOurs(text: string): boolean {
  const first = text.split("\n", 1)[0];
  return first === MAX_PODS_MARKER || first.startsWith(`${MAX_PODS_MARKER}:`);
}

/** The maxPods our file sets, or undefined. */
export function ourMaxPods(text: string | undefined): number | undefined {
  const m = text && /^ {6}maxPods: (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Our drop-in: the marker, why this number (comment lines), and the NodeConfig nodeadm merges. */
export function renderMaxPodsDropin(maxPods: number, why: string[]): string {
  return [
    `${MAX_PODS_MARKER}: written by eni-dpdk, which rewrites or removes this file; edits are lost.`,
    ...why.map((l) => `# ${l}`),
    "# Opt out: [kubernetes] adjust_max_pods = false. A maxPods set in your NodeConfig is left alone.",
    "apiVersion: node.eks.aws/v1alpha1",
    "kind: NodeConfig",
    "spec:",
    "  kubelet:",
    "    config:",
    `      maxPods: ${maxPods}`,
    "",
  ].join("\n");
}

/**
 * Write our drop-in atomically (temp ending in .tmp, which nodeadm does not read; fsync; rename).
 * Call holding the host lock. Never over a file that is not ours: checked again here, just before.
 */
export async function writeMaxPodsDropin(host: Host, text: string): Promise<boolean> {
  if ((await readDropins(host)).ours === "foreign")
    throw new Error(`${MAX_PODS_DROPIN} is not eni-dpdk's; left alone`);
  return host.writeFileAtomic(MAX_PODS_DROPIN, text, 0o644);
}

/** Remove our drop-in; someone else's file at the same path is never touched. */
export async function removeMaxPodsDropin(host: Host): Promise<boolean> {
  return (await readDropins(host)).ours === "ours" ? host.remove(MAX_PODS_DROPIN) : false;
}
