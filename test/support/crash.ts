// The crash suite's shared parts (test/integration/adversarial/crash-*.test.ts). `apply` (and the
// device commands) are killed with SIGKILL at each step, deterministically: the EC2 emulator kills
// the caller after an action took effect and before it answers; strace kills it at a chosen
// syscall on a chosen path (before a sysfs write, before a rename). Then the next run must
// converge: one ENI per name, valid files, every device on its intended driver, nothing
// driverless, the primary untouched, no temp file left, and a further apply changes nothing.
// Three files share these so that each stays well inside tap's per-file timeout on a slow machine.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import { Host } from "../../src/host/host.js";
import { loadState, JOURNAL_PATH, STATE_PATH } from "../../src/host/state.js";
import type { World } from "../../src/sim/world.js";
import {
  assertNoneDriverless,
  assertPrimaryUntouched,
  baseToml,
  diffSnapshots,
  lastError,
  renameTargets,
  runCli,
  snapshotRoot,
  world,
  type RunOptions,
} from "./harness.js";

export const INSTANCE = "i-0123456789abcdef0";
export const DATA1_BDF = "0000:00:06.0";
export const KERN1_BDF = "0000:00:07.0";

/** Every temp file under the root: a killed write's leftovers. */
export function tempFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (
        e.isDirectory() &&
        !p.startsWith(path.join(root, "sys")) &&
        !p.startsWith(path.join(root, "proc"))
      )
        walk(p);
      else if (/\.\d+\.\d+\.tmp$/.test(e.name)) out.push(path.relative(root, p));
    }
  };
  walk(root);
  return out;
}

type Selector = { pciAddresses?: string[] };
/** [resourceName, pciAddresses] per entry; selectors may be one object or an array of them. */
export function sriovResources(w: World): [string, string[]][] {
  const doc = JSON.parse(readFileSync(w.sim.p("/etc/pcidp/config.json"), "utf8")) as {
    resourceList: { resourceName: string; selectors: Selector | Selector[] }[];
  };
  return doc.resourceList.map((e) => [
    e.resourceName,
    [e.selectors].flat().flatMap((s) => s.pciAddresses ?? []),
  ]);
}

/** The converged node this config describes, checked from the outside. */
export async function assertConverged(
  t: Test,
  w: World,
  opts: { kernelEni?: boolean } = {},
): Promise<void> {
  for (const name of ["data1", ...(opts.kernelEni === false ? [] : ["kern1"])]) {
    const mine = [...w.ec2.enis.values()].filter(
      (e) => e.tags["eni-dpdk:name"] === name && e.tags["eni-dpdk:instance-id"] === INSTANCE,
    );
    t.equal(mine.length, 1, `one ENI named ${name} (${mine.map((e) => e.id).join(", ")})`);
    t.equal(mine[0]?.attachment?.instanceId, INSTANCE, `${name} is attached`);
  }
  t.same(
    w.ec2.leakedEnis().map((e) => e.id),
    [],
    "no ENI created and left unattached",
  );
  const host = new Host(w.root);
  const state = await loadState(host);
  const data1 = Object.values(state.bindings).find((b) => b.eniName === "data1");
  t.match(
    data1,
    { bdf: DATA1_BDF, driver: "vfio-pci", originalDriver: "ena" },
    "the state records data1's binding",
  );
  t.notOk(await host.exists(JOURNAL_PATH), "no operation left in flight");
  t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "data1 on vfio-pci");
  t.ok(
    readdirSync(w.sim.p("/dev/vfio")).some((n) => n.startsWith("noiommu-")),
    "its device node exists",
  );
  if (opts.kernelEni !== false) {
    t.equal(w.sim.driverOf(KERN1_BDF), "ena", "kern1 on ena");
    const ifname = w.sim.netdevOf(KERN1_BDF)!;
    t.equal(
      readFileSync(w.sim.p(`/sys/class/net/${ifname}/mtu`), "utf8").trim(),
      "9001",
      "kern1 MTU 9001",
    );
    t.ok(
      parseInt(readFileSync(w.sim.p(`/sys/class/net/${ifname}/flags`), "utf8"), 16) & 1,
      "kern1 up",
    );
  }
  assertNoneDriverless(t, w);
  assertPrimaryUntouched(t, w);
  t.same(sriovResources(w), [["ena_dpdk", [DATA1_BDF]]], "the SR-IOV file holds data1");
  t.same(tempFiles(w.root), [], "no temp file left behind");
}

/** A further apply on the converged node changes nothing (status.json aside: it records every run). */
export async function assertNoFurtherChange(t: Test, w: World): Promise<void> {
  const before = snapshotRoot(w.root);
  const mutating = w.ec2.mutatingCalls();
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, `a further apply succeeds: ${lastError(r)}`);
  t.equal(w.ec2.mutatingCalls(), mutating, "a further apply makes no EC2 mutation");
  t.same(
    diffSnapshots(before, snapshotRoot(w.root)).filter(
      (d) => !/run\/eni-dpdk\/(status|unchanged)\.json/.test(d),
    ),
    [],
    "a further apply changes no file",
  );
}

export interface CrashPoint {
  name: string;
  /** kill after the nth EC2 action of this name took effect, before its answer */
  ec2?: { action: string; nth?: number };
  /** strace: kill at this syscall on this path (relative to the root); for rename, the nth rename onto it */
  syscall?: { call: string; path: string; when?: number };
}

/** The rename sequence of a first-boot apply of baseToml, probed once on a world of its own. */
let renames: Promise<string[]> | undefined;
function renameSequence(t: Test): Promise<string[]> {
  renames ??= (async () => {
    const w = await world(t, { configToml: baseToml() });
    return renameTargets(w, ["apply"]);
  })();
  return renames;
}

export const CRASH_POINTS: CrashPoint[] = [
  {
    name: "after the first CreateNetworkInterface took effect",
    ec2: { action: "CreateNetworkInterface" },
  },
  {
    name: "after the second CreateNetworkInterface took effect",
    ec2: { action: "CreateNetworkInterface", nth: 2 },
  },
  {
    name: "after the first AttachNetworkInterface took effect",
    ec2: { action: "AttachNetworkInterface" },
  },
  {
    name: "after the second AttachNetworkInterface took effect",
    ec2: { action: "AttachNetworkInterface", nth: 2 },
  },
  {
    name: "after the first ModifyNetworkInterfaceAttribute took effect",
    ec2: { action: "ModifyNetworkInterfaceAttribute" },
  },
  { name: "at the first rename of state.json", syscall: { call: "rename", path: STATE_PATH } },
  {
    name: "at the third rename of state.json",
    syscall: { call: "rename", path: STATE_PATH, when: 3 },
  },
  {
    name: "at the rename of the networkd file",
    syscall: { call: "rename", path: "/etc/systemd/network/00-eni-dpdk-data1.network" },
  },
  {
    name: "at the journal's first rename (intent not yet durable)",
    syscall: { call: "rename", path: JOURNAL_PATH },
  },
  {
    name: "at the write of driver_override",
    syscall: { call: "write", path: `/sys/devices/pci0000:00/${DATA1_BDF}/driver_override` },
  },
  {
    name: "at the write to ena's unbind",
    syscall: { call: "write", path: "/sys/bus/pci/drivers/ena/unbind" },
  },
  {
    name: "between unbind and probe (the write to drivers_probe)",
    syscall: { call: "write", path: "/sys/bus/pci/drivers_probe" },
  },
  {
    name: "after the bind, at the unlink that clears the journal",
    syscall: { call: "unlink", path: JOURNAL_PATH },
  },
  // the netdev appears after strace starts, so -P gets its canonical path
  {
    name: "at the write of kern1's MTU",
    syscall: { call: "write", path: `/sys/devices/pci0000:00/${KERN1_BDF}/net/eth2/mtu` },
  },
  {
    name: "at the write of kern1's flags (link up)",
    syscall: { call: "write", path: `/sys/devices/pci0000:00/${KERN1_BDF}/net/eth2/flags` },
  },
  {
    name: "at the rename of the SR-IOV config",
    syscall: { call: "rename", path: "/etc/pcidp/config.json" },
  },
  {
    name: "at the rename of status.json",
    syscall: { call: "rename", path: "/run/eni-dpdk/status.json" },
  },
  {
    name: "at the rename of the parse memo",
    syscall: { call: "rename", path: "/var/lib/eni-dpdk/toml-memo.json" },
  },
];

/**
 * The kill landed on another file's rename: the first-boot order of the renames is not fixed (the
 * ENIs are provisioned concurrently, and how many state saves come before a given file varies with
 * timing), so the probed index can miss. A miss says nothing of the product; the test runs again.
 */
export class RenameMissed extends Error {}

export async function crashRun(
  w: World,
  args: string[],
  p: CrashPoint,
  t?: Test,
): Promise<{ signal: string | null; code: number; stderr: string }> {
  if (p.ec2) {
    let pid = 0;
    let seen = 0;
    w.ec2.afterDispatch = (action) => {
      if (action === p.ec2!.action && ++seen === (p.ec2!.nth ?? 1)) process.kill(pid, "SIGKILL");
    };
    const r = await runCli(w, args, { onSpawn: (x) => (pid = x) });
    w.ec2.afterDispatch = undefined;
    return r;
  }
  const s = p.syscall!;
  if (s.call === "rename") {
    const seq = await renameSequence(t!);
    const at = seq.map((x, i) => [x, i] as const).filter(([x]) => x === s.path)[
      (s.when ?? 1) - 1
    ]?.[1];
    if (at === undefined)
      throw new Error(
        `a first-boot apply renames nothing onto ${s.path} ${s.when ?? 1} time(s): ${seq.join(", ")}`,
      );
    const r = await runCli(w, args, { killAt: { syscall: "rename", when: at + 1 } });
    const dir = path.posix.dirname(s.path);
    const base = path.posix.basename(s.path);
    const left = readdirSync(w.sim.p(dir)).filter(
      (n) => n.startsWith(`.${base}.`) && n.endsWith(".tmp"),
    );
    if (r.signal === "SIGKILL" && !left.length)
      throw new RenameMissed(`killed at rename #${at + 1}, but not at one onto ${s.path}`);
    return r;
  }
  const opts: RunOptions = { killAt: { path: w.sim.p(s.path), syscall: s.call, when: s.when } };
  return runCli(w, args, opts);
}

/** One test per crash point: apply killed there; the next apply converges, and a further one changes nothing. */
export function crashPointTests(points: CrashPoint[]): void {
  for (const p of points) {
    void t.test(`crash: apply killed ${p.name}; the next apply converges`, async (t) => {
      let w = await world(t, { configToml: baseToml() });
      let killed: Awaited<ReturnType<typeof crashRun>>;
      for (let attempt = 1; ; attempt++) {
        try {
          killed = await crashRun(w, ["apply"], p, t);
          break;
        } catch (e) {
          if (!(e instanceof RenameMissed) || attempt === 3) throw e;
          t.comment(`${e.message}: again on a fresh node (attempt ${attempt + 1} of 3)`);
          w = await world(t, { configToml: baseToml() });
        }
      }
      t.equal(
        killed.signal,
        "SIGKILL",
        `the run was really killed there (exit ${killed.code}): ${killed.stderr.slice(-300)}`,
      );
      assertPrimaryUntouched(t, w);
      const r = await runCli(w, ["apply"]);
      t.equal(r.code, 0, `the next apply converges: ${lastError(r)}`);
      await assertConverged(t, w);
      await assertNoFurtherChange(t, w);
    });
  }
}
