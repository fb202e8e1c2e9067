// The user-data recipes in docs/user-data.md, extracted from their `recipe=…` code blocks and
// decoded with eni-dpdk's own code: decodeUserData / userDataLayers / tagLayers / buildConfig, the
// NodeENI mapping, and the `eni-dpdk userdata` renderer (as a function and through the CLI).
import t from "tap";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import YAML from "yaml";
import { buildConfig, defaults } from "../../src/config/model.js";
import { loadToml, tomlLayer } from "../../src/sources/toml.js";
import { tagLayers } from "../../src/sources/tags.js";
import { userDataLayers } from "../../src/sources/userdata.js";

// tomlLayer and userDataLayers are synchronous; the parser itself loads lazily (see loadToml).
await loadToml();
import { decodeUserData, renderUserData } from "../../src/sources/mime.js";
import { OUR_MEDIA_TYPE, NODEADM_MEDIA_TYPE } from "../../src/config/facts.js";
import { applicableNodeEnis, layersForNodeEnis } from "../../src/sources/nodeeni.js";
import { nodeIdentity, parseNodeConfigs } from "../../src/sources/nodeconfig.js";
import type { NodeEniObject } from "../../src/cloud/kube.js";
import { REPO } from "../support/repo.js";
import { BUNDLE, NODE } from "../support/harness.js";

const repo = REPO;
const doc = fs.readFileSync(path.join(repo, "docs/user-data.md"), "utf8");

/** Code blocks whose info string carries `recipe=<id>`, by id. */
function recipes(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of markdown.matchAll(/^```[\w+-]* recipe=([\w:-]+)\n([\s\S]*?)^```$/gm)) {
    if (out.has(m[1])) throw new Error(`recipe ${m[1]} appears twice`);
    out.set(m[1], m[2]);
  }
  return out;
}
const blocks = recipes(doc);
const block = (id: string): string => {
  const b = blocks.get(id);
  if (b === undefined) throw new Error(`docs/user-data.md has no recipe=${id} block`);
  return b;
};

const instance = {
  instanceId: "i-0123456789abcdef0",
  instanceType: "c6in.4xlarge",
  region: "us-west-2",
  az: "us-west-2a",
  primaryMac: "02:00:00:00:00:01",
  localHostname: "ip-10-0-1-23.us-west-2.compute.internal",
};

t.test("every recipe block is present", async (t) => {
  t.same([...blocks.keys()].sort(), [
    "multipart:config",
    "multipart:nodeconfig",
    "multipart:user-data",
    "nodeeni:manifest",
    "nodeeni:rbac",
    "nodeeni:user-data",
    "plain",
    "tags:launch-template",
  ]);
});

t.test("1. plain TOML user-data, raw, base64 and gzip", async (t) => {
  const raw = Buffer.from(block("plain"));
  for (const [how, data] of [
    ["raw", raw],
    ["base64", Buffer.from(raw.toString("base64"))],
    ["gzip", gzipSync(raw)],
    ["gzip+base64", Buffer.from(gzipSync(raw).toString("base64"))],
  ] as const) {
    const ud = userDataLayers(data);
    t.equal(ud.layers.length, 1, `${how}: recognised as ours`);
    const { config } = buildConfig(ud.layers);
    t.same(
      config.eni.map((e) => [e.name, e.device_index, e.dpdk.enabled, e.dpdk.resource_name]),
      [["data1", 1, true, "amazon.com/ena_dpdk"]],
      how,
    );
    t.equal(config.dpdk.hugepages_2m, 1024);
  }
});

t.test(
  "2. MIME multipart: the rendered document is exactly the doc's, and decodes to both parts",
  async (t) => {
    const nodeConfig = block("multipart:nodeconfig");
    const toml = block("multipart:config");
    const mime = block("multipart:user-data");
    t.equal(
      renderUserData(nodeConfig, toml),
      mime,
      "renderUserData(nodeconfig, config) reproduces the documented user-data",
    );

    const parts = decodeUserData(Buffer.from(mime));
    t.same(
      parts.map((p) => p.contentType),
      [NODEADM_MEDIA_TYPE, OUR_MEDIA_TYPE],
    );
    t.equal(
      parts[0].text.trim(),
      nodeConfig.trim(),
      "nodeadm's part carries the NodeConfig unchanged",
    );

    const ud = userDataLayers(Buffer.from(Buffer.from(mime).toString("base64")));
    t.equal(ud.layers.length, 1, "only our part becomes a layer (base64 as EC2 delivers it)");
    const { config } = buildConfig(ud.layers);
    t.same(
      config.eni.map((e) => [e.name, e.device_index, e.dpdk.enabled, e.mtu]),
      [
        ["data1", 1, true, 9001],
        ["data2", 2, true, 9001],
        ["storage", 3, false, 9001],
      ],
    );
    t.equal(config.eni[2].subnet_name, "storage-us-west-2a");

    const info = await parseNodeConfigs(parts, []);
    t.equal(
      info.cluster?.name,
      "my-cluster",
      "the NodeConfig part is still readable for the NodeENI source",
    );
    t.same(info.kubeletFlags, ["--node-labels=eni-dpdk/pool=dpdk-a"]);
  },
);

t.test("2. the same document through `eni-dpdk userdata` (the real CLI)", async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-recipes-"));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  fs.writeFileSync(path.join(tmp, "nodeconfig.yaml"), block("multipart:nodeconfig"));
  fs.writeFileSync(path.join(tmp, "eni-dpdk.toml"), block("multipart:config"));
  const cli = (config: string) =>
    spawnSync(
      NODE[0],
      [
        ...NODE.slice(1),
        BUNDLE,
        "userdata",
        "--nodeconfig",
        path.join(tmp, "nodeconfig.yaml"),
        "--config",
        config,
      ],
      {
        cwd: repo,
        encoding: "utf8",
      },
    );
  const r = cli(path.join(tmp, "eni-dpdk.toml"));
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, block("multipart:user-data"));

  // A broken TOML part is refused (exit 2) and nothing is printed.
  fs.writeFileSync(
    path.join(tmp, "bad.toml"),
    block("multipart:config").replace("device_index = 2", "device_indx = 2"),
  );
  const bad = cli(path.join(tmp, "bad.toml"));
  t.equal(bad.status, 2);
  t.equal(bad.stdout, "");
  t.match(bad.stderr, /device_indx/);
});

t.test("3. tags only: the launch template's instance tags", async (t) => {
  const lt = JSON.parse(block("tags:launch-template")) as {
    MetadataOptions: Record<string, unknown>;
    TagSpecifications: { ResourceType: string; Tags: { Key: string; Value: string }[] }[];
  };
  t.equal(lt.MetadataOptions.InstanceMetadataTags, "enabled", "tags reach IMDS");
  t.equal(lt.MetadataOptions.HttpTokens, "required");
  const spec = lt.TagSpecifications.find((s) => s.ResourceType === "instance");
  t.ok(spec, "instance tags");
  const tags = Object.fromEntries(spec!.Tags.map((x) => [x.Key, x.Value]));
  for (const [k, v] of Object.entries(tags)) {
    t.notOk(k.includes("/") || k.includes(" "), `${k}: IMDS can expose this key`);
    t.ok(v.length <= 256, `${k}: value within EC2's 256 characters (${v.length})`);
  }
  const { config } = buildConfig(tagLayers(tags));
  t.same(
    config.eni.map((e) => [
      e.name,
      e.device_index,
      e.dpdk.driver,
      e.dpdk.resource_name,
      e.security_group_ids,
    ]),
    [
      ["data1", 1, "vfio-pci", "amazon.com/ena_dpdk", ["sg-0123456789abcdef0"]],
      ["data2", 2, "vfio-pci", "ena_dpdk", ["sg-0123456789abcdef0"]],
    ],
  );
  t.equal(config.dpdk.hugepages_2m, 1024);
  t.equal(config.sriov.resource_prefix, "amazon.com");
});

t.test("4. NodeENI only: the node selects the NodeENI through its NodeConfig label", async (t) => {
  const userData = Buffer.from(block("nodeeni:user-data"));
  t.equal(userDataLayers(userData).layers.length, 0, "no eni-dpdk part: user-data adds no config");
  const parts = decodeUserData(userData);
  const warnings: string[] = [];
  const nodeConfig = await parseNodeConfigs(parts, warnings);
  t.equal(nodeConfig.cluster?.name, "my-cluster");
  t.match(nodeConfig.cluster?.apiServerEndpoint, /^https:\/\//);

  const manifest = YAML.parse(block("nodeeni:manifest")) as NodeEniObject;
  t.equal(manifest.kind, "NodeENI");
  t.equal(manifest.apiVersion, "networking.k8s.aws/v1alpha1");
  const node = nodeIdentity({ instance, nodeConfig, k8s: defaults().kubernetes, arch: "x64" });
  t.equal(node.labels["eni-dpdk/pool"], "dpdk-a", "label from the NodeConfig's kubelet flags");
  const applicable = applicableNodeEnis([manifest], node.labels, warnings);
  t.equal(applicable.length, 1, "the NodeENI selects this node");
  const { config } = buildConfig(layersForNodeEnis(applicable, defaults(), warnings));
  t.same(warnings, []);
  t.equal(config.eni.length, 1);
  const eni = config.eni[0];
  t.same(
    [
      eni.device_index,
      eni.subnet_id,
      eni.mtu,
      eni.dpdk.enabled,
      eni.dpdk.driver,
      eni.dpdk.resource_name,
    ],
    [1, "subnet-0123456789abcdef0", 9001, true, "vfio-pci", "amazon.com/ena_dpdk"],
  );

  // The selection can fail: a node without the label is not selected.
  const unlabelled = nodeIdentity({
    instance,
    nodeConfig: { ...nodeConfig, kubeletFlags: [] },
    k8s: defaults().kubernetes,
    arch: "x64",
  });
  t.equal(applicableNodeEnis([manifest], unlabelled.labels, []).length, 0);
});

t.test("4. the RBAC lets system:nodes read NodeENIs and patch their status", async (t) => {
  const [role, binding] = YAML.parseAllDocuments(block("nodeeni:rbac")).map((d) => d.toJS()) as [
    {
      kind: string;
      metadata: { name: string };
      rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
    },
    { kind: string; roleRef: { name: string }; subjects: { kind: string; name: string }[] },
  ];
  const allows = (resource: string, verb: string) =>
    role.rules.some(
      (r) =>
        r.apiGroups.includes("networking.k8s.aws") &&
        r.resources.includes(resource) &&
        r.verbs.includes(verb),
    );
  t.equal(role.kind, "ClusterRole", "NodeENI is cluster-scoped");
  for (const verb of ["get", "list"]) t.ok(allows("nodeenis", verb), `nodeenis ${verb}`);
  t.ok(allows("nodeenis/status", "patch"), "nodeenis/status patch");
  t.notOk(allows("nodeenis", "delete"), "nothing more");
  // the same rules as deploy/rbac.yaml, which the NodeENI integration test holds to the calls made
  const deployed = YAML.parseAllDocuments(
    fs.readFileSync(path.join(repo, "deploy/rbac.yaml"), "utf8"),
  )
    .map((d) => d.toJS() as { kind: string; rules?: unknown })
    .find((d) => d.kind === "ClusterRole");
  t.same(role.rules, deployed?.rules, "the recipe's rules are deploy/rbac.yaml's");
  t.equal(binding.kind, "ClusterRoleBinding");
  t.equal(binding.roleRef.name, role.metadata.name);
  t.same(
    binding.subjects.map((s) => [s.kind, s.name]),
    [["Group", "system:nodes"]],
  );
});

t.test(
  "the config blocks also validate standalone (what `eni-dpdk validate FILE` does)",
  async (t) => {
    for (const id of ["plain", "multipart:config"]) {
      t.doesNotThrow(() => buildConfig([tomlLayer(block(id), id)]), id);
    }
    // and the extraction is not vacuous: a broken copy is rejected with the key named
    t.throws(
      () => buildConfig([tomlLayer(block("plain").replace("device_index", "device_idx"), "plain")]),
      /device_idx/,
    );
  },
);
