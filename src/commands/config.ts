// The config commands: `validate` (files standalone, or this instance's merged sources), `config`
// (the effective config with each value's source) and `userdata` (render nodeadm's NodeConfig and
// our TOML as one MIME document).
import { promises as fs } from "node:fs";
import { buildConfig, type EffectiveConfig } from "../config/model.js";
import { formatProblem, InputError, type Problem } from "../core/errors.js";
import { commandSession } from "./apply.js";
import type { CommandContext } from "./context.js";
import { loadToml, tomlLayer } from "../sources/toml.js";
import { renderUserData, sniffDocument } from "../sources/mime.js";
import { gather } from "../sources/chain.js";
import { inspectSriov } from "../host/sriov-file.js";

export async function validateCommand(
  ctx: CommandContext,
  opts: { files: string[] },
): Promise<number> {
  await loadToml();
  if (opts.files.length > 0) {
    const problems: Problem[] = [];
    for (const file of opts.files) {
      try {
        const text = await readLocal(file);
        const eff = buildConfig([tomlLayer(text, file)]);
        ctx.out(`ok: ${file}: ${summarize(eff)}\n`);
      } catch (e) {
        if (e instanceof InputError) problems.push(...e.problems);
        else throw e;
      }
    }
    if (problems.length) throw new InputError(problems);
    return 0;
  }
  const eff = await gatherOnInstance(ctx);
  for (const w of eff.warnings) ctx.log.warn(formatProblem(w));
  for (const c of eff.consulted) ctx.log.info("source", { source: c.source, found: c.note });
  const sriov = await inspectSriovFor(ctx, eff);
  for (const w of sriov) ctx.log.warn(w, { source: eff.config.sriov.config_path });
  ctx.out(`ok: ${summarize(eff)}\n`);
  return 0;
}

export async function configCommand(ctx: CommandContext, opts: { json: boolean }): Promise<number> {
  const eff = await gatherOnInstance(ctx);
  if (opts.json) {
    ctx.out(
      JSON.stringify(
        { config: eff.config, origin: eff.origin, warnings: eff.warnings, sources: eff.consulted },
        null,
        2,
      ) + "\n",
    );
    return 0;
  }
  ctx.out(renderEffective(eff));
  return 0;
}

export async function userdataCommand(
  ctx: CommandContext,
  opts: { nodeconfig: string; config: string },
): Promise<number> {
  await loadToml();
  const nodeConfig = await readLocal(opts.nodeconfig);
  const toml = await readLocal(opts.config);
  if (sniffDocument(nodeConfig) !== "nodeadm") {
    throw new InputError([
      {
        source: opts.nodeconfig,
        key: "apiVersion",
        message:
          "expected a nodeadm NodeConfig (apiVersion: node.eks.aws/v1alpha1, kind: NodeConfig)",
      },
    ]);
  }
  buildConfig([tomlLayer(toml, opts.config)]);
  ctx.out(renderUserData(nodeConfig, toml));
  return 0;
}

/** A file named on the command line (relative to the working directory); a read error says why, naming it. */
async function readLocal(file: string): Promise<string> {
  try {
    // A FIFO or device would block or never end; only regular files are config.
    const st = await fs.stat(file);
    if (st.isDirectory()) throw Object.assign(new Error("EISDIR"), { code: "EISDIR" });
    if (!st.isFile())
      throw new InputError([{ source: file, key: "(file)", message: "is not a regular file" }]);
    return await fs.readFile(file, "utf8");
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why: Record<string, string> = {
      ENOENT: "no such file",
      EISDIR: "is a directory; name a file",
      EACCES: "cannot be read: permission denied",
      EPERM: "cannot be read: permission denied",
      ENOTDIR: "a component of the path is not a directory",
      ELOOP: "is a symlink loop",
    };
    if (code && Object.hasOwn(why, code))
      throw new InputError([{ source: file, key: "(file)", message: why[code] }]);
    throw e;
  }
}

function summarize(eff: EffectiveConfig): string {
  const enis = eff.config.eni;
  const dpdk = enis.filter((e) => e.dpdk.enabled).length;
  return `${enis.length} ENI(s) (${dpdk} DPDK, ${enis.length - dpdk} kernel)${enis.length ? ": " + enis.map((e) => e.name).join(", ") : ""}`;
}

/** The effective config as annotated TOML: every value with the source it came from. */
export function renderEffective(eff: EffectiveConfig): string {
  const lines: string[] = [];
  const val = (v: unknown) => JSON.stringify(v);
  const c = eff.config as unknown as Record<string, unknown>;
  for (const table of ["service", "dpdk", "sriov", "kubernetes", "gc"]) {
    lines.push(`[${table}]`);
    for (const [k, v] of Object.entries(c[table] as Record<string, unknown>)) {
      lines.push(`${k} = ${val(v)}`.padEnd(56) + ` # ${eff.origin[`${table}.${k}`] ?? "default"}`);
    }
    lines.push("");
  }
  lines.push("[ec2.limits]");
  const limits = Object.entries(eff.config.ec2.limits);
  if (limits.length === 0) lines.push("# none: every EC2 call is paced by EC2's documented sizes");
  for (const [key, entry] of limits) {
    const k = /^[A-Za-z0-9_-]+$/.test(key) ? key : val(key);
    for (const [f, v] of Object.entries(entry))
      lines.push(`${k}.${f} = ${val(v)}`.padEnd(56) + ` # ${eff.origin[`ec2.limits.${key}.${f}`]}`);
  }
  lines.push("");
  for (const eni of eff.config.eni) {
    lines.push("[[eni]]");
    for (const [k, v] of Object.entries(eni)) {
      if (k === "dpdk") continue;
      lines.push(
        `${k} = ${val(v)}`.padEnd(56) +
          ` # ${k === "name" ? eff.origin[`eni.${eni.name}.name`] : (eff.origin[`eni.${eni.name}.${k}`] ?? "default")}`,
      );
    }
    lines.push("  [eni.dpdk]");
    for (const [k, v] of Object.entries(eni.dpdk)) {
      lines.push(
        `  ${k} = ${val(v)}`.padEnd(56) +
          ` # ${eff.origin[`eni.${eni.name}.dpdk.${k}`] ?? "default"}`,
      );
    }
    lines.push("");
  }
  return lines.join("\n");
}

/** Gather every configured source on this instance (IMDS, tags, NodeENI) and merge. */
export async function gatherOnInstance(ctx: CommandContext) {
  const { session, local } = await commandSession(ctx);
  return gather(
    { host: ctx.host, log: ctx.log, env: ctx.env, configPath: ctx.configPath, instance: session },
    local,
  );
}

async function inspectSriovFor(ctx: CommandContext, eff: EffectiveConfig): Promise<string[]> {
  if (!eff.config.sriov.enabled) return [];
  return (await inspectSriov(ctx.host, eff.config.sriov.config_path)).warnings;
}
