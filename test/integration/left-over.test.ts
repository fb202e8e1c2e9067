// An ENI taken out of the config (a NodeENI deleted, a file edited) is left as it was: never
// detached, deleted or unbound by the removal, since an app may still use it. What the node is
// told instead: plan, apply, the Status line's count and `status` say where each such ENI was
// left and the commands that release it; `unbind` by its name returns the device.
import { readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { baseToml, converge, lastError, runCli, world } from "../support/harness.js";
import type { World } from "../../src/sim/world.js";

const BDF = "0000:00:06.0";
/** baseToml without data1: kern1 alone */
const withoutData1 = () =>
  baseToml().replace(/\[\[eni\]\]\nname = "data1"[\s\S]*?(?=\[\[eni\]\])/, "");

const warnings = (r: { log: Record<string, string>[] }) =>
  r.log
    .filter((l) => l.level === "warn" && l.msg.includes("no longer configured"))
    .map((l) => l.msg);

t.test(
  "an ENI removed from the config stays attached and bound, and every view says so",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    t.equal(w.sim.driverOf(BDF), "vfio-pci");
    const state = JSON.parse(
      readFileSync(path.join(w.root, "var/lib/eni-dpdk/state.json"), "utf8"),
    );
    const data1 = state.enis.data1 as { eniId: string; mac: string; attachmentId: string };
    t.notOk(withoutData1().includes('"data1"'), "the edit takes data1 out");
    w.writeConfig(withoutData1());
    const mutatingBefore = w.ec2.mutatingCalls();

    const plan = await runCli(w, ["plan"]);
    t.equal(plan.code, 0, lastError(plan));
    const expected = `ENI ${data1.eniId} ("data1", MAC ${data1.mac}) is no longer configured (it came from /etc/eni-dpdk/config.toml); eni-dpdk left it as it was, attached: \`aws ec2 detach-network-interface --attachment-id ${data1.attachmentId}\` then \`aws ec2 delete-network-interface --network-interface-id ${data1.eniId}\` release it; its device ${BDF} stays on vfio-pci, and no SR-IOV resource of eni-dpdk's offers it now: \`eni-dpdk unbind data1\` returns it to ena`;
    t.same(warnings(plan), [expected], "plan warns, naming the ENI, its device and the commands");

    const apply = await runCli(w, ["apply"]);
    t.equal(apply.code, 0, lastError(apply));
    t.same(warnings(apply), [expected]);
    t.equal(w.ec2.mutatingCalls(), mutatingBefore, "no EC2 call detached or deleted anything");
    t.equal(w.sim.driverOf(BDF), "vfio-pci", "the device stays bound");
    const doc = JSON.parse(readFileSync(path.join(w.root, "run/eni-dpdk/status.json"), "utf8"));
    t.ok(doc.apply.warnings.includes(expected), "status.json keeps the warning");
    t.match(
      doc.apply.summary,
      new RegExp(`\\(${doc.apply.warnings.length} warnings?\\)$`),
      "the Status line counts it",
    );
    const pcidp = readFileSync(path.join(w.root, "etc/pcidp/config.json"), "utf8");
    t.notOk(pcidp.includes(BDF), "no SR-IOV resource of ours offers the device");

    const status = await runCli(w, ["status"]);
    t.equal(status.code, 0, lastError(status));
    t.match(status.stdout, `  warning: ${expected}`, "status prints the last apply's warnings");
    const json = await runCli(w, ["status", "--json"]);
    t.ok(JSON.parse(json.stdout).lastApply.warnings.includes(expected), "and status --json");

    // unbind by name: the device goes back; the ENI is still attached, and still said to be
    const unbind = await runCli(w, ["unbind", "data1"]);
    t.equal(unbind.code, 0, lastError(unbind));
    t.equal(w.sim.driverOf(BDF), "ena");
    const again = await runCli(w, ["apply"]);
    t.equal(again.code, 0, lastError(again));
    t.same(warnings(again), [
      `ENI ${data1.eniId} ("data1", MAC ${data1.mac}) is no longer configured (it came from /etc/eni-dpdk/config.toml); eni-dpdk left it as it was, attached: \`aws ec2 detach-network-interface --attachment-id ${data1.attachmentId}\` then \`aws ec2 delete-network-interface --network-interface-id ${data1.eniId}\` release it`,
    ]);
    t.equal(w.sim.driverOf(BDF), "ena", "apply does not bind an ENI no longer configured");

    // configured again: adopted as ever, and the warning is gone
    w.writeConfig(baseToml());
    const back = await runCli(w, ["apply"]);
    t.equal(back.code, 0, lastError(back));
    t.same(warnings(back), []);
    t.equal(w.sim.driverOf(BDF), "vfio-pci");
    t.equal(
      JSON.parse(readFileSync(path.join(w.root, "var/lib/eni-dpdk/state.json"), "utf8")).enis.data1
        .eniId,
      data1.eniId,
      "the same ENI, not a new one",
    );
  },
);

/** DetachNetworkInterface through the real SDK, as `aws ec2 detach-network-interface` would. */
async function detach(w: World, attachmentId: string): Promise<void> {
  const sdk = await import("@aws-sdk/client-ec2");
  const ec2 = new sdk.EC2Client({
    region: "us-west-2",
    endpoint: w.ec2.url,
    credentials: { accessKeyId: "AKIDTEST", secretAccessKey: "test" },
  });
  await ec2.send(new sdk.DetachNetworkInterfaceCommand({ AttachmentId: attachmentId }));
  ec2.destroy();
}

const stateOf = (w: World) =>
  JSON.parse(readFileSync(path.join(w.root, "var/lib/eni-dpdk/state.json"), "utf8")) as {
    enis: Record<string, { eniId: string; mac: string; attachmentId: string }>;
    bindings: Record<string, unknown>;
  };

t.test(
  "released without `eni-dpdk unbind` first: no boot waits for the device, and the next apply forgets the ENI",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    const data1 = stateOf(w).enis.data1;
    w.writeConfig(withoutData1());
    await converge(t, w);
    await detach(w, data1.attachmentId);
    t.notOk(w.sim.bdfOfMac(data1.mac), "the NIC left sysfs with the detach");

    // A reboot before any apply: the early unit finds the recorded device gone and says so.
    w.reboot();
    const early = await runCli(w, ["early"]);
    t.equal(
      early.code,
      0,
      `early does not fail for a device that cannot come back: ${lastError(early)}`,
    );
    t.match(
      early.stdout,
      `skipped ${BDF} ${data1.mac} data1: no PCI device at ${BDF}: its ENI is not attached to this instance`,
    );

    const plan = await runCli(w, ["plan"]);
    t.equal(plan.code, 0, lastError(plan));
    t.match(
      plan.stdout,
      new RegExp(
        `eni +forget +data1 +data1 \\(${data1.eniId}, MAC ${data1.mac}\\): configured by no source and no longer on this instance`,
      ),
    );
    t.same(warnings(plan), [], "no left-over warning: the ENI is no longer attached");

    const mutating = w.ec2.mutatingCalls();
    await converge(t, w);
    t.equal(w.ec2.mutatingCalls(), mutating, "forgetting makes no EC2 call");
    t.notOk(stateOf(w).enis.data1, "its ENI record is gone");
    t.notOk(stateOf(w).bindings[data1.mac], "and its binding");
    const status = await runCli(w, ["status"]);
    t.notMatch(status.stdout, /data1/, "status no longer lists it as missing");
    const again = await runCli(w, ["plan"]);
    t.match(again.stdout, /^nothing to do/, "and the next pass has nothing to do");
  },
);

t.test(
  "an ENI still configured but detached by someone else is attached again and bound",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    const data1 = stateOf(w).enis.data1;
    await detach(w, data1.attachmentId);
    const plan = await runCli(w, ["plan"]);
    t.match(plan.stdout, new RegExp(`eni +attach +data1 +AttachNetworkInterface ${data1.eniId}`));
    t.notMatch(plan.stdout, /forget/, "a configured ENI is never forgotten");
    await converge(t, w);
    t.equal(stateOf(w).enis.data1.eniId, data1.eniId, "the same ENI");
    t.equal(w.sim.driverOf(w.sim.bdfOfMac(data1.mac)!), "vfio-pci", "bound again");
  },
);
