// The seed controller's environment variables, which override every other source.
import { type Layer } from "../config/model.js";
import { type Source } from "./source.js";

const ENV_KEYS: Record<string, [string, string]> = {
  ENABLE_DPDK: ["dpdk", "enabled"],
  DEFAULT_DPDK_DRIVER: ["dpdk", "driver"],
  DPDK_BINDING_SCRIPT: ["dpdk", "binding_script"],
  SRIOV_DP_CONFIG_PATH: ["sriov", "config_path"],
};

/** The seed's environment variables override every other source, so its unit snippets keep working. */
export function envLayers(env: NodeJS.ProcessEnv): Layer[] {
  return Object.entries(ENV_KEYS)
    .filter(([name]) => env[name] !== undefined)
    .map(([name, [table, key]]) => ({
      source: `env ${name}`,
      origin: { source: "env" as const, name },
      stringly: true,
      data: { [table]: { [key]: env[name] } },
    }));
}

export const envSource: Source = {
  name: "env",
  needsInstance: false,
  async provide(ctx) {
    const layers = envLayers(ctx.env);
    return { layers, note: layers.map((l) => l.origin?.name).join(", ") };
  },
};
