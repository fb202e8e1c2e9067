// A real DPDK application on the devices eni-dpdk bound: Debian's dpdk-testpmd (DPDK 22.11,
// net_e1000_em) in io forwarding between the two DPDK NICs, which QEMU puts on one hub, so each
// receives what the other sends. Plus dpdk-devbind.py, both as the judge of `status` and as the
// seed's binding script. Evidence comes from testpmd's own output and the kernel's sysfs.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { bdfOf } from "../topology.js";
import {
  checkBoundVfio,
  configToml,
  nic,
  plan,
  S1_ENIS,
  sameNic,
  snapshot,
  writeConfig,
} from "./common.js";
import {
  cli,
  cliWithEnv,
  fileStamp,
  fmtNic,
  parseJson,
  PCIDP,
  read,
  run,
  STATE,
  stateOf,
  STATUS,
  Step,
  tail,
  type NicState,
  type RunOut,
} from "./lib.js";

const TESTPMD = "/usr/bin/dpdk-testpmd";
const DEVBIND = "/usr/bin/dpdk-devbind.py";
const HUGEPAGES = "/sys/kernel/mm/hugepages/hugepages-2048kB";
const HUGETLBFS = "/dev/hugepages";
/** 2 MiB pages for testpmd (2048 mbufs and EAL's own heap fit in far fewer) */
const PAGES = 64;

interface PortCounters {
  rx: number;
  tx: number;
}

/** One dpdk-testpmd process: io forwarding, a burst sent first, port statistics every second. */
export class Testpmd {
  out = "";
  private readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;
  readonly startedAt = Date.now();

  constructor(readonly bdfs: string[]) {
    const argv = [
      // one vCPU: the main lcore and the forwarding lcore share CPU 0
      "--lcores=0@0,1@0",
      "-n",
      "1",
      ...bdfs.flatMap((b) => ["-a", b]),
      "--",
      "--forward-mode=io",
      "--tx-first",
      "--stats-period=1",
      "--nb-cores=1",
      "--total-num-mbufs=2048",
    ];
    process.stdout.write(`E2E-RUN ${TESTPMD} ${argv.join(" ")}\n`);
    this.proc = spawn(TESTPMD, argv, { stdio: ["ignore", "pipe", "pipe"] });
    const on = (d: Buffer) => (this.out += d.toString());
    this.proc.stdout!.on("data", on);
    this.proc.stderr!.on("data", on);
    this.exited = new Promise((resolve) => {
      this.proc.on("error", (e) => {
        this.out += `\nspawn error: ${String(e)}`;
        this.done = true;
        resolve({ code: 127, signal: null });
      });
      this.proc.on("close", (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      });
    });
  }

  get running(): boolean {
    return !this.done;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The EAL lines (startup: IOVA mode, IOMMU type, probes). */
  eal(): string[] {
    return this.out.split("\n").filter((l) => /^EAL: |^Port \d+ Link|^Port \d+: /.test(l));
  }

  /** The latest periodic "NIC statistics for port N" of each port. */
  stats(): Map<number, PortCounters> {
    const m = new Map<number, PortCounters>();
    for (const x of this.out.matchAll(
      /NIC statistics for port (\d+)\s+#+\s+RX-packets:\s+(\d+)[^]*?TX-packets:\s+(\d+)/g,
    ))
      m.set(Number(x[1]), { rx: Number(x[2]), tx: Number(x[3]) });
    return m;
  }

  /** The "Forward statistics for port N" testpmd prints when it stops. */
  forwardStats(): Map<number, PortCounters> {
    const m = new Map<number, PortCounters>();
    for (const x of this.out.matchAll(
      /Forward statistics for port (\d+)\s+-+\s+RX-packets:\s+(\d+)[^]*?TX-packets:\s+(\d+)/g,
    ))
      m.set(Number(x[1]), { rx: Number(x[2]), tx: Number(x[3]) });
    return m;
  }

  /** Wait until `pred` holds on the output (or testpmd exits, or the time is up). */
  async until(pred: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (pred()) return true;
      if (this.done) return pred();
      await new Promise((r) => setTimeout(r, 250));
    }
    return pred();
  }

  /** SIGINT, as an operator's Ctrl-C: testpmd stops the ports and prints its forward statistics. */
  async stop(ms = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.done) this.proc.kill("SIGINT");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), ms);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

const bothForward = (s: Map<number, PortCounters>) =>
  [0, 1].every((p) => (s.get(p)?.rx ?? 0) > 0 && (s.get(p)?.tx ?? 0) > 0);
const fmtCounters = (s: Map<number, PortCounters>) =>
  [...s.entries()].map(([p, c]) => `port ${p}: RX-packets ${c.rx} TX-packets ${c.tx}`).join("; ");

/** The periodic statistics block of each port as testpmd printed it last (the evidence excerpt). */
function statsExcerpt(out: string): string[] {
  const blocks = out.split("NIC statistics for port ").slice(-2);
  return blocks.flatMap((b) => {
    const port = b.match(/^(\d+)/)?.[1];
    const lines = b
      .split("\n")
      .filter((l) => /RX-packets|TX-packets|RX-errors/.test(l))
      .map((l) => `  | port ${port}: ${l.trim().replace(/\s+/g, " ")}`);
    return lines;
  });
}

function hugepages(): { total: number; free: number } {
  return {
    total: Number(read(`${HUGEPAGES}/nr_hugepages`)?.trim() ?? 0),
    free: Number(read(`${HUGEPAGES}/free_hugepages`)?.trim() ?? 0),
  };
}

/** The BDFs a pod would get: the SR-IOV device plugin's pciAddresses for our resource. */
function resourceBdfs(resource = "e2e_dpdk"): string[] {
  const doc = parseJson(read(PCIDP)) as
    { resourceList?: { resourceName?: string; selectors?: unknown }[] } | undefined;
  const entry = doc?.resourceList?.find((e) => e.resourceName === resource);
  const sels = (Array.isArray(entry?.selectors) ? entry.selectors : [entry?.selectors]) as (
    { pciAddresses?: string[] } | undefined
  )[];
  return [...new Set(sels.flatMap((s) => s?.pciAddresses ?? []))].sort();
}

const DPDK_NICS = () => [nic("dpdk1"), nic("dpdk2")];
let bootSnapshot: Record<string, NicState> = {};
let app: Testpmd | undefined;

/** What a node gives a DPDK app before eni-dpdk runs: hugetlbfs mounted (systemd's dev-hugepages.mount). */
export async function dpdkSetup(): Promise<void> {
  mkdirSync(HUGETLBFS, { recursive: true });
  const m = await run(["/bin/mount", "-t", "hugetlbfs", "nodev", HUGETLBFS]);
  bootSnapshot = snapshot();
  process.stdout.write(
    `E2E-DPDK hugetlbfs on ${HUGETLBFS}: exit ${m.code} ${m.stderr.trim()}; 2M pages ${JSON.stringify(hugepages())}\n`,
  );
}

function applyOut(r: RunOut): string {
  return `${r.stdout}\n${r.stderr}`;
}

/** The primary as it booted and the kernel ENI as eni-dpdk configured it, unchanged since `before`. */
function checkUntouched(st: Step, before: Record<string, NicState>, what: string): void {
  const p = stateOf(nic("primary"));
  st.check(
    sameNic(bootSnapshot.primary, p) && sameNic(before.primary, p),
    `primary untouched since boot: ${fmtNic("primary", p)}`,
  );
  const k = stateOf(nic("kern1"));
  st.check(
    sameNic(before.kern1, k) &&
      k.driver === "e1000" &&
      !!k.netdev &&
      k.up === true &&
      k.mtu === 8500,
    `kernel ENI untouched ${what} (e1000, UP, MTU 8500): ${fmtNic("kern1", k)}`,
  );
}

/** Run testpmd until both ports forward (or it fails); returns it still running. */
async function startForwarding(st: Step, bdfs: string[]): Promise<Testpmd> {
  const tp = new Testpmd(bdfs);
  const ok = await tp.until(() => bothForward(tp.stats()), 120_000);
  st.note(
    `testpmd on ${bdfs.join(" ")}: ${ok ? "forwarding" : "NOT forwarding"} after ${Date.now() - tp.startedAt} ms`,
  );
  if (!ok) st.evidence.push(...tail(tp.out, 12));
  return tp;
}

async function stopAndReport(st: Step, tp: Testpmd): Promise<void> {
  const r = await tp.stop();
  const fwd = tp.forwardStats();
  st.note(
    `testpmd stopped (SIGINT): exit ${r.code ?? r.signal}; forward statistics: ${fmtCounters(fwd)}`,
  );
  st.check(
    /Bye\.\.\./.test(tp.out) && bothForward(fwd),
    "testpmd shut down cleanly with packets forwarded both ways",
  );
}

// ---- scenarios -------------------------------------------------------------------------------------

export async function s14NoHugepages(): Promise<Step> {
  const st = new Step(
    "14",
    "no hugepages: apply warns `no hugepages`, then testpmd fails for want of them",
  );
  const mounted = (read("/proc/mounts") ?? "")
    .split("\n")
    .some((l) => l.split(" ")[1] === HUGETLBFS && l.split(" ")[2] === "hugetlbfs");
  st.check(
    mounted && hugepages().total === 0,
    `no 2M pages reserved (${JSON.stringify(hugepages())}), hugetlbfs mounted on ${HUGETLBFS}`,
  );
  writeConfig(configToml(S1_ENIS));
  const r = await cli("apply");
  st.note(`apply without [dpdk] hugepages: exit ${r.code} in ${r.ms} ms`);
  st.check(r.code === 0, "apply exits 0 (the devices are bound)");
  for (const n of DPDK_NICS()) checkBoundVfio(st, n);
  const warn = applyOut(r)
    .split("\n")
    .find((l) => l.includes("no hugepages"));
  st.check(
    !!warn,
    `apply's output says "no hugepages": ${warn?.trim().slice(0, 300) ?? "(no such line)"}`,
  );
  if (!warn) st.evidence.push(...tail(r.stderr, 4));
  const tp = new Testpmd(resourceBdfs());
  const exit = await Promise.race([
    tp.exited,
    new Promise<undefined>((r) => setTimeout(r, 120_000)),
  ]);
  if (!exit) await tp.stop(5000);
  const why = tp.out.split("\n").filter((l) => /hugepage|Cannot init|Cause/i.test(l));
  st.note(`testpmd: exit ${exit ? (exit.code ?? exit.signal) : "still running after 120 s"}`);
  st.evidence.push(...why.slice(0, 6).map((l) => "  | " + l));
  st.check(
    !!exit && exit.code !== 0 && /No free 2048 kB hugepages reported/.test(tp.out),
    'testpmd fails with "No free 2048 kB hugepages reported"',
  );
  return st;
}

export async function s10TestpmdForwards(): Promise<Step> {
  const st = new Step(
    "10",
    "testpmd forwards on the two devices eni-dpdk bound (IOVA as PA, No-IOMMU, hugepages from [dpdk])",
  );
  writeConfig(configToml(S1_ENIS, { hugepages_2m: PAGES }));
  const r = await cli("apply");
  st.note(`apply with hugepages_2m = ${PAGES}: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 3));
  st.check(r.code === 0, "apply exits 0");
  const hp = hugepages();
  st.check(
    hp.total === PAGES,
    `the kernel reserved ${hp.total} of ${PAGES} 2M pages (${HUGEPAGES}/nr_hugepages)`,
  );
  for (const n of DPDK_NICS()) checkBoundVfio(st, n);
  const bdfs = resourceBdfs();
  st.check(
    JSON.stringify(bdfs) === JSON.stringify(DPDK_NICS().map(bdfOf).sort()),
    `the SR-IOV resource amazon.com/e2e_dpdk hands out ${bdfs.join(", ")}`,
  );
  const before = snapshot();
  const tp = await startForwarding(st, bdfs);
  app = tp;
  const eal = tp.eal();
  st.evidence.push(...eal.map((l) => "  | " + l));
  st.check(eal.includes("EAL: Selected IOVA mode 'PA'"), "EAL selected IOVA mode 'PA'");
  st.check(eal.includes("EAL: Using IOMMU type 8 (No-IOMMU)"), "EAL uses IOMMU type 8 (No-IOMMU)");
  for (const n of DPDK_NICS())
    st.check(
      eal.some((l) =>
        l.startsWith(
          `EAL: Probe PCI driver: net_e1000_em (${n.vendor}:${n.device}) device: ${bdfOf(n)}`,
        ),
      ),
      `EAL probed ${bdfOf(n)} (${n.model}) with net_e1000_em`,
    );
  const s = tp.stats();
  st.evidence.push(...statsExcerpt(tp.out));
  st.check(bothForward(s), `RX and TX above zero on both ports: ${fmtCounters(s)}`);
  const inUse = hugepages();
  st.check(
    inUse.total - inUse.free > 0,
    `testpmd holds ${inUse.total - inUse.free} of the ${inUse.total} 2M pages eni-dpdk reserved`,
  );
  checkUntouched(st, before, "while testpmd runs");
  const routes = (await run(["/sbin/ip", "route", "show", "default"])).stdout.trim();
  st.check(
    routes.includes(`dev ${stateOf(nic("primary")).netdev}`),
    `the primary still carries the default route (${routes.split("\n")[0]})`,
  );
  st.check(tp.running, "testpmd keeps running (scenario 13 reconciles under it)");
  return st;
}

export async function s13ReconcileUnderApp(): Promise<Step> {
  const st = new Step(
    "13",
    "reconcile while the app runs: apply changes nothing, unbind refuses the device testpmd holds, testpmd's counters keep growing",
  );
  const tp = app;
  if (!st.check(!!tp?.running, "testpmd from scenario 10 is running") || !tp) return st;
  const before = snapshot();
  const stamps = [PCIDP, STATE].map(fileStamp);
  const a = tp.stats();
  st.note(`before apply: ${fmtCounters(a)}`);
  const r = await cli("apply");
  st.note(`apply under testpmd: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 2));
  st.check(r.code === 0, "apply exits 0");
  const status = parseJson(read(STATUS)) as { apply?: { actions?: unknown[] } } | undefined;
  st.check(
    Array.isArray(status?.apply?.actions) && status.apply.actions.length === 0,
    `status.json apply.actions is empty (${JSON.stringify(status?.apply?.actions ?? null).slice(0, 200)})`,
  );
  const after = snapshot();
  for (const n of plan.nics)
    st.check(sameNic(before[n.name], after[n.name]), `${fmtNic(n.name, after[n.name])} unchanged`);
  [PCIDP, STATE].forEach((f, i) =>
    st.check(fileStamp(f) === stamps[i], `${f} unchanged (${stamps[i]})`),
  );
  // two more statistics periods after apply returned
  const t = Date.now();
  await tp.until(() => Date.now() - t > 2500, 10_000);
  const b = tp.stats();
  st.note(`after apply: ${fmtCounters(b)}`);
  st.check(tp.running, "testpmd is still running");
  for (const p of [0, 1]) {
    const x = a.get(p);
    const y = b.get(p);
    st.check(
      !!x && !!y && y.rx > x.rx && y.tx > x.tx,
      `port ${p} counters grew across the apply: RX ${x?.rx} → ${y?.rx}, TX ${x?.tx} → ${y?.tx}`,
    );
  }
  st.evidence.push(...statsExcerpt(tp.out));
  await refusedUnderApp(st, tp);
  await stopAndReport(st, tp);
  app = undefined;
  return st;
}

/**
 * `unbind` of a device testpmd has open is refused, naming testpmd, with nothing changed: the
 * kernel's vfio-pci unbind would wait for testpmd to let go, with eni-dpdk stuck in the write.
 */
async function refusedUnderApp(st: Step, tp: Testpmd): Promise<void> {
  const bdf = tp.bdfs[0];
  const before = snapshot();
  const a = tp.stats();
  const r = await cli("unbind", bdf);
  st.note(`unbind ${bdf} under testpmd: exit ${r.code} in ${r.ms} ms`);
  st.evidence.push(...tail(r.stderr, 2));
  st.check(r.code === 1, "unbind exits 1");
  st.check(
    new RegExp(`in use: pid ${tp.pid} \\(dpdk-testpmd\\) has /dev/vfio/noiommu-\\d+ open`).test(
      r.stderr,
    ),
    `the error names testpmd (pid ${tp.pid}) and its vfio group`,
  );
  const after = snapshot();
  for (const n of plan.nics)
    st.check(sameNic(before[n.name], after[n.name]), `${fmtNic(n.name, after[n.name])} unchanged`);
  // and `status --json` says who holds each device
  const s = await cli("status", "--json");
  const devices =
    (
      parseJson(s.stdout) as {
        devices?: { bdf: string; holders?: { pid: number; comm: string }[] }[];
      }
    )?.devices ?? [];
  for (const b of tp.bdfs) {
    const h = devices.find((d) => d.bdf === b)?.holders;
    st.check(
      !!h && h.length === 1 && h[0].pid === tp.pid && h[0].comm === "dpdk-testpmd",
      `status --json: ${b} is held by testpmd (${JSON.stringify(h ?? null)})`,
    );
  }
  const t = Date.now();
  await tp.until(() => Date.now() - t > 2500, 10_000);
  const b = tp.stats();
  st.check(tp.running, "testpmd is still running");
  for (const p of [0, 1])
    st.check(
      (b.get(p)?.rx ?? 0) > (a.get(p)?.rx ?? Infinity),
      `port ${p} still receives after the refused unbind: RX ${a.get(p)?.rx} → ${b.get(p)?.rx}`,
    );
}

/** `dpdk-devbind.py --status`: BDF → driver, in its two network sections. */
function parseDevbind(out: string): { dpdk: Map<string, string>; kernel: Map<string, string> } {
  const dpdk = new Map<string, string>();
  const kernel = new Map<string, string>();
  let into: Map<string, string> | undefined;
  for (const line of out.split("\n")) {
    if (/^Network devices using DPDK-compatible driver/.test(line)) into = dpdk;
    else if (/^Network devices using kernel driver/.test(line)) into = kernel;
    else if (/^\S.* devices/.test(line)) into = undefined;
    const m = line.match(/^(\S+:\S+\.\d) .* drv=(\S+)/);
    if (m && into) into.set(m[1], m[2]);
  }
  return { dpdk, kernel };
}

export async function s11DevbindAgrees(): Promise<Step> {
  const st = new Step(
    "11",
    "dpdk-devbind.py --status lists the same devices on vfio-pci and on kernel drivers as status --json",
  );
  const d = await run([DEVBIND, "--status"], {}, 60_000);
  st.note(`dpdk-devbind.py --status: exit ${d.code} in ${d.ms} ms (its network sections:)`);
  const net = d.stdout.split(/\n(?=\S[^\n]*\n=+\n)/).filter((sec) => /Network devices/.test(sec));
  st.evidence.push(
    ...net
      .join("\n")
      .split("\n")
      .filter(Boolean)
      .map((l) => "  | " + l),
  );
  const s = await cli("status", "--json");
  const doc = parseJson(s.stdout) as
    | {
        devices?: { bdf?: string; driver?: string }[];
        otherDevices?: { bdf?: string; driver?: string }[];
      }
    | undefined;
  st.check(
    d.code === 0 && s.code === 0 && !!doc,
    `both exit 0 (devbind ${d.code}, status ${s.code})`,
  );
  const all = [...(doc?.devices ?? []), ...(doc?.otherDevices ?? [])].filter((x) => x.bdf);
  const ours = {
    dpdk: new Map(all.filter((x) => x.driver === "vfio-pci").map((x) => [x.bdf!, x.driver!])),
    kernel: new Map(
      all.filter((x) => x.driver && x.driver !== "vfio-pci").map((x) => [x.bdf!, x.driver!]),
    ),
  };
  const theirs = parseDevbind(d.stdout);
  const fmt = (m: Map<string, string>) =>
    [...m.entries()]
      .sort()
      .map(([b, v]) => `${b}=${v}`)
      .join(" ");
  st.check(
    fmt(theirs.dpdk) === fmt(ours.dpdk) &&
      fmt(ours.dpdk) ===
        DPDK_NICS()
          .map((n) => `${bdfOf(n)}=vfio-pci`)
          .sort()
          .join(" "),
    `DPDK-compatible driver: devbind ${fmt(theirs.dpdk) || "none"} | status ${fmt(ours.dpdk) || "none"}`,
  );
  st.check(
    theirs.kernel.size > 0 && fmt(theirs.kernel) === fmt(ours.kernel),
    `kernel driver: devbind ${fmt(theirs.kernel) || "none"} | status ${fmt(ours.kernel) || "none"}`,
  );
  return st;
}

async function bindingScriptScenario(
  st: Step,
  how: { config?: string; env?: NodeJS.ProcessEnv },
): Promise<Step> {
  const reset = await cli("reset");
  st.note(`reset first: exit ${reset.code} in ${reset.ms} ms`);
  const back = DPDK_NICS().map((n) => [n, stateOf(n)] as const);
  st.check(
    reset.code === 0 && back.every(([n, s]) => s.driver !== "vfio-pci" && s.mac === n.mac),
    `both DPDK NICs back on kernel drivers: ${back.map(([n, s]) => fmtNic(n.name, s)).join("; ")}`,
  );
  writeConfig(
    configToml(S1_ENIS, {
      hugepages_2m: PAGES,
      ...(how.config ? { binding_script: how.config } : {}),
    }),
  );
  const r = how.env ? await cliWithEnv(how.env, "apply") : await cli("apply");
  st.note(`apply: exit ${r.code} in ${r.ms} ms`);
  st.check(r.code === 0, "apply exits 0");
  for (const n of DPDK_NICS()) {
    const argv = [DEVBIND, "--force", "--bind", "vfio-pci", bdfOf(n)];
    const ran = r.stderr
      .split("\n")
      .find((l) => l.includes('msg="binding script ran"') && l.includes(`argv=${argv.join(",")}`));
    st.check(
      !!ran && /\bexit=0\b/.test(ran),
      `eni-dpdk ran ${DEVBIND} for ${bdfOf(n)}: ${ran?.slice(0, 300) ?? "(no such log line)"}`,
    );
    checkBoundVfio(st, n);
    st.check(
      stateOf(n).override === "vfio-pci",
      `${n.name} driver_override=vfio-pci after devbind (a reprobe keeps it)`,
    );
  }
  if (r.code !== 0) st.evidence.push(...tail(r.stderr, 6));
  const before = snapshot();
  const tp = await startForwarding(st, resourceBdfs());
  const s = tp.stats();
  st.evidence.push(...statsExcerpt(tp.out));
  st.check(bothForward(s), `testpmd forwards: ${fmtCounters(s)}`);
  await stopAndReport(st, tp);
  checkUntouched(st, before, "by testpmd");
  return st;
}

export async function s12BindingScript(): Promise<Step> {
  const st = new Step(
    "12",
    `binding_script = "${DEVBIND}": the real devbind binds, eni-dpdk verifies sysfs, testpmd forwards`,
  );
  return bindingScriptScenario(st, { config: DEVBIND });
}

export async function s12bBindingScriptEnv(): Promise<Step> {
  const st = new Step(
    "12b",
    `DPDK_BINDING_SCRIPT=${DEVBIND} (the seed's variable): the real devbind binds, testpmd forwards`,
  );
  return bindingScriptScenario(st, { env: { DPDK_BINDING_SCRIPT: DEVBIND } });
}
