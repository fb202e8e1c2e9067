// Plan and apply: gather the desired state, observe the node, derive actions per stage (ENIs, host,
// SR-IOV), and execute them once. A converged node produces no actions and makes no writes.
import { type Config } from "../config/model.js";
import { fullResourceName } from "../config/facts.js";
import { statSync } from "node:fs";
import path from "node:path";
import { errorMessage, formatProblem, InputError, OpError, type Problem } from "../core/errors.js";
import { type Host } from "../host/host.js";
import { Deadline } from "../core/deadline.js";
import { ImdsClient, readInstance, readNics, readTags, readUserData, type Imds, type ImdsNicInfo, type InstanceIdentity } from "../cloud/imds.js";
import type { Logger } from "../core/log.js";
import { formatActions, type Action, type CommandContext, type Stage, type StageContext } from "./stage.js";
import { emptyState, type EniRecord, journalPending, loadState, saveState, type State, STATUS_PATH } from "../core/state.js";
import type { Gathered, InstanceSources } from "../sources/chain.js";
import type { Ec2Api, Ec2Factory } from "../cloud/ec2.js";
import type { HostDeviceResult, HostTarget } from "./host.js";
import type { NodeEniResult } from "../sources/nodeeni.js";


/** Per-process handles to IMDS and EC2, created once and shared by every stage and reconcile. */
export class Session {
  readonly imds: Imds;
  private instanceP?: Promise<InstanceIdentity>;
  private ec2F?: Ec2Factory;
  /** set when the EC2 SDK was loaded in this process (tests and the status document read it) */
  ec2Loaded = false;
  /** mutating EC2 calls EC2 accepted in this session, one line each */
  readonly changes: string[] = [];
  /** the NodeENI source's result of the last gather, for the cache and status reporting */
  nodeEni?: NodeEniResult;

  constructor(
    readonly log: Logger,
    readonly deadline: Deadline,
    imds?: Imds,
  ) {
    this.imds = imds ?? new ImdsClient({ deadline, logger: log });
  }

  instance(): Promise<InstanceIdentity> {
    this.instanceP ??= readInstance(this.imds);
    return this.instanceP;
  }

  /** The EC2 client factory; the SDK itself loads on the first call, not here. */
  async ec2(): Promise<Ec2Factory> {
    if (!this.ec2F) {
      const { lazyEc2 } = await import("../cloud/ec2.js");
      const { recordingEc2 } = await import("../cloud/ec2.js");
      const inner = lazyEc2({ region: (await this.instance()).region, logger: this.log });
      let api: Promise<Ec2Api> | undefined;
      this.ec2F = () => {
        this.ec2Loaded = true;
        api ??= inner().then((a) => recordingEc2(a, this.changes));
        api.catch(() => (api = undefined));
        return api;
      };
    }
    return this.ec2F;
  }
}

/** The instance-backed sources: user-data, tags (IMDS, else DescribeTags), NodeENI. */
export async function instanceSources(ctx: CommandContext, env: NodeJS.ProcessEnv, session?: Session): Promise<InstanceSources> {
  const s = session ?? new Session(ctx.log, new Deadline(60_000));
  return {
    userData: () => readUserData(s.imds),
    tags: async () => {
      const tags = await readTags(s.imds);
      if (tags !== undefined) return tags;
      ctx.log.info("instance metadata tags are disabled; reading tags with EC2 DescribeTags");
      const { describeInstanceTags } = await import("../cloud/ec2.js");
      const ec2 = await (await s.ec2())();
      return describeInstanceTags(ec2, (await s.instance()).instanceId);
    },
    nodeEni: async (base, parts) => {
      const { nodeEniLayers } = await import("../sources/nodeeni.js");
      const state = await loadState(ctx.host);
      const r = await nodeEniLayers({
        imds: s.imds,
        instance: await s.instance(),
        userDataParts: parts,
        config: base.config,
        host: ctx.host,
        log: ctx.log,
        deadline: s.deadline,
        state,
      });
      s.nodeEni = r;
      return { layers: r.layers, warnings: r.warnings };
    },
  };
}

export interface ApplyOutcome {
  ok: boolean;
  dryRun: boolean;
  startedAt: string;
  actions: Action[];
  enis: EniRecord[];
  devices: HostDeviceResult[];
  sriov?: { changed: boolean; path: string; resources: string[]; movedAside?: string };
  /** milliseconds per stage, in the order they ran */
  timings: Partial<Record<"sources" | "observe" | Stage | "total", number>>;
  warnings: string[];
  error?: { message: string; next: string; exitCode: number; /** what this run changed before it failed */ changes?: string[] };
  /** one line for systemd's STATUS= */
  summary: string;
  ec2Loaded: boolean;
}

export interface ReconcileOptions {
  dryRun: boolean;
  env: NodeJS.ProcessEnv;
  session?: Session;
  /** skip re-reading sources and use this config (run's periodic reconcile between SIGHUPs) */
  gathered?: Gathered;
}

/**
 * One pass: sources → observe → ENIs → host → SR-IOV. Validation happens before the first
 * mutation; the host lock is held for the whole pass. Throws InputError on bad input.
 */
export async function reconcile(ctx: CommandContext, opts: ReconcileOptions): Promise<ApplyOutcome & { gathered: Gathered }> {
  // Start taking the host lock now: spawning flock(1) then overlaps the IMDS round trips of the
  // sources. It is held until the status file is written, and released on every path.
  const lock = opts.dryRun ? undefined : ctx.host.acquireLock();
  lock?.catch(() => {});
  try {
    return await reconcileWith(ctx, opts, lock);
  } finally {
    if (lock) await lock.then((l) => l.release(), () => {});
  }
}

async function reconcileWith(
  ctx: CommandContext,
  opts: ReconcileOptions,
  lock: Promise<unknown> | undefined,
): Promise<ApplyOutcome & { gathered: Gathered }> {
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const timings: ApplyOutcome["timings"] = {};
  const log = ctx.log;
  let mark = performance.now();
  const stageDone = (stage: keyof ApplyOutcome["timings"], fields: Record<string, unknown> = {}) => {
    const now = performance.now();
    timings[stage] = Math.round(now - mark);
    mark = now;
    log.info(`${stage} done`, { stage, took_ms: timings[stage], ...fields });
  };

  const session = opts.session ?? new Session(log, new Deadline(300_000));
  const changesBefore = { host: ctx.host.changes.length, ec2: session.changes.length };
  const changesMade = () => [...session.changes.slice(changesBefore.ec2), ...ctx.host.changes.slice(changesBefore.host)];
  // The instance's identity never changes: fetch it alongside the sources. What can change (the
  // NICs, the state, sysfs) is observed only once the lock is held.
  const instanceP = session.instance();
  instanceP.catch(() => {});
  const { gather } = await import("../sources/chain.js"); const { saveTomlMemo } = await import("../sources/toml.js");
  const gathered =
    opts.gathered ?? (await gather(ctx.host, { configPath: ctx.configPath, env: opts.env, instance: await instanceSources(ctx, opts.env, session) }));
  const config = gathered.config;
  const deadline = session.deadline.within(config.service.timeout_seconds * 1000);
  stageDone("sources", { enis: config.eni.length, sources: gathered.consulted.map((c) => c.source).join(",") });
  const warnings = gathered.warnings.map((w) => `${w.source}: ${w.message}`);
  const state = emptyState();

  const body = async () => {
    const actions: Action[] = [];
    const sriovDir = path.posix.dirname(config.sriov.config_path);
    // apply: safe directories, stale temps, then every half-done operation of a killed run is
    // finished or rolled back before anything is observed. plan only reads, and shows what is pending.
    const { prepareHost } = await import("./host.js");
    Object.assign(state, opts.dryRun ? await loadState(ctx.host) : await prepareHost(ctx.host, log, { tempDirs: [sriovDir] }));
    if (opts.dryRun) {
      for (const op of await journalPending(ctx.host)) {
        actions.push({ stage: "host", kind: "recover", target: op.bdf, detail: `finish or roll back the ${op.op} (${op.from || "no driver"} → ${op.to || "kernel driver"}) that pid ${op.pid} began at ${op.startedAt}` });
      }
    }
    const [instance, imdsNics] = await Promise.all([instanceP, readNics(session.imds, instanceP.then((i) => i.primaryMac))]);
    stageDone("observe", { instance: instance.instanceId, nics: imdsNics.length });
    if (state.instanceId !== instance.instanceId) {
      // A state file from another instance (e.g. an AMI baked from a running node) must not be
      // trusted. Reset in memory only: the stages persist it once they change something, so a
      // rejected run leaves the file as it was.
      if (state.instanceId) log.warn("state file belongs to another instance; starting fresh", { was: state.instanceId });
      Object.assign(state, { ...emptyState(), instanceId: instance.instanceId, nodeeni: state.nodeeni });
    }
    const primaryBefore = JSON.stringify(state.primary ?? null);
    await notePrimary(ctx.host, state, instance, imdsNics);
    const sctx: StageContext = { host: ctx.host, imds: session.imds, log, deadline, config, instance, imdsNics, state, dryRun: opts.dryRun };
    await preflight(sctx, gathered);

    const { planEnis, applyEnis } = await import("./eni.js");
    const ec2 = await session.ec2();
    const enip = await planEnis(sctx, ec2);
    actions.push(...enip.actions);
    const enis = opts.dryRun ? knownEnis(config, state) : await applyEnis(sctx, ec2, enip);
    stageDone("eni", { actions: enip.actions.length, ec2_loaded: session.ec2Loaded });

    const { planHost, applyHost } = await import("./host.js");
    const targets = hostTargets(config, enis);
    const hostp = await planHost(sctx, targets);
    actions.push(...hostp.actions);
    if (opts.dryRun) {
      const pending = config.eni.filter((e) => !targets.some((t) => t.name === e.name));
      const pendingDrivers = [...new Set(pending.filter((e) => e.dpdk.enabled).map((e) => e.dpdk.driver))];
      if (pendingDrivers.length && !targets.some((t) => t.dpdk.enabled)) {
        const { planKernel } = await import("../host/kernel.js");
        actions.push(...(await planKernel(ctx.host, pendingDrivers, config.dpdk.noiommu)));
      }
      for (const e of pending) {
        actions.push({ stage: "host", kind: e.dpdk.enabled ? "bind" : "set-mtu", target: e.name, detail: "after the ENI is attached and its NIC appears" });
      }
    }
    const devices = opts.dryRun ? [] : await applyHost(sctx, targets, hostp);
    stageDone("host", { actions: hostp.actions.length, bound: devices.filter((d) => d.state === "bound").length });

    let sriov: ApplyOutcome["sriov"];
    if (config.sriov.enabled) {
      const { planSriov, applySriov } = await import("./sriov.js");
      const sriovDevices = devices
        .filter((d) => d.state === "bound" && d.resourceName)
        .map((d) => ({ eniName: d.name, resource: d.resourceName, bdf: d.bdf, vendor: d.vendor, device: d.device, driver: d.driver }));
      const sp = await planSriov(sctx, opts.dryRun ? plannedSriovDevices(config, state) : sriovDevices);
      actions.push(...sp.actions);
      if (opts.dryRun) {
        const unbound = config.eni.filter((e) => e.dpdk.enabled && !Object.values(state.bindings).some((b) => b.eniName === e.name));
        for (const r of new Set(unbound.map((e) => fullResourceName(e.dpdk.resource_name, config.sriov.resource_prefix)))) {
          actions.push({ stage: "sriov", kind: "write-sriov", target: config.sriov.config_path, detail: `resource ${r}, after its ENIs are bound` });
        }
      }
      if (!opts.dryRun) sriov = await applySriov(sctx, sriovDevices, sp);
      stageDone("sriov", { actions: sp.actions.length, changed: sriov?.changed ?? false });
    }
    if (!opts.dryRun && session.nodeEni && (session.nodeEni.layers.length || session.nodeEni.session)) {
      await nodeEniAfterApply(ctx, session.nodeEni, state, config, enis, devices);
      stageDone("nodeeni", { applied: session.nodeEni.applied.length, from_cache: session.nodeEni.fromCache });
    }
    // The primary's record is kept even when nothing else changed (a state file from an older version).
    if (!opts.dryRun && JSON.stringify(state.primary ?? null) !== primaryBefore) await saveState(ctx.host, state);
    // Parsed sources are kept for the next boot only once they were applied without error.
    if (!opts.dryRun && !devices.some((d) => d.state === "failed")) await saveTomlMemo(ctx.host);
    return { actions, enis, devices, sriov };
  };

  let result: Awaited<ReturnType<typeof body>> | undefined;
  let error: ApplyOutcome["error"];
  try {
    result = lock ? await lock.then(body) : await body();
  } catch (e) {
    const changes = changesMade();
    if (e instanceof InputError && changes.length === 0) throw e;
    // Found only after something changed: never "nothing was changed", and say exactly what was.
    error =
      e instanceof InputError
        ? {
            message: `${e.problems.map(formatProblem).join("; ")}; found after this run had changed the node: ${changes.join("; ")}`,
            next: `${e.hint}; then run \`eni-dpdk apply\` again: it adopts what this run created (or \`eni-dpdk reset\` to undo the host side)`,
            exitCode: 1,
          }
        : {
            message: errorMessage(e),
            next: e instanceof OpError ? e.hint : "rerun with --log-level debug; see `journalctl -u eni-dpdk`",
            exitCode: 1,
          };
    if (changes.length && !(e instanceof InputError)) error.changes = changes;
  }
  const failed = result?.devices.filter((d) => d.state === "failed") ?? [];
  if (!error && failed.length) {
    error = {
      message: `${failed.length} device(s) failed to bind: ${failed.map((d) => `${d.name} (${d.error})`).join("; ")}`,
      next: "see `eni-dpdk status` and the log lines above; the devices were returned to their kernel driver",
      exitCode: 1,
    };
  }
  timings.total = Math.round(performance.now() - t0);
  const outcome: ApplyOutcome = {
    ok: !error,
    dryRun: opts.dryRun,
    startedAt,
    actions: result?.actions ?? [],
    enis: result?.enis ?? [],
    devices: result?.devices ?? [],
    sriov: result?.sriov,
    timings,
    warnings,
    error,
    summary: "",
    ec2Loaded: session.ec2Loaded,
  };
  outcome.summary = summaryLine(outcome, config);
  if (!opts.dryRun) await writeStatusFile(ctx.host, outcome, config);
  return { ...outcome, gathered };
}

/**
 * After an apply that got this far: cache the NodeENI set that was applied (for API outages at the
 * next boot; only when it came from the API) and report this node's attachments in their status.
 */
async function nodeEniAfterApply(ctx: CommandContext, r: NodeEniResult, state: State, config: Config, enis: EniRecord[], devices: HostDeviceResult[]) {
  const { rememberNodeEnis, reportNodeEniStatus } = await import("../sources/nodeeni.js");
  if (!r.fromCache) {
    rememberNodeEnis(state, r);
    await saveState(ctx.host, state);
  }
  const owner = new Map<string, string>();
  for (const layer of r.layers) {
    const name = layer.source.replace(/^NodeENI /, "");
    for (const e of (layer.data.eni as { name: string }[] | undefined) ?? []) owner.set(e.name, name);
  }
  const results = config.eni.flatMap((e) => {
    const nodeEniName = owner.get(e.name);
    if (!nodeEniName) return [];
    const rec = enis.find((x) => x.name === e.name);
    const dev = devices.find((d) => d.name === e.name);
    const status = !rec ? "pending" : dev?.state === "failed" ? `failed: ${dev.error ?? "bind failed"}` : "attached";
    return [{
      eniName: e.name,
      nodeEniName,
      eniId: rec?.eniId,
      attachmentId: rec?.attachmentId,
      subnetId: rec?.subnetId,
      deviceIndex: e.device_index,
      mtu: e.mtu,
      status,
      dpdkBound: dev?.state === "bound",
      dpdkDriver: dev?.state === "bound" ? dev.driver : undefined,
      dpdkPCIAddress: dev?.bdf || undefined,
      dpdkResourceName: dev?.resourceName || undefined,
    }];
  });
  const report = await reportNodeEniStatus({ log: ctx.log, session: r.session }, results);
  for (const w of report.warnings) ctx.log.warn(w, { next: "check deploy/rbac.yaml is applied; status will be retried at the next reconcile" });
}

/** ENIs the state file already knows (dry-run: nothing gets created, so show what exists). */
function knownEnis(config: Config, state: State): EniRecord[] {
  return config.eni.map((e) => state.enis[e.name]).filter((r): r is EniRecord => !!r && !!r.mac);
}

function hostTargets(config: Config, enis: EniRecord[]): HostTarget[] {
  return config.eni.flatMap((e) => {
    const rec = enis.find((r) => r.name === e.name);
    if (!rec) return [];
    return [{ name: e.name, eniId: rec.eniId, mac: rec.mac, deviceIndex: e.device_index, networkCardIndex: e.network_card_index, dpdk: e.dpdk, mtu: e.mtu }];
  });
}

/** For the dry-run SR-IOV plan: what would be advertised if every DPDK ENI bound as recorded. */
function plannedSriovDevices(config: Config, state: State) {
  return Object.values(state.bindings).flatMap((b) => {
    const eni = config.eni.find((e) => e.name === b.eniName && e.dpdk.enabled);
    if (!eni) return [];
    return [{ eniName: eni.name, resource: fullResourceName(eni.dpdk.resource_name, config.sriov.resource_prefix), bdf: b.bdf, vendor: b.vendor, device: b.device, driver: eni.dpdk.driver }];
  });
}

export function summaryLine(o: ApplyOutcome, config: Config): string {
  const bound = o.devices.filter((d) => d.state === "bound");
  const drivers = [...new Set(bound.map((d) => d.driver))].join("/") || config.dpdk.driver;
  const noiommu = bound.some((d) => d.deviceNode?.includes("noiommu")) ? " (noiommu)" : "";
  const resources = o.sriov?.resources.length ?? 0;
  const parts = [
    `${o.enis.length} ENI${o.enis.length === 1 ? "" : "s"} attached`,
    `${bound.length} bound to ${drivers}${noiommu}`,
    config.sriov.enabled ? `${resources} SR-IOV resource${resources === 1 ? "" : "s"} ${o.sriov?.changed ? "written" : "unchanged"}` : "SR-IOV off",
  ];
  const head = o.error ? `degraded: ${o.error.message}` : "ready";
  const cached = o.warnings.some((w) => w.includes("USING CACHED")) ? "; WARNING: NodeENI API unreachable, applied the cached NodeENI set" : "";
  return `${head}: ${parts.join(", ")}${cached}${o.warnings.length ? ` (${o.warnings.length} warning${o.warnings.length === 1 ? "" : "s"})` : ""}`;
}

async function writeStatusFile(host: Host, o: ApplyOutcome, config: Config): Promise<void> {
  let doc: Record<string, unknown> = {};
  try {
    const { collectStatus } = await import("../commands/device.js");
    doc = (await collectStatus(host, { config })) as unknown as Record<string, unknown>;
  } catch (e) {
    doc = { statusError: errorMessage(e) };
  }
  const { gathered: _g, ...plain } = o as ApplyOutcome & { gathered?: unknown };
  void _g;
  await host.writeFileAtomic(STATUS_PATH, JSON.stringify({ ...doc, apply: plain }, null, 2) + "\n", 0o644);
}

// ---- before the first change ----------------------------------------------------------------------

/** The primary ENI as IMDS and sysfs show it now, in the state (saved with the next write). */
async function notePrimary(host: Host, state: State, instance: InstanceIdentity, nics: ImdsNicInfo[]): Promise<void> {
  const { netdevByMac } = await import("../host/pci.js");
  const bdf = (await netdevByMac(host, instance.primaryMac))?.bdf ?? (state.primary?.mac === instance.primaryMac ? state.primary.bdf : undefined);
  const deviceZeroMacs = [...new Set(nics.filter((n) => n.deviceNumber === 0).map((n) => n.mac.toLowerCase()))].sort();
  state.primary = { mac: instance.primaryMac, ...(bdf ? { bdf } : {}), deviceZeroMacs };
}

/**
 * Everything about the host that can be checked before the first mutation: the programs we would
 * run as root, pci_address pins against the devices that exist now, and the SR-IOV file's entries
 * that would clash with ours. A problem here is bad input: exit 2, nothing changed.
 */
async function preflight(ctx: StageContext, gathered: Gathered): Promise<void> {
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
  const { netdevByMac, listNetdevs } = await import("../host/pci.js");
  const primaryBdf = (await netdevByMac(host, ctx.instance.primaryMac))?.bdf ?? ctx.state.primary?.bdf;
  const netdevs = await listNetdevs(host);
  for (const e of config.eni.filter((x) => x.dpdk.enabled && x.dpdk.pci_address)) {
    const key = `eni.${e.name}.dpdk.pci_address`;
    const pin = e.dpdk.pci_address;
    const own = ctx.state.enis[e.name]?.mac;
    if (pin === primaryBdf) {
      problems.push({ source: at(key), key, message: `${pin} is the primary ENI's device; eni-dpdk never binds it` });
      continue;
    }
    const there = netdevs.find((n) => n.bdf === pin);
    const other = there && there.mac !== own ? ctx.imdsNics.find((n) => n.mac.toLowerCase() === there.mac) : undefined;
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
    const { preflightSriov } = await import("./sriov.js");
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
  if (!(st.mode & 0o111)) return `${file} is not executable (mode ${(st.mode & 0o777).toString(8)}); chmod +x it`;
  if (st.mode & 0o022) return `${file} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); a root service will not run it: chmod go-w ${file}`;
  const euid = process.geteuid?.();
  if (euid !== undefined && st.uid !== 0 && st.uid !== euid) return `${file} is owned by uid ${st.uid}, not root; a root service will not run it`;
  return undefined;
}

// ---- commands ------------------------------------------------------------------------------------

/**
 * The config from the file and the environment alone, or undefined when it is invalid (the full
 * gather then reports why). It gives a boot its deadline before any instance source is read.
 */
export async function fileConfig(ctx: CommandContext, env: NodeJS.ProcessEnv): Promise<Config | undefined> {
  try {
    const { fileLayers } = await import("../sources/file.js"); const { envLayers } = await import("../sources/env.js"); const { loadTomlMemo } = await import("../sources/toml.js");
    const { buildConfig } = await import("../config/model.js");
    await loadTomlMemo(ctx.host);
    return buildConfig([...(await fileLayers(ctx.host, ctx.configPath)), ...envLayers(env)]).config;
  } catch {
    return undefined;
  }
}

/** A session bounded by [service].timeout_seconds from the start, IMDS waits included. */
async function commandSession(ctx: CommandContext, env: NodeJS.ProcessEnv): Promise<Session> {
  const timeout = (await fileConfig(ctx, env))?.service.timeout_seconds ?? 300;
  return new Session(ctx.log, new Deadline(timeout * 1000));
}

export async function planCommand(ctx: CommandContext, opts: { json: boolean; env: NodeJS.ProcessEnv }): Promise<number> {
  const o = await reconcile(ctx, { dryRun: true, env: opts.env, session: await commandSession(ctx, opts.env) });
  if (opts.json) {
    ctx.out(JSON.stringify({ actions: o.actions, warnings: o.warnings, error: o.error, timings: o.timings }, null, 2) + "\n");
  } else {
    ctx.out(formatActions(o.actions));
    for (const w of o.warnings) ctx.log.warn(w);
  }
  if (o.error) ctx.log.error(o.error.message, { next: o.error.next, changes: o.error.changes?.join("; ") });
  return o.error ? 1 : 0;
}

export async function applyCommand(ctx: CommandContext, opts: { dryRun: boolean; env: NodeJS.ProcessEnv }): Promise<number> {
  if (opts.dryRun) return planCommand(ctx, { json: false, env: opts.env });
  const o = await reconcile(ctx, { dryRun: false, env: opts.env, session: await commandSession(ctx, opts.env) });
  for (const w of o.warnings) ctx.log.warn(w);
  if (o.error) {
    ctx.log.error(o.error.message, { next: o.error.next, changes: o.error.changes?.join("; ") });
    return o.error.exitCode;
  }
  ctx.log.info(o.summary, { actions: o.actions.length, took_ms: o.timings.total });
  return 0;
}
