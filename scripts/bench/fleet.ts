// Benchmark: a node group of N nodes (default 1,000) boots at the same moment against ONE EC2 emulator
// throttled with account-wide token buckets per category. Each node runs the real planEnis/applyEnis
// with its own identity: its own instance in EC2, its own IMDS (an in-process MemoryImds over the same
// data the IMDS emulator serves; 1,000 HTTP IMDS servers would measure sockets, not us), its own fake
// root whose NICs appear on hot-plug, and its own lazily built EC2 client (real SDK over HTTP).
// Prints measured figures; no thresholds.
// Run: npx tsx scripts/bench/fleet.ts [--nodes 1000] [--enis 2]
import os from "node:os";
import { promises as fs } from "node:fs";
import path from "node:path";
import { applyEnis, planEnis } from "../../src/reconcile/eni.js";
import { Ec2Emulator, type Bucket, type Category } from "../../src/sim/ec2.js";
import { SimNode, eniConfigs, standardSeed, useDummyCredentials } from "../../src/sim/node.js";

useDummyCredentials();
const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const NODES = arg("nodes", 1000);
const ENIS = arg("enis", 2);
const DEADLINE_S = arg("deadline", 300);

// Account-wide buckets, shaped like EC2's (a burst capacity plus a steady refill per second, one
// bucket per category shared by every caller). EC2 documents e.g. 100 tokens / 20 per s for a
// non-mutating action such as DescribeHosts, per action; we pool per category and raise the refill
// so a 1,000-node storm finishes in minutes on 2 cores. The figures are printed with the results.
const BUCKETS: Record<Category, Bucket> = {
  mutating: { capacity: 100, refillPerSec: 100 },
  describe: { capacity: 200, refillPerSec: 200 },
};
const LATENCY = {
  CreateNetworkInterface: 300,
  AttachNetworkInterface: 150,
  ModifyNetworkInterfaceAttribute: 100,
  "*": 50,
};
const ATTACH_DELAY_MS = 1500;
const HOTPLUG_DELAY_MS = 1000;

const emu = await new Ec2Emulator(standardSeed()).start();
emu.latency = LATENCY;
emu.attachDelayMs = ATTACH_DELAY_MS;

const base = await fs.mkdtemp(path.join(os.tmpdir(), "eni-dpdk-fleet-"));
const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");
const nodes: SimNode[] = [];
for (let i = 0; i < NODES; i++) {
  const root = path.join(base, `n${i}`);
  await fs.mkdir(root);
  nodes.push(
    await SimNode.create(emu, {
      instanceId: `i-0f${hex(i, 15)}`,
      primaryMac: `02:10:00:${hex((i >> 16) & 255, 2)}:${hex((i >> 8) & 255, 2)}:${hex(i & 255, 2)}`,
      primaryEniId: `eni-0f${hex(i, 15)}`,
      enis: eniConfigs(ENIS),
      imds: "memory",
      hotplugDelayMs: HOTPLUG_DELAY_MS,
      deadlineMs: DEADLINE_S * 1000,
      root,
    }),
  );
}
emu.setThrottle(BUCKETS); // after seeding, so every bucket starts full at the storm

const contexts = await Promise.all(nodes.map((n) => n.context()));
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const outcomes = await Promise.all(
  nodes.map(async (node, i) => {
    const ctx = contexts[i];
    const start = performance.now();
    try {
      const plan = await planEnis(ctx, node.ec2);
      const recs = await applyEnis(ctx, node.ec2, plan);
      const ok = recs.length === ENIS;
      return {
        ok,
        ms: performance.now() - t0,
        sinceStart: performance.now() - start,
        error: ok ? "wrong count" : undefined,
      };
    } catch (e) {
      return {
        ok: false,
        ms: performance.now() - t0,
        sinceStart: 0,
        error: (e as Error).message.split("\n")[0],
      };
    }
  }),
);
const wall = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);

const converged = outcomes.filter((o) => o.ok);
const times = converged.map((o) => o.ms).sort((a, b) => a - b);
const pct = (p: number) =>
  times.length
    ? times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)] / 1000
    : NaN;
const created = [...emu.enis.values()].filter((e) => e.createdByApi);
const duplicates = (() => {
  const seen = new Map<string, number>();
  for (const e of created) {
    const k = `${e.tags["eni-dpdk:instance-id"]}/${e.tags["eni-dpdk:name"]}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  return [...seen.values()].filter((v) => v > 1).reduce((a, v) => a + v - 1, 0);
})();
const enisWanted = NODES * ENIS;
const calls = emu.callsPerAction();
const errors = new Map<string, number>();
for (const o of outcomes) if (!o.ok) errors.set(o.error!, (errors.get(o.error!) ?? 0) + 1);

console.log(
  `fleet: ${NODES} nodes x ${ENIS} ENIs booting at once against one throttled EC2 emulator`,
);
console.log(
  `  buckets (account-wide): mutating capacity ${BUCKETS.mutating.capacity}, refill ${BUCKETS.mutating.refillPerSec}/s; describe capacity ${BUCKETS.describe.capacity}, refill ${BUCKETS.describe.refillPerSec}/s`,
);
console.log(
  `  latencies: Create ${LATENCY.CreateNetworkInterface} ms, Attach ${LATENCY.AttachNetworkInterface} ms, Modify ${LATENCY.ModifyNetworkInterfaceAttribute} ms, other ${LATENCY["*"]} ms; attaching->attached ${ATTACH_DELAY_MS} ms; NIC +${HOTPLUG_DELAY_MS} ms; node deadline ${DEADLINE_S} s`,
);
console.log(
  `  converged: ${converged.length}/${NODES} nodes (${((100 * converged.length) / NODES).toFixed(1)} %)`,
);
console.log(
  `  ENIs attached: ${emu.enisByState().attached - NODES} of ${enisWanted}; leaked (created, not attached): ${emu.leakedEnis().length}; duplicates: ${duplicates}`,
);
console.log(
  `  mutating calls per ENI: ${(emu.mutatingCalls({ accepted: true }) / enisWanted).toFixed(2)} accepted, ${(emu.mutatingCalls() / enisWanted).toFixed(2)} sent incl. throttled`,
);
console.log(
  `  throttled: mutating ${emu.throttledCalls("mutating")}, describe ${emu.throttledCalls("describe")}; EC2 requests total ${emu.totalCalls()}`,
);
console.log(
  `  per action: ${Object.entries(calls)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ")}`,
);
console.log(
  `  time-to-ready: p50 ${pct(50).toFixed(1)} s, p99 ${pct(99).toFixed(1)} s, max ${pct(100).toFixed(1)} s`,
);
console.log(
  `  total wall: ${(wall / 1000).toFixed(1)} s; CPU of this process ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s; peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
);
if (errors.size) for (const [msg, n] of errors) console.log(`  failure x${n}: ${msg}`);

await Promise.all(nodes.map((n) => n.close(false)));
await emu.close();
await fs.rm(base, { recursive: true, force: true });
