// The host root and eni-dpdk's own directories under it. The entry (main.ts) imports this too, so
// it holds facts only, nothing that loads.
import path from "node:path";

/** `--root`, else ENI_DPDK_ROOT, else `/`. */
export function resolveRoot(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(flag || env.ENI_DPDK_ROOT || "/");
}

/** eni-dpdk's own directories: never followed when they are symlinks, never group- or world-writable. */
export const RUN_DIR = "/run/eni-dpdk";
export const VAR_DIR = "/var/lib/eni-dpdk";

/** The record of the last apply that found nothing to do (commands/unchanged.ts). */
export const UNCHANGED_PATH = `${RUN_DIR}/unchanged.json`;
