// `eni-dpdk sriov check` as a real process (the built bundle) on a simulated node: what the device
// plugin will advertise, its exit codes, the same findings as a warning of `apply` and a section of
// `status`.
import t from "tap";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { sampleConfig } from "../../src/sim/world.js";
import { converge, runCli, world } from "../support/harness.js";

const CFG = "etc/pcidp/config.json";

t.test(
  "on the demo node: ours advertised, the primary left out, the kernel ENI unclaimed",
  async (t) => {
    const w = await world(t, { configToml: sampleConfig({ reconcileSeconds: 0 }) });
    const before = await runCli(w, ["sriov", "check"]);
    t.equal(before.code, 1, "no config file yet: the plugin would exit");
    t.match(before.stdout, /does not exist: the plugin logs an error and exits/);

    await converge(t, w);
    const r = await runCli(w, ["sriov", "check"]);
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.equal(r.stderr, "");
    t.match(
      r.stdout,
      [
        "amazon.com/ena_dpdk (eni-dpdk, resourceList[0]): 2 devices; pods read PCIDEVICE_AMAZON_COM_ENA_DPDK",
        "  0000:00:06.0  1d0f:ec20  vfio-pci",
        "  0000:00:07.0  1d0f:ec20  vfio-pci",
        "Left out by the plugin:",
        "  0000:00:05.0  eth0 has an IPv4 default route: the plugin never offers a NIC the host uses",
        "Offered, but in no resource:",
        "  0000:00:08.0  1d0f:ec20  ena  eth3",
        "ok: 1 of 1 resource advertised",
      ].join("\n"),
    );
    const json = await runCli(w, ["sriov", "check", "--json"]);
    t.equal(json.code, 0);
    const doc = JSON.parse(json.stdout) as {
      ok: boolean;
      resources: { full: string; owner: string; devices: { bdf: string }[] }[];
    };
    t.equal(doc.ok, true);
    t.same(
      doc.resources.map((x) => [x.full, x.owner, x.devices.map((d) => d.bdf)]),
      [["amazon.com/ena_dpdk", "eni-dpdk", ["0000:00:06.0", "0000:00:07.0"]]],
    );
    t.equal((await runCli(w, ["sriov", "check", "--plugin-version", "v3.5.1"])).code, 0);
  },
);

t.test(
  "a foreign entry ahead of ours takes our devices: check fails, apply warns, status says so",
  async (t) => {
    const w = await world(t, { configToml: sampleConfig({ reconcileSeconds: 0 }) });
    await converge(t, w);
    const file = path.join(w.root, CFG);
    const ours = JSON.parse(readFileSync(file, "utf8")) as { resourceList: unknown[] };
    const greedy = {
      resourceName: "all_ena",
      resourcePrefix: "example.com",
      selectors: { vendors: ["1d0f"] },
    };
    writeFileSync(file, JSON.stringify({ resourceList: [greedy, ...ours.resourceList] }, null, 2));

    const r = await runCli(w, ["sriov", "check"]);
    t.equal(r.code, 1);
    t.match(r.stdout, /example.com\/all_ena \(foreign, resourceList\[0\]\): 3 devices/);
    t.match(
      r.stdout,
      /amazon.com\/ena_dpdk \(eni-dpdk, resourceList\[1\]\): NO DEVICE: not advertised/,
    );
    t.match(r.stdout, / {2}0000:00:06\.0 {2}taken by example\.com\/all_ena/);
    t.match(
      r.stdout,
      /error: resourceList\[1\] amazon.com\/ena_dpdk does not get 0000:00:06.0, 0000:00:07.0: the earlier resource example.com\/all_ena claims them/,
    );
    t.match(r.stdout, /FAILED: 2 problems/);

    const apply = await runCli(w, ["apply"]);
    t.equal(apply.code, 0, "a warning, not a failure: the file is the user's to fix");
    const warns = apply.log.filter((l) => l.level === "warn" && l.msg.startsWith("SR-IOV check:"));
    t.equal(warns.length, 2);
    t.match(
      warns[1].msg,
      /amazon.com\/ena_dpdk gets no device, so the plugin does not advertise it/,
    );
    t.match(
      apply.log.find((l) => l.msg.startsWith("ready:"))?.msg,
      /1 SR-IOV resource unchanged \(2 warnings\)/,
    );
    const statusFile = JSON.parse(
      readFileSync(path.join(w.root, "run/eni-dpdk/status.json"), "utf8"),
    );
    t.same(statusFile.apply.warnings.length, 2);
    t.equal(statusFile.host.sriov.check.ok, false);

    const status = await runCli(w, ["status"]);
    t.equal(status.code, 0);
    t.match(status.stdout, /SR-IOV device plugin: what it will advertise\n=+\n/);
    t.match(status.stdout, /amazon.com\/ena_dpdk \(eni-dpdk, resourceList\[1\]\): NO DEVICE/);
    t.match(status.stdout, /fix: see `eni-dpdk sriov check`/);
  },
);

t.test("plugin version, usage and unreadable files", async (t) => {
  const w = await world(t, { configToml: sampleConfig({ reconcileSeconds: 0 }) });
  await converge(t, w);
  const file = path.join(w.root, CFG);
  const ours = JSON.parse(readFileSync(file, "utf8")) as { resourceList: { selectors: unknown }[] };
  // domain.md's shape: one selector in an array
  writeFileSync(
    file,
    JSON.stringify({
      resourceList: [{ ...ours.resourceList[0], selectors: [ours.resourceList[0].selectors] }],
    }),
  );
  const now = await runCli(w, ["sriov", "check"]);
  t.equal(now.code, 0);
  t.match(now.stdout, /warning: .*"selectors" is an array of one; plugin releases before v3.6.0/);
  const old = await runCli(w, ["sriov", "check", "--plugin-version", "3.5.1", "--json"]);
  t.equal(old.code, 1);
  const doc = JSON.parse(old.stdout) as { pluginVersion: string; resources: { state: string }[] };
  t.equal(doc.pluginVersion, "v3.5.1");
  t.equal(doc.resources[0].state, "dropped");

  const bad = await runCli(w, ["sriov", "check", "--plugin-version", "latest"]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--plugin-version: \(value\): \\"latest\\" is not a release like v3\.5\.1/);
  t.equal(bad.stdout, "");
  const none = await runCli(w, ["sriov"]);
  t.equal(none.code, 2);
  t.match(none.stderr, /name an sriov command: check/);

  writeFileSync(file, `{"resourceList": ${"[".repeat(10_001)}${"]".repeat(10_001)}}`);
  const deep = await runCli(w, ["sriov", "check"]);
  t.equal(deep.code, 1);
  t.match(
    deep.stdout,
    /nested deeper than 10000 levels, Go's limit\): the plugin logs an error and exits/,
  );
});
