// deploy/examples: the device plugin's DaemonSet and a testpmd pod, parsed as Kubernetes would read
// them and held against what eni-dpdk writes for docs/user-data.md's recipe 2: the config path the
// plugin reads, the resource the pod requests and the env var it reads, the hugepages it asks for.
import fs from "node:fs";
import path from "node:path";
import t from "tap";
import { buildConfig, defaults } from "../../src/config/model.js";
import { pluginEnvVar } from "../../src/config/facts.js";
import { loadYaml } from "../../src/core/lazy.js";
import { loadToml, tomlLayer } from "../../src/sources/toml.js";
import {
  PLUGIN_RELEASE,
  renderSriovEntries,
  type SriovDevice,
} from "../../src/host/sriov-model.js";
import { cleanVerdict, pluginVerdict } from "../support/sriov-plugin-rules.js";
import { REPO } from "../support/repo.js";

await loadToml();
const YAML = await loadYaml();
const dir = path.join(REPO, "deploy/examples");
const docsOf = (file: string) =>
  YAML.parseAllDocuments(fs.readFileSync(path.join(dir, file), "utf8")).map((d) => {
    t.same(d.errors, [], `${file} parses`);
    return d.toJS();
  });

// A manifest's parsed YAML: the tests read the fields they rely on.
type K8s = any;

/** The eni-dpdk config of docs/user-data.md's recipe 2, as the node gets it. */
function recipeConfig() {
  const md = fs.readFileSync(path.join(REPO, "docs/user-data.md"), "utf8");
  const m = /^```toml recipe=multipart:config\n([\s\S]*?)^```$/m.exec(md);
  if (!m) throw new Error("docs/user-data.md has no recipe=multipart:config block");
  return buildConfig([tomlLayer(m[1], "docs/user-data.md")]).config;
}
const config = recipeConfig();

/** What eni-dpdk writes for that config once every DPDK ENI is bound (stand-in addresses). */
const rendered = renderSriovEntries(
  config.eni
    .filter((e) => e.dpdk.enabled)
    .map((e, i): SriovDevice => ({
      eniName: e.name,
      resource: e.dpdk.resource_name,
      bdf: `0000:00:${(6 + i).toString(16).padStart(2, "0")}.0`,
      vendor: "1d0f",
      device: "ec20",
      driver: e.dpdk.driver,
    })),
  config.sriov.resource_prefix,
);

const [sa, ds] = docsOf("sriov-device-plugin.yaml");
const [pod] = docsOf("testpmd-pod.yaml");
const plugin = ds.spec.template.spec.containers[0];
const testpmd = pod.spec.containers[0];

t.test("the recipe's file is one the plugin reads, on every release", async (t) => {
  t.same(
    rendered.map((r) => r.full),
    ["amazon.com/ena_dpdk"],
  );
  const text = JSON.stringify({ resourceList: rendered.map((r) => r.entry) });
  t.ok(cleanVerdict(pluginVerdict(text)));
  t.ok(cleanVerdict(pluginVerdict(text, "intel.com", "old")), "v3.5.1 too");
});

t.test("the DaemonSet: a pinned release, reading the file eni-dpdk writes", async (t) => {
  t.equal(sa.kind, "ServiceAccount");
  t.equal(ds.kind, "DaemonSet");
  t.equal(ds.spec.template.spec.serviceAccountName, sa.metadata.name);
  t.equal(sa.metadata.namespace, ds.metadata.namespace);
  t.same(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  t.equal(
    plugin.image,
    `ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:${PLUGIN_RELEASE}`,
    "pinned to the release the rules were checked against",
  );
  t.equal(ds.spec.template.spec.hostNetwork, true, "it must see the host's netdevs and routes");

  // the path the plugin opens (its flag, else its default), followed through the mounts to the host
  const flag = (plugin.args as string[]).find((a) => a.startsWith("--config-file="));
  const inContainer = flag ? flag.slice("--config-file=".length) : "/etc/pcidp/config.json";
  const mount = (plugin.volumeMounts as K8s[]).find(
    (m) => inContainer === m.mountPath || inContainer.startsWith(`${m.mountPath}/`),
  );
  t.ok(mount, `a volume holds ${inContainer}`);
  const volume = (ds.spec.template.spec.volumes as K8s[]).find((v) => v.name === mount.name);
  t.ok(volume.hostPath, "a hostPath: eni-dpdk writes the file on the host, not in a ConfigMap");
  t.equal(volume.hostPath.type, "Directory", "the directory: the file is replaced by rename");
  const onHost = path.posix.join(
    volume.hostPath.path,
    path.posix.relative(mount.mountPath, inContainer),
  );
  t.equal(onHost, config.sriov.config_path, "the host path eni-dpdk writes ([sriov].config_path)");
  t.equal(onHost, defaults().sriov.config_path);
  for (const p of ["/var/lib/kubelet/device-plugins", "/var/lib/kubelet/plugins_registry"])
    t.ok(
      (ds.spec.template.spec.volumes as K8s[]).some((v) => v.hostPath?.path === p),
      `kubelet's ${p} is mounted`,
    );
});

t.test("the testpmd pod: our resource, its env var, hugepages eni-dpdk reserves", async (t) => {
  const requests = testpmd.resources.requests as Record<string, string>;
  const limits = testpmd.resources.limits as Record<string, string>;
  const extended = Object.keys(limits).filter((k) => k.includes("/"));
  t.same(extended, ["amazon.com/ena_dpdk"]);
  for (const name of extended) {
    const r = rendered.find((x) => x.full === name);
    t.ok(r, `${name} is a resource eni-dpdk writes`);
    t.equal(requests[name], limits[name], "extended resources: request = limit");
    t.ok(Number(limits[name]) <= r!.enis.length, `at most the ${r!.enis.length} ENIs it has`);
    const env = pluginEnvVar(r!.entry.resourcePrefix, r!.entry.resourceName);
    t.equal(env, "PCIDEVICE_AMAZON_COM_ENA_DPDK");
    const script = [...(testpmd.command ?? []), ...(testpmd.args ?? [])].join("\n");
    t.match(script, new RegExp(`\\$${env}\\b`), `the pod reads ${env}`);
    t.same(
      [...new Set(script.match(/PCIDEVICE_[A-Z0-9_]+/g))],
      [env],
      "and no other PCIDEVICE_ variable",
    );
  }

  const pages = Object.keys(limits).filter((k) => k.startsWith("hugepages-"));
  t.ok(pages.length > 0, "it requests hugepages");
  const sizes: Record<string, { mib: number; configured: number }> = {
    "hugepages-2Mi": { mib: 2, configured: config.dpdk.hugepages_2m },
    "hugepages-1Gi": { mib: 1024, configured: config.dpdk.hugepages_1g },
  };
  const mib = (q: string) => {
    const m = /^(\d+)(Mi|Gi)$/.exec(q);
    if (!m) throw new Error(`quantity ${q}`);
    return Number(m[1]) * (m[2] === "Gi" ? 1024 : 1);
  };
  for (const p of pages) {
    t.ok(Object.hasOwn(sizes, p), `${p} is a hugepage size kubelet advertises`);
    t.equal(requests[p], limits[p], "hugepages: request = limit");
    t.ok(sizes[p].configured > 0, `[dpdk] reserves ${p} pages`);
    t.ok(
      mib(limits[p]) <= sizes[p].mib * sizes[p].configured,
      `${limits[p]} fits the ${sizes[p].configured} pages eni-dpdk reserves`,
    );
    const medium = `HugePages-${p.slice("hugepages-".length)}`;
    const vol = (pod.spec.volumes as K8s[]).find((v) => v.emptyDir?.medium === medium);
    t.ok(vol, `a hugetlbfs volume (${medium})`);
    t.ok((testpmd.volumeMounts as K8s[]).some((m) => m.name === vol.name));
  }
  t.ok(requests.memory || requests.cpu, "hugepages need a cpu or memory request");

  const caps = testpmd.securityContext.capabilities.add as string[];
  for (const c of ["SYS_RAWIO", "IPC_LOCK", "SYS_ADMIN"]) t.ok(caps.includes(c), `capability ${c}`);
  t.notOk(testpmd.securityContext.privileged, "capabilities, not privileged");
});

t.test("the testpmd image installs testpmd and the ENA PMD", async (t) => {
  const docker = fs.readFileSync(path.join(dir, "testpmd.Dockerfile"), "utf8");
  t.match(docker, /apt-get install[^\n]*\bdpdk-dev\b/);
  t.match(docker, /\blibrte-net-ena23\b/);
  t.match(testpmd.image, /\/dpdk-testpmd:22\.11$/);
});
