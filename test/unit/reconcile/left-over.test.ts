// leftOverEnis: which recorded ENIs no source configures any more, and what each warning says.
import t from "tap";
import { leftOverEnis } from "../../../src/reconcile/eni.js";
import type { EniRecord } from "../../../src/host/state.js";
import { config, DATA1, DATA2, node, stageCtx } from "../../support/fixture.js";

const record = (name: string, mac: string, over: Partial<EniRecord> = {}): EniRecord => ({
  name,
  eniId: `eni-0${mac.replace(/:/g, "").slice(-6)}0000000000`,
  mac,
  deviceIndex: 1,
  networkCardIndex: 0,
  subnetId: "subnet-0aaaaaaaaaaaaaaa1",
  attachmentId: `eni-attach-0${mac.replace(/:/g, "").slice(-6)}000000000`,
  createdByUs: true,
  ...over,
});

const cfg = (names: string[]) =>
  config({
    eni: names.map((name, i) => ({
      name,
      device_index: i + 1,
      subnet_id: "subnet-0aaaaaaaaaaaaaaa1",
      security_group_ids: ["sg-0dddddddddddddddd"],
      dpdk: { enabled: false },
    })),
  });

t.test("only attached ENIs on record that no source configures", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim, { config: cfg(["data1"]) });
  ctx.state.enis = {
    data1: record("data1", DATA1.mac),
    data2: record("data2", DATA2.mac),
    gone: record("gone", "02:00:00:00:00:99"),
  };
  const [w, ...more] = leftOverEnis(ctx);
  t.same(more, [], "data1 is configured; gone is not attached (no MAC of it in IMDS)");
  t.equal(
    w,
    `ENI eni-00000030000000000 ("data2", MAC ${DATA2.mac}) is no longer configured; eni-dpdk left it as it was, attached: \`aws ec2 detach-network-interface --attachment-id eni-attach-0000003000000000\` then \`aws ec2 delete-network-interface --network-interface-id eni-00000030000000000\` release it`,
    "a kernel ENI: no device to speak of",
  );
  ctx.config = cfg(["data1", "data2"]);
  t.same(leftOverEnis(ctx), [], "configured again: nothing to say");
});

t.test("the device it left bound, an adopted ENI, an external one", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim, { config: cfg([]) });
  ctx.state.enis = {
    data1: record("data1", DATA1.mac, { createdByUs: false }),
    data2: record("data2", DATA2.mac, { attach: "external", createdByUs: false }),
  };
  ctx.state.bindings[DATA1.mac] = {
    mac: DATA1.mac,
    bdf: DATA1.bdf,
    vendor: "1d0f",
    device: "ec20",
    originalDriver: "ena",
    driver: "vfio-pci",
    eniName: "data1",
    boundAt: "2026-12-07T00:00:00.000Z",
  };
  t.same(leftOverEnis(ctx), [
    `ENI eni-00000020000000000 ("data1", MAC ${DATA1.mac}) is no longer configured; eni-dpdk left it as it was, attached: \`aws ec2 detach-network-interface --attachment-id eni-attach-0000002000000000\` release it; its device ${DATA1.bdf} stays on vfio-pci, and no SR-IOV resource of eni-dpdk's offers it now: \`eni-dpdk unbind data1\` returns it to ena`,
    `ENI eni-00000030000000000 ("data2", MAC ${DATA2.mac}) is no longer configured; eni-dpdk left it as it was, attached by the launch template or lifecycle hook that owns it`,
  ]);
});
