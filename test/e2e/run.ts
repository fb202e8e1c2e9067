// `npm run test:e2e`: the QEMU end-to-end suite. Sets the host up (apt, kernel, NOIOMMU vfio.ko),
// builds the CLI bundle and the guest images, boots the guests one at a time under TCG, and prints
// one PASS/FAIL line per scenario with its evidence. Exits 1 if any scenario failed.
// Options: E2E_ONLY=A,D (boots to run), E2E_WORK (work dir), E2E_KEEP=1 (keep per-boot dirs).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, promises as fs, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  HOST_FWD_EC2,
  HOST_FWD_IMDS,
  EXTERNAL_NIC,
  NICS,
  type BootPlan,
  type NicSpec,
  type StepResult,
} from "./topology.js";
import { hostEmulators } from "./hostemu.js";
import { Vm } from "./vm.js";
import { runSystemdScenario } from "./systemd.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WORK = process.env.E2E_WORK ?? path.join(REPO, "test/e2e/.work");
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)}s`;
const say = (s: string) => process.stdout.write(`[e2e ${elapsed()}] ${s}\n`);

function sh(
  argv: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; quiet?: boolean } = {},
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const on = (d: Buffer) => {
      out += d.toString();
      if (!opts.quiet) process.stderr.write(d);
    };
    p.stdout.on("data", on);
    p.stderr.on("data", on);
    p.on("close", (code) => resolve({ code, out }));
  });
}

async function must(argv: string[], what: string, opts: { quiet?: boolean } = {}): Promise<string> {
  const r = await sh(argv, opts);
  if (r.code !== 0)
    throw new Error(
      `${what} failed (exit ${r.code}): ${r.out.trim().split("\n").slice(-10).join("\n")}`,
    );
  return r.out;
}

const hashFiles = (files: string[], extra = "") => {
  const h = createHash("sha256").update(extra);
  for (const f of files) h.update(readFileSync(f));
  return h.digest("hex").slice(0, 16);
};

/** A cpio (newc) of a directory tree, gzipped: the per-run overlay appended to the base initramfs. */
async function cpioOf(dir: string, out: string): Promise<void> {
  await must(
    [
      "bash",
      "-c",
      'cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1 > "$2"',
      "cpio",
      dir,
      out,
    ],
    "cpio",
  );
}

interface Built {
  krel: string;
  kernel: string;
  base: string;
  assets: string;
  /** the DPDK initramfs layer, when a selected boot needs it */
  dpdkLayer?: string;
}

async function prepare(opts: { dpdk: boolean }): Promise<Built> {
  say("host setup (apt, kernel, NOIOMMU vfio.ko)");
  const ts = Date.now();
  await must(["bash", path.join(REPO, "scripts/e2e/setup.sh")], "scripts/e2e/setup.sh");
  say(`host setup done in ${((Date.now() - ts) / 1000).toFixed(1)} s`);
  const krel = (await fs.readFile(path.join(WORK, "krel"), "utf8")).trim();
  const kernel = path.join(WORK, `kernel/${krel}/root/boot/vmlinuz-${krel}`);

  const baseInputs = [
    path.join(REPO, "scripts/e2e/build-initramfs.sh"),
    path.join(REPO, "test/e2e/guest/init.sh"),
    path.join(WORK, `vfio-noiommu/${krel}/vfio.ko`),
  ];
  const base = path.join(WORK, `base-${krel}-${hashFiles(baseInputs, process.version)}.cpio.gz`);
  if (!existsSync(base)) {
    say("building the base initramfs");
    await must(
      ["bash", path.join(REPO, "scripts/e2e/build-initramfs.sh"), krel, base],
      "build-initramfs.sh",
    );
  }

  // The DPDK layer: keyed by its script and the versions of the packages it takes files from.
  let dpdkLayer: string | undefined;
  if (opts.dpdk) {
    const versions = await must(
      [
        "dpkg-query",
        "-W",
        "-f=${Package} ${Version}\\n",
        "dpdk-dev",
        "dpdk",
        "pciutils",
        "pci.ids",
        "python3-minimal",
      ],
      "dpkg-query",
      { quiet: true },
    );
    dpdkLayer = path.join(
      WORK,
      `dpdk-${hashFiles([path.join(REPO, "scripts/e2e/build-dpdk-layer.sh")], versions)}.cpio.gz`,
    );
    if (!existsSync(dpdkLayer)) {
      say("building the DPDK initramfs layer (testpmd, devbind)");
      await must(
        ["bash", path.join(REPO, "scripts/e2e/build-dpdk-layer.sh"), dpdkLayer],
        "build-dpdk-layer.sh",
      );
    }
  }

  // E2E_DIST: test a bundle built elsewhere (harness development only); normally the real build runs.
  const dist = process.env.E2E_DIST ?? path.join(REPO, "dist");
  if (!process.env.E2E_DIST) {
    say("building the CLI bundle (npm run build)");
    await must(["npm", "run", "--silent", "build"], "npm run build", { quiet: true });
  } else say(`using the CLI bundle in ${dist} (E2E_DIST)`);
  if (!existsSync(path.join(dist, "eni-dpdk.cjs"))) throw new Error(`no ${dist}/eni-dpdk.cjs`);

  // assets: the bundle (with its chunks), the guest program, the failing binding script
  const assets = path.join(WORK, "assets");
  await fs.rm(assets, { recursive: true, force: true });
  await fs.mkdir(path.join(assets, "opt/e2e"), { recursive: true });
  await fs.cp(dist, path.join(assets, "opt/eni-dpdk"), { recursive: true });
  const { build } = await import("esbuild");
  await build({
    entryPoints: [path.join(REPO, "test/e2e/guest/main.ts")],
    outfile: path.join(assets, "opt/e2e/guest.mjs"),
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    logLevel: "warning",
  });
  await fs.copyFile(
    path.join(REPO, "test/e2e/guest/failing-bind.sh"),
    path.join(assets, "opt/e2e/failing-bind"),
  );
  await fs.chmod(path.join(assets, "opt/e2e/failing-bind"), 0o755);
  // the benchmark's count of timer waits, preloaded into scenario 3's apply
  await fs.copyFile(
    path.join(REPO, "scripts/bench/settle-waits.mjs"),
    path.join(assets, "opt/e2e/settle-waits.mjs"),
  );
  return { krel, kernel, base, assets, dpdkLayer };
}

interface Boot {
  id: string;
  title: string;
  steps: string[];
  /** scenario ids this boot must report */
  expects: string[];
  noiommu: boolean;
  nics: NicSpec[];
  /** take /out/carry.tar from this earlier boot */
  carryFrom?: string;
  /** NICs attached by the launch template (EC2 knows them as such) */
  external?: string[];
  hostEmulators?: boolean;
  /** NICs on one QEMU hub (each receives what the other sends) */
  hub?: string[];
  /** append the DPDK layer (testpmd, devbind) to the initramfs */
  dpdk?: boolean;
  memoryMb?: number;
  timeoutMs: number;
}

const BOOTS: Boot[] = [
  {
    id: "A",
    title: "first boot: guards, bind, idempotent",
    steps: ["s5", "s1", "s2", "carry"],
    expects: ["5", "1", "2"],
    noiommu: true,
    nics: NICS,
    timeoutMs: Number(process.env.E2E_BOOT_TIMEOUT ?? 420) * 1000,
  },
  {
    id: "B",
    title:
      "reboot with the state file kept; failure after unbind; crash mid-bind; a device gone; one on no driver",
    steps: ["s3", "s4b", "s8", "s15", "s16"],
    expects: ["3", "4b", "8", "15", "16"],
    noiommu: true,
    nics: NICS,
    carryFrom: "A",
    timeoutMs: 300_000,
  },
  {
    id: "C",
    title: "stock kernel (vfio without NOIOMMU)",
    steps: ["s4"],
    expects: ["4"],
    noiommu: false,
    nics: NICS,
    timeoutMs: 240_000,
  },
  {
    id: "D",
    title: "hot-plug on first boot (EC2 + IMDS emulators on the host)",
    steps: ["s6"],
    expects: ["6"],
    noiommu: true,
    nics: [NICS[0]],
    hostEmulators: true,
    timeoutMs: 300_000,
  },
  {
    id: "F",
    title: "external mode: a NIC cold-plugged as if by the launch template, bound with 0 EC2 calls",
    steps: ["s9"],
    expects: ["9"],
    noiommu: true,
    nics: [NICS[0], EXTERNAL_NIC],
    external: [EXTERNAL_NIC.name],
    timeoutMs: 240_000,
  },
  {
    id: "G",
    title: "a DPDK application: testpmd on the bound devices, dpdk-devbind.py",
    steps: ["dpdkSetup", "s14", "s10", "s13", "s11", "s12", "s12b"],
    expects: ["14", "10", "13", "11", "12", "12b"],
    noiommu: true,
    nics: NICS.filter((n) => ["primary", "dpdk1", "dpdk2", "kern1"].includes(n.name)),
    hub: ["dpdk1", "dpdk2"],
    dpdk: true,
    memoryMb: 1536,
    timeoutMs: 600_000,
  },
];

async function runBoot(b: Boot, built: Built): Promise<StepResult[]> {
  const dir = path.join(WORK, "boots", b.id);
  await fs.rm(dir, { recursive: true, force: true });
  const outDir = path.join(dir, "out");
  await fs.mkdir(outDir, { recursive: true });
  if (b.carryFrom) {
    const src = path.join(WORK, "boots", b.carryFrom, "out/carry.tar");
    if (existsSync(src)) await fs.copyFile(src, path.join(outDir, "carry.tar"));
  }
  let vm: Vm | undefined;
  const emu = b.hostEmulators ? await hostEmulators(b.nics, { vm: () => vm!, outDir }) : undefined;
  const plan: BootPlan = {
    boot: b.id,
    steps: b.steps,
    nics: b.nics,
    noiommuKernel: b.noiommu,
    ...(b.external ? { external: b.external } : {}),
    ...(emu
      ? {
          hostImds: `http://${HOST_FWD_IMDS.ip}:${HOST_FWD_IMDS.port}`,
          hostEc2: `http://${HOST_FWD_EC2.ip}:${HOST_FWD_EC2.port}`,
        }
      : {}),
  };
  const ov = path.join(dir, "overlay");
  await fs.cp(built.assets, ov, { recursive: true });
  await fs.writeFile(path.join(ov, "opt/e2e/plan.json"), JSON.stringify(plan, null, 2));
  await cpioOf(ov, path.join(dir, "overlay.cpio.gz"));
  const initrd = path.join(dir, "initrd.cpio.gz");
  await must(
    [
      "bash",
      "-c",
      'out=$1; shift; cat "$@" > "$out"',
      "cat",
      initrd,
      built.base,
      ...(b.dpdk && built.dpdkLayer ? [built.dpdkLayer] : []),
      path.join(dir, "overlay.cpio.gz"),
    ],
    "initrd",
  );

  vm = new Vm({
    name: b.id,
    kernel: built.kernel,
    initrd,
    append: b.noiommu ? "e2e.vfio=noiommu" : "e2e.vfio=stock",
    dir,
    nics: b.nics,
    guestfwd: emu?.guestfwd,
    rootPorts: emu ? ["rp1"] : [],
    spareNetdevs: emu ? ["hpn1"] : [],
    hub: b.hub,
    memoryMb: b.memoryMb,
    timeoutMs: b.timeoutMs,
  });
  say(
    `boot ${b.id}: ${b.title} (${b.noiommu ? "NOIOMMU vfio.ko" : "stock vfio.ko"}, ${b.nics.length} NICs)`,
  );
  const tb = Date.now();
  await vm.start();
  const exit = await vm.wait();
  await emu?.close();
  const serial = await vm.serial();
  say(
    `boot ${b.id} ended (${exit === "timeout" ? "TIMEOUT" : `qemu exit ${exit}`}) after ${((Date.now() - tb) / 1000).toFixed(1)} s; serial log ${vm.serialPath}`,
  );
  const results: StepResult[] = [];
  const fromShare = existsSync(path.join(outDir, "results.jsonl"))
    ? readFileSync(path.join(outDir, "results.jsonl"), "utf8")
    : "";
  for (const line of fromShare.split("\n").filter(Boolean))
    results.push(JSON.parse(line) as StepResult);
  if (!results.length) {
    for (const m of serial.matchAll(/^E2E-RESULT (.*)$/gm))
      results.push(JSON.parse(m[1]) as StepResult);
  }
  for (const r of results)
    if (emu && r.scenario === "6")
      r.evidence.unshift(
        ...emu.log.map((l) => `host: ${l}`),
        `host: EC2 calls ${JSON.stringify(emu.ec2.callsPerAction())}`,
      );
  for (const id of b.expects) {
    if (!results.some((r) => r.scenario === id)) {
      const lines = serial
        .trim()
        .split("\n")
        .slice(-15)
        .map((l) => "  | " + l);
      results.push({
        scenario: id,
        title: `boot ${b.id} reported no result`,
        status: "FAIL",
        evidence: [
          `boot ${b.id}: ${exit === "timeout" ? "timed out" : `qemu exit ${exit}`}; serial tail:`,
          ...lines,
        ],
      });
    }
  }
  return results;
}

function print(r: StepResult): void {
  const took = r.ms === undefined ? "" : ` (${(r.ms / 1000).toFixed(1)} s)`;
  process.stdout.write(`${r.status} scenario ${r.scenario}${took}: ${r.title}\n`);
  for (const e of r.evidence) process.stdout.write(`    ${e}\n`);
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write("test:e2e needs root (apt, QEMU, building kernel modules)\n");
    return 1;
  }
  const only = process.env.E2E_ONLY?.split(",");
  let built: Built;
  try {
    built = await prepare({
      dpdk: BOOTS.some((b) => b.dpdk && (!only || only.includes(b.id))),
    });
  } catch (e) {
    process.stdout.write(`FAIL e2e setup: ${(e as Error).message}\n`);
    return 1;
  }
  const all: StepResult[] = [];
  for (const b of BOOTS) {
    if (only && !only.includes(b.id)) continue;
    const rs = await runBoot(b, built);
    rs.forEach(print);
    all.push(...rs);
  }
  if (!only || only.includes("E")) {
    const ts = Date.now();
    const node22 = await sh(["bash", path.join(REPO, "scripts/node22.sh")], { quiet: true });
    const r =
      node22.code === 0
        ? await runSystemdScenario({
            repo: REPO,
            work: WORK,
            krel: built.krel,
            kernel: built.kernel,
            base: built.base,
            assets: built.assets,
            node22: node22.out.trim().split("\n").at(-1)!,
            say,
          })
        : {
            scenario: "7",
            title: "systemd with Node 22",
            status: "FAIL" as const,
            evidence: [
              `scripts/node22.sh failed: ${node22.out.trim().split("\n").slice(-4).join(" | ")}`,
            ],
          };
    r.ms = Date.now() - ts;
    print(r);
    all.push(r);
  }
  process.stdout.write(`\n==== e2e summary (${elapsed()}) ====\n`);
  for (const r of all.sort((a, b) => a.scenario.localeCompare(b.scenario, "en", { numeric: true })))
    process.stdout.write(
      `${r.status.padEnd(8)} ${r.scenario.padEnd(3)} ${r.ms === undefined ? "" : `${(r.ms / 1000).toFixed(1).padStart(5)} s  `}${r.title}\n`,
    );
  const count = (st: string) => all.filter((r) => r.status === st).length;
  // The plain closing line CI reads; NOT DONE counts as skipped, never as passed.
  process.stdout.write(
    `e2e: ${count("PASS")} passed, ${count("FAIL")} failed, ${count("NOT DONE")} skipped\n`,
  );
  return all.some((r) => r.status === "FAIL") ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`e2e harness crashed: ${String((e as Error)?.stack ?? e)}\n`);
    process.exit(1);
  },
);
