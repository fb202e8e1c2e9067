import t from "tap";
import { ImdsEmulator, defaultInstance } from "../../../src/sim/imds.js";
import { spawn } from "node:child_process";
import path from "node:path";
import { MetadataService } from "@aws-sdk/ec2-metadata-service";
import {
  ImdsClient,
  readInstance,
  readLocalHostname,
  readNicNetwork,
  readNics,
  readTags,
  readUserData,
} from "../../../src/cloud/imds.js";
import { Deadline } from "../../../src/core/deadline.js";
import { REPO } from "../../support/repo.js";

t.test("reads identity, NICs, tags and user-data over IMDSv2 with one token", async (t) => {
  const emu = await new ImdsEmulator(
    defaultInstance({
      tags: { team: "net", "eni-dpdk:dpdk": "enabled=true" },
      userData: Buffer.from([0x1f, 0x8b, 0, 255]),
    }),
  ).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  const id = await readInstance(imds);
  t.equal(id.instanceId, "i-0123456789abcdef0");
  t.equal(id.az, "us-west-2a");
  t.equal(id.primaryMac, "02:00:00:00:00:01");
  const nics = await readNics(imds);
  t.same(
    nics.map((n) => [n.mac, n.deviceNumber, n.networkCard]),
    [["02:00:00:00:00:01", 0, 0]],
  );
  t.same(await readTags(imds), { team: "net", "eni-dpdk:dpdk": "enabled=true" });
  t.same(
    [...(await readUserData(imds))!],
    [0x1f, 0x8b, 0, 255],
    "user-data bytes survive (gzip is binary)",
  );
  t.equal(emu.requests.filter((r) => r.path === "/latest/api/token").length, 1, "token reused");
  t.ok(
    emu.requests.every((r) => r.status !== 401),
    "no unauthenticated read",
  );
});

t.test("404s: no tags, no user-data, network-card missing means card 0", async (t) => {
  const inst = defaultInstance({ tags: null, userData: null });
  inst.nics[0].networkCard = undefined;
  const emu = await new ImdsEmulator(inst).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  t.equal(await readTags(imds), undefined);
  t.equal(await readUserData(imds), undefined);
  t.equal((await readNics(imds))[0].networkCard, 0);
});

t.test("expired token is replaced; 500s and late start are waited out", async (t) => {
  const emu = new ImdsEmulator();
  await emu.start({ delayMs: 400 });
  t.teardown(() => emu.close());
  emu.faults.fail500 = 2;
  const imds = new ImdsClient({
    endpoint: emu.url,
    deadline: new Deadline(10_000),
    timeoutMs: 500,
  });
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

t.test("reads share a few keep-alive connections and one token", async (t) => {
  const inst = defaultInstance();
  for (let i = 1; i <= 7; i++) {
    inst.nics.push({
      ...inst.nics[0],
      mac: `02:00:00:00:00:1${i}`,
      deviceNumber: i,
      interfaceId: `eni-0000000000000001${i}`,
    });
  }
  const emu = await new ImdsEmulator(inst).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  const [id, nics] = await Promise.all([readInstance(imds), readNics(imds)]);
  t.equal(id.instanceId, inst.instanceId);
  t.equal(nics.length, 8);
  t.ok(emu.requests.length > 25, `${emu.requests.length} requests`);
  t.ok(emu.connections <= 4, `over ${emu.connections} connection(s), not one per request`);
  t.equal(emu.count("/latest/api/token"), 1);
  for (let i = 0; i < 5; i++) await imds.get("meta-data/instance-id");
  t.ok(emu.connections <= 4, "sequential reads reuse an idle socket");
});

t.test(
  "observation reads only what it needs: the identity document, nothing for the primary, three keys per other MAC, no hostname",
  async (t) => {
    const inst = defaultInstance();
    inst.nics.push({
      ...inst.nics[0],
      mac: "02:00:00:00:00:02",
      deviceNumber: 1,
      interfaceId: "eni-00000000000000002",
    });
    const emu = await new ImdsEmulator(inst).start();
    t.teardown(() => emu.close());
    const imds = new ImdsClient({ endpoint: emu.url });
    const idP = readInstance(imds);
    const nics = await readNics(
      imds,
      idP.then((i) => i.primaryMac),
    );
    const id = await idP;
    t.same(
      [id.instanceId, id.instanceType, id.region, id.az],
      ["i-0123456789abcdef0", "c6in.4xlarge", "us-west-2", "us-west-2a"],
    );
    t.same(nics, [
      { mac: "02:00:00:00:00:01", deviceNumber: 0, networkCard: 0 },
      {
        mac: "02:00:00:00:00:02",
        deviceNumber: 1,
        networkCard: 0,
        interfaceId: "eni-00000000000000002",
      },
    ]);
    const paths = emu.requests.map((r) => r.path).sort();
    t.same(paths, [
      "/latest/api/token",
      "/latest/dynamic/instance-identity/document",
      "/latest/meta-data/mac",
      "/latest/meta-data/network/interfaces/macs/",
      "/latest/meta-data/network/interfaces/macs/02:00:00:00:00:02/device-number",
      "/latest/meta-data/network/interfaces/macs/02:00:00:00:00:02/interface-id",
      "/latest/meta-data/network/interfaces/macs/02:00:00:00:00:02/network-card",
    ]);
    t.same(
      await readNicNetwork(imds, "02:00:00:00:00:01"),
      { subnetId: "subnet-0a1b2c3d4e5f60718", vpcId: "vpc-0a1b2c3d4e5f60718" },
      "subnet and VPC on demand",
    );
  },
);

t.test("a recorded MAC's interface id is not read again; where it sits always is", async (t) => {
  const inst = defaultInstance();
  inst.nics.push({
    ...inst.nics[0],
    mac: "02:00:00:00:00:02",
    deviceNumber: 3,
    interfaceId: "eni-00000000000000002",
  });
  const emu = await new ImdsEmulator(inst).start();
  t.teardown(() => emu.close());
  const imds = new ImdsClient({ endpoint: emu.url });
  const nics = await readNics(
    imds,
    Promise.resolve("02:00:00:00:00:01"),
    new Map([["02:00:00:00:00:02", "eni-00000000000000002"]]),
  );
  t.same(nics[1], {
    mac: "02:00:00:00:00:02",
    deviceNumber: 3,
    networkCard: 0,
    interfaceId: "eni-00000000000000002",
  });
  t.equal(emu.count("/latest/meta-data/network/interfaces/macs/02:00:00:00:00:02/interface-id"), 0);
  t.equal(
    emu.count("/latest/meta-data/network/interfaces/macs/02:00:00:00:00:02/device-number"),
    1,
  );
  t.equal(await readLocalHostname(imds), "ip-10-0-1-10.us-west-2.compute.internal");
});

t.test("without the identity document, the instance comes from the single paths", async (t) => {
  const emu = await new ImdsEmulator(defaultInstance()).start();
  t.teardown(() => emu.close());
  emu.faults.noIdentityDocument = true;
  const id = await readInstance(new ImdsClient({ endpoint: emu.url }));
  t.same(
    [id.instanceId, id.instanceType, id.region, id.az],
    ["i-0123456789abcdef0", "c6in.4xlarge", "us-west-2", "us-west-2a"],
  );
  t.equal(emu.count("/latest/meta-data/placement/region"), 1);
});

t.test(
  "the emulator speaks IMDSv2 as the AWS SDK's own client expects (reference check)",
  async (t) => {
    const emu = await new ImdsEmulator(defaultInstance()).start();
    t.teardown(() => emu.close());
    const sdk = new MetadataService({
      endpoint: emu.url,
      ec2MetadataV1Disabled: true,
      httpOptions: { timeout: 2000 },
      retries: 0,
    });
    const token = await sdk.fetchMetadataToken();
    t.match(token, /^\S{20,}$/);
    t.equal(await sdk.request("latest/meta-data/instance-id", {}), "i-0123456789abcdef0");
    t.match(
      await sdk.request("latest/meta-data/network/interfaces/macs/", {}),
      /02:00:00:00:00:01\//,
    );
    const doc = JSON.parse(await sdk.request("latest/dynamic/instance-identity/document", {}));
    t.equal(doc.availabilityZone, "us-west-2a");
    t.ok(
      emu.requests.every((r) => r.status === 200),
      "every SDK request was answered 200",
    );
  },
);

t.test(
  "a process that read IMDS exits on its own: idle keep-alive sockets do not hold it",
  async (t) => {
    const emu = new ImdsEmulator(defaultInstance());
    emu.keepAliveMs = 60_000;
    await emu.start();
    t.teardown(() => emu.close());
    const script = `import { ImdsClient } from ${JSON.stringify(path.join(REPO, "src/cloud/imds.ts"))};
const c = new ImdsClient({ endpoint: process.argv[1] });
console.log(await c.get("meta-data/instance-id"));`;
    const t0 = Date.now();
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script, emu.url],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.on("exit", r));
    t.equal(code, 0);
    t.equal(out.trim(), "i-0123456789abcdef0");
    // The emulator keeps idle connections for 60 s here; a socket holding the process would show as that.
    t.ok(Date.now() - t0 < 30_000, `exited after ${Date.now() - t0} ms`);
  },
);

t.test(
  "tags: keys go raw (IMDS does not decode %3A); an unservable key is skipped, warned; a listed key's 404 is an error",
  async (t) => {
    const { OpError } = await import("../../../src/core/errors.js");
    const emu = await new ImdsEmulator(
      defaultInstance({ tags: { "eni-dpdk:eni:data1": "device_index=1", "a+b=c.d,e_f@g": "v" } }),
    ).start();
    t.teardown(() => emu.close());
    const warnings: unknown[][] = [];
    const logger = {
      warn: (...a: unknown[]) => warnings.push(a),
    } as unknown as import("../../../src/core/log.js").Logger;
    const imds = new ImdsClient({ endpoint: emu.url, logger });
    t.same(await readTags(imds), { "eni-dpdk:eni:data1": "device_index=1", "a+b=c.d,e_f@g": "v" });
    t.ok(
      emu.requests.some(
        (r) => r.path === "/latest/meta-data/tags/instance/eni-dpdk:eni:data1" && r.status === 200,
      ),
      "the raw key",
    );
    t.notOk(
      emu.requests.some((r) => r.path.includes("%3A")),
      "never percent-encoded",
    );
    t.equal(
      await imds.get("meta-data/tags/instance/eni-dpdk%3Aeni%3Adata1"),
      undefined,
      "the emulator, like IMDS, does not decode a percent-encoded key",
    );

    emu.instance.tags = { "kubernetes.io/cluster/x": "owned", "has space": "x", ok: "1" };
    t.same(await readTags(imds), { ok: "1" }, "keys IMDS cannot serve are skipped");
    t.same(
      warnings.map((w) => (w[1] as { tag: string }).tag).sort(),
      ["has space", "kubernetes.io/cluster/x"],
      "each with a warning naming it",
    );

    // A key IMDS lists but does not serve: the tag exists, so skipping it would lose config.
    const flaky = {
      ...imds,
      get: async (p: string) =>
        p.endsWith("tags/instance/") ? "eni-dpdk:dpdk\nok" : p.endsWith("/ok") ? "1" : undefined,
      getBytes: imds.getBytes,
      logger,
    };
    const err = await readTags(flaky).catch((e: unknown) => e);
    t.ok(err instanceof OpError, String(err));
    t.match(
      (err as Error).message,
      /IMDS lists instance tag "eni-dpdk:dpdk" but answered 404 for meta-data\/tags\/instance\/eni-dpdk:dpdk/,
    );
    t.same((err as InstanceType<typeof OpError>).fields, { tag: "eni-dpdk:dpdk" });
  },
);
