// Area: faults. What the world does to a run that did nothing wrong: EC2 errors, throttling and
// dropped connections, IMDS that is late or flaky, a binding script that lies or dies, a kernel
// that refuses the probe or lacks NOIOMMU, a NIC that never appears. Each ends well defined:
// converged, or exit 1 with the node left as it was (devices on their kernel driver) and the reason.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { writeFakeBindingScript } from "../../../src/sim/kernel.js";
import {
  assertNoneDriverless,
  converge,
  assertPrimaryUntouched,
  baseToml,
  diffSnapshots,
  lastError,
  runCli,
  snapshotRoot,
  world,
} from "../../support/harness.js";

// Three cases wait out a deadline or a late IMDS (26 s together); each case has a world of its own,
// so they run side by side.
t.jobs = 4;

const DATA1_BDF = "0000:00:06.0";
const INSTANCE = "i-0123456789abcdef0";
const timeout = (s: number) =>
  baseToml().replace(
    "reconcile_interval_seconds = 0",
    `reconcile_interval_seconds = 0\ntimeout_seconds = ${s}`,
  );

t.test("faults: EC2 500s and throttling on every action are retried to convergence", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  for (const a of [
    "DescribeNetworkInterfaces",
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "DescribeSubnets",
  ]) {
    w.ec2.faults.error500[a] = 2;
  }
  w.ec2.faults.errors.CreateNetworkInterface = {
    status: 503,
    code: "RequestLimitExceeded",
    message: "Request limit exceeded.",
    count: 2,
  };
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, lastError(r));
  t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci");
  t.same(w.ec2.leakedEnis(), []);
});

t.test(
  "faults: a connection dropped after CreateNetworkInterface took effect makes no duplicate (ClientToken)",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.ec2.faults.dropAfter.CreateNetworkInterface = 1;
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    const data = [...w.ec2.enis.values()].filter(
      (e) => e.tags["eni-dpdk:instance-id"] === INSTANCE,
    );
    t.equal(data.length, 2, "two ENIs, not three");
    t.same(w.ec2.leakedEnis(), []);
  },
);

t.test(
  "faults: a dropped connection after AttachNetworkInterface is recognised as our own attach",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.ec2.faults.dropAfter.AttachNetworkInterface = 1;
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.equal(w.ec2.attachedTo(INSTANCE).length, 3, "primary + 2, each attached once");
  },
);

t.test(
  "faults: EC2 UnauthorizedOperation on create fails with the IAM action named, and creates nothing",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.ec2.faults.errors.CreateNetworkInterface = {
      status: 403,
      code: "UnauthorizedOperation",
      message: "You are not authorized to perform this operation.",
      count: Infinity,
    };
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(lastError(r), /UnauthorizedOperation/);
    t.match(r.stderr, /grant the node's instance role ec2:CreateNetworkInterface/);
    t.equal(w.ec2.mutatingCalls({ accepted: true }), 0, "nothing took effect");
    assertPrimaryUntouched(t, w);
  },
);

t.test(
  "faults: IMDS that answers its first 6 requests 429 Too Many Requests is waited for",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.faults.fail429 = 6;
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    t.equal(
      w.imds.requests.filter((q) => q.status === 429).length,
      6,
      "all six refused, then answered",
    );
    t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci");
    t.match(r.stderr, /level=warn msg="waiting for IMDS" .*status code 429/);
  },
);

t.test("faults: IMDS that fails its first 8 requests with 500 is waited for", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  w.imds.faults.fail500 = 8;
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 0, lastError(r));
  t.ok(
    r.log.some((l) => l.msg === "waiting for IMDS"),
    "it said it was waiting",
  );
});

t.test(
  "faults: IMDS unreachable for the whole deadline fails with the hop-limit hint and changes nothing",
  async (t) => {
    const w = await world(t, { configToml: timeout(10) });
    const before = snapshotRoot(w.root);
    const r = await runCli(w, ["apply"], {
      env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:9" },
    });
    t.equal(r.code, 1);
    t.match(r.stderr, /IMDSv2 hop limit/);
    t.same(
      diffSnapshots(before, snapshotRoot(w.root)).filter((d) => !d.includes("run/eni-dpdk")),
      [],
      "nothing changed but the run's own record",
    );
    t.equal(w.ec2.totalCalls(), 0);
  },
);

t.test(
  "faults: the binding script exits 0 without binding; sysfs decides, the device is restored",
  async (t) => {
    const w = await world(t);
    const script = writeFakeBindingScript(w.sim, "unbind-only");
    w.writeConfig(baseToml().replace("[[eni]]", `[dpdk]\nbinding_script = "${script}"\n\n[[eni]]`));
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(
      lastError(r),
      /exited 0 but 0000:00:06\.0 is bound to no driver, not vfio-pci; restored to ena/,
    );
    t.equal(w.sim.driverOf(DATA1_BDF), "ena");
    t.ok(w.sim.netdevOf(DATA1_BDF), "its netdev is back");
    assertNoneDriverless(t, w);
  },
);

t.test(
  "faults: the binding script is killed between its unbind and its probe; the device is restored",
  async (t) => {
    const w = await world(t);
    const script = writeFakeBindingScript(w.sim, "dies-after-unbind");
    w.writeConfig(baseToml().replace("[[eni]]", `[dpdk]\nbinding_script = "${script}"\n\n[[eni]]`));
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(
      lastError(r),
      /exited 137 but 0000:00:06\.0 is bound to no driver, not vfio-pci; restored to ena/,
    );
    t.equal(w.sim.driverOf(DATA1_BDF), "ena");
    assertNoneDriverless(t, w);
  },
);

t.test(
  "faults: vfio-pci refuses the probe; the device goes back to ena with its netdev and the run says so",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.ec2.onAttached = ((prior) => async (ev) => {
      await prior?.(ev);
      if (ev.deviceIndex === 1) w.sim.failNextProbe(DATA1_BDF);
    })(w.ec2.onAttached);
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(
      lastError(r),
      /binding 0000:00:06\.0 to vfio-pci failed: probe did not bind vfio-pci.*restored to ena \(netdev eth1 is back\)/,
    );
    assertNoneDriverless(t, w);
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, `the next apply binds it: ${lastError(again)}`);
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci");
  },
);

t.test("faults: a kernel without NOIOMMU fails before any device is touched", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  w.sim.setNoiommuSupport(false);
  const r = await runCli(w, ["apply"]);
  t.equal(r.code, 1);
  t.match(lastError(r), /this kernel lacks NOIOMMU.*CONFIG_VFIO_NOIOMMU/);
  t.equal(w.sim.driverOf(DATA1_BDF), "ena", "data1 untouched");
  t.equal(
    readFileSync(w.sim.p(`/sys/bus/pci/devices/${DATA1_BDF}/driver_override`), "utf8").trim(),
    "(null)",
    "no override left",
  );
  assertNoneDriverless(t, w);
});

t.test(
  "faults: a NIC that never appears after its attach fails at the deadline, names the ENI, and says what changed",
  async (t) => {
    const w = await world(t, { configToml: timeout(10) });
    w.ec2.onAttached = undefined; // EC2 says attached; the hot-plug never comes
    const t0 = Date.now();
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.ok(Date.now() - t0 < 20_000, `bounded by the 10 s deadline (${Date.now() - t0} ms)`);
    t.match(lastError(r), /timed out after [\d.]+ s waiting for a NIC with MAC/);
    const rec = r.log.find((l) => l.level === "error" && l.changes);
    t.match(
      rec?.changes,
      /EC2 created eni-[0-9a-f]+ \(data1\)/,
      "the failure lists what this run changed",
    );
  },
);

t.test(
  "faults: hugepages the kernel cannot fully allocate do not fail the apply; status shows what was given",
  async (t) => {
    const w = await world(t, {
      configToml: baseToml().replace("[[eni]]", "[dpdk]\nhugepages_2m = 512\n\n[[eni]]"),
    });
    w.sim.setHugepageCapacity(2048, 100);
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    // The simulated kernel answers the write a moment later (a real one answers it synchronously), so
    // the figures are read back through status, once the simulation has settled.
    await w.sim.settle(200);
    const st = await runCli(w, ["status", "--json"]);
    const pages = (
      JSON.parse(st.stdout) as { host: { hugepages: { sizeKb: number; total: number }[] } }
    ).host.hugepages.find((h) => h.sizeKb === 2048);
    t.equal(
      pages?.total,
      100,
      "status shows the 100 pages the kernel could give, not the 512 asked for",
    );
  },
);

t.test(
  "faults: EC2 unreachable on a converged reboot does not matter: IMDS and the state suffice",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    t.equal((await runCli(w, ["apply"])).code, 0);
    w.reboot();
    const r = await runCli(w, ["apply"], { env: { AWS_ENDPOINT_URL_EC2: "http://127.0.0.1:9" } });
    t.equal(r.code, 0, lastError(r));
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci");
  },
);

t.test(
  "faults: a device on vfio-pci with no record of it (bound by hand, or an older state) fails at once and says how to hand it back",
  async (t) => {
    const w = await world(t, { configToml: timeout(30) });
    t.equal((await runCli(w, ["apply"])).code, 0);
    const statePath = w.sim.p("/var/lib/eni-dpdk/state.json");
    const state = JSON.parse(readFileSync(statePath, "utf8")) as { bindings: object };
    state.bindings = {};
    writeFileSync(statePath, JSON.stringify(state));
    const t0 = Date.now();
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.ok(Date.now() - t0 < 15_000, `failed in ${Date.now() - t0} ms, not after the 30 s deadline`);
    t.match(
      lastError(r),
      new RegExp(`${DATA1_BDF} is on a DPDK driver with no record .*eni-dpdk unbind ${DATA1_BDF}`),
    );
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "the device is left where it was");
    const back = await runCli(w, ["unbind", DATA1_BDF]);
    t.equal(back.code, 0, lastError(back));
    t.equal(w.sim.driverOf(DATA1_BDF), "ena", "unbind gave it back, so its MAC can be read");
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "and the next apply binds it, verified");
  },
);

t.test(
  "faults: a full disk (ENOSPC) names the file and the filesystem, leaves no temp file, and a rerun converges",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    // a first boot's first fsync is its first durable write: the state file, before any EC2 call
    const r = await runCli(w, ["apply"], { failAt: { syscall: "fsync", errno: "ENOSPC" } });
    t.equal(r.code, 1, "exit 1");
    const err = r.log.find((l) => l.level === "error");
    t.match(
      err?.msg,
      /^cannot write \/var\/lib\/eni-dpdk\/state\.json: no space left on device \(ENOSPC\); nothing of it was written$/,
    );
    t.match(err?.next, /free space on the filesystem that holds \/var\/lib\/eni-dpdk \(df -h/);
    const dir = path.join(w.root, "var/lib/eni-dpdk");
    t.same(
      readdirSync(dir).filter((f) => f.endsWith(".tmp")),
      [],
      "no temp file left to fill the disk further",
    );
    t.same(w.ec2.enisByState(), { available: 0, attaching: 0, attached: 1 }, "no ENI created");
    assertNoneDriverless(t, w);
    assertPrimaryUntouched(t, w);
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "the rerun binds");
    // a reboot's rebind of recorded devices makes no durable write: a full disk does not matter
    w.reboot();
    const reboot = await runCli(w, ["apply"], { failAt: { syscall: "fsync", errno: "ENOSPC" } });
    t.equal(reboot.code, 0, lastError(reboot));
    t.equal(w.sim.driverOf(DATA1_BDF), "vfio-pci", "rebound after the reboot, disk full");
  },
);

t.test(
  "faults: a full disk in the middle of adding an ENI: the ENI EC2 created is adopted by the rerun, none leaks",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    w.writeConfig(
      baseToml(`
[[eni]]
name = "data2"
device_index = 3
subnet_id = "subnet-0aaaaaaaaaaaaaaa1"
security_group_ids = ["sg-0dddddddddddddddd"]
  [eni.dpdk]
  resource_name = "amazon.com/ena_dpdk"
`),
    );
    for (let when = 1; when <= 4; when++) {
      const r = await runCli(w, ["apply"], { failAt: { syscall: "fsync", errno: "ENOSPC", when } });
      if (r.code === 0) break;
      t.equal(r.code, 1, `fsync #${when} failing: exit 1`);
      t.match(
        r.log.find((l) => l.level === "error")?.msg,
        // a file's own fsync fails before its rename, its directory's after; in the ENI's own
        // steps the message is the ENI's
        /^(ENI "data2": )?(cannot write \/\S+|\/\S+ was replaced, but its directory could not be synced): no space left on device \(ENOSPC\)/,
        `fsync #${when}: the message names the file`,
      );
      assertNoneDriverless(t, w);
      assertPrimaryUntouched(t, w);
    }
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    const created = w.ec2.enisByState();
    t.same(
      created,
      { available: 0, attaching: 0, attached: 4 },
      "3 ENIs of ours attached, none left over",
    );
    const second = await runCli(w, ["apply"]);
    t.equal(second.code, 0, lastError(second));
    t.same(w.ec2.enisByState(), created, "and a second apply creates none");
  },
);

t.test(
  "faults: EC2 refuses one ENI's attach: the pass fails naming it, and the other ENI is made ready in it",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.ec2.faults.errors.AttachNetworkInterface = {
      status: 400,
      code: "AttachmentLimitExceeded",
      message: "Interface count 3 exceeds the limit for t3.small",
      count: 1,
    };
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(lastError(r), /AttachNetworkInterface failed: AttachmentLimitExceeded/);
    const attached = [...w.ec2.enis.values()].filter(
      (e) => e.attachment?.status === "attached" && e.tags["eni-dpdk:name"],
    );
    t.equal(attached.length, 1, "one of the two attached");
    const name = attached[0]?.tags["eni-dpdk:name"];
    t.match(lastError(r), new RegExp(`${name === "data1" ? "kern1" : "data1"}`), "the other named");
    const bdf = w.sim.bdfOfMac(attached[0].mac)!;
    if (name === "data1") t.equal(w.sim.driverOf(bdf), "vfio-pci", "data1 bound in the same pass");
    else
      t.equal(
        readFileSync(path.join(w.root, `sys/class/net/${w.sim.netdevOf(bdf)}/mtu`), "utf8").trim(),
        "9001",
        "kern1's MTU set in the same pass",
      );
    assertPrimaryUntouched(t, w);
  },
);

t.test(
  "faults: an ENI already bound whose new attribute EC2 refuses stays bound and advertised; the pass fails naming it",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    const sriovPath = path.join(w.root, "etc/pcidp/config.json");
    const advertised = readFileSync(sriovPath, "utf8");
    t.match(advertised, /0000:00:06\.0/);
    w.writeConfig(
      baseToml().replace('name = "data1"', 'name = "data1"\nsource_dest_check = false'),
    );
    w.ec2.faults.errors.ModifyNetworkInterfaceAttribute = {
      status: 403,
      code: "UnauthorizedOperation",
      message: "You are not authorized to perform this operation.",
      count: Infinity,
    };
    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 1);
    t.match(
      lastError(r),
      /^ENI "data1": EC2 ModifyNetworkInterfaceAttribute failed: UnauthorizedOperation/,
    );
    t.equal(w.sim.driverOf("0000:00:06.0"), "vfio-pci", "still bound");
    t.equal(
      readFileSync(sriovPath, "utf8"),
      advertised,
      "still advertised: the SR-IOV file is as it was",
    );
    assertNoneDriverless(t, w);
  },
);
