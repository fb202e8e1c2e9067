import t from "tap";
import { readdirSync, readFileSync } from "node:fs";
import { buildConfig, nearest, resourceNameProblems } from "../src/config.js";
import { InputError, formatProblem } from "../src/errors.js";
import { loadToml, tomlLayer } from "../src/sources.js";

// tomlLayer and userDataLayers are synchronous; the parser itself loads lazily (see loadToml).
await loadToml();

const corpus = new URL("./corpus/bad/", import.meta.url);

t.test("bad-input corpus: every file is rejected with a message naming its key", async (t) => {
  const files = readdirSync(corpus).filter((f) => f.endsWith(".toml"));
  t.ok(files.length >= 30, `corpus has ${files.length} files`);
  for (const f of files) {
    const text = readFileSync(new URL(f, corpus), "utf8");
    const [key, message] = /^# expect: (.*)$/m.exec(text)![1]!.split(" | ");
    try {
      buildConfig([tomlLayer(text, `/etc/eni-dpdk/${f}`)]);
      t.fail(`${f} was accepted`);
    } catch (e) {
      t.type(e, InputError, f);
      const lines = (e as InputError).problems.map(formatProblem);
      const hit = (e as InputError).problems.find((p) => p.key === key && p.message.includes(message!));
      t.ok(hit, `${f}: expected key ${key} with "${message}"; got:\n${lines.join("\n")}`);
      t.ok(hit?.source.startsWith(`/etc/eni-dpdk/${f}`), `${f}: source names the file (${hit?.source})`);
    }
  }
});

t.test("problem sources carry line and column", async (t) => {
  const text = '[dpdk]\nenabled = true\n\n[[eni]]\nname = "a"\ndevice_index = 1\nsubnet_id = "subnet-0123456789abcdef0"\nsecurity_group_ids = ["sg-01234567"]\nmtu = 100\ndpdk.enabled = false\n';
  const e = t.throws(() => buildConfig([tomlLayer(text, "/etc/eni-dpdk/config.toml")])) as InputError;
  t.same(e.problems.map(formatProblem), ["/etc/eni-dpdk/config.toml:9:1: eni.a.mtu: expected 576..9216, got 100"]);
  const syn = t.throws(() => tomlLayer("[dpdk]\nenabled = = 1\n", "f.toml")) as InputError;
  t.match(syn.problems[0]!.source, /^f\.toml:2:\d+$/);
});

t.test("all problems are reported in one run", async (t) => {
  const text = '[dpdk]\ndriver = "x"\nnoiommu = "maybe"\n[sriov]\nconfig_path = "rel"\n[[eni]]\nname = "A"\n';
  const e = t.throws(() => buildConfig([tomlLayer(text, "c.toml")])) as InputError;
  const keys = e.problems.map((p) => p.key).sort();
  t.same(keys, ["dpdk.driver", "dpdk.noiommu", "eni.A.device_index", "eni.A.dpdk.resource_name", "eni.A.name", "eni.A.security_group_ids", "eni.A.subnet_id", "sriov.config_path"]);
});

t.test("defaults and the documented example", async (t) => {
  const eff = buildConfig([tomlLayer(readFileSync(new URL("./corpus/good/example.toml", import.meta.url), "utf8"), "example.toml")]);
  const c = eff.config;
  t.equal(c.service.reconcile_interval_seconds, 60);
  t.equal(c.dpdk.hugepages_2m, 1024);
  t.same(c.eni.map((e) => [e.name, e.device_index, e.dpdk.enabled, e.dpdk.driver, e.mtu]), [
    ["dpdk1", 1, true, "vfio-pci", 9001],
    ["dpdk2", 2, true, "vfio-pci", 9001],
    ["kernel1", 3, false, "vfio-pci", 9001],
  ]);
  t.equal(eff.origin["eni.dpdk1.description"], "example.toml:21:1");
  t.equal(eff.origin["eni.dpdk1.mtu"], "default");
  t.match(eff.origin["eni.dpdk1.dpdk.driver"], /example\.toml:8:1 \(\[dpdk\]\.driver\)/);
});

t.test("merge: node tables key by key, ENIs by name field by field, later wins", async (t) => {
  const file = tomlLayer('[dpdk]\ndriver = "vfio-pci"\nhugepages_2m = 512\n[[eni]]\nname = "d1"\ndevice_index = 1\nsubnet_id = "subnet-01234567"\nsecurity_group_ids = ["sg-01234567"]\nmtu = 1500\n[eni.dpdk]\nresource_name = "ena_dpdk"\n', "file.toml");
  const ud = tomlLayer('[dpdk]\nhugepages_2m = 1024\n[[eni]]\nname = "d1"\nmtu = 9001\n', "user-data part 2 (application/eni-dpdk+toml)");
  const tag = { source: "tag eni-dpdk:eni:d1", stringly: true, data: { eni: [{ name: "d1", dpdk: { driver: "uio_pci_generic" } }] } };
  const eff = buildConfig([file, ud, tag]);
  const e = eff.config.eni[0]!;
  t.equal(eff.config.dpdk.driver, "vfio-pci");
  t.equal(eff.config.dpdk.hugepages_2m, 1024);
  t.equal(e.mtu, 9001);
  t.equal(e.subnet_id, "subnet-01234567");
  t.equal(e.dpdk.driver, "uio_pci_generic");
  t.equal(eff.origin["eni.d1.mtu"], "user-data part 2 (application/eni-dpdk+toml):5:1");
  t.equal(eff.origin["eni.d1.subnet_id"], "file.toml:7:1");
  t.equal(eff.origin["eni.d1.dpdk.driver"], "tag eni-dpdk:eni:d1");
  t.equal(eff.origin["dpdk.hugepages_2m"], "user-data part 2 (application/eni-dpdk+toml):2:1");
});

t.test("a device-index clash between sources is caught after the merge", async (t) => {
  const a = tomlLayer('[[eni]]\nname = "a"\ndevice_index = 1\nsubnet_id = "subnet-01234567"\nsecurity_group_ids = ["sg-01234567"]\ndpdk.enabled = false\n', "file.toml");
  const b = { source: "tag eni-dpdk:eni:b", stringly: true, data: { eni: [{ name: "b", device_index: "1", subnet_id: "subnet-01234567", security_group_ids: "sg-01234567", dpdk: { enabled: "false" } }] } };
  const e = t.throws(() => buildConfig([a, b])) as InputError;
  t.same(e.problems.map(formatProblem), ['tag eni-dpdk:eni:b: eni.b.device_index: device index 1 on network card 0 is also used by ENI "a"']);
});

t.test("the number of ENIs is bounded", async (t) => {
  const eni = Array.from({ length: 33 }, (_, i) => ({ name: `e${i}`, device_index: i + 1, subnet_id: "subnet-01234567", security_group_ids: ["sg-01234567"], dpdk: { enabled: false } }));
  const e = t.throws(() => buildConfig([{ source: "x", data: { eni } }])) as InputError;
  t.ok(e.problems.some((p) => p.key === "eni" && /at most 32/.test(p.message)));
});

t.test("resource names and did-you-mean", async (t) => {
  t.same(resourceNameProblems("amazon.com/ena_dpdk_1", "x.io"), []);
  t.same(resourceNameProblems("ena_dpdk", "amazon.com"), []);
  t.match(resourceNameProblems("a/b/c", "x")[0], /more than one/);
  t.match(resourceNameProblems("amazon.com/" + "x".repeat(64), "x")[0], /\{1,63\}/);
  t.equal(nearest("subnetid", ["subnet_id", "mtu"]), "subnet_id");
  t.equal(nearest("zzzzzz", ["subnet_id", "mtu"]), undefined);
});
