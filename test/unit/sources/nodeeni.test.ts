import t, { type Test } from "tap";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildConfig, defaults, type Config } from "../../../src/config/model.js";
import { formatProblem, InputError, OpError } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";
import { Deadline } from "../../../src/core/deadline.js";
import { ImdsClient, readInstance } from "../../../src/cloud/imds.js";
import { silentLogger } from "../../../src/core/log.js";
import { emptyState, type State } from "../../../src/host/state.js";
import { decodeUserData } from "../../../src/sources/mime.js";
import type { NodeEniObject } from "../../../src/cloud/kube.js";
import {
  eniNamesFor,
  nodeEniLayers,
  nodeEniToLayer,
  rememberNodeEnis,
  selectorMatches,
  type NodeEniInput,
} from "../../../src/sources/nodeeni.js";
import {
  labelsFromKubeletFlags,
  nodeIdentity,
  parseNodeConfigs,
} from "../../../src/sources/nodeconfig.js";
import {
  mergeAttachments,
  reportNodeEniStatus,
  type NodeEniEniResult,
} from "../../../src/reconcile/nodeeni.js";
import { ImdsEmulator } from "../../../src/sim/imds.js";
import { KubeApiEmulator, testPki } from "../../../src/sim/kube-api.js";
import { REPO_URL } from "../../support/repo.js";

const SUBNET_A = "subnet-0a1b2c3d4e5f60718";
const SUBNET_B = "subnet-0b1b2c3d4e5f60718";
const SG = "sg-0a1b2c3d4e5f60718";
const NODE = "ip-10-0-1-10.us-west-2.compute.internal";
const pki = testPki();
const CREDS = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "test-secret" };

const nodeEni = (
  name: string,
  spec: Record<string, unknown>,
  status?: NodeEniObject["status"],
): NodeEniObject => ({
  metadata: { name },
  spec: {
    nodeSelector: { "ng-role": "dpdk" },
    subnetID: SUBNET_A,
    securityGroupIDs: [SG],
    enableDPDK: true,
    dpdkResourceName: "amazon.com/ena_dpdk",
    ...spec,
  },
  ...(status ? { status } : {}),
});

function nodeConfigYaml(server: string, labels = "ng-role=dpdk,team=net", extra = ""): string {
  return `---
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: demo
    apiServerEndpoint: ${server}
    certificateAuthority: ${Buffer.from(pki.caCert).toString("base64")}
    cidr: 10.100.0.0/16
  kubelet:
    flags:
      - --node-labels=${labels}
${extra}`;
}

function mime(nodeConfig: string): Buffer {
  return Buffer.from(
    [
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="BOUNDARY"',
      "",
      "--BOUNDARY",
      "Content-Type: application/node.eks.aws",
      "",
      nodeConfig,
      "--BOUNDARY",
      "Content-Type: text/x-shellscript",
      "",
      "#!/bin/bash\necho hi",
      "--BOUNDARY--",
      "",
    ].join("\n"),
  );
}

interface World {
  emu: KubeApiEmulator;
  imdsEmu: ImdsEmulator;
  input: NodeEniInput;
}

async function world(
  t: Test,
  objects: NodeEniObject[],
  over: { labels?: string; extra?: string; config?: Config; state?: State } = {},
): Promise<World> {
  const emu = await new KubeApiEmulator(objects).start();
  emu.eks = {
    clusterName: "demo",
    ...CREDS,
    stsHosts: ["sts.us-west-2.amazonaws.com"],
    user: `system:node:${NODE}`,
  };
  const imdsEmu = await new ImdsEmulator().start();
  t.teardown(async () => {
    await emu.close();
    await imdsEmu.close();
  });
  const imds = new ImdsClient({ endpoint: imdsEmu.url });
  const instance = await readInstance(imds);
  const parts = decodeUserData(mime(nodeConfigYaml(emu.url, over.labels, over.extra)));
  const input: NodeEniInput = {
    imds,
    instance,
    userDataParts: parts,
    config: over.config ?? defaults(),
    host: new Host(mkdtempSync(path.join(os.tmpdir(), "nodeeni-"))),
    log: silentLogger,
    deadline: new Deadline(30_000),
    state: over.state ?? emptyState(),
    apiWaitMs: 800,
    arch: "x64",
  };
  return { emu, imdsEmu, input };
}

// The EKS token is signed with these; the emulator verifies the signature.
process.env.AWS_ACCESS_KEY_ID = CREDS.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = CREDS.secretAccessKey;
delete process.env.AWS_SESSION_TOKEN;
delete process.env.AWS_PROFILE;

// ---- node identity and selection ---------------------------------------------------------------

t.test("node name and labels from NodeConfig, [kubernetes] and IMDS", async (t) => {
  const instance = {
    instanceId: "i-0123456789abcdef0",
    instanceType: "c6in.4xlarge",
    region: "us-west-2",
    az: "us-west-2a",
    primaryMac: "02:00:00:00:00:01",
    localHostname: NODE,
  };
  const warnings: string[] = [];
  const part = (text: string) => ({
    contentType: "application/node.eks.aws",
    label: "user-data part 1 (application/node.eks.aws)",
    text,
  });
  const nc = await parseNodeConfigs(
    [
      part(
        nodeConfigYaml(
          "https://x.eks.amazonaws.com",
          "a=1,b=2",
          "      - --register-with-taints=x=y:NoSchedule\n      - --node-labels=b=3",
        ),
      ),
    ],
    warnings,
  );
  t.same(warnings, []);
  t.same(nc.cluster && { name: nc.cluster.name, api: nc.cluster.apiServerEndpoint }, {
    name: "demo",
    api: "https://x.eks.amazonaws.com",
  });
  const k8s = defaults().kubernetes;
  const id = nodeIdentity({ instance, nodeConfig: nc, k8s, arch: "arm64", zoneId: "usw2-az1" });
  t.equal(id.name, NODE, "the private DNS name by default");
  t.equal(id.labels.a, "1");
  t.equal(id.labels.b, "3", "a later --node-labels wins");
  t.equal(id.labels["kubernetes.io/arch"], "arm64");
  t.equal(id.labels["kubernetes.io/os"], "linux");
  t.equal(id.labels["topology.kubernetes.io/zone"], "us-west-2a");
  t.equal(id.labels["topology.kubernetes.io/region"], "us-west-2");
  t.equal(id.labels["node.kubernetes.io/instance-type"], "c6in.4xlarge");
  t.equal(id.labels["topology.k8s.aws/zone-id"], "usw2-az1");
  t.equal(id.labels["kubernetes.io/hostname"], NODE);
  t.equal(
    nodeIdentity({ instance, nodeConfig: nc, k8s, arch: "x64" }).labels["kubernetes.io/arch"],
    "amd64",
  );

  const gated = await parseNodeConfigs(
    [part(nodeConfigYaml("https://x", "a=1", "  featureGates:\n    InstanceIdNodeName: true\n"))],
    warnings,
  );
  t.equal(
    nodeIdentity({ instance, nodeConfig: gated, k8s, arch: "x64" }).name,
    "i-0123456789abcdef0",
    "nodeadm's InstanceIdNodeName gate",
  );
  const overridden = await parseNodeConfigs(
    [part(nodeConfigYaml("https://x", "a=1", "      - --hostname-override=custom-name"))],
    warnings,
  );
  t.equal(nodeIdentity({ instance, nodeConfig: overridden, k8s, arch: "x64" }).name, "custom-name");
  const fromConfig = nodeIdentity({
    instance,
    nodeConfig: overridden,
    k8s: { ...k8s, node_name: "cfg-name", node_labels: { a: "9" } },
    arch: "x64",
  });
  t.equal(fromConfig.name, "cfg-name", "[kubernetes].node_name wins");
  t.equal(fromConfig.labels.a, "9", "[kubernetes].node_labels win over kubelet flags");

  t.same(
    labelsFromKubeletFlags(["--node-labels", "x=1,y=2", "--max-pods=10"]),
    { x: "1", y: "2" },
    "two-word form",
  );
  await parseNodeConfigs([part("spec: [unclosed")], warnings);
  t.match(warnings[0], /user-data part 1 .*not valid YAML/);
});

t.test(
  "nodeSelector: every entry must match; {} selects all; malformed never matches",
  async (t) => {
    const labels = { "ng-role": "dpdk", team: "net" };
    t.equal(selectorMatches({ "ng-role": "dpdk" }, labels), true);
    t.equal(selectorMatches({ "ng-role": "dpdk", team: "net" }, labels), true);
    t.equal(selectorMatches({ "ng-role": "dpdk", team: "other" }, labels), false);
    t.equal(
      selectorMatches({ missing: "" }, labels),
      false,
      "an absent label is not an empty value",
    );
    t.equal(selectorMatches({}, labels), true);
    t.equal(selectorMatches(["ng-role"], labels), undefined);
    t.equal(selectorMatches({ n: 1 }, labels), undefined);
  },
);

t.test("ENI names are deterministic, unique and valid", async (t) => {
  t.same(eniNamesFor("dpdk-data", 3), ["dpdk-data", "dpdk-data-1", "dpdk-data-2"]);
  t.same(eniNamesFor("multus.data.v1", 1), ["multus-data-v1"]);
  const long = "a-very-long-nodeeni-name-that-goes-well-beyond-forty-characters.example.com";
  const names = eniNamesFor(long, 12);
  t.same(names, eniNamesFor(long, 12), "deterministic");
  t.equal(new Set(names).size, 12);
  for (const n of names) t.match(n, /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/);
  t.not(eniNamesFor(long + "x", 1)[0], names[0], "different long names do not collide");
});

// ---- mapping -----------------------------------------------------------------------------------

t.test(
  "multi-subnet expansion: one ENI per subnet in the union, device index incremented",
  async (t) => {
    const m = nodeEniToLayer(
      nodeEni("multi", {
        subnetID: SUBNET_A,
        subnetIDs: [SUBNET_B, SUBNET_A],
        subnetName: "data-a",
        subnetNames: ["data-b"],
        securityGroupNames: ["dpdk-sg"],
        deviceIndex: 2,
        mtu: 9001,
        description: "DPDK data plane",
        deleteOnTermination: false,
        dpdkDriver: "igb_uio",
      }),
    );
    t.same(m.problems, []);
    t.match(m.warnings[0], /spec.subnetIDs\[1\]: "subnet-0a1b2c3d4e5f60718" is already listed/);
    const eff = buildConfig([m.layer!]);
    t.same(
      eff.config.eni.map((e) => [e.name, e.device_index, e.subnet_id || `name:${e.subnet_name}`]),
      [
        ["multi", 2, SUBNET_A],
        ["multi-1", 3, SUBNET_B],
        ["multi-2", 4, "name:data-a"],
        ["multi-3", 5, "name:data-b"],
      ],
    );
    const e = eff.config.eni[0];
    t.same(e.security_group_ids, [SG]);
    t.same(e.security_group_names, ["dpdk-sg"]);
    t.equal(e.mtu, 9001);
    t.equal(e.description, "DPDK data plane");
    t.equal(e.delete_on_termination, false);
    t.same(e.dpdk, {
      enabled: true,
      driver: "igb_uio",
      resource_name: "amazon.com/ena_dpdk",
      pci_address: "",
    });
    t.equal(eff.origin["eni.multi-1.device_index"], "NodeENI multi: spec.deviceIndex");
    t.equal(eff.origin["eni.multi-2.subnet_name"], "NodeENI multi: spec.subnetName");
  },
);

t.test(
  "defaults follow the existing controller: deviceIndex 1, deleteOnTermination true, vfio-pci, DPDK off unless enabled",
  async (t) => {
    const on = buildConfig([
      nodeEniToLayer(nodeEni("on", { dpdkPCIAddress: "0000:00:06.0" })).layer!,
    ]).config.eni[0];
    t.equal(on.device_index, 1);
    t.equal(on.delete_on_termination, true);
    t.same(on.dpdk, {
      enabled: true,
      driver: "vfio-pci",
      resource_name: "amazon.com/ena_dpdk",
      pci_address: "0000:00:06.0",
    });
    t.equal(on.mtu, 9001, "no mtu → the [[eni]] default");
    const off = buildConfig([
      nodeEniToLayer(nodeEni("off", { enableDPDK: undefined, dpdkResourceName: undefined, mtu: 0 }))
        .layer!,
    ]).config.eni[0];
    t.equal(
      off.dpdk.enabled,
      false,
      "absent enableDPDK is false even though [dpdk].enabled defaults to true",
    );
    t.equal(off.mtu, 9001, "mtu 0 means the default");
  },
);

t.test("mapping errors name NodeENI <name>: spec.<field>", async (t) => {
  const problems = (spec: Record<string, unknown>) =>
    nodeEniToLayer(nodeEni("bad", spec)).problems.map(formatProblem);
  t.match(problems({ subnetIDs: [SUBNET_B, "subnet-xyz"] }), [
    /^NodeENI bad: spec.subnetIDs\[1\]: expected "subnet-" followed by 8 or 17 hex digits, got "subnet-xyz"/,
  ]);
  t.match(problems({ subnetID: undefined }), [
    /^NodeENI bad: spec.subnetID: required: set subnetID, subnetIDs, subnetName or subnetNames/,
  ]);
  t.match(problems({ dpdkResourceName: undefined }), [
    /^NodeENI bad: spec.dpdkResourceName: required when enableDPDK is true/,
  ]);
  t.match(problems({ subnetIDs: [SUBNET_B], dpdkPCIAddress: "0000:00:06.0" }), [
    /^NodeENI bad: spec.dpdkPCIAddress: names one device, but this NodeENI makes 2 ENIs/,
  ]);
  t.match(problems({ mtu: "9001" }), [/^NodeENI bad: spec.mtu: expected an integer, got "9001"/]);
  t.match(problems({ securityGroupIDs: ["sg-1"] }), [
    /^NodeENI bad: spec.securityGroupIDs\[0\]: expected "sg-"/,
  ]);
  t.match(problems({ securityGroupIDs: undefined }), [
    /^NodeENI bad: spec.securityGroupIDs: required/,
  ]);
  t.match(problems({ deviceIndex: 0 }), [/^NodeENI bad: spec.deviceIndex: expected 1 or more/]);
  t.match(problems({ deviceIndex: 127, subnetIDs: [SUBNET_B] }), [
    /^NodeENI bad: spec.deviceIndex: 127 plus one per further subnet/,
  ]);
  t.match(problems({ enableDPDK: "yes" }), [
    /^NodeENI bad: spec.enableDPDK: expected true or false/,
  ]);
  t.match(problems({ nodeSelector: undefined }), [/^NodeENI bad: spec.nodeSelector: required/]);
  t.match(nodeEniToLayer(nodeEni("typo", { subnetIds: [SUBNET_B] })).warnings, [
    /spec.subnetIds: unknown field, ignored; did you mean "subnetIDs"\?/,
  ]);

  // Checks shared with every other source run in buildConfig, located at the NodeENI's fields.
  const viaBuild = (spec: Record<string, unknown>) => {
    try {
      buildConfig([nodeEniToLayer(nodeEni("b", spec)).layer!]);
      return [];
    } catch (e) {
      return (e as InputError).problems.map(formatProblem);
    }
  };
  t.match(viaBuild({ mtu: 100 }), [/^NodeENI b: spec.mtu: eni.b.mtu: expected 576..9216, got 100/]);
  t.match(viaBuild({ dpdkDriver: "dpdk" }), [
    /^NodeENI b: spec.dpdkDriver: eni.b.dpdk.driver: expected one of vfio-pci/,
  ]);
  t.match(viaBuild({ dpdkResourceName: "amazon.com/ena-dpdk" }), [
    /^NodeENI b: spec.dpdkResourceName: eni.b.dpdk.resource_name: name "ena-dpdk" must match/,
  ]);
  t.match(viaBuild({ subnetIDs: [SUBNET_B] }), []);
});

// ---- against the API ---------------------------------------------------------------------------

t.test(
  "nodeEniLayers: finds the cluster in NodeConfig, authenticates with the EKS token, applies only matching NodeENIs",
  async (t) => {
    const { emu, input } = await world(t, [
      nodeEni("dpdk", { subnetIDs: [SUBNET_B] }),
      nodeEni("gpu-only", { nodeSelector: { "ng-role": "gpu" } }),
      nodeEni("this-zone", {
        nodeSelector: {
          "topology.kubernetes.io/zone": "us-west-2a",
          "kubernetes.io/arch": "amd64",
        },
        deviceIndex: 3,
        enableDPDK: false,
      }),
      nodeEni("broken-but-elsewhere", { nodeSelector: { "ng-role": "other" }, subnetID: "nope" }),
    ]);
    const r = await nodeEniLayers(input);
    t.equal(r.fromCache, false);
    t.equal(r.nodeName, NODE);
    t.same(r.applied, ["dpdk", "this-zone"]);
    t.same(
      r.layers.map((l) => l.source),
      ["NodeENI dpdk", "NodeENI this-zone"],
    );
    t.same(r.warnings, []);
    t.equal(
      emu.requests.filter((q) => q.method === "GET")[0].user,
      `system:node:${NODE}`,
      "the emulator verified the EKS token",
    );
    const eff = buildConfig(r.layers);
    t.same(
      eff.config.eni.map((e) => [e.name, e.device_index]),
      [
        ["dpdk", 1],
        ["dpdk-1", 2],
        ["this-zone", 3],
      ],
    );
    t.same(
      r.items.map((o) => o.metadata.name).sort(),
      ["broken-but-elsewhere", "dpdk", "gpu-only", "this-zone"],
      "every NodeENI is kept for the cache",
    );
  },
);

t.test("an invalid applicable NodeENI rejects the whole set (nothing half-applies)", async (t) => {
  const { input } = await world(t, [
    nodeEni("good", {}),
    nodeEni("bad", { subnetID: "subnet-zz", deviceIndex: 2 }),
  ]);
  const err = await nodeEniLayers(input).catch((e: unknown) => e);
  t.ok(err instanceof InputError);
  t.match((err as InputError).message, /NodeENI bad: spec.subnetID: expected "subnet-"/);
});

t.test(
  "status: patches only this node's entries, keeps other nodes', retries a 409, skips no-op writes",
  async (t) => {
    const otherNode = {
      nodeID: "ip-10-0-2-20.us-west-2.compute.internal",
      instanceID: "i-0aaaaaaaaaaaaaaaa",
      eniID: "eni-0aaa",
      attachmentID: "eni-attach-0aaa",
      status: "attached",
      lastUpdated: "2024-01-01T00:00:00Z",
      dpdkBound: true,
    };
    const staleMine = {
      nodeID: NODE,
      instanceID: "i-0123456789abcdef0",
      eniID: "eni-0old",
      attachmentID: "eni-attach-0old",
      status: "attached",
      lastUpdated: "2024-01-01T00:00:00Z",
    };
    const { emu, input } = await world(t, [
      nodeEni("dpdk", { subnetIDs: [SUBNET_B] }, { attachments: [otherNode, staleMine] }),
      nodeEni("unrelated", { nodeSelector: { x: "y" } }),
    ]);
    const r = await nodeEniLayers(input);
    const results: NodeEniEniResult[] = [
      {
        eniName: "dpdk-1",
        nodeEniName: "dpdk",
        eniId: "eni-0222",
        attachmentId: "eni-attach-0222",
        subnetId: SUBNET_B,
        deviceIndex: 2,
        mtu: 9001,
        status: "attached",
        dpdkBound: true,
        dpdkDriver: "vfio-pci",
        dpdkPCIAddress: "0000:00:07.0",
        dpdkResourceName: "amazon.com/ena_dpdk",
      },
      {
        eniName: "dpdk",
        nodeEniName: "dpdk",
        eniId: "eni-0111",
        attachmentId: "eni-attach-0111",
        subnetId: SUBNET_A,
        deviceIndex: 1,
        mtu: 9001,
        status: "attached",
        dpdkBound: true,
        dpdkDriver: "vfio-pci",
        dpdkPCIAddress: "0000:00:06.0",
        dpdkResourceName: "amazon.com/ena_dpdk",
      },
    ];
    emu.faults.conflictNext = 1; // another node writes between our read and our patch
    const rep = await reportNodeEniStatus(
      { ...input, session: r.session, now: () => new Date("2026-11-27T18:00:00.123Z") },
      results,
    );
    t.same(rep.patched, ["dpdk"]);
    t.same(rep.warnings, []);
    const patches = emu.requests.filter((q) => q.method === "PATCH");
    t.same(
      patches.map((p) => p.status),
      [409, 200],
      "first try conflicted, the re-read retry succeeded",
    );
    const att = emu.get("dpdk")!.status!.attachments!;
    t.same(
      att.filter((a) => a.nodeID !== NODE).map((a) => a.instanceID),
      ["i-0aaaaaaaaaaaaaaaa", "i-0ffffffffffffffff"],
      "both other nodes' entries survive, including the concurrent one",
    );
    t.same(
      att.find((a) => a.nodeID === "ip-10-0-2-20.us-west-2.compute.internal"),
      otherNode,
      "untouched",
    );
    const mine = att.filter((a) => a.nodeID === NODE);
    t.same(
      mine.map((a) => a.eniID),
      ["eni-0111", "eni-0222"],
      "ours replaced (stale entry gone), sorted by device index",
    );
    t.same(mine[0], {
      nodeID: NODE,
      instanceID: "i-0123456789abcdef0",
      eniID: "eni-0111",
      attachmentID: "eni-attach-0111",
      subnetID: SUBNET_A,
      deviceIndex: 1,
      mtu: 9001,
      status: "attached",
      lastUpdated: "2026-11-27T18:00:00Z",
      dpdkBound: true,
      dpdkDriver: "vfio-pci",
      dpdkPCIAddress: "0000:00:06.0",
      dpdkResourceName: "amazon.com/ena_dpdk",
    });
    t.notOk(emu.get("unrelated")!.status, "NodeENIs without our entries are not written");

    const again = await reportNodeEniStatus(
      { ...input, session: r.session, now: () => new Date("2026-11-27T19:00:00Z") },
      results,
    );
    t.same(again.patched, []);
    t.same(again.unchanged, ["dpdk"]);
    t.equal(
      emu.requests.filter((q) => q.method === "PATCH").length,
      2,
      "a second report with the same results writes nothing",
    );

    const cleared = await reportNodeEniStatus({ ...input, session: r.session }, []);
    t.same(cleared.patched, ["dpdk"]);
    t.same(
      emu.get("dpdk")!.status!.attachments!.map((a) => a.nodeID),
      ["ip-10-0-2-20.us-west-2.compute.internal", "ip-10-9-9-9.us-west-2.compute.internal"],
      "our entries removed, others kept",
    );
  },
);

t.test("status: RBAC denial is a warning, not a failure", async (t) => {
  const { emu, input } = await world(t, [nodeEni("dpdk", {})]);
  const r = await nodeEniLayers(input);
  emu.faults.forbid.add("patch");
  const rep = await reportNodeEniStatus({ ...input, session: r.session }, [
    {
      eniName: "dpdk",
      nodeEniName: "dpdk",
      deviceIndex: 1,
      mtu: 9001,
      status: "failed: subnet in another AZ",
      dpdkBound: false,
    },
  ]);
  t.same(rep.patched, []);
  t.match(rep.warnings, [
    /NodeENI dpdk: status not reported: .*forbids it.*\(apply deploy\/rbac.yaml/,
  ]);
});

t.test("mergeAttachments keeps lastUpdated for unchanged entries", async (t) => {
  const a = {
    nodeID: "n",
    instanceID: "i",
    eniID: "e",
    attachmentID: "x",
    status: "attached",
    lastUpdated: "old",
    deviceIndex: 1,
  };
  const same = mergeAttachments([a], "n", [{ ...a, lastUpdated: "new" }]);
  t.equal(same.changed, false);
  t.equal(same.attachments[0].lastUpdated, "old");
  const diff = mergeAttachments([a], "n", [{ ...a, status: "failed", lastUpdated: "new" }]);
  t.equal(diff.changed, true);
  t.equal(diff.attachments[0].lastUpdated, "new");
});

t.test(
  "API outage: waits, then uses the cached last-applied set with a loud warning",
  async (t) => {
    const { emu, input } = await world(t, [
      nodeEni("dpdk", { subnetIDs: [SUBNET_B] }),
      nodeEni("gpu-only", { nodeSelector: { "ng-role": "gpu" } }),
    ]);
    const first = await nodeEniLayers(input);
    rememberNodeEnis(input.state, first);
    const cached = JSON.parse(JSON.stringify(input.state)) as State; // as persisted in state.json
    t.same(
      cached.nodeeni!.items.map((o) => (o as NodeEniObject).metadata.name),
      ["dpdk", "gpu-only"],
    );

    emu.faults.down = true;
    const started = Date.now();
    const r = await nodeEniLayers({ ...input, state: cached });
    t.ok(Date.now() - started >= 750, "waited out apiWaitMs (800 ms) before falling back");
    t.equal(r.fromCache, true);
    t.equal(r.fetchedAt, first.fetchedAt);
    t.match(r.warnings, [/USING CACHED NodeENIs from .*cannot reach the API server/]);
    t.same(r.applied, ["dpdk"]);
    t.same(
      buildConfig(r.layers).config,
      buildConfig(first.layers).config,
      "the same ENIs as the last successful apply",
    );
  },
);

t.test("API outage without a cache: refuses to act on an empty set", async (t) => {
  const { emu, input } = await world(t, [nodeEni("dpdk", {})]);
  emu.faults.down = true;
  const err = await nodeEniLayers(input).catch((e: unknown) => e);
  t.ok(err instanceof OpError, String(err));
  t.match(
    (err as OpError).message,
    /no NodeENI set was cached by an earlier apply; refusing to treat that as "no NodeENIs"/,
  );
  t.match((err as OpError).hint, /remove "nodeeni" from \[service\].sources/);
});

t.test("a wrong cluster name → 401, said plainly (cache fallback when there is one)", async (t) => {
  const { emu, input } = await world(t, [nodeEni("dpdk", {})]);
  emu.eks!.clusterName = "a-different-cluster";
  const err = await nodeEniLayers(input).catch((e: unknown) => e);
  t.ok(err instanceof OpError, String(err));
  t.match(
    (err as OpError).message,
    /rejected the instance role's EKS token for cluster "demo" \(401 Unauthorized\)/,
  );
  t.match((err as OpError).hint, /access entry of type EC2_LINUX/);
  t.match((err as OpError).hint, /signed with the node's clock, .* \(chronyc tracking\)/);
  t.equal(
    emu.requests.filter((q) => q.status === 401).length,
    2,
    "one retry with a fresh token, then no waiting on an auth error",
  );

  const state = emptyState();
  rememberNodeEnis(state, { items: [nodeEni("dpdk", {})], fetchedAt: "2026-11-26T00:00:00Z" });
  const r = await nodeEniLayers({ ...input, state });
  t.equal(r.fromCache, true);
  t.match(r.warnings, [/USING CACHED NodeENIs from 2026-11-26T00:00:00Z: .*401 Unauthorized/]);
});

t.test(
  "no cluster configured: the NodeENI source is empty without touching the network",
  async (t) => {
    const { input, emu } = await world(t, [nodeEni("dpdk", {})]);
    const r = await nodeEniLayers({ ...input, userDataParts: [] });
    t.same(r.layers, []);
    t.equal(r.session, undefined);
    t.equal(emu.requests.length, 0);
  },
);

t.test(
  "the NodeENI CRD in deploy/ keeps the existing controller's identity and fields, and validates like eni-dpdk",
  async (t) => {
    const YAML = await import("yaml");
    const { readFileSync } = await import("node:fs");
    const { BDF_RE, SG_ID_RE, SUBNET_ID_RE, resourceNameProblems } =
      await import("../../../src/config/facts.js");
    const { NODEENI_SPEC_FIELDS } = await import("../../../src/sources/nodeeni.js");
    const crd = YAML.parse(readFileSync(new URL("deploy/nodeeni-crd.yaml", REPO_URL), "utf8"));
    t.equal(crd.metadata.name, "nodeenis.networking.k8s.aws");
    t.equal(crd.spec.group, "networking.k8s.aws");
    t.same(crd.spec.names, {
      kind: "NodeENI",
      listKind: "NodeENIList",
      plural: "nodeenis",
      singular: "nodeeni",
      shortNames: ["neni"],
    });
    t.equal(crd.spec.scope, "Cluster");
    const v = crd.spec.versions[0];
    t.equal(v.name, "v1alpha1");
    t.same(v.subresources, { status: {} });
    const spec = v.schema.openAPIV3Schema.properties.spec;
    // Field names of aws-multi-eni-controller's CRD (domain.md): none renamed, none missing.
    t.same(Object.keys(spec.properties).sort(), [...NODEENI_SPEC_FIELDS].sort());
    t.same(spec.required, ["nodeSelector"]);
    const att = v.schema.openAPIV3Schema.properties.status.properties.attachments.items.properties;
    t.same(Object.keys(att).sort(), [
      "attachmentID",
      "deviceIndex",
      "dpdkBound",
      "dpdkDriver",
      "dpdkPCIAddress",
      "dpdkResourceName",
      "eniID",
      "instanceID",
      "lastUpdated",
      "mtu",
      "nodeID",
      "status",
      "subnetCIDR",
      "subnetID",
    ]);
    t.equal(spec.properties.deviceIndex.default, 1);
    t.same([spec.properties.deviceIndex.minimum, spec.properties.deviceIndex.maximum], [1, 127]);
    t.equal(spec.properties.deleteOnTermination.default, true);
    t.equal(spec.properties.dpdkDriver.default, "vfio-pci");
    // The CRD's patterns accept and reject exactly what eni-dpdk's own checks do.
    const agree = (
      pattern: string,
      ours: (s: string) => boolean,
      samples: string[],
      what: string,
    ) => {
      const re = new RegExp(pattern);
      for (const s of samples) t.equal(re.test(s), ours(s), `${what}: "${s}"`);
    };
    const subnets = [
      SUBNET_A,
      "subnet-0123abcd",
      "subnet-0123ABCD",
      "subnet-123",
      "sg-0123abcd",
      " subnet-0123abcd",
    ];
    agree(spec.properties.subnetID.pattern, (s) => SUBNET_ID_RE.test(s), subnets, "subnetID");
    agree(
      spec.properties.subnetIDs.items.pattern,
      (s) => SUBNET_ID_RE.test(s),
      subnets,
      "subnetIDs",
    );
    agree(
      spec.properties.securityGroupIDs.items.pattern,
      (s) => SG_ID_RE.test(s),
      [SG, "sg-0123abcd", "sg-01", "subnet-0123abcd"],
      "securityGroupIDs",
    );
    agree(
      spec.properties.dpdkPCIAddress.pattern,
      (s) => BDF_RE.test(s),
      ["0000:00:06.0", "0000:00:06.8", "00:06.0", "0000:00:1F.0"],
      "dpdkPCIAddress",
    );
    agree(
      spec.properties.dpdkResourceName.pattern,
      (s) => resourceNameProblems(s, "amazon.com").length === 0 && !s.startsWith("kubernetes.io/"),
      [
        "amazon.com/ena_dpdk",
        "ena_dpdk",
        "amazon.com/ena-dpdk",
        "Amazon.com/x",
        "a/b/c",
        "example.org/X_1",
      ],
      "dpdkResourceName",
    );

    const rbac = YAML.parseAllDocuments(
      readFileSync(new URL("deploy/rbac.yaml", REPO_URL), "utf8"),
    ).map((d) => d.toJS());
    const role = rbac.find((d) => d.kind === "ClusterRole");
    t.same(role.rules, [
      {
        apiGroups: ["networking.k8s.aws"],
        resources: ["nodeenis"],
        verbs: ["get", "list"],
      },
      {
        apiGroups: ["networking.k8s.aws"],
        resources: ["nodeenis/status"],
        verbs: ["patch"],
      },
    ]);
    const binding = rbac.find((d) => d.kind === "ClusterRoleBinding");
    t.same(binding.subjects, [
      { apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "system:nodes" },
    ]);
    t.equal(binding.roleRef.name, role.metadata.name);
  },
);

t.test(
  "the CRD not installed (404 NotFound from the API) means no NodeENIs, not an outage",
  async (t) => {
    const { emu, input } = await world(t, []);
    emu.faults.crdMissing = true;
    const r = await nodeEniLayers(input);
    t.same(r.layers, []);
    t.equal(r.fromCache, false);
    t.equal(emu.requests.at(-1)!.status, 404);
  },
);

// ---- input hardening (issue 13) ------------------------------------------------------------------

t.test(
  "a NodeENI without metadata.name (or with a non-string one) is an InputError naming its position",
  async (t) => {
    const { checkNodeEniItems } = await import("../../../src/sources/nodeeni.js");
    const e = t.throws(() =>
      checkNodeEniItems(
        [
          nodeEni("ok", {}),
          { spec: {} },
          { metadata: { name: 5 } },
          "x",
          { metadata: { name: "s" }, spec: [1] },
        ],
        "test",
      ),
    ) as InputError;
    t.type(e, InputError);
    t.same(e.problems.map(formatProblem), [
      "NodeENI items[1] (test): metadata: expected an object with a name",
      "NodeENI items[2] (test): metadata.name: expected a non-empty string, got 5",
      "NodeENI items[3] (test): (object): expected a NodeENI object, got string",
      "NodeENI items[4] (test): spec: expected an object, got [1]",
    ]);
    // Through the API: the emulator stores and serves an object without a name.
    const { emu, input } = await world(t, [nodeEni("dpdk", {})]);
    emu.upsert({ metadata: {}, spec: { nodeSelector: {} } } as unknown as NodeEniObject);
    const err = await nodeEniLayers(input).catch((x: unknown) => x);
    t.ok(err instanceof InputError, String(err));
    t.match(
      (err as InputError).problems.map((p) => `${p.source}|${p.key}`),
      [
        new RegExp(
          `^NodeENI items\\[\\d\\] \\(from ${emu.url.replace(/\./g, "\\.")}\\)\\|metadata\\.name$`,
        ),
      ],
    );
  },
);

t.test(
  "NodeENI spec: Object.prototype names are refused; lookups never reach the prototype",
  async (t) => {
    const spec = JSON.parse(
      `{"nodeSelector": {}, "subnetID": "${SUBNET_A}", "securityGroupIDs": ["${SG}"], "__proto__": {"mtu": 1}, "constructor": 1}`,
    );
    const m = nodeEniToLayer({ metadata: { name: "p" }, spec });
    t.same(m.problems.map((p) => p.key).sort(), ["spec.__proto__", "spec.constructor"]);
    t.match(m.problems[0].message, /Object\.prototype member name/);
    t.equal(
      selectorMatches({ constructor: "x" }, {}),
      false,
      "an absent label, not Object.prototype.constructor",
    );
    t.equal(
      selectorMatches({ constructor: "x" }, { constructor: "x" }),
      true,
      "a real label of that name matches",
    );
    const labels = labelsFromKubeletFlags(["--node-labels=__proto__=x,toString=y"]);
    t.equal(Object.getPrototypeOf(labels), Object.prototype);
    t.same(Object.keys(labels), ["__proto__", "toString"], "own keys, the prototype untouched");
    t.equal(({} as Record<string, unknown>).mtu, undefined);
  },
);

t.test(
  "a NodeConfig part that yaml cannot expand (alias bomb) is a warning, not a crash",
  async (t) => {
    const warnings: string[] = [];
    const level = (name: string, of: string) =>
      `${name}: &${name} [${Array(10).fill(of).join(", ")}]\n`;
    const bomb =
      level("a", "x") +
      level("b", "*a") +
      level("c", "*b") +
      level("d", "*c") +
      level("e", "*d") +
      "kind: NodeConfig\n";
    await parseNodeConfigs(
      [
        {
          contentType: "application/node.eks.aws",
          label: "user-data part 1 (application/node.eks.aws)",
          text: bomb,
        },
      ],
      warnings,
    );
    t.match(warnings, [/user-data part 1 .*: YAML cannot be read/]);
  },
);

t.test(
  "NodeENI spec.attach and the attribute fields: mapped, and hostile values named at the spec field",
  async (t) => {
    const layerOf = (spec: Record<string, unknown>) => nodeEniToLayer(nodeEni("ext", spec));
    const ok = layerOf({
      attach: "external",
      subnetID: undefined,
      securityGroupIDs: undefined,
      enaExpress: true,
      enaQueueCount: 4,
    });
    t.same(ok.problems, []);
    const eni = buildConfig([ok.layer!]).config.eni;
    t.same(
      eni.map((e) => [
        e.name,
        e.attach,
        e.device_index,
        e.subnet_id,
        e.ena_express,
        e.ena_queue_count,
      ]),
      [["ext", "external", 1, "", true, 4]],
      "an external NodeENI without a subnet still names one ENI, at deviceIndex",
    );
    const viaBuild = (spec: Record<string, unknown>) => {
      const m = layerOf(spec);
      if (m.problems.length) return m.problems.map(formatProblem);
      try {
        buildConfig([m.layer!]);
        return [];
      } catch (e) {
        return (e as InputError).problems.map(formatProblem);
      }
    };
    t.match(viaBuild({ attach: "launch-template" }), [
      /^NodeENI ext: spec\.attach: eni\.ext\.attach: expected "eni-dpdk" .* or "external" .*, got "launch-template"/,
    ]);
    t.match(viaBuild({ attach: 7 }), [/^NodeENI ext: spec\.attach: expected a string, got 7/]);
    t.match(viaBuild({ attach: "external", subnetID: undefined, subnetName: "data" }), [
      /^NodeENI ext: spec\.subnetName: eni\.ext\.subnet_name: attach = "external" checks the ENI against IMDS only/,
    ]);
    t.match(viaBuild({ externalEC2: true }), [
      /^NodeENI ext: spec\.externalEC2: eni\.ext\.external_ec2: applies only to attach = "external"/,
    ]);
    t.match(viaBuild({ enaQueueCount: "4" }), [
      /^NodeENI ext: spec\.enaQueueCount: expected an integer, got "4"/,
    ]);
    t.match(viaBuild({ sourceDestCheck: "false" }), [
      /^NodeENI ext: spec\.sourceDestCheck: expected true or false, got "false"/,
    ]);
    t.match(viaBuild({ attach: "external", sourceDestCheck: false }), [
      /^NodeENI ext: spec\.sourceDestCheck: eni\.ext\.source_dest_check: on attach = "external" it needs an EC2 call/,
    ]);
    t.match(viaBuild({ enaExpressUdp: true }), [
      /^NodeENI ext: spec\.enaExpressUdp: eni\.ext\.ena_express_udp: set ena_express too/,
    ]);
    t.match(
      viaBuild({ subnetID: undefined }),
      [/spec\.subnetID: required/],
      "eni-dpdk mode still needs a subnet",
    );
  },
);

t.test("the CRD's attach and attribute fields agree with eni-dpdk's own checks", async (t) => {
  const YAML = await import("yaml");
  const { readFileSync } = await import("node:fs");
  const { ATTACH_MODES } = await import("../../../src/config/facts.js");
  const crd = YAML.parse(readFileSync(new URL("deploy/nodeeni-crd.yaml", REPO_URL), "utf8"));
  const spec = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec;
  t.same(spec.properties.attach.enum, [...ATTACH_MODES]);
  t.equal(spec.properties.attach.default, "eni-dpdk");
  t.same([spec.properties.enaQueueCount.minimum, spec.properties.enaQueueCount.maximum], [1, 256]);
  for (const k of ["enaExpress", "enaExpressUdp", "sourceDestCheck", "externalEC2"])
    t.equal(spec.properties[k].type, "boolean", k);
  const rules = (spec["x-kubernetes-validations"] as { rule: string }[])
    .map((r) => r.rule)
    .join("\n");
  t.match(rules, /self\.attach == 'external'/, "an external NodeENI may name no subnet");
});
