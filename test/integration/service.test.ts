// plan / apply / run as real processes against a simulated node (IMDSv2 + EC2 emulators, simulated
// kernel), with a real unix datagram socket standing in for systemd's NOTIFY_SOCKET.
import t from "tap";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { World, modulesLoadOf, sampleConfig } from "../../src/sim/world.js";
import { NotifySocket } from "../support/notify.js";
import { createNotifier } from "../../src/core/notify.js";
import { silentLogger } from "../../src/core/log.js";
import { Host } from "../../src/host/host.js";
import { REPO } from "../support/repo.js";
import { BUNDLE, NODE } from "../support/harness.js";

const repo = REPO;

interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<number>;
}

function start(world: World, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(NODE[0], [...NODE.slice(1), BUNDLE, ...args], {
    env: world.env(extraEnv),
    cwd: repo,
  });
  const p: Proc = {
    child,
    stdout: "",
    stderr: "",
    exit: new Promise((r) => child.on("exit", (c, sig) => r(c ?? (sig ? 128 : 1)))),
  };
  child.stdout.on("data", (d: Buffer) => (p.stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (p.stderr += d.toString()));
  return p;
}

async function cli(world: World, args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const p = start(world, args, extraEnv);
  const code = await p.exit;
  return { code, stdout: p.stdout, stderr: p.stderr };
}

t.test(
  "plan changes nothing; apply converges; a second apply changes nothing; status.json written",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());

    const plan = await cli(world, ["plan"]);
    t.equal(plan.code, 0, plan.stderr);
    for (const line of [
      /eni\s+create\s+n3/,
      /eni\s+attach\s+n6/,
      /host\s+load-module\s+vfio-pci/,
      /host\s+bind\s+n3\s+after the ENI is attached/,
      /host\s+set-mtu\s+mgmt/,
      /sriov\s+write-sriov\s+\/etc\/pcidp\/config.json\s+resource amazon.com\/ena_dpdk, after/,
    ])
      t.match(plan.stdout, line);
    t.equal(world.ec2.mutatingCalls(), 0, "plan made no mutating EC2 call");
    t.same(world.sim.writes, [], "plan made no sysfs write");
    t.notOk(
      existsSync(path.join(world.root, "var/lib/eni-dpdk/state.json")),
      "plan wrote no state",
    );
    t.notOk(
      existsSync(path.join(world.root, "var/lib/eni-dpdk/toml-memo.json")),
      "plan wrote no parse memo",
    );

    const apply = await cli(world, ["apply"]);
    t.equal(apply.code, 0, apply.stderr);
    for (const stage of ["sources", "observe", "eni", "host", "sriov"])
      t.match(apply.stderr, new RegExp(`msg="${stage} done" stage=${stage} took_ms=\\d+`));
    t.match(
      apply.stderr,
      /msg="ready: 3 ENIs attached, 2 bound to vfio-pci \(noiommu\), 1 SR-IOV resource written"/,
    );
    const status = JSON.parse(
      readFileSync(path.join(world.root, "run/eni-dpdk/status.json"), "utf8"),
    );
    t.equal(status.apply.ok, true);
    t.ok(status.apply.timings.eni > 0 && status.apply.timings.total > 0, "timings per stage");
    t.same(
      [status.lastApply?.startedAt, status.lastApply?.summary],
      [status.apply.startedAt, status.apply.summary],
      "the document's last apply is the apply that wrote it, not the one before",
    );
    t.same(
      [status.host.sriov.check?.ok, status.host.sriov.check?.errors],
      [true, []],
      "the SR-IOV check of the file the apply left",
    );
    const sriov = JSON.parse(readFileSync(path.join(world.root, "etc/pcidp/config.json"), "utf8"));
    t.same(sriov.resourceList[0].selectors.pciAddresses, ["0000:00:06.0", "0000:00:07.0"]);
    t.equal(world.sim.driverOf("0000:00:08.0"), "ena", "kernel ENI stays on ena");
    t.equal(readFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "utf8").trim(), "9001");
    t.equal(world.sim.driverOf("0000:00:05.0"), "ena", "primary untouched");

    const mutating = world.ec2.mutatingCalls();
    const writes = world.sim.writes.length;
    const mtime = statSync(path.join(world.root, "etc/pcidp/config.json")).mtimeMs;
    const again = await cli(world, ["plan"]);
    t.match(again.stdout, /nothing to do/);
    const second = await cli(world, ["apply"]);
    t.equal(second.code, 0, second.stderr);
    t.equal(world.ec2.mutatingCalls(), mutating, "second apply: no mutating EC2 call");
    t.equal(world.sim.writes.length, writes, "second apply: no sysfs write");
    t.equal(
      statSync(path.join(world.root, "etc/pcidp/config.json")).mtimeMs,
      mtime,
      "SR-IOV file untouched",
    );
    t.match(
      second.stderr,
      /msg="eni done" stage=eni took_ms=\d+ actions=0 ec2_loaded=false/,
      "no EC2 SDK loaded when IMDS proves the ENIs",
    );
  },
);

t.test(
  "first boot: the networkd Unmanaged file of a DPDK ENI exists before its NIC appears",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    const seen: Record<string, boolean> = {};
    const hook = world.ec2.onAttached!;
    world.ec2.onAttached = (ev) => {
      const name = ev.eni.tags["eni-dpdk:name"];
      seen[name] = existsSync(
        path.join(world.root, `etc/systemd/network/00-eni-dpdk-${name}.network`),
      );
      return hook(ev);
    };
    t.equal((await cli(world, ["apply"])).code, 0);
    t.same(
      seen,
      { n3: true, n6: true, mgmt: false },
      "written for the DPDK ENIs before attach; none for the kernel ENI",
    );
    t.match(
      readFileSync(path.join(world.root, "etc/systemd/network/00-eni-dpdk-n3.network"), "utf8"),
      /Unmanaged=yes/,
    );
  },
);

t.test(
  "reboot: devices come back on ena; apply rebinds them from the state file with no EC2 call",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    t.equal((await cli(world, ["apply"])).code, 0);
    world.reboot();
    t.equal(world.sim.driverOf("0000:00:06.0"), "ena");
    const calls = world.ec2.totalCalls();
    const r = await cli(world, ["apply"]);
    t.equal(r.code, 0, r.stderr);
    t.equal(world.ec2.totalCalls(), calls, "no EC2 call at all");
    t.equal(world.sim.driverOf("0000:00:06.0"), "vfio-pci");
    t.equal(world.sim.driverOf("0000:00:07.0"), "vfio-pci");
    t.equal(world.sim.driverOf("0000:00:05.0"), "ena");
  },
);

t.test(
  "reboot: early rebinds the devices at once; one slow to leave ena does not hold up the other",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    t.equal((await cli(world, ["apply"])).code, 0);
    world.reboot();
    const from = world.sim.writes.length;
    world.sim.delayNextUnbind("0000:00:06.0", 500);
    const r = await cli(world, ["early"]);
    t.equal(r.code, 0, r.stderr);
    t.same(
      world.sim.writes
        .slice(from)
        .filter((w) => w.path === "/sys/bus/pci/drivers_probe")
        .map((w) => w.value),
      ["0000:00:07.0", "0000:00:06.0"],
      "07.0 was probed while 06.0 was still leaving ena",
    );
    t.equal(world.sim.driverOf("0000:00:06.0"), "vfio-pci");
    t.equal(world.sim.driverOf("0000:00:07.0"), "vfio-pci");
    t.equal(world.sim.driverOf("0000:00:05.0"), "ena", "the primary untouched");
    t.notOk(existsSync(world.sim.p("/var/lib/eni-dpdk/inflight.json")), "the journal is empty");
  },
);

t.test(
  "reboot: a recorded device whose kernel driver fails to probe is waited for, then reported, never bound",
  async (t) => {
    // ena's probe failed at boot: the device is there but driverless, so no netdev shows its MAC.
    // early cannot verify it is the recorded ENI, so it binds nothing there; it waits its bound
    // (the driver may still be probing), names the device and exits 1. The other device is bound.
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    t.equal((await cli(world, ["apply"])).code, 0);
    world.sim.failNextProbe("0000:00:06.0");
    world.reboot();
    t.equal(world.sim.driverOf("0000:00:06.0"), undefined, "driverless after the reboot");
    const from = world.sim.writes.length;
    const started = Date.now();
    const r = await cli(world, ["early"]);
    const took = Date.now() - started;
    t.equal(r.code, 1, "exit 1");
    t.match(
      r.stdout,
      /^failed +0000:00:06\.0 \S+ \S+: 0000:00:06\.0 did not appear with a netdev \(driver none\): its kernel driver did not take it \(see `dmesg \| grep 0000:00:06\.0`\)/m,
    );
    t.ok(took >= 10_000, `it waited its 10 s bound for the driver (${took} ms)`);
    t.same(
      world.sim.writes.slice(from).filter((w) => w.path.includes("0000:00:06.0")),
      [],
      "nothing written to the unverified device",
    );
    t.equal(world.sim.driverOf("0000:00:06.0"), undefined, "still driverless");
    t.equal(world.sim.driverOf("0000:00:07.0"), "vfio-pci", "the other device bound meanwhile");
    // what the SRE sees next: status names the device and where to look, and apply fails at once
    const status = await cli(world, ["status"]);
    t.match(
      status.stdout,
      /no NIC with MAC \S+: 0000:00:06\.0, where it was bound, is on no driver; its kernel driver did not take it/,
    );
    const applied = Date.now();
    const apply = await cli(world, ["apply"]);
    t.equal(apply.code, 1, "apply: exit 1");
    t.ok(Date.now() - applied < 8000, "without waiting for the device");
    t.match(
      apply.stderr,
      /0000:00:06\.0 has no netdev with \S+ and is on no driver: its kernel driver/,
    );
    t.equal(world.sim.driverOf("0000:00:06.0"), undefined, "and it binds nothing there either");
    // docs/troubleshooting.md's way out: probe it again, then apply
    writeFileSync(world.sim.p("/sys/bus/pci/drivers_probe"), "0000:00:06.0");
    for (let i = 0; i < 100 && world.sim.driverOf("0000:00:06.0") !== "ena"; i++)
      await new Promise((r) => setTimeout(r, 20));
    t.equal(world.sim.driverOf("0000:00:06.0"), "ena", "probed again, ena takes it");
    const again = await cli(world, ["apply"]);
    t.equal(again.code, 0, again.stderr);
    t.equal(world.sim.driverOf("0000:00:06.0"), "vfio-pci", "and the next apply binds it");
  },
);

t.test(
  "reboot on the AMI: modules-load.d loaded vfio-pci with NOIOMMU; apply rebinds and runs no modprobe",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    t.equal((await cli(world, ["apply"])).code, 0);
    // the AMI's own files, read as systemd-modules-load and modprobe read them
    const ami = modulesLoadOf(
      readFileSync(path.join(REPO, "etc/modules-load.d/eni-dpdk.conf"), "utf8"),
      readFileSync(path.join(REPO, "etc/modprobe.d/eni-dpdk.conf"), "utf8"),
    );
    t.same(ami, {
      modules: ["vfio", "vfio-pci"],
      options: { vfio: ["enable_unsafe_noiommu_mode=1"] },
    });
    world.reboot({ modulesLoad: ami });
    t.equal(world.sim.driverOf("0000:00:06.0"), "ena");
    t.equal(
      readFileSync(world.sim.p("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"), "utf8"),
      "Y\n",
      "vfio was loaded with the modprobe.d option",
    );
    const modprobes = world.sim.modprobeCalls().length;
    const r = await cli(world, ["apply"]);
    t.equal(r.code, 0, r.stderr);
    t.equal(world.sim.modprobeCalls().length, modprobes, "no modprobe: the modules were there");
    t.equal(world.sim.driverOf("0000:00:06.0"), "vfio-pci");
    t.equal(world.sim.driverOf("0000:00:07.0"), "vfio-pci");
  },
);

t.test("invalid input: exit 2, and no EC2 call, no sysfs write, no file changed", async (t) => {
  const world = await World.start({
    configToml: sampleConfig().replace(
      'resource_name = "amazon.com/ena_dpdk"',
      'resource_name = "amazon.com/ena-dpdk"',
    ),
  });
  t.teardown(() => world.close());
  world.imds.instance.tags = { "eni-dpdk:dpdk": "hugepages_2m=lots" };
  const r = await cli(world, ["apply"]);
  t.equal(r.code, 2);
  t.match(
    r.stderr,
    /\/etc\/eni-dpdk\/config\.toml:\d+:\d+: eni\.n3\.dpdk\.resource_name: name \\"ena-dpdk\\" must match \[A-Za-z0-9_\]\{1,63\}/,
  );
  t.match(r.stderr, /tag eni-dpdk:dpdk: dpdk\.hugepages_2m: expected an integer, got \\"lots\\"/);
  t.equal(world.ec2.totalCalls(), 0, "no EC2 call");
  t.same(world.sim.writes, [], "no sysfs write");
  t.notOk(existsSync(path.join(world.root, "etc/pcidp/config.json")), "no SR-IOV file");
  t.notOk(existsSync(path.join(world.root, "var/lib/eni-dpdk/state.json")), "no state file");
  t.notOk(existsSync(path.join(world.root, "var/lib/eni-dpdk/toml-memo.json")), "no parse memo");
});

t.test("pre-flight failure (subnet in another AZ): exit 2 before any mutation", async (t) => {
  const world = await World.start({
    configToml: sampleConfig().replace('subnet_name = "data2"', 'subnet_name = "data-b"'),
  });
  t.teardown(() => world.close());
  const r = await cli(world, ["apply"]);
  t.equal(r.code, 2, r.stderr);
  t.match(r.stderr, /mgmt/);
  t.match(r.stderr, /us-west-2b/);
  t.equal(world.ec2.mutatingCalls(), 0);
  t.same(world.sim.writes, []);
  t.notOk(
    existsSync(path.join(world.root, "var/lib/eni-dpdk/state.json")),
    "no state file written",
  );
  t.notOk(
    existsSync(path.join(world.root, "var/lib/eni-dpdk/toml-memo.json")),
    "no parse memo written",
  );
});

t.test(
  "apply waits for the host lock before its first change, and proceeds once it is released",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    const held = await new Host(world.root).acquireLock();
    const p = start(world, ["apply"]);
    // Long enough for the sources and observation to finish; the mutating part must still wait.
    await new Promise((r) => setTimeout(r, 3000));
    t.equal(p.child.exitCode, null, "still waiting");
    t.equal(world.ec2.mutatingCalls(), 0, "no EC2 change under someone else's lock");
    t.same(world.sim.writes, [], "no sysfs write under someone else's lock");
    await held.release();
    t.equal(await p.exit, 0, p.stderr);
    t.equal(world.sim.driverOf("0000:00:06.0"), "vfio-pci");
  },
);

t.test(
  "the next boot reuses the parsed TOML of the last successful apply, for byte-identical text only",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig() });
    t.teardown(() => world.close());
    t.equal((await cli(world, ["apply"])).code, 0);
    const memoFile = path.join(world.root, "var/lib/eni-dpdk/toml-memo.json");
    const memo = JSON.parse(readFileSync(memoFile, "utf8"));
    t.same(
      memo.entries.map((e: { text: string }) => e.text),
      [sampleConfig()],
      "the config file's exact text",
    );
    // Doctor the memo: if the next run uses it, the kernel ENI gets this MTU instead of the file's 9001.
    memo.entries[0].data.eni.find((e: { name: string }) => e.name === "mgmt").mtu = 1500;
    writeFileSync(memoFile, JSON.stringify(memo));
    t.equal(readFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "utf8").trim(), "9001");
    const reused = await cli(world, ["apply"]);
    t.equal(reused.code, 0, reused.stderr);
    t.equal(
      readFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "utf8").trim(),
      "1500",
      "the memo was used, not a parse",
    );
    writeFileSync(path.join(world.root, "etc/eni-dpdk/config.toml"), sampleConfig() + "# edited\n");
    const parsed = await cli(world, ["apply"]);
    t.equal(parsed.code, 0, parsed.stderr);
    t.equal(
      readFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "utf8").trim(),
      "9001",
      "one changed byte means a real parse",
    );
    t.same(
      JSON.parse(readFileSync(memoFile, "utf8")).entries.map((e: { text: string }) => e.text),
      [sampleConfig() + "# edited\n"],
    );
  },
);

t.test(
  "run: READY with the Status line, SIGHUP re-reads the sources, SIGTERM stops cleanly",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig({ reconcileSeconds: 0 }) });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    const p = start(world, ["run"], { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: "1000000" });
    const ready = await notify.waitFor((f) => f.READY === "1");
    t.equal(
      ready.STATUS,
      "ready: 3 ENIs attached, 2 bound to vfio-pci (noiommu), 1 SR-IOV resource written",
    );
    t.ok(
      notify.messages.every((m) => m.pid === p.child.pid),
      "every message comes from the main pid (NotifyAccess=main)",
    );
    await notify.waitFor((f) => f.WATCHDOG === "1", 5000);

    // a new resource for n6: SIGHUP re-reads the file, writes SR-IOV, and says the plugin needs a restart
    world.writeConfig(
      sampleConfig({ reconcileSeconds: 0 }).replace(
        /(name = "n6"[\s\S]*?)resource_name = "amazon.com\/ena_dpdk"/,
        '$1resource_name = "amazon.com/ena_dpdk_n6"',
      ),
    );
    p.child.kill("SIGHUP");
    const reloaded = await notify.waitFor((f) => /restart/.test(f.STATUS ?? ""));
    t.match(
      reloaded.STATUS,
      /^ready: 3 ENIs attached, 2 bound to vfio-pci \(noiommu\), 2 SR-IOV resources written; .*restart/,
    );
    const sriov = JSON.parse(readFileSync(path.join(world.root, "etc/pcidp/config.json"), "utf8"));
    t.same(sriov.resourceList.map((e: { resourceName: string }) => e.resourceName).sort(), [
      "ena_dpdk",
      "ena_dpdk_n6",
    ]);

    p.child.kill("SIGTERM");
    t.equal(await p.exit, 0, p.stderr);
    await notify.waitFor((f) => f.STOPPING === "1", 5000);
    t.match(p.stderr, /msg=stopping signal=SIGTERM/);
  },
);

t.test(
  "run with on_failure=fail and invalid config: exits 2 before READY, Status says why",
  async (t) => {
    const world = await World.start({
      configToml: sampleConfig().replace('driver = "vfio-pci"', 'driver = "vfio"'),
    });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    const p = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    t.equal(await p.exit, 2);
    const st = await notify.waitFor((f) => /^failed/.test(f.STATUS ?? ""), 5000);
    t.match(
      st.STATUS,
      /^failed: invalid config: 1 problem\(s\), first: \/etc\/eni-dpdk\/config\.toml:\d+:\d+: dpdk\.driver: expected one of/,
    );
    t.notOk(
      notify.messages.some((m) => m.fields.READY),
      "never READY",
    );
    t.equal(world.ec2.totalCalls(), 0);
  },
);

t.test(
  "run with on_failure=continue and an EC2 failure: READY anyway, Status states the error",
  async (t) => {
    const world = await World.start({
      configToml: sampleConfig().replace("[service]\n", '[service]\non_failure = "continue"\n'),
    });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    world.ec2.faults.errors.CreateNetworkInterface = {
      status: 403,
      code: "UnauthorizedOperation",
      message: "You are not authorized to perform this operation.",
      count: Infinity,
    };
    const p = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    const ready = await notify.waitFor((f) => f.READY === "1");
    t.match(ready.STATUS, /^degraded: .*UnauthorizedOperation/);
    t.match(
      p.stderr,
      /level=warn msg="signalling READY despite the failure \(on_failure=continue\) so kubelet starts"/,
    );
    p.child.kill("SIGTERM");
    t.equal(await p.exit, 0);
  },
);

t.test("the systemd-notify fallback reaches the socket when the addon is absent", async (t) => {
  const notify = await NotifySocket.open();
  t.teardown(() => notify.close());
  const n = await createNotifier(
    { ...process.env, NOTIFY_SOCKET: notify.path },
    silentLogger,
    () => undefined,
  );
  t.equal(n.via, "systemd-notify");
  await n.ready("ready: test   status\nsecond line");
  const f = await notify.waitFor((x) => x.READY === "1", 5000);
  t.equal(f.STATUS, "ready: test status second line", "one line");
  const none = await createNotifier({}, silentLogger);
  t.equal(none.via, "none", "no NOTIFY_SOCKET: no-op");
});

t.test("the state file is byte-stable across load/save (no spurious rewrite)", async (t) => {
  const { Host } = await import("../../src/host/host.js");
  const { loadState, saveState } = await import("../../src/host/state.js");
  const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-state-"));
  const host = new Host(root);
  const s = await loadState(host);
  Object.assign(s, {
    instanceId: "i-0aaaaaaaaaaaaaaa1",
    sriov: { configPath: "/etc/pcidp/config.json", owned: ["amazon.com/x"] },
  });
  await saveState(host, s);
  const writes = host.writes;
  await saveState(host, await loadState(host));
  t.equal(host.writes, writes, "a loaded state saves to the same bytes");
});

t.test(
  "instance metadata tags disabled: tags come from EC2 DescribeTags; config shows their source",
  async (t) => {
    const world = await World.start({ configToml: '[service]\nsources = ["file", "tags"]\n' });
    t.teardown(() => world.close());
    world.imds.instance.tags = null; // IMDS answers 404 for tags/instance/
    world.ec2.instances.get("i-0123456789abcdef0")!.tags = {
      "eni-dpdk:eni:n3":
        "device_index=1;subnet_name=data;security_group_names=dpdk-data;dpdk.resource_name=amazon.com/ena_dpdk",
      "eni-dpdk:dpdk": "hugepages_2m=256",
    };
    const r = await cli(world, ["config", "--json"]);
    t.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    t.equal(doc.config.eni[0].name, "n3");
    t.equal(doc.config.dpdk.hugepages_2m, 256);
    t.equal(doc.origin["eni.n3.subnet_name"], "tag eni-dpdk:eni:n3");
    t.equal(world.imds.count("/latest/meta-data/tags/instance"), 1, "IMDS was asked first");
    t.equal(world.ec2.callsPerAction().DescribeTags, 1, "then EC2 DescribeTags");
    t.equal(world.ec2.mutatingCalls(), 0);
  },
);

/** A restart_command that counts its runs: argv [script, countFile], no shell involved. */
function countingRestart(): { argv: string[]; runs: () => number } {
  const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-restart-"));
  const script = path.join(dir, "restart-plugin");
  writeFileSync(script, '#!/bin/sh\necho restarted >> "$1"\n', { mode: 0o755 });
  const count = path.join(dir, "runs");
  return {
    argv: [script, count],
    runs: () => (existsSync(count) ? readFileSync(count, "utf8").split("\n").length - 1 : 0),
  };
}

const withRestart = (toml: string, argv: string[], service = "") =>
  toml
    .replace("[service]\n", `[service]\n${service}`)
    .replace("[sriov]\n", "")
    .concat(`\n[sriov]\nrestart_command = ${JSON.stringify(argv)}\n`);

/** EC2 refuses every attach until lifted: a first pass that cannot finish (as past its deadline). */
function outage(world: World): () => void {
  world.ec2.faults.errors.AttachNetworkInterface = {
    status: 400,
    code: "SimulatedOutage",
    message: "no attach now",
    count: Infinity,
  };
  return () => (world.ec2.faults.errors.AttachNetworkInterface.count = 0);
}

t.test(
  "on_failure=continue: devices that come in a later pass restart the device plugin, once",
  async (t) => {
    const restart = countingRestart();
    const world = await World.start({
      configToml: withRestart(
        sampleConfig({ reconcileSeconds: 1 }),
        restart.argv,
        'on_failure = "continue"\n',
      ),
    });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    const lift = outage(world);
    const p = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    const ready = await notify.waitFor((f) => f.READY === "1");
    t.match(ready.STATUS, /^degraded: .*SimulatedOutage/, "READY without the devices");
    t.equal(restart.runs(), 0, "nothing to tell the plugin yet");
    lift();
    const later = await notify.waitFor((f) => /^ready: 3 ENIs attached/.test(f.STATUS ?? ""));
    t.match(later.STATUS, /2 bound to vfio-pci/);
    t.equal(restart.runs(), 1, "the plugin was restarted when its devices came");
    const statuses = notify.messages.length;
    await notify.waitFor(() => notify.messages.length >= statuses + 2, 10_000); // two more passes
    t.equal(restart.runs(), 1, "and not again: nothing changed since");
    p.child.kill("SIGTERM");
    t.equal(await p.exit, 0, p.stderr);
  },
);

t.test(
  "run: a timer pass with nothing to do writes no info line; a repair is one warning naming it",
  async (t) => {
    const world = await World.start({ configToml: sampleConfig({ reconcileSeconds: 1 }) });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    const p = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    await notify.waitFor((f) => f.READY === "1");
    const infoLines = () => p.stderr.split("\n").filter((l) => l.startsWith("level=info"));
    const atReady = infoLines().length;
    t.equal(infoLines().filter((l) => /msg="sources done"/.test(l)).length, 1, "the boot pass's");
    const statuses = notify.messages.length;
    await notify.waitFor(() => notify.messages.length >= statuses + 3, 10_000); // three timer passes
    t.same(infoLines().slice(atReady), [], "three passes, no info line");

    // drift: someone set the kernel ENI's MTU back; the next pass repairs it and says so, once
    writeFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "1500\n");
    const deadline = Date.now() + 10_000;
    while (!/msg="repaired drift"/.test(p.stderr) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    const repaired = p.stderr.split("\n").filter((l) => /msg="repaired drift"/.test(l));
    t.equal(repaired.length, 1, p.stderr.slice(-1500));
    t.match(repaired[0], /^level=warn .*actions="set-mtu eth3"/);
    t.equal(readFileSync(path.join(world.root, "sys/class/net/eth3/mtu"), "utf8").trim(), "9001");
    p.child.kill("SIGTERM");
    t.equal(await p.exit, 0, p.stderr);
  },
);

t.test(
  "on_failure=fail: the unit's restart converges, adopts, and restarts the device plugin once",
  async (t) => {
    const restart = countingRestart();
    const world = await World.start({
      configToml: withRestart(sampleConfig({ reconcileSeconds: 0 }), restart.argv),
    });
    const notify = await NotifySocket.open();
    t.teardown(async () => {
      notify.close();
      await world.close();
    });
    const lift = outage(world);
    const first = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    t.equal(await first.exit, 1, "exit 1 before READY: kubelet starts, systemd restarts us");
    t.notOk(
      notify.messages.some((m) => m.fields.READY),
      "never READY",
    );
    const created = world.ec2.callsPerAction().CreateNetworkInterface;
    t.equal(restart.runs(), 0);
    lift();
    const second = start(world, ["run"], { NOTIFY_SOCKET: notify.path });
    const ready = await notify.waitFor((f) => f.READY === "1");
    t.match(ready.STATUS, /^ready: 3 ENIs attached, 2 bound to vfio-pci/);
    t.equal(world.ec2.callsPerAction().CreateNetworkInterface, created, "adopted: no new create");
    t.equal(world.ec2.leakedEnis().length, 0);
    t.equal(restart.runs(), 1, "an earlier pass of this boot let kubelet start: plugin told once");
    second.child.kill("SIGTERM");
    t.equal(await second.exit, 0, second.stderr);
  },
);
