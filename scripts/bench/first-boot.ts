// Benchmark: first boot with 1 ENI vs 8 ENIs, all ENIs provisioned concurrently.
// Emulator latencies as the issue specifies: CreateNetworkInterface 300 ms, attaching→attached 1.5 s,
// NIC (netdev + IMDS entry) appears 1 s after "attached". Prints measured figures; no thresholds.
// Run: npx tsx scripts/bench/first-boot.ts [--reps 5]
import { applyEnis, planEnis } from "../../src/reconcile/eni.js";
import { Ec2Emulator } from "../../src/sim/ec2.js";
import { SimNode, eniConfigs, standardSeed, useDummyCredentials } from "../../src/sim/node.js";

useDummyCredentials();
const reps = Number(process.argv[process.argv.indexOf("--reps") + 1] || 5) || 5;

const LATENCY = {
  CreateNetworkInterface: 300,
  // Not specified by the issue; modest figures so the other calls are not free.
  AttachNetworkInterface: 150,
  ModifyNetworkInterfaceAttribute: 100,
  "*": 50,
};
const ATTACH_DELAY_MS = 1500;
const HOTPLUG_DELAY_MS = 1000;

let seq = 0;
async function once(n: number): Promise<{ ms: number; calls: number; mutating: number }> {
  const emu = await new Ec2Emulator(standardSeed()).start();
  emu.latency = LATENCY;
  emu.attachDelayMs = ATTACH_DELAY_MS;
  seq++;
  const node = await SimNode.create(emu, {
    instanceId: `i-0b${seq.toString(16).padStart(15, "0")}`,
    primaryMac: `02:00:00:00:aa:${seq.toString(16).padStart(2, "0")}`,
    primaryEniId: `eni-0b${seq.toString(16).padStart(15, "0")}`,
    instanceType: "c6in.16xlarge",
    enis: eniConfigs(n),
    hotplugDelayMs: HOTPLUG_DELAY_MS,
    deadlineMs: 120_000,
  });
  try {
    const ctx = await node.context();
    const t0 = performance.now();
    const plan = await planEnis(ctx, node.ec2);
    const recs = await applyEnis(ctx, node.ec2, plan);
    const ms = performance.now() - t0;
    if (recs.length !== n) throw new Error(`expected ${n} ENIs, got ${recs.length}`);
    return { ms, calls: emu.totalCalls(), mutating: emu.mutatingCalls() };
  } finally {
    await node.close();
    await emu.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await once(1); // warm-up: loads the SDK once, so both sides measure provisioning only
const results: Record<number, { ms: number[]; calls: number; mutating: number }> = {};
for (const n of [1, 8]) {
  results[n] = { ms: [], calls: 0, mutating: 0 };
  for (let i = 0; i < reps; i++) {
    const r = await once(n);
    results[n].ms.push(r.ms);
    results[n].calls = r.calls;
    results[n].mutating = r.mutating;
  }
}
const w1 = median(results[1].ms);
const w8 = median(results[8].ms);
console.log(`first boot, parallel ENIs (${reps} runs each, median; SDK already loaded)`);
console.log(
  `  emulator: Create ${LATENCY.CreateNetworkInterface} ms, Attach ${LATENCY.AttachNetworkInterface} ms, Modify ${LATENCY.ModifyNetworkInterfaceAttribute} ms, other calls ${LATENCY["*"]} ms; attaching->attached ${ATTACH_DELAY_MS} ms; NIC appears ${HOTPLUG_DELAY_MS} ms later`,
);
for (const n of [1, 8]) {
  const r = results[n];
  console.log(
    `  ${n} ENI${n > 1 ? "s" : " "}: wall ${(median(r.ms) / 1000).toFixed(2)} s (runs: ${r.ms.map((x) => (x / 1000).toFixed(2)).join(", ")}), EC2 calls ${r.calls}, mutating ${r.mutating}`,
  );
}
console.log(`  wall(8)/wall(1) = ${(w8 / w1).toFixed(3)} (goal <= 1.25)`);
