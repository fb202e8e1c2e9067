// Guest-side helpers: run the real CLI, read the real sysfs, record results with evidence.
// Everything here observes the kernel directly; nothing trusts the product's own claims.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
} from "node:fs";
import path from "node:path";
import { bdfOf, type NicSpec, type StepResult } from "../topology.js";

export const CLI = "/opt/eni-dpdk/eni-dpdk.cjs";
export const CONFIG = "/etc/eni-dpdk/config.toml";
export const STATUS = "/run/eni-dpdk/status.json";
export const STATE = "/var/lib/eni-dpdk/state.json";
export const PCIDP = "/etc/pcidp/config.json";

export function read(p: string): string | undefined {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return undefined;
  }
}
const attr = (p: string) => read(p)?.trim();
function link(p: string): string | undefined {
  try {
    return path.basename(readlinkSync(p));
  } catch {
    return undefined;
  }
}
function list(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

export interface RunOut {
  code: number | null;
  /** the signal that ended it (strace re-raises its tracee's fatal signal on itself) */
  signal?: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Spawn without a shell and without blocking the event loop (the emulators run in this process). */
export function run(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 150_000,
  echo = false,
): Promise<RunOut> {
  const t0 = Date.now();
  if (echo) process.stdout.write(`E2E-RUN ${argv.join(" ")}\n`);
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      // the serial console shows the CLI's log as it happens (debugging a hung step)
      if (echo) process.stdout.write(d.toString().replace(/^(?=.)/gm, "  cli| "));
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: stderr + String(e), ms: Date.now() - t0 });
    });
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      if (echo)
        process.stdout.write(`E2E-RUN exit ${code ?? signal} after ${Date.now() - t0} ms\n`);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

let cliEnv: NodeJS.ProcessEnv = {};
export function setCliEnv(env: NodeJS.ProcessEnv): void {
  cliEnv = env;
}

/** The real bundled CLI, as systemd would run it (node + the bundle). */
export function cli(...args: string[]): Promise<RunOut> {
  return run(["/usr/bin/node", CLI, ...args], cliEnv, 150_000, true);
}

/**
 * The CLI with scripts/bench/settle-waits.mjs preloaded: its stderr ends with one line
 * `SETTLE_WAITS {"n":…,"ms":…,"anyMs":…}`, the timer waits under a second it slept (the benchmark's
 * count of the simulated kernel's, made here on a real one).
 */
export function cliCountingWaits(...args: string[]): Promise<RunOut> {
  return run(
    ["/usr/bin/node", "--import", "/opt/e2e/settle-waits.mjs", CLI, ...args],
    cliEnv,
    150_000,
    true,
  );
}

/** The parsed SETTLE_WAITS line of a run of cliCountingWaits, if it printed one. */
export function settleWaits(stderr: string): { n: number; ms: number; anyMs: number } | undefined {
  const m = /SETTLE_WAITS (\{.*\})/.exec(stderr);
  return m ? (JSON.parse(m[1]) as { n: number; ms: number; anyMs: number }) : undefined;
}

/** The CLI with variables added to its environment (the seed's DPDK_BINDING_SCRIPT, say). */
export function cliWithEnv(env: NodeJS.ProcessEnv, ...args: string[]): Promise<RunOut> {
  return run(["/usr/bin/node", CLI, ...args], { ...cliEnv, ...env }, 150_000, true);
}

/**
 * The CLI under strace, killed with SIGKILL at the first `syscall` on `path` (a deterministic crash
 * window on the real kernel, e.g. the write to drivers_probe: after the unbind, before the probe).
 */
export function cliKilledAt(path: string, syscall: string, ...args: string[]): Promise<RunOut> {
  const strace = [
    "/usr/bin/strace",
    "-f",
    "-qq",
    "-o",
    "/dev/null",
    "-e",
    `trace=${syscall}`,
    "-e",
    `inject=${syscall}:signal=KILL:when=1`,
    "-P",
    path,
  ];
  return run(
    [...strace, "/usr/bin/node", CLI, ...args],
    { ...cliEnv, UV_THREADPOOL_SIZE: "1" },
    150_000,
    true,
  );
}

export function sh(...argv: string[]): Promise<RunOut> {
  return run(argv);
}

/** A NIC as the kernel shows it, found by its PCI slot (the MAC is only visible while a netdev exists). */
export interface NicState {
  bdf: string;
  present: boolean;
  ids: string;
  driver: string;
  override: string;
  netdev?: string;
  mac?: string;
  mtu?: number;
  up?: boolean;
  iommuGroup?: string;
  groupName?: string;
  vfioNode?: string;
}

export function nicState(bdf: string): NicState {
  const dir = `/sys/bus/pci/devices/${bdf}`;
  if (!existsSync(dir)) return { bdf, present: false, ids: "", driver: "", override: "" };
  const vendor = (attr(`${dir}/vendor`) ?? "").replace(/^0x/, "");
  const device = (attr(`${dir}/device`) ?? "").replace(/^0x/, "");
  const s: NicState = {
    bdf,
    present: true,
    ids: `${vendor}:${device}`,
    driver: link(`${dir}/driver`) ?? "none",
    override: attr(`${dir}/driver_override`) ?? "",
  };
  // netdevs hang off the PCI device directly (e1000/e1000e) or off its virtio child
  const netParents = [
    dir,
    ...list(dir)
      .filter((d) => /^virtio\d+$/.test(d))
      .map((d) => `${dir}/${d}`),
  ];
  for (const p of netParents) {
    const nd = list(`${p}/net`)[0];
    if (nd) {
      s.netdev = nd;
      s.mac = attr(`/sys/class/net/${nd}/address`);
      s.mtu = Number(attr(`/sys/class/net/${nd}/mtu`));
      s.up = (Number(attr(`/sys/class/net/${nd}/flags`)) & 1) === 1;
    }
  }
  const g = link(`${dir}/iommu_group`);
  if (g) {
    s.iommuGroup = g;
    s.groupName = attr(`/sys/kernel/iommu_groups/${g}/name`);
    for (const n of [`/dev/vfio/noiommu-${g}`, `/dev/vfio/${g}`]) if (existsSync(n)) s.vfioNode = n;
  }
  return s;
}

export function fmtNic(name: string, s: NicState): string {
  if (!s.present) return `${name} ${s.bdf}: absent`;
  const parts = [`${name} ${s.bdf} [${s.ids}]`, `driver=${s.driver}`, `override=${s.override}`];
  parts.push(
    s.netdev
      ? `netdev=${s.netdev} mac=${s.mac} mtu=${s.mtu} ${s.up ? "UP" : "DOWN"}`
      : "netdev=none",
  );
  if (s.iommuGroup)
    parts.push(`iommu_group=${s.iommuGroup}(${s.groupName ?? "?"}) node=${s.vfioNode ?? "none"}`);
  return parts.join(" ");
}

export const stateOf = (n: NicSpec) => nicState(bdfOf(n));

export function fileStamp(p: string): string {
  try {
    const st = statSync(p);
    return `${createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 12)}@${st.mtimeMs}`;
  } catch {
    return "absent";
  }
}

/** Find objects anywhere in a JSON document that satisfy `pred`. */
export function findObjects(
  doc: unknown,
  pred: (o: Record<string, unknown>) => boolean,
): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (pred(o)) out.push(o);
      Object.values(o).forEach(walk);
    }
  };
  walk(doc);
  return out;
}

export const hasValue = (o: Record<string, unknown>, v: string) =>
  Object.values(o).some((x) => x === v);

export function parseJson(s: string | undefined): unknown {
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** The last lines of a CLI's stderr, for evidence. */
export function tail(s: string, n = 4): string[] {
  return s
    .trim()
    .split("\n")
    .filter(Boolean)
    .slice(-n)
    .map((l) => "  | " + l.slice(0, 400));
}

/** Collects checks and evidence for one scenario; PASS only if every check held. */
export class Step {
  readonly evidence: string[] = [];
  private failed: string[] = [];
  constructor(
    readonly scenario: string,
    readonly title: string,
  ) {}

  note(line: string): void {
    this.evidence.push(line);
  }

  check(ok: boolean, what: string): boolean {
    this.evidence.push(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) this.failed.push(what);
    return ok;
  }

  result(): StepResult {
    return {
      scenario: this.scenario,
      title: this.title,
      status: this.failed.length ? "FAIL" : "PASS",
      evidence: this.evidence,
    };
  }
}

export function record(r: StepResult): void {
  const line = JSON.stringify(r);
  try {
    appendFileSync("/out/results.jsonl", line + "\n");
  } catch {
    /* no share: the serial line below still carries it */
  }
  process.stdout.write(`E2E-RESULT ${line}\n`);
}
