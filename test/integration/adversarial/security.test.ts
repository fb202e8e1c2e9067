// Area: security. What reaches root's children, our own directories and files, the programs we run
// as root, a tampered state file, and the primary ENI on every path that binds. (Hostile keys in
// every input source are in input.test.ts.)
import { chmodSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import t from "tap";
import { Host } from "../../../src/host/host.js";
import { STATE_PATH } from "../../../src/host/state.js";
import {
  assertNoneDriverless,
  assertPrimaryUntouched,
  baseToml,
  converge,
  diffSnapshots,
  expectRejected,
  lastError,
  runCli,
  snapshotRoot,
  world,
} from "../../support/harness.js";

const PRIMARY = { bdf: "0000:00:05.0", mac: "02:00:00:00:00:01" };
const DATA1_BDF = "0000:00:06.0";

function editState(root: string, edit: (s: Record<string, any>) => void): void {
  const file = `${root}${STATE_PATH}`;
  const s = JSON.parse(readFileSync(file, "utf8"));
  edit(s);
  writeFileSync(file, JSON.stringify(s, null, 2));
}

t.test(
  "security: root's children get a fixed minimal environment, nothing inherited",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const r = await runCli(w, ["apply"], {
      env: {
        LD_PRELOAD: "/tmp/evil.so",
        LD_LIBRARY_PATH: "/tmp",
        SECRET_TOKEN: "hunter2",
        NODE_OPTIONS: "--require /tmp/x.js",
      },
    });
    t.equal(r.code, 0, lastError(r));
    const env = Object.fromEntries(
      readFileSync(w.sim.p("/.sim/modprobe.env"), "utf8")
        .trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const keys = Object.keys(env).filter((k) => !["PWD", "SHLVL", "_"].includes(k)); // the shell's own
    t.same(keys.sort(), ["LC_ALL", "PATH"], "modprobe saw PATH and LC_ALL only");
    t.equal(env.PATH, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  },
);

t.test("security: a prototype-polluting tag never reaches a child's environment", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  w.imds.instance.tags = { "eni-dpdk:dpdk": "__proto__.LD_PRELOAD=/x.so" };
  await expectRejected(t, w, ["apply"], { source: "tag eni-dpdk:dpdk", key: /__proto__/ });
  t.throws(() => readFileSync(w.sim.p("/.sim/modprobe.env")), "modprobe never ran");
});

for (const dir of ["/var/lib/eni-dpdk", "/run/eni-dpdk"]) {
  t.test(`security: ${dir} as a symlink is refused before any change`, async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const elsewhere = w.sim.p("/elsewhere");
    mkdirSync(elsewhere);
    mkdirSync(w.sim.p(dir.replace(/\/[^/]+$/, "")), { recursive: true });
    symlinkSync(elsewhere, w.sim.p(dir));
    const before = snapshotRoot(w.root);
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1, lastError(r));
    t.match(lastError(r), new RegExp(`${dir.replace(/\//g, "\\/")} is a symlink`));
    // the run's own record of its failure aside (status.json, in a real /run/eni-dpdk)
    const changed = diffSnapshots(before, snapshotRoot(w.root)).filter(
      (d) => dir === "/run/eni-dpdk" || !/run\/eni-dpdk(\/status\.json)?$/.test(d),
    );
    t.same(changed, [], "nothing written through the link, nor anything else");
    t.equal(w.ec2.mutatingCalls(), 0, "no EC2 mutation");
  });
}

t.test("security: a group- or world-writable /var/lib/eni-dpdk is refused", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  await converge(t, w);
  chmodSync(w.sim.p("/var/lib/eni-dpdk"), 0o777);
  w.reboot();
  const before = snapshotRoot(w.root);
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 1);
  t.match(lastError(r), /\/var\/lib\/eni-dpdk is writable by group or others \(mode 777\)/);
  // the run's own record of the failure aside
  t.same(
    diffSnapshots(before, snapshotRoot(w.root)).filter(
      (d) => !/run\/eni-dpdk(\/status\.json)?\b/.test(d),
    ),
    [],
    "nothing changed",
  );
});

t.test("security: under umask 000, our directories and files get their own modes", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  const r = await runCli(w, ["apply"], { wrap: ["/bin/sh", "-c", 'umask 000 && exec "$@"', "sh"] });
  t.equal(r.code, 0, lastError(r));
  const mode = (p: string) => (statSync(w.sim.p(p)).mode & 0o777).toString(8);
  t.equal(mode("/var/lib/eni-dpdk"), "700");
  t.equal(mode("/run/eni-dpdk"), "755");
  t.equal(mode("/etc/pcidp"), "755");
  t.equal(mode("/etc/systemd/network"), "755");
  t.equal(mode(STATE_PATH), "600");
  t.equal(mode("/run/eni-dpdk/status.json"), "644");
  t.equal(mode("/etc/pcidp/config.json"), "644");
  t.equal(mode("/run/eni-dpdk.lock"), "600", "the lock file too");
});

t.test(
  "security: the host lock file is root's alone (0600), so a user other than root cannot hold the lock and stall every pass",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    // as flock(1) left it before: 0666 less the umask
    mkdirSync(w.sim.p("/run"), { recursive: true });
    writeFileSync(w.sim.p("/run/eni-dpdk.lock"), "", { mode: 0o644 });
    chmodSync(w.root, 0o755);
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.equal((statSync(w.sim.p("/run/eni-dpdk.lock")).mode & 0o777).toString(8), "600");
    // a local user who tries to take the lock (flock needs only read access to the file)
    const asNobody = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(
        "setpriv",
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          "--",
          "flock",
          "--nonblock",
          w.sim.p("/run/eni-dpdk.lock"),
          "true",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let stderr = "";
      c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      c.on("close", (code) => resolve({ code, stderr }));
    });
    t.not(asNobody.code, 0, "nobody cannot take it");
    t.match(asNobody.stderr, /Permission denied/);
  },
);

const programCases: [string, string, (file: string) => void, RegExp][] = [
  ["binding_script", "does not exist", () => {}, /does not exist/],
  [
    "binding_script",
    "is not executable",
    (f) => writeFileSync(f, "#!/bin/sh\n", { mode: 0o644 }),
    /is not executable/,
  ],
  [
    "binding_script",
    "is world-writable",
    (f) => (writeFileSync(f, "#!/bin/sh\n"), chmodSync(f, 0o757)),
    /writable by group or others/,
  ],
  ["binding_script", "is a directory", (f) => mkdirSync(f), /not a regular file/],
  [
    "restart_command",
    "is group-writable",
    (f) => (writeFileSync(f, "#!/bin/sh\n"), chmodSync(f, 0o775)),
    /writable by group or others/,
  ],
];
for (const [key, what, make, re] of programCases) {
  t.test(
    `security: a ${key} program that ${what} is refused before the first EC2 call`,
    async (t) => {
      const w = await world(t);
      const file = w.sim.p(`/opt/prog-${key}`);
      mkdirSync(w.sim.p("/opt"), { recursive: true });
      make(file);
      const line =
        key === "binding_script"
          ? `[dpdk]\nbinding_script = "${file}"\n`
          : `[sriov]\nrestart_command = ["${file}", "--now"]\n`;
      w.writeConfig(baseToml().replace("[[eni]]", `${line}\n[[eni]]`));
      await expectRejected(t, w, ["apply"], {
        source: /config\.toml/,
        key: key === "binding_script" ? "dpdk.binding_script" : "sriov.restart_command",
        message: re,
      });
    },
  );
}

t.test(
  "security: a state record that names the primary's MAC is refused by early, bind and apply",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    // forge a binding of the primary, as a corrupted or edited state file could
    editState(w.root, (s) => {
      s.bindings[PRIMARY.mac] = {
        ...(Object.values(s.bindings)[0] as object),
        mac: PRIMARY.mac,
        bdf: PRIMARY.bdf,
        eniName: "data1",
      };
    });
    w.reboot();
    const early = await runCli(w, ["early"]);
    t.equal(early.code, 1, "early fails loudly");
    t.match(early.stdout, /failed\s+0000:00:05\.0 02:00:00:00:00:01 data1: refused: .*primary ENI/);
    assertPrimaryUntouched(t, w);
    for (const args of [
      ["bind", PRIMARY.mac],
      ["bind", PRIMARY.mac, "--force"],
      ["bind", "eth0", "--force"],
      ["bind", PRIMARY.bdf, "--force"],
    ]) {
      const r = await runCli(w, args);
      t.equal(r.code, 1, `${args.join(" ")}: exit 1`);
      t.match(lastError(r), /never binds the primary ENI, not even with --force/, args.join(" "));
      assertPrimaryUntouched(t, w);
    }
    const a = await runCli(w, ["apply"]);
    assertPrimaryUntouched(t, w);
    t.notOk(
      a.log.some((l) => l.msg === "bound" && l.bdf === PRIMARY.bdf),
      "apply never binds it either",
    );
    assertNoneDriverless(t, w);
  },
);

t.test(
  "security: with no state and IMDS unreachable, bind refuses rather than guess the primary",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const before = snapshotRoot(w.root);
    const r = await runCli(w, ["bind", "eth0", "--force"], {
      env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:9" },
    });
    t.equal(r.code, 1);
    t.match(lastError(r), /cannot tell which NIC is the primary ENI/);
    t.same(diffSnapshots(before, snapshotRoot(w.root)), []);
  },
);

t.test(
  "security: with no state, bind asks IMDS which NIC is the primary and refuses it even with --force",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const r = await runCli(w, ["bind", "eth0", "--force"]);
    t.equal(r.code, 1);
    t.match(lastError(r), /02:00:00:00:00:01 is the primary ENI/);
    assertPrimaryUntouched(t, w);
  },
);

t.test(
  "security: a state binding whose BDF would leave sysfs is refused when the state is read",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    editState(w.root, (s) => {
      const b = Object.values(s.bindings)[0] as { bdf: string };
      b.bdf = "0000:00:06.0/../../../../etc";
    });
    await expectRejected(t, w, ["apply"], {
      source: /state\.json/,
      key: /^bindings\./,
      message: /bdf DDDD:BB:DD\.F/,
    });
    await expectRejected(t, w, ["early"], { source: /state\.json/, key: /^bindings\./ });
  },
);

t.test("security: a corrupt state file is named with its fix, and nothing changes", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  await converge(t, w);
  writeFileSync(w.sim.p(STATE_PATH), '{"version": 1, "bindings": ');
  const r = await expectRejected(t, w, ["apply"], {
    source: /state\.json$/,
    key: "(file)",
    message: /not valid JSON/,
  });
  t.match(r.stderr, /move it aside \(mv .*state\.json .*state\.json\.corrupt\)/);
  t.notMatch(r.stderr, /report it/, "not called an internal error");
});

t.test(
  "security: a pci_address pinned to the primary's device is refused before any EC2 call",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace(
        'resource_name = "amazon.com/ena_dpdk"',
        `resource_name = "amazon.com/ena_dpdk"\n  pci_address = "${PRIMARY.bdf}"`,
      ),
    });
    await expectRejected(t, w, ["apply"], {
      source: /config\.toml/,
      key: "eni.data1.dpdk.pci_address",
      message: /primary ENI's device/,
    });
  },
);

t.test(
  "security: a pci_address pinned to another ENI's device is refused before any change",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    w.writeConfig(
      baseToml().replace(
        'resource_name = "amazon.com/ena_dpdk"',
        'resource_name = "amazon.com/ena_dpdk"\n  pci_address = "0000:00:07.0"',
      ),
    );
    await expectRejected(t, w, ["apply"], {
      source: /config\.toml/,
      key: "eni.data1.dpdk.pci_address",
      message: /is the device of eth2 .*not of ENI "data1"/,
    });
  },
);

t.test(
  "security: a pci_address that proves wrong only after the ENI exists is exit 1, and says what changed",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace(
        'resource_name = "amazon.com/ena_dpdk"',
        'resource_name = "amazon.com/ena_dpdk"\n  pci_address = "0000:00:1f.0"',
      ),
    });
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1, "exit 1: something was changed");
    const err = lastError(r);
    t.notMatch(r.stderr, /nothing was changed/, "never claims nothing changed");
    t.match(err, /eni\.data1\.dpdk\.pci_address/);
    t.match(
      err,
      /found after this run had changed the node: .*EC2 created eni-[0-9a-f]+ \(data1\)/,
    );
    t.match(
      err,
      /EC2 attached eni-[0-9a-f]+ to i-0123456789abcdef0 at network card 0, device index 1/,
    );
    t.match(r.stderr, /it adopts what this run created/);
    t.equal(w.sim.driverOf(DATA1_BDF), "ena", "the device was not bound");
  },
);

t.test(
  "security: early leaves alone a recorded BDF that now carries another ENI's MAC",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    // the record now points at kern1's device: a BDF is not an ENI's identity, the MAC is
    editState(w.root, (s) => {
      (Object.values(s.bindings)[0] as { bdf: string }).bdf = "0000:00:07.0";
    });
    w.reboot();
    const r = await runCli(w, ["early"]);
    t.equal(r.code, 0, lastError(r));
    t.match(
      r.stdout,
      /skipped 0000:00:07\.0 .* carries MAC 02:e0[0-9a-f:]+, not 02:e0[0-9a-f:]+: another ENI sits there now/,
    );
    t.equal(w.sim.driverOf("0000:00:07.0"), "ena", "kern1's device untouched");
    assertNoneDriverless(t, w);
  },
);

t.test(
  "security: our files are never written through a planted symlink at their temp name",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    // plant a symlink at the exact temp name the next write will use (pid and clock pinned)
    const host = new Host(w.root);
    writeFileSync(w.sim.p("/victim"), "untouched");
    await host.ensureDir("/var/lib/eni-dpdk");
    const fixed = 1_700_000_000_000;
    symlinkSync(
      w.sim.p("/victim"),
      w.sim.p(`/var/lib/eni-dpdk/.probe.json.${process.pid}.${fixed}.tmp`),
    );
    const now = Date.now;
    Date.now = () => fixed;
    const err = await host.writeFileAtomic("/var/lib/eni-dpdk/probe.json", "data").then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e.code,
    );
    Date.now = now;
    t.equal(err, "EEXIST", "the open refuses the planted link");
    t.equal(
      readFileSync(w.sim.p("/victim"), "utf8"),
      "untouched",
      "the link's target is untouched",
    );
  },
);

t.test(
  "security: status.json and the SR-IOV file stay readable, the state private, after a rename-over of a 0666 file",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    mkdirSync(w.sim.p("/etc/pcidp"), { recursive: true });
    writeFileSync(w.sim.p("/etc/pcidp/config.json"), '{"resourceList": []}');
    chmodSync(w.sim.p("/etc/pcidp/config.json"), 0o666);
    await converge(t, w);
    t.equal(
      (statSync(w.sim.p("/etc/pcidp/config.json")).mode & 0o777).toString(8),
      "644",
      "rewritten 0644, not left 0666",
    );
    t.equal((statSync(w.sim.p(STATE_PATH)).mode & 0o777).toString(8), "600");
  },
);
