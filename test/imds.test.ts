import t from "tap";
import { ImdsEmulator, defaultInstance } from "./emulators/imds.js";
import { ImdsClient, readInstance, readNics, readTags, readUserData } from "../src/imds.js";
import { Deadline } from "../src/host.js";

t.test("reads identity, NICs, tags and user-data over IMDSv2 with one token", async (t) => {
  const emu = await new ImdsEmulator(defaultInstance({ tags: { team: "net", "eni-dpdk:dpdk": "enabled=true" }, userData: Buffer.from([0x1f, 0x8b, 0, 255]) })).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  const id = await readInstance(imds);
  t.equal(id.instanceId, "i-0123456789abcdef0");
  t.equal(id.az, "us-west-2a");
  t.equal(id.primaryMac, "02:00:00:00:00:01");
  const nics = await readNics(imds);
  t.same(nics.map((n) => [n.mac, n.deviceNumber, n.networkCard]), [["02:00:00:00:00:01", 0, 0]]);
  t.same(await readTags(imds), { team: "net", "eni-dpdk:dpdk": "enabled=true" });
  t.same([...(await readUserData(imds))!], [0x1f, 0x8b, 0, 255], "user-data bytes survive (gzip is binary)");
  t.equal(emu.requests.filter((r) => r.path === "/latest/api/token").length, 1, "token reused");
  t.ok(emu.requests.every((r) => r.status !== 401), "no unauthenticated read");
});

t.test("404s: no tags, no user-data, network-card missing means card 0", async (t) => {
  const inst = defaultInstance({ tags: null, userData: null });
  inst.nics[0]!.networkCard = undefined;
  const emu = await new ImdsEmulator(inst).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  t.equal(await readTags(imds), undefined);
  t.equal(await readUserData(imds), undefined);
  t.equal((await readNics(imds))[0]!.networkCard, 0);
});

t.test("expired token is replaced; 500s and late start are waited out", async (t) => {
  const emu = new ImdsEmulator();
  await emu.start({ delayMs: 400 });
  t.teardown(() => emu.close());
  emu.faults.fail500 = 2;
  const imds = new ImdsClient({ endpoint: emu.url, deadline: new Deadline(10_000), timeoutMs: 500 });
  t.equal((await readInstance(imds)).instanceType, "c6in.4xlarge");
  emu.expireTokens();
  t.equal(await imds.get("meta-data/instance-id"), "i-0123456789abcdef0");
  t.equal(emu.requests.filter((r) => r.path === "/latest/api/token" && r.status === 200).length, 2);
});

t.test("gives up at the deadline with a message naming the endpoint", async (t) => {
  const emu = await new ImdsEmulator().start();
  emu.faults.fail500 = 1000;
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url, deadline: new Deadline(600) });
  await t.rejects(imds.get("meta-data/instance-id"), /did not answer .* before the deadline/);
});

t.test("a PUT without the TTL header is refused by the emulator (IMDSv2 semantics)", async (t) => {
  const emu = await new ImdsEmulator().start();
  t.teardown(() => emu.close());
  const r = await fetch(`${emu.url}/latest/api/token`, { method: "PUT" });
  t.equal(r.status, 400);
  const r2 = await fetch(`${emu.url}/latest/meta-data/instance-id`);
  t.equal(r2.status, 401, "no IMDSv1");
});
