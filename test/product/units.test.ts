// The systemd units: `systemd-analyze verify` (syntax, types, ExecStart binaries, dependency
// resolution) in a throw-away root, a boot transaction with stand-ins for the EKS AL2023 units
// (verify reports ordering cycles found while building it), and the ordering itself, computed from
// the parsed Before=/After= edges of our units, the stand-ins and the host's own units.
import t, { type Test } from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaults } from "../../src/config/model.js";
import { STATE_PATH, STATUS_PATH } from "../../src/host/state.js";
import { NETWORKD_DIR, NODEADM_CACHE_DIR } from "../../src/host/networkd.js";
import { MAX_PODS_DROPIN, NODEADM_DROPIN_DIR } from "../../src/host/nodeadm-dropin.js";
import {
  analyzeVerify,
  makeVerifyRoot,
  parseUnit,
  seconds,
  words,
  type UnitFile,
} from "../support/unitfile.js";
import { REPO } from "../support/repo.js";

const repo = REPO;
const OURS = ["eni-dpdk.service", "eni-dpdk-early.service"];

// Ordering lines of the EKS AL2023 AMI's units (awslabs/amazon-eks-ami,
// templates/al2023/runtime/rootfs/etc/systemd/system/*.service) and cloud-init's, as stand-ins:
// this machine has none of them, and the ordering must hold against the real graph.
const STAND_INS: Record<string, string> = {
  "nodeadm-boot-hook.service":
    "Before=nodeadm-config.service\nAfter=systemd-networkd.service\nBefore=systemd-networkd-wait-online.service",
  "nodeadm-config.service": "Before=cloud-init.service\nAfter=systemd-networkd-wait-online.service",
  // nodeadm-run reads user-data and /etc/eks/nodeadm.d (the maxPods drop-in) when it starts
  "nodeadm-run.service":
    "After=nodeadm-config.service cloud-final.service\nRequires=nodeadm-config.service",
  "kubelet.service": "After=containerd.service",
  "containerd.service": "After=network.target",
  "cloud-init.service": "After=systemd-networkd-wait-online.service\nBefore=network-online.target",
  "cloud-final.service": "After=network-online.target\nWants=network-online.target",
};

function standIn(name: string, ordering: string): string {
  return `[Unit]\nDescription=stand-in for ${name}\n${ordering}\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/true\n`;
}

/** A root with the host's units, our units as shipped, the stand-ins and a boot target pulling all in. */
function setUpRoot(t: Test): string {
  const root = makeVerifyRoot(fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-units-")), {
    "usr/bin/true": "/usr/bin/true",
    "usr/bin/kill": "/usr/bin/kill",
  });
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  // ExecStart=/usr/bin/eni-dpdk must exist in the root for verify; a stub is enough for syntax.
  fs.writeFileSync(path.join(root, "usr/bin/eni-dpdk"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  for (const u of OURS)
    fs.copyFileSync(path.join(repo, "systemd", u), path.join(root, "usr/lib/systemd/system", u));
  for (const [name, ordering] of Object.entries(STAND_INS)) {
    fs.writeFileSync(path.join(root, "etc/systemd/system", name), standIn(name, ordering));
  }
  const all = [
    ...OURS,
    ...Object.keys(STAND_INS),
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
    "network-online.target",
  ];
  fs.writeFileSync(
    path.join(root, "etc/systemd/system/eks-boot.target"),
    `[Unit]\nDescription=stand-in boot\nWants=${all.join(" ")}\n`,
  );
  return root;
}

/** Load a unit by name the way the root would (etc overrides usr/lib); undefined when absent. */
function loadUnit(root: string, name: string): UnitFile | undefined {
  for (const dir of ["etc/systemd/system", "usr/lib/systemd/system"]) {
    const p = path.join(root, dir, name);
    if (fs.existsSync(p)) return parseUnit(fs.readFileSync(p, "utf8"));
  }
  return undefined;
}

/** Edges a→b meaning "a is ordered to start before b", from Before= and After= of every unit reached. */
function orderingGraph(root: string, start: string[]): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  const edge = (a: string, b: string) => (g.get(a) ?? g.set(a, new Set()).get(a)!).add(b);
  const seen = new Set<string>();
  const queue = [...start];
  while (queue.length) {
    const name = queue.shift()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const u = loadUnit(root, name);
    if (!u) continue;
    for (const b of words(u, "Unit", "Before")) {
      edge(name, b);
      queue.push(b);
    }
    for (const a of words(u, "Unit", "After")) {
      edge(a, name);
      queue.push(a);
    }
  }
  return g;
}

function startsBefore(g: Map<string, Set<string>>, a: string, b: string): boolean {
  const seen = new Set<string>();
  const stack = [a];
  while (stack.length) {
    const n = stack.pop()!;
    for (const m of g.get(n) ?? []) {
      if (m === b) return true;
      if (!seen.has(m)) {
        seen.add(m);
        stack.push(m);
      }
    }
  }
  return false;
}

t.test("systemd-analyze verify passes on every unit, as shipped", async (t) => {
  const root = setUpRoot(t);
  for (const u of OURS) {
    const r = analyzeVerify(root, [u]);
    t.equal(r.status, 0, `${u} verifies`);
    t.equal(r.output, "", `${u}: no complaints`);
  }
});

t.test("the boot transaction with the EKS stand-ins has no ordering cycle", async (t) => {
  const root = setUpRoot(t);
  const r = analyzeVerify(root, ["eks-boot.target"]);
  t.equal(r.status, 0);
  t.notMatch(r.output, /ordering cycle/i, r.output);

  // The same check can fail: a unit that wants to start after kubelet closes a cycle.
  const cyclic = fs
    .readFileSync(path.join(repo, "systemd/eni-dpdk.service"), "utf8")
    .replace(
      "After=network-online.target",
      "After=network-online.target kubelet.service nodeadm-run.service",
    );
  fs.writeFileSync(path.join(root, "etc/systemd/system/eni-dpdk.service"), cyclic);
  const bad = analyzeVerify(root, ["eks-boot.target"]);
  t.match(bad.output, /Found ordering cycle/, "a cycle is reported");
});

t.test(
  "ordering: early rebind before networkd and nodeadm's boot hook; the service before kubelet",
  async (t) => {
    const root = setUpRoot(t);
    const g = orderingGraph(root, [...OURS, ...Object.keys(STAND_INS)]);
    const before: [string, string][] = [
      ["systemd-modules-load.service", "eni-dpdk-early.service"],
      ["systemd-udev-trigger.service", "eni-dpdk-early.service"],
      ["eni-dpdk-early.service", "systemd-networkd.service"],
      ["eni-dpdk-early.service", "nodeadm-boot-hook.service"],
      ["eni-dpdk-early.service", "nodeadm-config.service"],
      ["eni-dpdk-early.service", "eni-dpdk.service"],
      ["network-online.target", "eni-dpdk.service"],
      ["nodeadm-boot-hook.service", "eni-dpdk.service"],
      ["eni-dpdk.service", "nodeadm-run.service"],
      ["eni-dpdk.service", "kubelet.service"],
    ];
    for (const [a, b] of before) {
      t.ok(startsBefore(g, a, b), `${a} starts before ${b}`);
      t.notOk(startsBefore(g, b, a), `${b} is not also before ${a}`);
    }
  },
);

t.test("unit contents the other parts rely on", async (t) => {
  const svc = parseUnit(fs.readFileSync(path.join(repo, "systemd/eni-dpdk.service"), "utf8"));
  const early = parseUnit(
    fs.readFileSync(path.join(repo, "systemd/eni-dpdk-early.service"), "utf8"),
  );
  t.same(svc.Service.Type, ["notify"]);
  t.same(svc.Service.NotifyAccess, ["main"], "the systemd-notify fallback reports the main PID");
  t.same(svc.Service.ExecStart, ["/usr/bin/eni-dpdk run"]);
  t.same(early.Service.ExecStart, ["/usr/bin/eni-dpdk early"]);
  t.same(early.Service.Type, ["oneshot"]);
  t.same(early.Unit.DefaultDependencies, ["no"]);
  t.same(
    early.Unit.ConditionPathExists,
    [STATE_PATH],
    "runs only when a state file records bindings",
  );
  const timeout = defaults().service.timeout_seconds;
  const startLimit = seconds(svc.Service.TimeoutStartSec[0]);
  t.ok(
    startLimit > timeout && startLimit <= timeout + 60,
    `TimeoutStartSec ${startLimit}s leaves a margin over timeout_seconds=${timeout}`,
  );
  t.ok(seconds(svc.Service.WatchdogSec[0]) > 0, "watchdog set");
  t.same(svc.Service.Restart, ["on-failure"]);
  t.ok(
    seconds(svc.Unit.StartLimitIntervalSec[0]) >= Number(svc.Unit.StartLimitBurst[0]) * startLimit,
    "the burst window covers the slow failures too",
  );
  t.same(words(svc, "Unit", "Requires"), [], "no Requires=: kubelet must still start when we fail");
  t.same(words(svc, "Install", "WantedBy"), ["multi-user.target"]);
  t.same(words(early, "Install", "WantedBy"), ["multi-user.target"]);
  const rw = words(svc, "Service", "ReadWritePaths").map((p) => p.replace(/^-/, ""));
  for (const p of [
    "/run",
    "/etc/pcidp",
    "/etc/systemd/network",
    "/etc/eks/nodeadm/udev-net-manager",
    NODEADM_DROPIN_DIR,
  ])
    t.ok(rw.includes(p), `writable: ${p}`);
  t.same(svc.Service.StateDirectory, ["eni-dpdk"], "/var/lib/eni-dpdk writable via StateDirectory");
  // The code cache (src/core/code-cache.ts): /opt is read-only under ProtectSystem=strict, and V8
  // runs what the cache holds, so it is root's alone.
  for (const u of [svc, early]) {
    t.same(u.Service.CacheDirectory, ["eni-dpdk"], "$CACHE_DIRECTORY is /var/cache/eni-dpdk");
    t.same(u.Service.CacheDirectoryMode, ["0700"], "and only root may read or write it");
  }
  // Every place the code writes (its own constants) lies under a writable path of the hardened unit.
  const writable = [...rw, "/var/lib/eni-dpdk"];
  const lockPath = "/run/eni-dpdk.lock";
  for (const target of [
    STATE_PATH,
    STATUS_PATH,
    lockPath,
    path.join(NETWORKD_DIR, "x.network"),
    path.join(NODEADM_CACHE_DIR, "i-1/eth1"),
    MAX_PODS_DROPIN,
    defaults().sriov.config_path,
  ]) {
    t.ok(
      writable.some((w) => target.startsWith(w + "/")),
      `${target} is writable under the unit's hardening`,
    );
  }
  t.notOk(svc.Service.ProtectKernelTunables, "sysfs stays writable");
  t.notOk(svc.Service.ProtectKernelModules, "modprobe stays possible");
  t.notOk(svc.Service.PrivateDevices, "/dev/vfio stays visible");
});

t.test("a broken unit fails verify (the check can fail)", async (t) => {
  const root = setUpRoot(t);
  const unitPath = path.join(root, "usr/lib/systemd/system/eni-dpdk.service");
  const good = fs.readFileSync(unitPath, "utf8");
  fs.writeFileSync(unitPath, good.replace("Type=notify", "Type=notfy"));
  // verify only warns (exit 0) about a bad value or an unknown key, so "no output" is the criterion
  // the first test applies; here the output is not empty.
  const badType = analyzeVerify(root, ["eni-dpdk.service"]);
  t.match(badType.output, /notfy/, "bad Type= reported");
  fs.writeFileSync(unitPath, good.replace("NotifyAccess=main", "NotifyAcess=main"));
  const badKey = analyzeVerify(root, ["eni-dpdk.service"]);
  t.match(badKey.output, /NotifyAcess/, "misspelt key reported");

  fs.writeFileSync(unitPath, good);
  fs.rmSync(path.join(root, "usr/bin/eni-dpdk"));
  const noBinary = analyzeVerify(root, ["eni-dpdk.service"]);
  t.not(noBinary.status, 0, "missing ExecStart binary rejected");
  t.match(noBinary.output, /eni-dpdk/);
});
