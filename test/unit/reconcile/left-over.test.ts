// leftOverEnis: which recorded ENIs no source configures any more, and what each warning says.
import t from "tap";
import { leftOverEnis } from "../../../src/reconcile/eni.js";
import type { EniRecord } from "../../../src/host/state.js";
import { config, DATA1, DATA2, node, simHost, stageCtx } from "../../support/fixture.js";

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

t.test("the warning names the sources the record says configured the ENI", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const ctx = stageCtx(sim, { config: cfg([]) });
  ctx.state.enis = {
    data1: record("data1", DATA1.mac, {
      configuredBy: [
        { source: "tags", name: "eni-dpdk:eni:data1" },
        { source: "user-data", name: "user-data part 2 (application/eni-dpdk+toml)" },
      ],
    }),
    data2: record("data2", DATA2.mac, { configuredBy: [{ source: "nodeeni", name: "pool-a" }] }),
  };
  const [w1, w2] = leftOverEnis(ctx);
  t.match(
    w1,
    `("data1", MAC ${DATA1.mac}) is no longer configured (it came from the instance tag eni-dpdk:eni:data1; user-data part 2 (application/eni-dpdk+toml)); eni-dpdk left it`,
  );
  t.match(
    w2,
    `is no longer configured (it came from NodeENI pool-a, now deleted or no longer selecting this node); eni-dpdk left it`,
  );
});

t.test("a state file's record of another shape loses its sources, and only them", async (t) => {
  const sim = node();
  t.teardown(() => sim.close());
  const { loadState, saveState, emptyState } = await import("../../../src/host/state.js");
  const host = simHost(sim);
  const s = emptyState();
  s.instanceId = "i-0123456789abcdef0";
  s.enis = {
    good: record("good", DATA1.mac, { configuredBy: [{ source: "file", name: "/etc/x.toml" }] }),
    odd: record("odd", DATA2.mac, {
      configuredBy: [{ source: "nowhere", name: "x" }] as unknown as EniRecord["configuredBy"],
    }),
  };
  await saveState(host, s);
  const loaded = await loadState(host);
  t.same(loaded.enis.good.configuredBy, [{ source: "file", name: "/etc/x.toml" }]);
  t.equal(loaded.enis.odd.configuredBy, undefined, "an unknown source: dropped");
  t.equal(loaded.enis.odd.eniId, s.enis.odd.eniId, "the record itself is kept");
});

t.test(
  "releasedEnis: only records of no source, absent from IMDS, whose device is gone",
  async (t) => {
    const { releasedEnis } = await import("../../../src/reconcile/eni.js");
    const sim = node();
    t.teardown(() => sim.close());
    const ctx = stageCtx(sim, { config: cfg(["kept"]) });
    const binding = (mac: string, bdf: string, eniName: string) => ({
      mac,
      bdf,
      vendor: "1d0f",
      device: "ec20",
      originalDriver: "ena",
      driver: "vfio-pci",
      eniName,
      boundAt: "2026-12-07T00:00:00.000Z",
    });
    const GONE_MAC = "02:00:00:00:00:99";
    const STILL_MAC = "02:00:00:00:00:98";
    ctx.state.enis = {
      kept: record("kept", "02:00:00:00:00:97"), // configured, not in IMDS: the eni stage attaches it
      attached: record("attached", DATA1.mac), // IMDS lists it: the left-over warning's case
      gone: record("gone", GONE_MAC),
      still: record("still", STILL_MAC),
    };
    ctx.state.bindings = {
      [GONE_MAC]: binding(GONE_MAC, "0000:00:1e.0", "gone"),
      // IMDS does not list it, but its device is still in sysfs: kept, whatever IMDS says
      [STILL_MAC]: binding(STILL_MAC, DATA2.bdf, "still"),
      // a binding alone (a `bind` by hand), of a device that left
      "02:00:00:00:00:96": binding("02:00:00:00:00:96", "0000:00:1f.0", ""),
    };
    t.same(await releasedEnis(ctx), [
      { name: "gone", eniId: ctx.state.enis.gone.eniId, mac: GONE_MAC, bdf: "0000:00:1e.0" },
      { mac: "02:00:00:00:00:96", bdf: "0000:00:1f.0" },
    ]);
  },
);
