// The NodeENI source end to end, through the built bundle: a NodeENI that selects the node gets its
// ENI created, attached and bound, and its status written back; a second apply changes nothing;
// and when the NodeENI is deleted or stops selecting the node, the ENI is left as it was (an app
// may still use it) and every view says which NodeENI it came from and how to release it.
import { readFileSync } from "node:fs";
import path from "node:path";
import t, { type Test } from "tap";
import YAML from "yaml";
import { NODEENI_PATH } from "../../src/cloud/kube.js";
import { converge, lastError, REPO, runCli, world } from "../support/harness.js";
import { KUBE_TOML, nodeEni, withKube } from "../support/kube.js";
import type { World } from "../../src/sim/world.js";

const INSTANCE = "i-0123456789abcdef0";
const DPDK = { enableDPDK: true, dpdkResourceName: "amazon.com/ena_dpdk" };

const state = (w: World) =>
  JSON.parse(readFileSync(path.join(w.root, "var/lib/eni-dpdk/state.json"), "utf8")) as {
    enis: Record<string, { eniId: string; mac: string; attachmentId: string }>;
    bindings: Record<string, { bdf: string; driver: string }>;
  };
const pcidp = (w: World) => readFileSync(path.join(w.root, "etc/pcidp/config.json"), "utf8");
/** "resource verb" for each kind of call the emulator answered, as RBAC names it. */
function usedVerbs(requests: { method: string; path: string }[]): string[] {
  const verbs = requests.map(({ method, path: p }) => {
    const rest = p.split("?")[0].slice(NODEENI_PATH.length).split("/").filter(Boolean);
    const resource = rest[1] ? `nodeenis/${rest[1]}` : "nodeenis";
    const verb = { GET: rest.length ? "get" : "list", PATCH: "patch", PUT: "update" }[method];
    return `${resource} ${verb ?? method}`;
  });
  return [...new Set(verbs)].sort();
}

function grantedVerbs(): string[] {
  const role = YAML.parseAllDocuments(readFileSync(path.join(REPO, "deploy/rbac.yaml"), "utf8"))
    .map((d) => d.toJS() as { kind: string; rules: { resources: string[]; verbs: string[] }[] })
    .find((d) => d.kind === "ClusterRole")!;
  return role.rules
    .flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${res} ${v}`)))
    .sort();
}

const leftOver = (r: { log: Record<string, string>[] }) =>
  r.log
    .filter((l) => l.level === "warn" && l.msg.includes("no longer configured"))
    .map((l) => l.msg);

async function convergedOnNodeEni(t: Test, o: { conflictFirst?: boolean } = {}) {
  const w = await world(t, { configToml: KUBE_TOML });
  const emu = await withKube(t, w, [nodeEni("dpdk", DPDK)]);
  // another writer between our read and our patch: the status is read again and patched
  if (o.conflictFirst) emu.faults.conflictNext = 1;
  await converge(t, w);
  const rec = state(w).enis.dpdk;
  t.ok(rec?.eniId, "the NodeENI's ENI is in the state, under the NodeENI's name");
  const bdf = state(w).bindings[rec.mac]?.bdf;
  t.equal(w.sim.driverOf(bdf), "vfio-pci", "its device is bound");
  t.match(pcidp(w), bdf, "and offered as an SR-IOV resource");
  return { w, emu, rec, bdf };
}

t.test(
  "a NodeENI selecting the node: attached, bound, its status written back, once",
  async (t) => {
    const { w, emu, rec } = await convergedOnNodeEni(t, { conflictFirst: true });
    const status = emu.get("dpdk")?.status as
      { attachments: Record<string, unknown>[] } | undefined;
    t.same(
      status?.attachments.map((a) => a.instanceID),
      ["i-0ffffffffffffffff", INSTANCE],
      "the other writer's entry (the 409) kept, and this node's added",
    );
    t.match(status?.attachments[1], {
      instanceID: INSTANCE,
      eniID: rec.eniId,
      attachmentID: rec.attachmentId,
      status: "attached",
      dpdkBound: true,
      dpdkResourceName: "amazon.com/ena_dpdk",
    });

    t.same(
      usedVerbs(emu.requests),
      grantedVerbs(),
      "deploy/rbac.yaml grants exactly the calls eni-dpdk made (a 409 retry among them)",
    );

    const mutating = w.ec2.mutatingCalls();
    const patches = emu.requests.filter((r) => r.method === "PATCH").length;
    await converge(t, w);
    t.equal(w.ec2.mutatingCalls(), mutating, "a second apply makes no EC2 change");
    t.equal(
      emu.requests.filter((r) => r.method === "PATCH").length,
      patches,
      "and writes no status that did not change",
    );
  },
);

for (const [how, change] of [
  ["deleted", (emu: Awaited<ReturnType<typeof withKube>>) => emu.delete("dpdk")],
  [
    "no longer selecting the node",
    (emu: Awaited<ReturnType<typeof withKube>>) =>
      void emu.upsert(nodeEni("dpdk", { ...DPDK, nodeSelector: { "eni-dpdk/pool": "other" } })),
  ],
] as const) {
  t.test(`the NodeENI ${how}: its ENI is left attached and bound, and said so`, async (t) => {
    const { w, emu, rec, bdf } = await convergedOnNodeEni(t);
    const mutating = w.ec2.mutatingCalls();
    change(emu);

    const r = await runCli(w, ["apply"]);
    t.equal(r.code, 0, lastError(r));
    const [warning, ...more] = leftOver(r);
    t.same(more, [], "one warning");
    t.match(warning, `ENI ${rec.eniId} ("dpdk", MAC ${rec.mac})`);
    t.match(
      warning,
      "(it came from NodeENI dpdk, now deleted or no longer selecting this node)",
      "it names the NodeENI the ENI came from",
    );
    t.match(warning, `aws ec2 detach-network-interface --attachment-id ${rec.attachmentId}`);
    t.match(warning, "`eni-dpdk unbind dpdk`");
    t.equal(w.ec2.mutatingCalls(), mutating, "nothing detached or deleted");
    t.equal(w.sim.driverOf(bdf), "vfio-pci", "the device stays bound");
    t.notOk(pcidp(w).includes(bdf), "no SR-IOV resource offers it to new pods");

    const status = await runCli(w, ["status"]);
    t.equal(status.code, 0, lastError(status));
    t.match(status.stdout, warning, "status repeats it");
  });
}
