// Benchmark: node groups of N nodes boot at the same moment against ONE EC2 emulator that throttles
// as EC2 does: a token bucket per action with EC2's documented sizes (`--buckets ec2`, the default;
// `--buckets pooled` is the older model, one generous bucket per category). Each node runs the
// real planEnis/applyEnis with its own identity: its own instance, its own IMDS (an in-process
// MemoryImds over the same data the IMDS emulator serves), its own fake root whose NICs appear on
// hot-plug, its own EC2 client (real SDK over HTTP) and pacer. A node whose run fails is restarted
// as systemd restarts the unit (RestartSec=15s, at most 3 starts in 20 min; `--on-failure continue`:
// the next reconcile pass 60 s later instead); each start is a new process: new client, new pacer
// reading what /run kept, state file from disk. Prints measured figures; asserts nothing.
// With `--buckets pooled` the nodes are told the account's (pooled) limits as a user tells them,
// an [ec2.limits] table in their config: `--limits told` (the default) gives each category's size,
// which [ec2.limits] applies to every bucket of that kind, as EC2 has one per action; `--limits
// shares` gives each action its share of the pool it draws from; `--limits untold` leaves them
// pacing by EC2's documented sizes, as every node did before [ec2.limits].
//
// Run: npx tsx scripts/bench/fleet.ts [--scenarios created:100,created:1000,terminated:100,
//        terminated:1000,external:1000] [--enis 2] [--deadline 300] [--buckets ec2|pooled]
//        [--limits told|shares|untold] [--client own|sdk|both] [--on-failure fail|continue]
//        [--time-scale 1] [--seed 1] [--timeline SECONDS: calls per bucket per row, after each scenario]
//
// Time: the emulator's buckets refill in real time, so 1,000 nodes take the ~6.5 minutes EC2's
// buckets allow. `--time-scale k` runs k times faster: every refill ×k (emulator and pacer alike),
// every latency, delay, deadline, restart gap and grace period ÷k; times are printed back in EC2
// seconds. What does not scale: CPU time, the SDK's own timers, the NIC/IMDS poll intervals.
import os from "node:os";
import { promises as fs } from "node:fs";
import path from "node:path";
import { applyEnis, planEnis } from "../../src/reconcile/eni.js";
import { runGc } from "../../src/reconcile/gc.js";
import { buildConfig } from "../../src/config/model.js";
import { InputError } from "../../src/core/errors.js";
import { loadEc2Sdk } from "../../src/core/lazy.js";
import { ec2Bucket, isEc2ReadAction } from "../../src/config/facts.js";
import { sleep } from "../../src/core/deadline.js";
import { loadToml, tomlLayer } from "../../src/sources/toml.js";
import type { Ec2Api, Ec2Factory } from "../../src/cloud/ec2.js";
import { EC2_THROTTLE, Ec2Emulator, type PooledBuckets } from "../../src/sim/ec2.js";
import type { BucketSize } from "../../src/core/deadline.js";
import {
  SG_DPDK,
  SUBNET_A,
  SimNode,
  eniConfigs,
  standardSeed,
  useDummyCredentials,
} from "../../src/sim/node.js";

useDummyCredentials();
const argv = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const SCENARIOS = opt(
  "scenarios",
  "created:100,created:1000,terminated:100,terminated:1000,external:1000",
)
  .split(",")
  .map((s) => {
    const [mode, n] = s.split(":");
    if (!["created", "terminated", "external"].includes(mode) || !(Number(n) > 0))
      throw new Error(`--scenarios: expected created|terminated|external:N, got "${s}"`);
    return { mode: mode as "created" | "terminated" | "external", nodes: Number(n) };
  });
const ENIS = Number(opt("enis", "2"));
const DEADLINE_S = Number(opt("deadline", "300"));
const BUCKETS = opt("buckets", "ec2") as "ec2" | "pooled";
const LIMITS = opt("limits", "told") as "told" | "shares" | "untold";
if (!["told", "shares", "untold"].includes(LIMITS))
  throw new Error(`--limits: expected told|shares|untold, got "${LIMITS}"`);
const CLIENT = opt("client", "own") as "own" | "sdk" | "both";
const ON_FAILURE = opt("on-failure", "fail") as "fail" | "continue";
const SCALE = Number(opt("time-scale", "1"));
/** seconds per row of the timeline printed after each scenario; 0: none */
const TIMELINE_S = Number(opt("timeline", "0"));
let seed = Number(opt("seed", "1"));
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed / 2147483648);

// The unit file's restart policy (systemd/eni-dpdk.service) and run's reconcile interval.
const RESTART_SEC = 15;
const START_LIMIT = 3;
const START_LIMIT_INTERVAL_S = 20 * 60;
const RECONCILE_S = 60;
/** The older model: one bucket per category, more generous than EC2 (issue 14's first table). */
const POOLED: PooledBuckets = {
  mutating: { capacity: 100, refillPerSec: 100 },
  describe: { capacity: 200, refillPerSec: 200 },
};
/** The actions of a created-mode boot, by the pool they draw from. */
const POOL_ACTIONS: Record<keyof PooledBuckets, string[]> = {
  mutating: ["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"],
  describe: [
    "DescribeNetworkInterfaces",
    "DescribeInstances",
    "DescribeSubnets",
    "DescribeSecurityGroups",
    "DescribeInstanceTypes",
  ],
};
/**
 * What a user of an account with the pooled buckets writes in the nodes' config (user-data or
 * /etc/eni-dpdk). told: one entry per category, for every bucket of that kind; shares: one per
 * action, its share of the pool. Refills ×k under --time-scale k, as the emulator's.
 */
const POOLED_LIMITS_TOML = [
  "[ec2.limits]",
  ...Object.entries(POOLED).flatMap(([category, b]) => {
    if (LIMITS !== "shares")
      return [
        `${category} = { capacity = ${b.capacity}, refill_per_sec = ${b.refillPerSec * SCALE} }`,
      ];
    const actions = POOL_ACTIONS[category as keyof PooledBuckets];
    const n = actions.length;
    const refill = Math.round((b.refillPerSec * SCALE * 100) / n) / 100;
    return actions.map(
      (a) => `${a} = { capacity = ${Math.floor(b.capacity / n)}, refill_per_sec = ${refill} }`,
    );
  }),
  "",
].join("\n");
/** The nodes' node-level config: [ec2.limits] when they are told the pooled account's limits. */
const TOLD = BUCKETS === "pooled" && LIMITS !== "untold";
await loadToml();
const NODE_CONFIG = TOLD ? tomlLayer(POOLED_LIMITS_TOML, `--limits ${LIMITS}`).data : {};
const LATENCY: Record<string, number> = {
  CreateNetworkInterface: 300,
  AttachNetworkInterface: 150,
  ModifyNetworkInterfaceAttribute: 100,
  "*": 50,
};
const ATTACH_DELAY_MS = 1500;
const HOTPLUG_DELAY_MS = 1000;

const scaled = (b: BucketSize): BucketSize => ({
  capacity: b.capacity,
  refillPerSec: b.refillPerSec * SCALE,
});
/**
 * The least time the buckets allow, in EC2 seconds. The last of the n calls of a bucket cannot be
 * accepted before its backlog after the burst has refilled ((n − capacity) / refill), nor before
 * the latencies that lead to it (two describes, the calls before it); after it a node still needs
 * its own latencies (the attach, attaching→attached, the hot-plug). The bound is the largest of
 * these sums over the three mutating buckets (per action), or over the one pooled mutating bucket
 * that all 3 calls per ENI share. Describes are not the bound in these runs.
 */
function lowerBoundS(nodes: number): number {
  const ms = (...names: string[]) => names.reduce((s, n) => s + (LATENCY[n] ?? LATENCY["*"]), 0);
  const plugged = ATTACH_DELAY_MS + HOTPLUG_DELAY_MS;
  const steps = [
    {
      bucket: "CreateNetworkInterface",
      lead: ms("*", "*", "CreateNetworkInterface"),
      tail: ms("AttachNetworkInterface") + plugged,
    },
    {
      bucket: "AttachNetworkInterface",
      lead: ms("*", "*", "CreateNetworkInterface", "AttachNetworkInterface"),
      tail: plugged,
    },
    {
      bucket: "ModifyNetworkInterfaceAttribute",
      lead: ms(
        "*",
        "*",
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
      ),
      tail: plugged - ms("ModifyNetworkInterfaceAttribute"),
    },
  ];
  const drainS = (calls: number, b: BucketSize) => Math.max(0, calls - b.capacity) / b.refillPerSec;
  const n = nodes * ENIS;
  if (BUCKETS === "pooled") {
    const last = steps[2];
    return Math.max(last.lead / 1000, drainS(3 * n, POOLED.mutating)) + last.tail / 1000;
  }
  return Math.max(
    ...steps.map((s) => Math.max(s.lead / 1000, drainS(n, ec2Bucket(s.bucket))) + s.tail / 1000),
  );
}

interface Outcome {
  ready?: number;
  starts: number;
  /** when each start began, EC2 seconds */
  startedAt: number[];
  terminated: boolean;
  error?: string;
}

async function scenario(mode: "created" | "terminated" | "external", NODES: number) {
  const emu = await new Ec2Emulator(standardSeed()).start();
  emu.latency = Object.fromEntries(Object.entries(LATENCY).map(([k, v]) => [k, v / SCALE]));
  emu.attachDelayMs = ATTACH_DELAY_MS / SCALE;
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "eni-dpdk-fleet-"));
  const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");

  // external: the launch template attached the ENIs; eni-dpdk only finds and binds them
  const enis = eniConfigs(ENIS, mode === "external" ? { attach: "external" } : {});

  const nodes: SimNode[] = [];
  for (let i = 0; i < NODES; i++) {
    const root = path.join(base, `n${i}`);
    await fs.mkdir(root);
    const node = await SimNode.create(emu, {
      instanceId: `i-0f${hex(i, 15)}`,
      primaryMac: `02:10:00:${hex((i >> 16) & 255, 2)}:${hex((i >> 8) & 255, 2)}:${hex(i & 255, 2)}`,
      primaryEniId: `eni-0f${hex(i, 15)}`,
      enis,
      imds: "memory",
      hotplugDelayMs: HOTPLUG_DELAY_MS / SCALE,
      deadlineMs: (DEADLINE_S * 1000) / SCALE,
      root,
      client: CLIENT,
      config: NODE_CONFIG,
      ...(SCALE !== 1 && !TOLD ? { paceBuckets: (key: string) => scaled(ec2Bucket(key)) } : {}),
    });
    nodes.push(node);
    if (mode === "external") {
      // As RunInstances with the launch template's NetworkInterfaces: attached, DeleteOnTermination.
      for (let d = 1; d <= ENIS; d++) {
        const eni = emu.addEni({
          subnetId: SUBNET_A,
          groups: [SG_DPDK],
          tags: { "node.k8s.amazonaws.com/no_manage": "true" },
        });
        eni.attachment = {
          attachmentId: `eni-attach-0f${hex(i * 32 + d, 15)}`,
          instanceId: node.opts.instanceId,
          deviceIndex: d,
          networkCardIndex: 0,
          status: "attached",
          deleteOnTermination: true,
          attachTime: new Date().toISOString(),
        };
        await node.hotplug({
          eni,
          instanceId: node.opts.instanceId,
          deviceIndex: d,
          networkCardIndex: 0,
        });
      }
    }
  }
  if (BUCKETS === "ec2") emu.setThrottle({ ...EC2_THROTTLE, refillScale: SCALE });
  else emu.setThrottle({ mutating: scaled(POOLED.mutating), describe: scaled(POOLED.describe) });
  await sleep(HOTPLUG_DELAY_MS / SCALE + 50); // launch-attached NICs settle before the storm

  // terminated: 10 % of the nodes die mid-boot, each after a random number of its accepted
  // mutating calls (1 .. 3·ENIs−1): created but not attached, attached before DeleteOnTermination…
  const victims = new Map<number, number>();
  if (mode === "terminated") {
    while (victims.size < Math.round(NODES / 10)) {
      const i = Math.floor(random() * NODES);
      if (!victims.has(i)) victims.set(i, 1 + Math.floor(random() * (3 * ENIS - 1)));
    }
  }

  const t0 = performance.now();
  const t0Epoch = Date.now();
  const cpu0 = process.cpuUsage();
  const at = () => ((performance.now() - t0) / 1000) * SCALE;
  const boot = async (node: SimNode, i: number): Promise<Outcome> => {
    const out: Outcome = { starts: 0, startedAt: [], terminated: false };
    const starts = out.startedAt;
    let accepted = 0;
    const dieAfter = victims.get(i);
    for (;;) {
      out.starts++;
      starts.push(at());
      const ctx = await node.context({ deadlineMs: (DEADLINE_S * 1000) / SCALE });
      if (dieAfter !== undefined)
        ctx.ec2 = dying(
          ctx.ec2,
          () => ++accepted >= dieAfter,
          () => {
            emu.terminateInstance(node.opts.instanceId);
            node.kill();
            ctx.deadline.abort();
            out.terminated = true;
          },
        );
      try {
        const plan = await planEnis(ctx, ctx.ec2);
        const recs = await applyEnis(ctx, ctx.ec2, plan);
        if (recs.length === ENIS && !out.terminated) {
          out.ready = at();
          return out;
        }
        out.error = "wrong count";
      } catch (e) {
        out.error = (e as Error).message
          .split("\n")[0]
          .replace(/\d+(\.\d+)? s\b/g, "N s")
          .replace(/\b(eni|i|eni-attach)-[0-9a-f]{8,17}\b/g, "$1-…")
          .slice(0, 200);
        // Exit 2 (invalid input, nothing changed): RestartPreventExitStatus=2, no restart.
        if (e instanceof InputError) return out;
      }
      if (out.terminated) return out;
      if (ON_FAILURE === "continue") await sleep((RECONCILE_S * 1000) / SCALE);
      else {
        const recent = starts.filter((s) => at() - s < START_LIMIT_INTERVAL_S);
        if (recent.length >= START_LIMIT) return out; // systemd gives up: start-limit-hit
        await sleep((RESTART_SEC * 1000) / SCALE);
      }
    }
  };
  const outcomes = await Promise.all(nodes.map((n, i) => boot(n, i)));
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const stormRequests = emu.requests.length;

  // One gc pass, by a later boot: a surviving node, its clock past the grace period.
  let gcLine = "";
  if (mode === "terminated") {
    const survivor = nodes.find((_, i) => !victims.has(i))!;
    const ctx = await survivor.context({ deadlineMs: (DEADLINE_S * 1000) / SCALE });
    const leakedBefore = emu.leakedEnis().length;
    const g0 = performance.now();
    const config = buildConfig([]).config.gc;
    const gc = await runGc(ctx, ctx.ec2, {
      config,
      dryRun: false,
      now: () => Date.now() + config.grace_minutes * 60_000 + 1000,
    });
    const reasons = new Map<string, number>();
    for (const k of gc.kept) {
      const r = k.reason
        .replace(/\b(i|eni)-[0-9a-f]{8,17}\b/g, "$1-…")
        .replace(/\d+ s ago/, "N s ago");
      reasons.set(r, (reasons.get(r) ?? 0) + 1);
    }
    gcLine = `gc: one pass by a later boot, ${config.grace_minutes} min after the storm (defaults: grace ${config.grace_minutes} min, max ${config.max_deletes} deletes): ${leakedBefore} leaked before, ${gc.deleted.length} deleted, ${gc.deferred} left for a later pass, ${gc.errors.length} errors, ${(((performance.now() - g0) / 1000) * SCALE).toFixed(1)} s${[...reasons].map(([r, n]) => `; kept x${n}: ${r}`).join("")}`;
  }

  const survivors = outcomes.filter((o) => !o.terminated);
  const converged = survivors.filter((o) => o.ready !== undefined);
  const times = converged.map((o) => o.ready!).sort((a, b) => a - b);
  const pct = (p: number) =>
    times.length ? times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)] : NaN;
  const stormReq = emu.requests.slice(0, stormRequests);
  const mutSent = stormReq.filter((r) => !isEc2ReadAction(r.action)).length;
  const mutAcc = stormReq.filter((r) => !isEc2ReadAction(r.action) && r.status === 200).length;
  const descSent = stormReq.length - mutSent;
  const descAcc = stormReq.filter((r) => isEc2ReadAction(r.action) && r.status === 200).length;
  const perAction = new Map<string, [number, number]>();
  for (const r of stormReq) {
    const v = perAction.get(r.action) ?? [0, 0];
    v[0]++;
    if (r.status === 200) v[1]++;
    perAction.set(r.action, v);
  }
  const wanted = NODES * ENIS;
  const created = [...emu.enis.values()].filter((e) => e.createdByApi);
  const dup = new Map<string, number>();
  for (const e of created) {
    const k = `${e.tags["eni-dpdk:instance-id"]}/${e.tags["eni-dpdk:name"]}`;
    dup.set(k, (dup.get(k) ?? 0) + 1);
  }
  const duplicates = [...dup.values()].reduce((a, v) => a + v - 1, 0);
  const errors = new Map<string, number>();
  for (const o of survivors)
    if (o.ready === undefined) errors.set(o.error!, (errors.get(o.error!) ?? 0) + 1);
  const lb = lowerBoundS(NODES);
  const restarted = survivors.filter((o) => o.starts > 1).length;

  const title =
    mode === "external"
      ? `external mode, ${NODES} nodes x ${ENIS} ENIs attached at launch`
      : `created mode, ${NODES} nodes x ${ENIS} ENIs${mode === "terminated" ? `, ${victims.size} nodes terminated mid-boot` : ""}`;
  console.log(`\n== ${title}`);
  console.log(
    `  buckets: ${BUCKETS === "ec2" ? "per action, EC2's documented sizes (Create 100/5 per s, Attach 50/5, Modify 100/5, Delete 100/5, filtered Describe* 100/20, unfiltered 50/10)" : `pooled per category (mutating ${POOLED.mutating.capacity}/${POOLED.mutating.refillPerSec} per s, describe ${POOLED.describe.capacity}/${POOLED.describe.refillPerSec} per s); nodes ${TOLD ? `told in [ec2.limits] (--limits ${LIMITS}: ${POOLED_LIMITS_TOML.trim().split("\n").slice(1).join("; ")})` : "not told (--limits untold: they pace by EC2's documented sizes)"}`}; client: ${CLIENT === "own" ? "eni-dpdk's pacer, 1 SDK attempt" : CLIENT === "sdk" ? "SDK retryMode adaptive (10 attempts), no pacer" : "SDK adaptive + eni-dpdk's pacer"}; on_failure=${ON_FAILURE}; deadline ${DEADLINE_S} s; time scale ${SCALE}`,
  );
  console.log(
    `  converged: ${converged.length}/${survivors.length} nodes (${((100 * converged.length) / survivors.length).toFixed(1)} %)${mode === "terminated" ? ` of the survivors` : ""}; unit starts ${survivors.reduce((s, o) => s + o.starts, 0)} (${restarted} nodes restarted)`,
  );
  console.log(
    `  mutating calls per ENI: ${(mutAcc / wanted).toFixed(2)} accepted, ${(mutSent / wanted).toFixed(2)} sent (sent/accepted ${(mutSent / Math.max(1, mutAcc)).toFixed(2)}); describes ${descAcc} accepted, ${descSent} sent`,
  );
  console.log(
    `  per action (sent/accepted): ${[...perAction].map(([a, [s, ok]]) => `${a} ${s}/${ok}`).join(", ")}`,
  );
  console.log(
    `  time to ready: p50 ${pct(50).toFixed(1)} s, p99 ${pct(99).toFixed(1)} s, max ${pct(100).toFixed(1)} s`,
  );
  console.log(
    `  wall: ${(wall * SCALE).toFixed(1)} s${SCALE !== 1 ? ` (${wall.toFixed(1)} s real)` : ""}; lower bound the buckets allow: ${lb.toFixed(1)} s; max/lower bound ${(pct(100) / lb).toFixed(2)}`,
  );
  if (gcLine) console.log(`  ${gcLine}`);
  console.log(
    `  leaked${mode === "terminated" ? " after gc" : ""}: ${emu.leakedEnis().length}; duplicates: ${duplicates}; ENIs attached: ${emu.enisByState().attached - survivors.length}/${survivors.length * ENIS}`,
  );
  console.log(
    `  CPU of this process ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s; peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
  );
  for (const [msg, n] of errors) console.log(`  not converged x${n}: ${msg}`);
  if (TIMELINE_S > 0) printTimeline(stormReq, survivors, t0Epoch, wall * SCALE);

  await Promise.all(nodes.map((n) => n.close(false)));
  await emu.close();
  await fs.rm(base, { recursive: true, force: true });
}

/**
 * Where the time went: per row of TIMELINE_S EC2 seconds, the calls each mutating bucket accepted
 * (and sent), the describes, the nodes ready by its end and the starts begun in it.
 */
function printTimeline(
  reqs: { action: string; status: number; at: number }[],
  outcomes: Outcome[],
  t0Epoch: number,
  wallS: number,
): void {
  const short: Record<string, string> = {
    CreateNetworkInterface: "create",
    AttachNetworkInterface: "attach",
    ModifyNetworkInterfaceAttribute: "modify",
  };
  const rows = Math.ceil(wallS / TIMELINE_S);
  const cell = () => Array.from({ length: rows }, () => [0, 0]);
  const count: Record<string, number[][]> = {
    create: cell(),
    attach: cell(),
    modify: cell(),
    describe: cell(),
  };
  for (const r of reqs) {
    const row = Math.min(rows - 1, Math.floor((((r.at - t0Epoch) / 1000) * SCALE) / TIMELINE_S));
    const c = count[short[r.action] ?? (isEc2ReadAction(r.action) ? "describe" : "")];
    if (!c || row < 0) continue;
    c[row][1]++;
    if (r.status === 200) c[row][0]++;
  }
  console.log(
    `  timeline (per ${TIMELINE_S} s; accepted/sent; ready = nodes ready by the row's end; starts = unit starts begun in the row):`,
  );
  for (let i = 0; i < rows; i++) {
    const end = (i + 1) * TIMELINE_S;
    const ready = outcomes.filter((o) => o.ready !== undefined && o.ready < end).length;
    const starts = outcomes.reduce(
      (n, o) => n + o.startedAt.filter((s) => s >= i * TIMELINE_S && s < end).length,
      0,
    );
    const f = (k: string) => `${k} ${count[k][i][0]}/${count[k][i][1]}`.padEnd(19);
    console.log(
      `  ${String(i * TIMELINE_S).padStart(4)}-${String(end).padEnd(4)} s  ${f("create")}${f("attach")}${f("modify")}${f("describe")}ready ${String(ready).padEnd(6)}starts ${starts}`,
    );
  }
}

/** The node's EC2 client, which dies (its instance terminated) once `enough()` says so after an accepted mutating call. */
function dying(factory: Ec2Factory, enough: () => boolean, die: () => void): Ec2Factory {
  return async () => {
    const api = await factory();
    const wrapped: Record<string, unknown> = { ...api };
    for (const [name, fn] of Object.entries(api)) {
      if (typeof fn !== "function" || name.startsWith("describe")) continue;
      wrapped[name] = async (input: unknown) => {
        const out: unknown = await (fn as (i: unknown) => Promise<unknown>).call(api, input);
        if (enough()) die();
        return out;
      };
    }
    return wrapped as unknown as Ec2Api;
  };
}

console.log(
  `eni-dpdk fleet benchmark: ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), Node ${process.version}, ${new Date().toISOString()}`,
);
// The SDK loads once here (each node would load it in its own process): no scenario pays for it.
await loadEc2Sdk();
for (const s of SCENARIOS) await scenario(s.mode, s.nodes);
