// Scenario 7: a debootstrap'd Debian bookworm guest with systemd as PID 1 and the AMI's runtime,
// Node 22 as /usr/bin/node-22 (where AL2023's nodejs22 puts it), the product installed as the Packer
// template installs it: the release tarball built for Node 22 (its sd-notify addon for that ABI),
// then the template's own provisioning commands run as root in the image (install.sh, the checks).
// Stand-in kubelet.service and nodeadm-run.service, IMDS and EC2 on the host. A oneshot check unit collects the evidence to
// the 9p share, then switches to a config that fails at run time with on_failure = "fail". A second
// boot of the same disk checks eni-dpdk-early's offline rebind before systemd-networkd.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, promises as fs, readFileSync } from "node:fs";
import path from "node:path";
import { Step } from "./guest/lib.js";
import { hostEmulators } from "./hostemu.js";
import {
  bdfOf,
  HOST_FWD_EC2,
  HOST_FWD_IMDS,
  NICS,
  SG_ID,
  SUBNET_ID,
  type StepResult,
} from "./topology.js";
import { Vm } from "./vm.js";
import { isGcDescribe } from "../support/ec2-requests.js";
import { CLI_AWS_ENV } from "./world.js";

export interface SystemdCtx {
  repo: string;
  work: string;
  krel: string;
  kernel: string;
  base: string;
  assets: string;
  /** the Node 22 binary (scripts/node22.sh) the image runs, as the AMI runs AL2023's nodejs22 */
  node22: string;
  say: (s: string) => void;
}

function sh(argv: string[], cwd?: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    p.on("close", (code) => resolve({ code, out }));
  });
}

async function must(argv: string[], what: string, cwd?: string): Promise<string> {
  const r = await sh(argv, cwd);
  if (r.code !== 0)
    throw new Error(
      `${what} failed (exit ${r.code}): ${r.out.trim().split("\n").slice(-8).join(" | ")}`,
    );
  return r.out;
}

const PRIMARY = NICS[0];
const DPDK1 = NICS.find((n) => n.name === "dpdk1")!;
const DPDK2 = NICS.find((n) => n.name === "dpdk2")!;

function toml(enis: { name: string; index: number }[], extra: string[] = []): string {
  const lines = [
    "[service]",
    'sources = ["file"]',
    'on_failure = "fail"',
    "timeout_seconds = 120",
    "[dpdk]",
    'noiommu = "auto"',
    ...extra,
    "[sriov]",
    'resource_prefix = "amazon.com"',
  ];
  for (const e of enis) {
    lines.push(
      "[[eni]]",
      `name = "${e.name}"`,
      `device_index = ${e.index}`,
      `subnet_id = "${SUBNET_ID}"`,
      `security_group_ids = ["${SG_ID}"]`,
      "[eni.dpdk]",
      'resource_name = "amazon.com/e2e_dpdk"',
    );
  }
  return lines.join("\n") + "\n";
}

const STANDIN = `#!/bin/sh
# A stand-in for $1.service: records what it saw when systemd started it, then idles like a daemon.
mkdir -p /run/e2e
{
  echo "started_monotonic_us=$(awk '{printf "%d", $1 * 1000000}' /proc/uptime)"
  echo "eni_dpdk_active=$(systemctl is-active eni-dpdk.service)"
  echo "dpdk1_driver=$(basename "$(readlink /sys/bus/pci/devices/${bdfOf(DPDK1)}/driver)")"
  echo "sriov_config=$(test -s /etc/pcidp/config.json && echo present || echo absent)"
} > "/run/e2e/$1.txt"
exec sleep infinity
`;

const unit = (name: string, desc: string) => `[Unit]
Description=${desc}
[Service]
Type=simple
ExecStart=/usr/local/bin/e2e-standin ${name}
[Install]
WantedBy=multi-user.target
`;

const CHECK = `#!/bin/bash
# Collects the evidence for scenario 7 onto the 9p share, then powers off.
modprobe -a 9pnet_virtio 9p
mkdir -p /out && mount -t 9p -o trans=virtio,version=9p2000.L out /out
O=/out/s7.txt
show() { systemctl show "$1" -p ActiveState,SubState,Result,ExecMainStatus,NRestarts,StatusText,ActiveEnterTimestampMonotonic,ExecMainStartTimestampMonotonic; }
if [ -f /var/lib/e2e/boot1-done ]; then
  # second boot of the same disk: the early unit must rebind from the state file before networking
  {
    echo "=== reboot"
    echo "--- show eni-dpdk-early"; systemctl show eni-dpdk-early.service -p ActiveState,Result,ConditionResult,ExecMainStatus,ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic
    echo "--- show systemd-networkd"; systemctl show systemd-networkd.service -p ExecMainStartTimestampMonotonic
    echo "--- show eni-dpdk"; show eni-dpdk.service
    echo "--- sysfs"; for b in ${bdfOf(DPDK1)}; do echo "$b driver=$(basename "$(readlink /sys/bus/pci/devices/$b/driver)")"; done; ls /dev/vfio
    echo "--- journal early"; journalctl -b -u eni-dpdk-early.service --no-pager -o cat | tail -n 12
    echo "--- journal"; journalctl -b -u eni-dpdk.service --no-pager -o cat | tail -n 40
    echo "--- boot pass eni"; journalctl -b -u eni-dpdk.service --no-pager -o cat | grep -m1 'msg="eni done"'
    echo "--- code cache"; stat -c '%i %a %n' /var/cache/eni-dpdk /var/cache/eni-dpdk/*.v8
    echo "=== end"
  } > /out/s7b.txt 2>&1
  sync; umount /out; systemctl poweroff --no-block; exit 0
fi
{
  echo "=== phase1"
  echo "--- systemctl status eni-dpdk"; systemctl status eni-dpdk.service --no-pager -l -n 0
  echo "--- show eni-dpdk"; show eni-dpdk.service
  echo "--- show eni-dpdk-early"; systemctl show eni-dpdk-early.service -p ActiveState,Result,ConditionResult
  echo "--- show kubelet"; show kubelet.service
  echo "--- show nodeadm-run"; show nodeadm-run.service
  echo "--- kubelet saw"; cat /run/e2e/kubelet.txt
  echo "--- nodeadm-run saw"; cat /run/e2e/nodeadm-run.txt
  echo "--- sysfs"; for b in ${bdfOf(DPDK1)} ${bdfOf(DPDK2)}; do echo "$b driver=$(basename "$(readlink /sys/bus/pci/devices/$b/driver)")"; done; ls /dev/vfio
  echo "--- pcidp"; cat /etc/pcidp/config.json; echo
  echo "--- runtime"; echo "main_exe=$(readlink /proc/$(systemctl show -p MainPID --value eni-dpdk.service)/exe)"
  echo "node=$(/usr/bin/node-22 --version) modules=$(/usr/bin/node-22 -p process.versions.modules)"
  echo "usr_bin_node=$(test -e /usr/bin/node && echo present || echo absent)"; cat /opt/eni-dpdk/VERSION
  echo "--- starting"; journalctl -b -u eni-dpdk.service --no-pager -o cat | grep -m1 'msg=starting'
  echo "--- provisioning"; cat /var/log/e2e-provisioning.log
  echo "--- journal"; journalctl -u eni-dpdk.service --no-pager -o cat | tail -n 15
  echo "--- code cache"; stat -c '%i %a %n' /var/cache/eni-dpdk /var/cache/eni-dpdk/*.v8
  echo "=== phase2"
  cp /etc/e2e/failing.toml /etc/eni-dpdk/config.toml
  systemctl restart eni-dpdk.service; echo "restart_exit=$?"
  echo "--- systemctl status eni-dpdk"; systemctl status eni-dpdk.service --no-pager -l -n 0
  echo "--- show eni-dpdk"; show eni-dpdk.service
  echo "--- sysfs"; for b in ${bdfOf(DPDK1)} ${bdfOf(DPDK2)}; do echo "$b driver=$(basename "$(readlink /sys/bus/pci/devices/$b/driver)") net=$(ls /sys/bus/pci/devices/$b/net 2>/dev/null)"; done
  echo "--- journal"; journalctl -u eni-dpdk.service --no-pager -o cat | tail -n 12
  echo "=== end"
} > "$O" 2>&1
# back to the good config for the reboot boot
cp /etc/e2e/good.toml /etc/eni-dpdk/config.toml
mkdir -p /var/lib/e2e && touch /var/lib/e2e/boot1-done
sync
umount /out
systemctl poweroff --no-block
`;

const FAILING_BIND = readFileSync(new URL("./guest/failing-bind.sh", import.meta.url), "utf8");

/**
 * The shell commands of the Packer template's provisioners, in order, minus `dnf install` of Node
 * (the image already has Node 22 where nodejs22 puts it): the same lines the AMI build runs.
 */
async function amiProvisioning(repo: string): Promise<string[]> {
  const hcl = await fs.readFile(path.join(repo, "packer/eni-dpdk.pkr.hcl"), "utf8");
  const blocks = [...hcl.matchAll(/^\s*inline\s*=\s*\[([^\]]*)\]/gm)].map((m) => m[1]);
  const lines = blocks.flatMap((b) =>
    [...b.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => JSON.parse(`"${m[1]}"`) as string),
  );
  if (!lines.some((l) => l.includes("install.sh")))
    throw new Error("packer/eni-dpdk.pkr.hcl: no provisioner runs install.sh");
  return lines.filter((l) => !l.startsWith("dnf install"));
}

/** Run argv as root in a chroot of `root` with /proc and /dev, unmounted again whatever happens. */
async function inChroot(root: string, argv: string[], what: string): Promise<void> {
  const mounted: string[] = [];
  try {
    await must(["mount", "-t", "proc", "proc", path.join(root, "proc")], "mount proc");
    mounted.push(path.join(root, "proc"));
    await must(["mount", "--bind", "/dev", path.join(root, "dev")], "mount --bind /dev");
    mounted.push(path.join(root, "dev"));
    // a clean environment, as sudo gives the template's provisioners
    const r = await sh([
      "env",
      "-i",
      "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/root",
      "chroot",
      root,
      ...argv,
    ]);
    if (r.code !== 0) {
      const log = await fs
        .readFile(path.join(root, "var/log/e2e-provisioning.log"), "utf8")
        .catch(() => "");
      throw new Error(
        `${what} failed in the image (exit ${r.code}): ${(log || r.out).trim().split("\n").slice(-8).join(" | ")}`,
      );
    }
  } finally {
    for (const m of mounted.reverse()) await sh(["umount", m]);
  }
}

/** Build the disk image: the cached debootstrap tree + Node 22, modules, the product (as the AMI installs it), test units. */
async function buildDisk(ctx: SystemdCtx, dir: string): Promise<string> {
  const rootfsScript = path.join(ctx.repo, "scripts/e2e/build-rootfs.sh");
  const rootTar = path.join(
    ctx.work,
    `rootfs-bookworm-${createHash("sha256").update(readFileSync(rootfsScript)).digest("hex").slice(0, 12)}.tar`,
  );
  await must(["bash", rootfsScript, rootTar], "build-rootfs.sh (debootstrap)");
  const R = path.join(dir, "rootfs");
  await fs.mkdir(R, { recursive: true });
  await must(["tar", "-C", R, "-xf", rootTar], "unpack rootfs");

  // Node 22 where AL2023's nodejs22 package installs it (the Packer template's `dnf install`), and
  // any library the rootfs lacks. No /usr/bin/node: the launcher must find node-22 itself.
  await fs.copyFile(ctx.node22, path.join(R, "usr/bin/node-22"));
  await fs.chmod(path.join(R, "usr/bin/node-22"), 0o755);
  for (const lib of (await must(["ldd", ctx.node22], "ldd node-22")).match(/\/\S+\.so[^\s]*/g) ??
    []) {
    if (!existsSync(path.join(R, lib))) await fs.cp(lib, path.join(R, lib), { dereference: true });
  }

  // kernel modules (NIC drivers, vfio with the NOIOMMU vfio.ko, 9p for the results share)
  const K = path.join(ctx.work, `kernel/${ctx.krel}/root`);
  const mods = [
    "vfio",
    "vfio-pci",
    "vfio_iommu_type1",
    "e1000",
    "e1000e",
    "virtio_net",
    "virtio_pci",
    "9p",
    "9pnet_virtio",
    "virtio_blk",
    "ext4",
  ];
  const deps = await must(
    ["modprobe", "-S", ctx.krel, "-d", K, "--show-depends", "-a", ...mods],
    "modprobe --show-depends",
  );
  for (const f of deps
    .split("\n")
    .filter((l) => l.startsWith("insmod "))
    .map((l) => l.split(" ")[1])) {
    const rel = f.slice(K.length);
    await fs.mkdir(path.dirname(path.join(R, rel)), { recursive: true });
    await fs.copyFile(f, path.join(R, rel));
  }
  for (const f of ["modules.order", "modules.builtin", "modules.builtin.modinfo"])
    await fs.copyFile(
      path.join(K, `lib/modules/${ctx.krel}`, f),
      path.join(R, `lib/modules/${ctx.krel}`, f),
    );
  await fs.copyFile(
    path.join(ctx.work, `vfio-noiommu/${ctx.krel}/vfio.ko`),
    path.join(R, `lib/modules/${ctx.krel}/kernel/drivers/vfio/vfio.ko`),
  );
  await must(["depmod", "-b", R, ctx.krel], "depmod");

  // the product, installed the way the AMI gets it: the release tarball for Node 22, then the Packer
  // template's provisioning commands, as root inside the image
  const pkgDir = path.join(dir, "pkg");
  await must(
    [
      process.execPath,
      path.join(ctx.repo, "scripts/package.mjs"),
      "--out",
      pkgDir,
      "--bundle-dir",
      path.join(ctx.assets, "opt/eni-dpdk"),
      "--node",
      ctx.node22,
    ],
    "scripts/package.mjs --node (Node 22)",
    ctx.repo,
  );
  const tgz = (await fs.readdir(pkgDir)).find((f) => f.endsWith(".tar.gz"))!;
  await fs.copyFile(path.join(pkgDir, tgz), path.join(R, "tmp/eni-dpdk.tar.gz"));
  const steps = await amiProvisioning(ctx.repo);
  await fs.mkdir(path.join(R, "var/log"), { recursive: true });
  // as the template's execute_command runs them: bash -euo pipefail, each line traced to the log
  const script = ["exec > /var/log/e2e-provisioning.log 2>&1", "set -x", ...steps].join("\n");
  await inChroot(R, ["/bin/bash", "-euo", "pipefail", "-c", script], "the Packer provisioning");

  // test-only configuration around the real units
  const w = async (rel: string, content: string, mode = 0o644) => {
    await fs.mkdir(path.dirname(path.join(R, rel)), { recursive: true });
    await fs.writeFile(path.join(R, rel), content, { mode });
  };
  await w("etc/hostname", "e2e-node\n");
  await w(
    "etc/systemd/network/10-primary.network",
    `[Match]\nMACAddress=${PRIMARY.mac}\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nIPv6AcceptRA=no\n`,
  );
  await w(
    "etc/systemd/system/eni-dpdk.service.d/10-e2e.conf",
    `# e2e: the emulators run on the test host, reached through QEMU guestfwd\n[Service]\n` +
      Object.entries({
        AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://${HOST_FWD_IMDS.ip}:${HOST_FWD_IMDS.port}`,
        AWS_ENDPOINT_URL_EC2: `http://${HOST_FWD_EC2.ip}:${HOST_FWD_EC2.port}`,
        ...CLI_AWS_ENV,
      })
        .map(([k, v]) => `Environment=${k}=${v}\n`)
        .join(""),
  );
  await w("etc/eni-dpdk/config.toml", toml([{ name: "dpdk1", index: 1 }]));
  await w("etc/e2e/good.toml", toml([{ name: "dpdk1", index: 1 }]));
  await w(
    "etc/e2e/failing.toml",
    toml(
      [
        { name: "dpdk1", index: 1 },
        { name: "dpdk2", index: 2 },
      ],
      ['binding_script = "/opt/e2e/failing-bind"'],
    ),
  );
  await w("opt/e2e/failing-bind", FAILING_BIND, 0o755);
  await w("usr/local/bin/e2e-standin", STANDIN, 0o755);
  await w("usr/local/bin/e2e-check", CHECK, 0o755);
  await w("etc/systemd/system/kubelet.service", unit("kubelet", "stand-in kubelet (e2e)"));
  await w(
    "etc/systemd/system/nodeadm-run.service",
    unit("nodeadm-run", "stand-in nodeadm-run (e2e)"),
  );
  await w(
    "etc/systemd/system/e2e-check.service",
    "[Unit]\nDescription=e2e evidence collector\nAfter=kubelet.service nodeadm-run.service eni-dpdk.service\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/e2e-check\nStandardOutput=journal+console\n[Install]\nWantedBy=multi-user.target\n",
  );
  const wants = path.join(R, "etc/systemd/system/multi-user.target.wants");
  await fs.mkdir(wants, { recursive: true });
  for (const u of ["kubelet.service", "nodeadm-run.service", "e2e-check.service"])
    await fs.symlink(`/etc/systemd/system/${u}`, path.join(wants, u)).catch(() => {});
  await fs
    .symlink(
      "/lib/systemd/system/systemd-networkd.service",
      path.join(wants, "systemd-networkd.service"),
    )
    .catch(() => {});
  await fs.mkdir(path.join(R, "etc/systemd/system/network-online.target.wants"), {
    recursive: true,
  });
  await fs
    .symlink(
      "/lib/systemd/system/systemd-networkd-wait-online.service",
      path.join(
        R,
        "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service",
      ),
    )
    .catch(() => {});
  // no login prompts or first-boot wizards on the console
  await fs
    .symlink("/dev/null", path.join(R, "etc/systemd/system/serial-getty@ttyS0.service"))
    .catch(() => {});
  await fs
    .symlink("/dev/null", path.join(R, "etc/systemd/system/systemd-firstboot.service"))
    .catch(() => {});
  await fs.writeFile(path.join(R, "etc/machine-id"), "0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e\n");

  const img = path.join(dir, "disk.img");
  await must(["mke2fs", "-q", "-t", "ext4", "-d", R, "-F", img, "1200M"], "mke2fs -d");
  await fs.rm(R, { recursive: true, force: true });
  return img;
}

function section(text: string, phase: string, name: string): string {
  const p = text.split(`=== ${phase}`)[1]?.split("=== ")[0] ?? "";
  return p.split(`--- ${name}\n`)[1]?.split("\n--- ")[0]?.trim() ?? "";
}

function prop(block: string, key: string): string | undefined {
  return block.match(new RegExp(`^${key}=(.*)$`, "m"))?.[1];
}

export async function runSystemdScenario(ctx: SystemdCtx): Promise<StepResult> {
  const st = new Step(
    "7",
    "systemd with Node 22 and the tarball installed as the AMI installs it: real units; READY (sd-notify addon) before kubelet; failing config fails the unit with a useful journal message; reboot rebinds via eni-dpdk-early",
  );
  const dir = path.join(ctx.work, "boots/E");
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(path.join(dir, "out"), { recursive: true });
  let img: string;
  try {
    ctx.say(
      "boot E: building the systemd guest disk (debootstrap, cached; Node 22 and the tarball, installed as the AMI installs them)",
    );
    img = await buildDisk(ctx, dir);
  } catch (e) {
    return {
      ...st.result(),
      status: "FAIL",
      evidence: [`building the systemd guest failed: ${(e as Error).message}`],
    };
  }
  const nics = [PRIMARY, DPDK1, DPDK2];
  let vm: Vm | undefined;
  const emu = await hostEmulators(nics, { vm: () => vm! });
  vm = new Vm({
    name: "E",
    kernel: ctx.kernel,
    initrd: ctx.base,
    append: "e2e.root=vda systemd.show_status=1",
    dir,
    nics,
    guestfwd: emu.guestfwd,
    disk: img,
    memoryMb: 1024,
    timeoutMs: Number(process.env.E2E_SYSTEMD_TIMEOUT ?? 480) * 1000,
  });
  ctx.say("boot E: systemd as PID 1 (debootstrap'd bookworm on virtio-blk)");
  const tb = Date.now();
  await vm.start();
  const exit = await vm.wait();
  await emu.close();
  ctx.say(
    `boot E ended (${exit === "timeout" ? "TIMEOUT" : `qemu exit ${exit}`}) after ${((Date.now() - tb) / 1000).toFixed(1)} s; serial log ${vm.serialPath}`,
  );
  const out = existsSync(path.join(dir, "out/s7.txt"))
    ? readFileSync(path.join(dir, "out/s7.txt"), "utf8")
    : "";
  if (!out) {
    const tail = (await vm.serial())
      .trim()
      .split("\n")
      .slice(-20)
      .map((l) => "  | " + l);
    return {
      ...st.result(),
      status: "FAIL",
      evidence: [
        `no evidence file from the guest (${exit === "timeout" ? "timed out" : `qemu exit ${exit}`}); serial tail:`,
        ...tail,
      ],
    };
  }
  st.note(`EC2 calls seen by the host emulator: ${JSON.stringify(emu.ec2.callsPerAction())}`);

  // phase 1: a good config
  const status1 = section(out, "phase1", "systemctl status eni-dpdk");
  st.note("systemctl status eni-dpdk:");
  st.evidence.push(
    ...status1
      .split("\n")
      .slice(0, 8)
      .map((l) => "  | " + l),
  );
  const show1 = section(out, "phase1", "show eni-dpdk");
  st.check(
    prop(show1, "ActiveState") === "active" && prop(show1, "SubState") === "running",
    `eni-dpdk.service active (running) (ActiveState=${prop(show1, "ActiveState")} SubState=${prop(show1, "SubState")})`,
  );
  st.check(
    /^\s*Status: "ready/m.test(status1),
    `systemctl status shows the Status line: ${status1.match(/^\s*Status: .*$/m)?.[0]?.trim() ?? "none"}`,
  );
  // the runtime: the AMI's Node, the tarball's addon for its ABI, the template's provisioning
  const rt = section(out, "phase1", "runtime");
  st.check(
    /^main_exe=\/usr\/bin\/node-22$/m.test(rt) && /modules=127\b/.test(rt),
    `the service's main process is Node 22: ${rt.split("\n").slice(0, 2).join(", ")}`,
  );
  st.check(
    /^usr_bin_node=absent$/m.test(rt),
    "no /usr/bin/node in the image: the launcher found /usr/bin/node-22 itself",
  );
  st.check(
    /sd-notify addon for NODE_MODULE_VERSION 127\b/.test(rt),
    `the installed tarball carries the addon for Node 22: ${rt.split("\n").find((l) => l.startsWith("sd-notify")) ?? "(no VERSION line)"}`,
  );
  const starting = section(out, "phase1", "starting");
  st.check(
    /notify=sd-notify\b/.test(starting),
    `the service told systemd through the addon, not the fallback: ${starting || "(no starting line)"}`,
  );
  const prov = section(out, "phase1", "provisioning");
  st.note("the Packer template's provisioning, run as root in the image:");
  st.evidence.push(
    ...prov
      .split("\n")
      .filter((l) =>
        /^\+ |install\.sh: (installed|enabled|done)|^ok: |^enabled$|^eni-dpdk |^built |^sd-notify/.test(
          l,
        ),
      )
      .slice(0, 24)
      .map((l) => "  | " + l),
  );
  st.check(
    /install\.sh: done/.test(prov) &&
      /^\+ systemctl is-enabled/m.test(prov) &&
      /^\+ rm -rf \/tmp\/eni-dpdk /m.test(prov),
    "every provisioning command ran to the end (install.sh, verify, validate, is-enabled, cleanup)",
  );
  const early = section(out, "phase1", "show eni-dpdk-early");
  st.note(`eni-dpdk-early.service on first boot: ${early.replace(/\n/g, " ")}`);
  const readyAt = Number(prop(show1, "ActiveEnterTimestampMonotonic"));
  for (const name of ["kubelet", "nodeadm-run"]) {
    const show = section(out, "phase1", `show ${name}`);
    const saw = section(out, "phase1", `${name} saw`);
    const startAt = Number(prop(show, "ExecMainStartTimestampMonotonic"));
    st.check(
      readyAt > 0 && startAt >= readyAt,
      `${name} started ${((startAt - readyAt) / 1e6).toFixed(2)} s after eni-dpdk became active (READY=1): ExecMainStartTimestampMonotonic=${startAt} ≥ ActiveEnterTimestampMonotonic=${readyAt}`,
    );
    st.check(
      /eni_dpdk_active=active/.test(saw) &&
        /dpdk1_driver=vfio-pci/.test(saw) &&
        /sriov_config=present/.test(saw),
      `when ${name} started it saw: ${saw.replace(/\n/g, ", ")}`,
    );
  }
  const sys1 = section(out, "phase1", "sysfs");
  st.check(
    new RegExp(`${bdfOf(DPDK1)} driver=vfio-pci`).test(sys1) && /noiommu-/.test(sys1),
    `the service bound dpdk1: ${sys1.replace(/\n/g, " ")}`,
  );
  st.note(
    `journal (phase 1): ${section(out, "phase1", "journal").split("\n").slice(-3).join(" | ")}`,
  );
  // The code cache (src/core/code-cache.ts) under the unit's hardening: /opt is read-only, so it
  // must be in CacheDirectory=, root's alone, written once the service was READY.
  const cache1 = section(out, "phase1", "code cache");
  const runCache = (text: string) => /^(\d+) (\d+) \S+\.run\.[\d.]+\.v8$/m.exec(text);
  st.check(
    /^\d+ 700 \/var\/cache\/eni-dpdk$/m.test(cache1) && runCache(cache1)?.[2] === "600",
    `the service kept its code cache in /var/cache/eni-dpdk (mode 700, file 600): ${cache1.replace(/\n/g, " | ")}`,
  );

  // phase 2: a config that fails at run time (the binding script unbinds dpdk2, then fails)
  const p2 = out.split("=== phase2")[1] ?? "";
  const show2 = section(out, "phase2", "show eni-dpdk");
  const status2 = section(out, "phase2", "systemctl status eni-dpdk");
  st.note(
    `systemctl restart eni-dpdk with the failing config: ${p2.match(/restart_exit=\d+/)?.[0]}`,
  );
  st.evidence.push(
    ...status2
      .split("\n")
      .slice(0, 6)
      .map((l) => "  | " + l),
  );
  st.check(/restart_exit=[1-9]/.test(p2), "systemctl restart reports the start job failed");
  st.check(
    prop(show2, "Result") === "exit-code" &&
      prop(show2, "ExecMainStatus") === "1" &&
      (prop(show2, "ActiveState") === "failed" || prop(show2, "SubState") === "auto-restart"),
    `unit failed: ActiveState=${prop(show2, "ActiveState")} SubState=${prop(show2, "SubState")} Result=${prop(show2, "Result")} ExecMainStatus=${prop(show2, "ExecMainStatus")} (Restart=on-failure may schedule a retry)`,
  );
  const j2 = section(out, "phase2", "journal");
  const useful = j2.split("\n").find((l) => /level=error .*failed to bind.*next=/.test(l));
  st.check(
    !!useful,
    `the journal says what failed and what to do: ${useful?.slice(0, 400) ?? "(no such line)"}`,
  );
  const sys2 = section(out, "phase2", "sysfs");
  st.check(
    new RegExp(`${bdfOf(DPDK2)} driver=e1000e net=\\S+`).test(sys2),
    `dpdk2 back on its kernel driver with a netdev: ${sys2.split("\n").find((l) => l.startsWith(bdfOf(DPDK2)))}`,
  );

  // reboot: the same disk boots again; eni-dpdk-early rebinds offline before systemd-networkd
  const dir2 = path.join(ctx.work, "boots/E2");
  await fs.rm(dir2, { recursive: true, force: true });
  await fs.mkdir(path.join(dir2, "out"), { recursive: true });
  const emu2 = await hostEmulators(nics);
  const vm2 = new Vm({ ...vm.opts, name: "E2", dir: dir2, guestfwd: emu2.guestfwd });
  ctx.say("boot E2: reboot of the systemd guest (eni-dpdk-early with the state file)");
  const t2 = Date.now();
  await vm2.start();
  const exit2 = await vm2.wait();
  await emu2.close();
  ctx.say(
    `boot E2 ended (${exit2 === "timeout" ? "TIMEOUT" : `qemu exit ${exit2}`}) after ${((Date.now() - t2) / 1000).toFixed(1)} s; serial log ${vm2.serialPath}`,
  );
  const rb = existsSync(path.join(dir2, "out/s7b.txt"))
    ? readFileSync(path.join(dir2, "out/s7b.txt"), "utf8")
    : "";
  if (!rb) {
    st.check(
      false,
      `reboot: no evidence file from the guest (${exit2 === "timeout" ? "timed out" : `qemu exit ${exit2}`})`,
    );
    return st.result();
  }
  const early2 = section(rb, "reboot", "show eni-dpdk-early");
  const networkd = Number(
    prop(section(rb, "reboot", "show systemd-networkd"), "ExecMainStartTimestampMonotonic"),
  );
  const earlyExit = Number(prop(early2, "ExecMainExitTimestampMonotonic"));
  st.check(
    prop(early2, "ConditionResult") === "yes" &&
      prop(early2, "Result") === "success" &&
      prop(early2, "ExecMainStatus") === "0",
    `reboot: eni-dpdk-early ran and succeeded (${early2.replace(/\n/g, " ")})`,
  );
  st.check(
    earlyExit > 0 && networkd > 0 && earlyExit <= networkd,
    `reboot: eni-dpdk-early finished (${earlyExit}) before systemd-networkd started (${networkd})`,
  );
  st.note(
    `reboot: eni-dpdk-early journal: ${section(rb, "reboot", "journal early").split("\n").slice(-4).join(" | ")}`,
  );
  const sysR = section(rb, "reboot", "sysfs");
  st.check(
    new RegExp(`${bdfOf(DPDK1)} driver=vfio-pci`).test(sysR) && /noiommu-/.test(sysR),
    `reboot: dpdk1 bound again: ${sysR.replace(/\n/g, " ")}`,
  );
  const show3 = section(rb, "reboot", "show eni-dpdk");
  st.check(
    prop(show3, "ActiveState") === "active",
    `reboot: eni-dpdk.service ${prop(show3, "ActiveState")} (${prop(show3, "StatusText")})`,
  );
  // The boot itself makes no EC2 call. The one request allowed is the leaked-ENI collection's
  // read (reconcile/gc.ts), which `run` makes once, a random 0..[gc].delay_seconds (300) after
  // READY: on a slow guest the evidence is sometimes collected after it.
  const calls = emu2.ec2.requests;
  const gcReads = calls.filter((r) => isGcDescribe(r.params));
  st.check(
    calls.length === gcReads.length && gcReads.length <= 1,
    `reboot: no EC2 call during the second boot but the gc pass's one read (${JSON.stringify(emu2.ec2.callsPerAction())}, of which ${gcReads.length} the gc pass's)`,
  );
  const eniDone = section(rb, "reboot", "boot pass eni").trim();
  st.check(
    !!eniDone && /\bactions=0\b/.test(eniDone) && /\bec2_loaded=false\b/.test(eniDone),
    `reboot: the boot's pass planned no ENI action and never loaded the EC2 client: ${eniDone ?? "(no eni stage line in the journal)"}`,
  );
  // A cache V8 rejected would have been written again (a new file renamed over it: a new inode).
  const cacheR = section(rb, "reboot", "code cache");
  const was = runCache(cache1)?.[1];
  st.check(
    was !== undefined && runCache(cacheR)?.[1] === was,
    `reboot: the service started from the first boot's code cache (inode ${was} kept): ${cacheR.replace(/\n/g, " | ")}`,
  );
  return st.result();
}
