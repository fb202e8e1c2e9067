// The apply of an unchanged node (src/commands/unchanged.ts), across real processes: a converged
// apply keeps the record of its reads, the next one reads them all again and plans nothing; any
// input that moves makes it plan; a record it cannot trust is never used; and the record holds
// every file the planner read under the root (strace) and every IMDS path it asked for.
import t, { type Test } from "tap";
import { execFile } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { World } from "../../src/sim/world.js";
import {
  type CliResult,
  BUNDLE,
  NODE,
  baseToml,
  converge,
  diffSnapshots,
  lastError,
  runCli,
  snapshotRoot,
  world,
} from "../support/harness.js";

const RECORD = "/run/eni-dpdk/unchanged.json";
const STATUS = "/run/eni-dpdk/status.json";

/** The line an unchanged apply ends with; undefined when the apply planned. */
const unchangedLine = (r: CliResult) => r.log.find((l) => l.unchanged_since !== undefined);
const planned = (r: CliResult) => r.log.some((l) => l.msg === "sources done");
const warnings = (r: CliResult) => r.log.filter((l) => l.level === "warn").map((l) => l.msg);
const imdsGets = (w: World, from: number) =>
  new Set(
    w.imds.requests
      .slice(from)
      .filter((q) => q.method === "GET")
      .map((q) => q.path),
  );
const readJson = (w: World, p: string) =>
  JSON.parse(readFileSync(w.sim.p(p), "utf8")) as Record<string, unknown>;

/** Converge, then apply until the node's record is kept: the start of every case. */
async function settled(t: Test, toml = baseToml()): Promise<World> {
  const w = await world(t, { configToml: toml });
  await converge(t, w);
  t.notOk(existsSync(w.sim.p(RECORD)), "the apply that made the ENIs keeps no record");
  const second = await converge(t, w);
  t.ok(planned(second) && !unchangedLine(second), "the first apply with nothing to do plans");
  t.ok(existsSync(w.sim.p(RECORD)), "and keeps the record of its reads");
  return w;
}

/** Apply, require success, and say whether it planned. */
async function applyPlans(t: Test, w: World, what: string, env = {}): Promise<boolean> {
  const r = await runCli(w, ["apply"], { env });
  t.equal(r.code, 0, `${what}: ${lastError(r)}`);
  return planned(r) && !unchangedLine(r);
}

/** Apply until one is unchanged (the record is kept by the first with nothing to do). */
async function settleAgain(t: Test, w: World, env = {}): Promise<void> {
  for (let i = 0; i < 3; i++) if (!(await applyPlans(t, w, "settling", env))) return;
  t.fail("no apply was unchanged after three");
}

t.test("on a converged node, apply reads every input again and plans nothing", async (t) => {
  const w = await settled(t);
  t.equal(
    (statSync(w.sim.p(RECORD)).mode & 0o777).toString(8),
    "600",
    "the record is root's alone",
  );
  const imdsFrom = w.imds.requests.length;
  const ec2Before = w.ec2.requests.length;
  const full = await runCli(w, ["apply", "--full"]);
  t.equal(full.code, 0, lastError(full));
  t.ok(planned(full) && !unchangedLine(full), "--full plans, record or not");
  const fullGets = imdsGets(w, imdsFrom);
  const record = readJson(w, RECORD);
  const before = snapshotRoot(w.root);
  const statusBefore = readJson(w, STATUS);

  const imdsFrom2 = w.imds.requests.length;
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, lastError(r));
  const line = unchangedLine(r);
  t.ok(line, "the apply says it found every input unchanged");
  t.notOk(planned(r), "and ran no stage");
  t.match(line?.msg, /^ready: /, "with the converged apply's summary");
  t.equal(line?.actions, "0");
  t.equal(line?.unchanged_since, record.at, "since the apply that recorded it");
  t.equal(Number(line?.reads), (record.observations as unknown[]).length);
  t.same(warnings(r), warnings(full), "the warnings of a planned apply, as it gave them");
  t.same(imdsGets(w, imdsFrom2), fullGets, "the same IMDS paths as the planned apply asked for");
  t.equal(w.ec2.requests.length, ec2Before, "no EC2 request");

  const status = readJson(w, STATUS) as Record<string, Record<string, unknown>>;
  t.not(status.generatedAt, statusBefore.generatedAt, "the status is written anew");
  t.equal(status.apply.unchangedSince, record.at, "and says since when nothing changed");
  t.same(status.devices, statusBefore.devices, "with the devices as the planned apply found them");
  t.same(
    diffSnapshots(before, snapshotRoot(w.root)).filter(
      (p) => !p.includes("run/eni-dpdk/status.json"),
    ),
    [],
    "nothing but the status file changed",
  );

  const shown = await runCli(w, ["status"]);
  t.match(
    shown.stdout,
    new RegExp(`planned nothing: every input read as the apply of ${String(record.at)} found it`),
    "`status` says the last apply planned nothing, and since when",
  );

  const both = await Promise.all([runCli(w, ["apply"]), runCli(w, ["apply"])]);
  t.same(
    both.map((b) => [b.code, !!unchangedLine(b)]),
    [
      [0, true],
      [0, true],
    ],
    "two at once: both unchanged (the lock orders them)",
  );
});

t.test("any input that moves makes the next apply plan", async (t) => {
  const w = await settled(t);
  const cfg = "/etc/eni-dpdk/config.toml";
  const sriov = "/etc/pcidp/config.json";
  const cases: [string, () => void, { env?: NodeJS.ProcessEnv; after?: () => void }?][] = [
    ["a byte of the config file", () => writeFileSync(w.sim.p(cfg), baseToml("# edited\n"))],
    ["user-data", () => (w.imds.instance.userData = "# user-data that says nothing\n")],
    ["an instance tag", () => (w.imds.instance.tags = { team: "5g" })],
    [
      "the SR-IOV config, edited by someone",
      () => writeFileSync(w.sim.p(sriov), readFileSync(w.sim.p(sriov), "utf8").replace(/\s+$/, "")),
    ],
    ["an environment variable", () => undefined, { env: { ENABLE_DPDK: "true" } }],
    [
      "the state file's bytes",
      () => {
        const s = w.sim.p("/var/lib/eni-dpdk/state.json");
        writeFileSync(s, readFileSync(s, "utf8") + "\n");
      },
    ],
  ];
  for (const [what, change, opts = {}] of cases) {
    change();
    t.ok(await applyPlans(t, w, what, opts.env), `${what} changed: the apply plans`);
    await settleAgain(t, w, opts.env);
  }

  // a device someone unbound: the apply binds it again
  const unbind = await runCli(w, ["unbind", "data1"]);
  t.equal(unbind.code, 0, lastError(unbind));
  const rebind = await runCli(w, ["apply"]);
  t.equal(rebind.code, 0, lastError(rebind));
  t.ok(
    rebind.log.some((l) => l.msg === "bound"),
    "a device on ena again: planned and bound",
  );
  await settleAgain(t, w);

  // an input the planner rejects: the record is no way around the rejection
  chmodSync(w.sim.p(cfg), 0o664);
  const rejected = await runCli(w, ["apply"]);
  t.equal(rejected.code, 2, "a group-writable config file is refused, as without a record");
  t.match(rejected.stderr, /group-writable/);
  chmodSync(w.sim.p(cfg), 0o644);
  t.notOk(await applyPlans(t, w, "the mode put back"), "the mode put back: unchanged again");

  // another directory: a relative --config would name another file
  const cwd = mkdtempSync(path.join(tmpdir(), "eni-dpdk-cwd-"));
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
  const elsewhere = await runCli(w, ["apply"], { cwd });
  t.equal(elsewhere.code, 0, lastError(elsewhere));
  t.ok(planned(elsewhere), "from another directory: planned");
});

t.test("a record that cannot be trusted is not used", async (t) => {
  const w = await settled(t);
  const rec = w.sim.p(RECORD);
  const good = readFileSync(rec, "utf8");

  chmodSync(rec, 0o644);
  t.ok(await applyPlans(t, w, "readable by others"), "a record others may read: planned");
  t.equal((statSync(rec).mode & 0o777).toString(8), "600", "and replaced by one of root's");

  writeFileSync(rec, "{ not json", { mode: 0o600 });
  t.ok(await applyPlans(t, w, "garbage"), "garbage: planned");
  t.not(readFileSync(rec, "utf8"), "{ not json", "and replaced");

  const doc = JSON.parse(good) as { key: string };
  writeFileSync(
    rec,
    JSON.stringify({ ...doc, key: doc.key.replace(/"build":"\w+"/, '"build":"x"') }),
  );
  chmodSync(rec, 0o600);
  t.ok(await applyPlans(t, w, "another build"), "a record of another build: planned");

  chmodSync(w.sim.p("/run/eni-dpdk"), 0o777);
  const r = await runCli(w, ["apply"]);
  t.not(r.code, 0, "a world-writable /run/eni-dpdk is refused, as without a record");
  t.notOk(unchangedLine(r));
  chmodSync(w.sim.p("/run/eni-dpdk"), 0o755);
});

t.test(
  "the record holds every file the apply read under the root, and every IMDS path it asked for",
  async (t) => {
    const w = await settled(t);
    rmSync(w.sim.p(RECORD));
    const trace = path.join(mkdtempSync(path.join(tmpdir(), "eni-dpdk-trace-")), "strace");
    t.teardown(() => rmSync(path.dirname(trace), { recursive: true, force: true }));
    const imdsFrom = w.imds.requests.length;
    const r = await runCli(w, ["apply"], {
      traceTo: {
        file: trace,
        syscalls: "openat,open,stat,lstat,newfstatat,statx,readlink,readlinkat,access,faccessat2",
      },
    });
    t.equal(r.code, 0, lastError(r));
    t.ok(planned(r), "planned (there was no record)");
    const record = readJson(w, RECORD) as { observations: [string, string, string][] };
    const keys = new Set(record.observations.map(([, k]) => k));
    const opsOf = new Map<string, Set<string>>();
    for (const [op, k] of record.observations) opsOf.set(k, (opsOf.get(k) ?? new Set()).add(op));
    // what the record must hold for a syscall: reading a file's bytes is a read, opening a
    // directory a listing, anything else (stat, readlink) any record of the path
    const wanted = (line: string): string[] | undefined =>
      /^\d+ +open(at)?\(.*O_DIRECTORY/.test(line)
        ? ["list"]
        : /^\d+ +open(at)?\(/.test(line)
          ? ["read", "config-bytes"]
          : undefined;
    // realpath looks at each directory on the way, and at the symlinks' targets
    const resolved = record.observations
      .filter(([op]) => op === "resolve")
      .flatMap(([, k, v]) => [k, JSON.parse(v) as string]);
    const onTheWay = (p: string) => resolved.some((k) => k.startsWith(`${p}/`));
    const ours = [RECORD, STATUS, "/run/eni-dpdk.lock"];
    const root = w.root;
    const untraced = new Set<string>();
    for (const line of readFileSync(trace, "utf8").split("\n")) {
      const m = /"([^"]+)"/.exec(line);
      if (!m || !m[1].startsWith(`${root}/`) || /O_WRONLY|O_RDWR/.test(line)) continue;
      const p = m[1].slice(root.length);
      if (ours.some((o) => p === o || p.startsWith(`${path.dirname(o)}/.${path.basename(o)}.`)))
        continue;
      const want = wanted(line);
      const ops = opsOf.get(p);
      if (ops && (!want || want.some((op) => ops.has(op)))) continue;
      if (!ops && onTheWay(p)) continue;
      untraced.add(`${want?.join("|") ?? "stat"} ${p}`);
    }
    t.same([...untraced], [], "no file under the root was read around the record");
    const asked = [...imdsGets(w, imdsFrom)]
      .map((p) => p.replace(/^\/latest\//, ""))
      .filter((p) => !keys.has(p));
    t.same(asked, [], "no IMDS path was asked for around the record");
  },
);

t.test(
  "kill -9 at the unchanged apply's status rename: the next apply plans and cleans up",
  async (t) => {
    const w = await settled(t);
    t.ok(unchangedLine(await runCli(w, ["apply"])), "unchanged before the crash");
    const killed = await runCli(w, ["apply"], { killAt: { syscall: "rename", when: 1 } });
    t.equal(killed.signal, "SIGKILL", "killed at its one rename, the status file's");
    const dir = w.sim.p("/run/eni-dpdk");
    const temps = () => readdirSync(dir).filter((f) => f.endsWith(".tmp"));
    t.equal(temps().length, 1, "it left its temp file");
    t.ok(await applyPlans(t, w, "after the crash"), "a dead writer's temp file: the apply plans");
    t.same(temps(), [], "and removes it");
    await settleAgain(t, w);
  },
);

/** A copy of the bundle whose unchanged script is `text`. */
function bundleWithScript(t: Test, text: string): string {
  const copy = mkdtempSync(path.join(tmpdir(), "eni-dpdk-bundle-"));
  t.teardown(() => rmSync(copy, { recursive: true, force: true }));
  cpSync(path.dirname(BUNDLE), copy, { recursive: true });
  const chunks = path.join(copy, "chunks");
  const script = readdirSync(chunks).find((f) => /^unchanged-\w+\.js$/.test(f));
  t.ok(script, "the bundle has the unchanged apply's script");
  writeFileSync(path.join(chunks, script!), text);
  return copy;
}

/** `apply` with a copied bundle, asynchronously: the emulators answer from this process. */
const applyWith = (w: World, copy: string) =>
  new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(
      NODE[0],
      [...NODE.slice(1), path.join(copy, "eni-dpdk.cjs"), "apply"],
      { env: { ...w.env(), CACHE_DIRECTORY: path.join(copy, "cache") } },
      (e, _out, stderr) => resolve({ code: e ? Number(e.code ?? 1) : 0, stderr }),
    ),
  );

t.test("a broken unchanged script costs nothing but the shortcut: the planner runs", async (t) => {
  const w = await settled(t);
  const copy = bundleWithScript(t, "throw new Error('broken on purpose');\n");
  const r = await applyWith(w, copy);
  t.equal(r.code, 0, r.stderr.slice(-600));
  t.match(r.stderr, /msg="sources done"/, "planned");
  t.notMatch(r.stderr, /broken on purpose/, "and the shortcut's failure is not the apply's");
});

t.test("without a record (every boot) the unchanged script is not even loaded", async (t) => {
  const w = await settled(t);
  // a script that ends the process as it loads: an apply that loads it exits 7
  const copy = bundleWithScript(t, "process.exit(7);\n");
  t.equal((await applyWith(w, copy)).code, 7, "with the record, apply loads the script");
  w.reboot();
  t.notOk(existsSync(w.sim.p(RECORD)), "a reboot leaves no record");
  const r = await applyWith(w, copy);
  t.equal(r.code, 0, r.stderr.slice(-600));
  t.match(r.stderr, /msg="sources done"/, "the planner ran, and nothing else was loaded");
  t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci", "and rebound the device");
});

t.test("a byte more in any recorded file makes the next apply plan", async (t) => {
  const w = await settled(t);
  const record = readJson(w, RECORD) as { observations: [string, string, string][] };
  // every file whose bytes the record holds (sysfs attributes are files in the simulation), a
  // fixed sample of them so the case stays short
  const files = record.observations
    .filter(([op, , v]) => (op === "read" || op === "config-bytes") && v !== "null")
    .map(([, k]) => k);
  const sample = files.filter((_, i) => i % Math.ceil(files.length / 8) === 0);
  t.ok(sample.length >= 6, `${sample.length} of ${files.length} files`);
  for (const f of sample) {
    const real = w.sim.p(f);
    const was = readFileSync(real);
    const longer = Buffer.concat([was, Buffer.from(" ")]);
    writeFileSync(real, longer);
    // the simulated kernel acts on writes to some attributes (mtu, flags) and puts them back
    await w.sim.settle();
    if (!readFileSync(real).equals(longer)) {
      t.comment(`${f}: the simulated kernel rewrote it; not a case`);
      continue;
    }
    const r = await runCli(w, ["apply"]);
    t.notOk(unchangedLine(r), `${f} one byte longer: not unchanged (exit ${r.code})`);
    writeFileSync(real, was);
    await settleAgain(t, w);
  }
});
