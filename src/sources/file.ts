// The file source: /etc/eni-dpdk/config.toml then config.d/*.toml, each read only when root could
// trust it (not writable by group or others, owned by root), as sshd's StrictModes does.
import path from "node:path";
import { type Layer } from "../config/model.js";
import { CONFIG_DIR, CONFIG_FILE, CONFIG_HOME } from "../config/facts.js";
import { InputError, type Problem } from "../core/errors.js";
import type { Host } from "../host/host.js";
import { loadTomlFor, tomlLayer } from "./toml.js";
import { type Source } from "./source.js";
import { checkConfigDir, readConfigFile, readErrorMessage, shownPath } from "../host/trusted.js";

// A root service must not take its config from a file others can change (sshd's StrictModes): every
// file and directory it reads here must be owned by root (or by us) and not group- or world-writable.

/**
 * /etc/eni-dpdk/config.toml then /etc/eni-dpdk/config.d/*.toml in lexical order. `--config PATH`
 * replaces the first; an explicitly named file must exist, the default one may be absent.
 */
export async function fileLayers(host: Host, configPath?: string): Promise<Layer[]> {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  if (configPath !== undefined && !configPath.startsWith("/")) {
    throw new InputError(
      [
        {
          source: `--config ${configPath}`,
          key: "(file)",
          message: `must be absolute; it is resolved under --root (${host.root})`,
        },
      ],
      "pass --config /etc/eni-dpdk/NAME.toml (an absolute path)",
    );
  }
  const main = configPath ?? CONFIG_FILE;
  checkConfigDir(host, CONFIG_HOME, problems);
  const text = readConfigFile(
    host,
    main,
    configPath ? "--config names one TOML file" : "expected the TOML config file",
    problems,
  );
  if (text === undefined && configPath && !problems.length) {
    throw new InputError(
      [{ source: shownPath(host, main), key: "(file)", message: "no such file" }],
      "pass an existing file to --config",
    );
  }
  const docs: [string, string][] = text === undefined ? [] : [[text, main]];
  if (checkConfigDir(host, CONFIG_DIR, problems)) {
    let names: string[] = [];
    try {
      names = await host.list(CONFIG_DIR);
    } catch (e) {
      const m = readErrorMessage(e);
      if (!m) throw e;
      problems.push({ source: shownPath(host, CONFIG_DIR), key: "(directory)", message: m });
    }
    for (const name of names) {
      if (!name.endsWith(".toml")) continue;
      const p = path.posix.join(CONFIG_DIR, name);
      const t = readConfigFile(host, p, "config.d holds *.toml files only", problems);
      if (t !== undefined) docs.push([t, p]);
    }
  }
  if (problems.length)
    throw new InputError(problems, "fix the files named above, then run `eni-dpdk validate` again");
  await loadTomlFor(docs.map(([t]) => t));
  for (const [t, source] of docs) {
    try {
      layers.push({ ...tomlLayer(t, source), origin: { source: "file", name: source } });
    } catch (e) {
      if (e instanceof InputError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length) throw new InputError(problems);
  return layers;
}

export const fileSource: Source = {
  name: "file",
  needsInstance: false,
  async provide(ctx) {
    const layers = await fileLayers(ctx.host, ctx.configPath);
    return { layers, note: `${layers.length} file(s)` };
  },
};
