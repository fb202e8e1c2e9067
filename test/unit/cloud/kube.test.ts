import t, { type Test } from "tap";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Host } from "../../../src/host/host.js";
import { OpError } from "../../../src/core/errors.js";
import { defaults } from "../../../src/config/model.js";
import {
  isTransient,
  KubeApiError,
  KubeClient,
  KubeUnreachableError,
  loadKubeconfig,
  resolveKubeTarget,
} from "../../../src/cloud/kube.js";
import { KubeApiEmulator, testPki } from "../../../src/sim/kube-api.js";
import { kubeconfig } from "../../support/kube.js";

const pki = testPki();
const obj = (
  name: string,
  spec: Record<string, unknown> = { nodeSelector: {}, subnetID: "subnet-0123456789abcdef0" },
) => ({ metadata: { name }, spec });

async function emulator(t: Test, objects = [obj("a"), obj("b")]) {
  const emu = await new KubeApiEmulator(objects).start();
  emu.tokens.set("good-token", "system:node:test");
  t.teardown(() => emu.close());
  return emu;
}

function client(
  t: Test,
  emu: KubeApiEmulator,
  over: Partial<ConstructorParameters<typeof KubeClient>[0]> = {},
) {
  const c = new KubeClient(
    {
      server: emu.url,
      ca: pki.caCert,
      auth: { kind: "token", token: "good-token" },
      source: "test",
      ...over,
    },
    { timeoutMs: 3000 },
  );
  t.teardown(() => c.close());
  return c;
}

t.test(
  "lists NodeENIs over HTTPS, trusting only the given CA and sending the bearer token",
  async (t) => {
    const emu = await emulator(t);
    const c = client(t, emu);
    const list = await c.listNodeEnis();
    t.same(
      list.items.map((o) => o.metadata.name),
      ["a", "b"],
    );
    t.match(list.resourceVersion, /^\d+$/);
    t.equal(emu.requests.at(-1)!.user, "system:node:test");
    const one = await c.getNodeEni("a");
    t.equal(one.spec?.subnetID, "subnet-0123456789abcdef0");
  },
);

t.test("a bad bearer token is a 401 KubeApiError, not an outage", async (t) => {
  const emu = await emulator(t);
  const c = client(t, emu, { auth: { kind: "token", token: "wrong" } });
  const err = await c.listNodeEnis().catch((e: unknown) => e);
  t.ok(err instanceof KubeApiError);
  t.equal((err as KubeApiError).status, 401);
  t.match((err as Error).message, /401 Unauthorized/);
  t.notOk(isTransient(err));
});

t.test("an untrusted server certificate is an OpError naming the CA settings", async (t) => {
  const emu = await emulator(t);
  const err = await client(t, emu, { ca: pki.otherCaCert })
    .listNodeEnis()
    .catch((e: unknown) => e);
  t.ok(err instanceof OpError, String(err));
  t.match((err as OpError).message, /certificate we do not trust/);
  t.match((err as OpError).hint, /certificateAuthority/);
  t.notOk(isTransient(err));
});

t.test("outages: reset connections, 503s and a closed port are transient", async (t) => {
  const emu = await emulator(t);
  const c = client(t, emu);
  emu.faults.down = true;
  const e1 = await c.listNodeEnis().catch((e: unknown) => e);
  t.ok(e1 instanceof KubeUnreachableError, String(e1));
  t.ok(isTransient(e1));
  emu.faults.down = false;
  emu.faults.fail503 = 1;
  const e2 = await c.listNodeEnis().catch((e: unknown) => e);
  t.ok(e2 instanceof KubeUnreachableError);
  t.match((e2 as Error).message, /503/);
  t.equal((await c.listNodeEnis()).items.length, 2, "answers again after the outage");
  const port = new URL(emu.url).port;
  await emu.close();
  const e3 = await new KubeClient({
    server: `https://127.0.0.1:${port}`,
    ca: pki.caCert,
    auth: { kind: "token", token: "x" },
    source: "test",
  })
    .listNodeEnis()
    .catch((e: unknown) => e);
  t.ok(e3 instanceof KubeUnreachableError);
  t.match((e3 as Error).message, /ECONNREFUSED/);
});

t.test("status patch is conditional on resourceVersion: a stale one gets 409", async (t) => {
  const emu = await emulator(t);
  const c = client(t, emu);
  const a = await c.getNodeEni("a");
  const att = {
    nodeID: "n1",
    instanceID: "i-1",
    eniID: "eni-1",
    attachmentID: "eni-attach-1",
    status: "attached",
    lastUpdated: "2024-01-01T00:00:00Z",
  };
  const patched = await c.patchNodeEniStatus("a", a.metadata.resourceVersion!, [att]);
  t.same(patched.status?.attachments, [att]);
  t.equal(patched.spec?.subnetID, "subnet-0123456789abcdef0", "spec untouched");
  const err = await c
    .patchNodeEniStatus("a", a.metadata.resourceVersion!, [])
    .catch((e: unknown) => e);
  t.ok(err instanceof KubeApiError);
  t.equal((err as KubeApiError).status, 409);
  t.same(emu.get("a")!.status?.attachments, [att], "the conflicting write changed nothing");
  const patchReq = emu.requests.find((r) => r.method === "PATCH")!;
  t.match(patchReq.path, /\/nodeenis\/a\/status$/);
});

t.test("kubeconfig: client certificate, token file, EKS exec plugin", async (t) => {
  const emu = await emulator(t);
  const root = mkdtempSync(path.join(os.tmpdir(), "kubecfg-"));
  const host = new Host(root);
  mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  // `user` as a block under `user:`
  const write = (name: string, user: string) =>
    writeFileSync(path.join(root, "etc/eni-dpdk", name), kubeconfig(emu.url, `\n${user}\n`));
  write(
    "cert.yaml",
    `    client-certificate-data: ${b64(pki.clientCert)}\n    client-key-data: ${b64(pki.clientKey)}`,
  );
  const certTarget = await loadKubeconfig(host, "/etc/eni-dpdk/cert.yaml", { region: "us-west-2" });
  t.equal(certTarget.auth.kind, "cert");
  const c = new KubeClient(certTarget);
  t.teardown(() => c.close());
  t.equal((await c.listNodeEnis()).items.length, 2);
  t.equal(
    emu.requests.at(-1)!.user,
    "system:node:ip-10-0-1-10.us-west-2.compute.internal",
    "authenticated by the client certificate",
  );

  writeFileSync(path.join(root, "etc/eni-dpdk/token"), "good-token\n");
  write("tokenfile.yaml", "    tokenFile: token");
  const tokTarget = await loadKubeconfig(host, "/etc/eni-dpdk/tokenfile.yaml", {
    region: "us-west-2",
  });
  t.same(tokTarget.auth, { kind: "token", token: "good-token" });

  write(
    "exec.yaml",
    "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [--region, eu-west-1, eks, get-token, --cluster-name, prod]",
  );
  const execTarget = await loadKubeconfig(host, "/etc/eni-dpdk/exec.yaml", { region: "us-west-2" });
  t.same(execTarget.auth, { kind: "eks", clusterName: "prod", region: "eu-west-1" });

  write("bad.yaml", "    exec:\n      command: gke-gcloud-auth-plugin");
  await t.rejects(
    loadKubeconfig(host, "/etc/eni-dpdk/bad.yaml", { region: "us-west-2" }),
    /exec plugin other than aws eks get-token/,
  );
  await t.rejects(
    loadKubeconfig(host, "/etc/eni-dpdk/missing.yaml", { region: "us-west-2" }),
    /does not exist/,
  );
});

t.test(
  "resolveKubeTarget: NodeConfig by default, [kubernetes] overrides, nothing → undefined",
  async (t) => {
    const host = new Host(mkdtempSync(path.join(os.tmpdir(), "kubetarget-")));
    const k8s = defaults().kubernetes;
    const nodeConfig = {
      name: "demo",
      apiServerEndpoint: "https://ABC.gr7.us-west-2.eks.amazonaws.com",
      certificateAuthority: Buffer.from(pki.caCert).toString("base64"),
      source: "user-data part 1 (application/node.eks.aws)",
    };
    t.equal(await resolveKubeTarget({ k8s, region: "us-west-2", host }), undefined);
    const tgt = (await resolveKubeTarget({ k8s, nodeConfig, region: "us-west-2", host }))!;
    t.equal(tgt.server, nodeConfig.apiServerEndpoint);
    t.equal(tgt.ca, pki.caCert);
    t.same(tgt.auth, { kind: "eks", clusterName: "demo", region: "us-west-2" });
    const over = (await resolveKubeTarget({
      k8s: { ...k8s, api_server: "https://10.0.0.1:6443", cluster_name: "other" },
      nodeConfig,
      region: "us-west-2",
      host,
    }))!;
    t.equal(over.server, "https://10.0.0.1:6443");
    t.same(over.auth, { kind: "eks", clusterName: "other", region: "us-west-2" });
    await t.rejects(
      resolveKubeTarget({
        k8s: { ...k8s, api_server: "https://10.0.0.1:6443" },
        region: "us-west-2",
        host,
      }),
      /no cluster name/,
    );
    await t.rejects(
      resolveKubeTarget({
        k8s,
        nodeConfig: { ...nodeConfig, certificateAuthority: Buffer.from("nope").toString("base64") },
        region: "us-west-2",
        host,
      }),
      /not base64 of a PEM certificate/,
    );
  },
);

t.test(
  "EKS token authentication end to end: the emulator verifies the token's signature",
  async (t) => {
    const emu = await emulator(t);
    const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" };
    emu.eks = {
      clusterName: "demo",
      accessKeyId: "AKIDEXAMPLE",
      secretAccessKey: "secret",
      stsHosts: ["sts.us-west-2.amazonaws.com"],
      user: "system:node:ip-10-0-1-10",
    };
    const good = client(t, emu, {
      auth: { kind: "eks", clusterName: "demo", region: "us-west-2", credentials },
    });
    t.equal((await good.listNodeEnis()).items.length, 2);
    t.equal(emu.requests.at(-1)!.user, "system:node:ip-10-0-1-10");
    const wrong = client(t, emu, {
      auth: { kind: "eks", clusterName: "not-demo", region: "us-west-2", credentials },
    });
    const err = await wrong.listNodeEnis().catch((e: unknown) => e);
    t.equal((err as KubeApiError).status, 401);
    t.match(emu.lastTokenError, /signature mismatch/);
    const noCreds = client(t, emu, {
      auth: {
        kind: "eks",
        clusterName: "demo",
        region: "us-west-2",
        credentials: async () => Promise.reject(new Error("no instance profile")),
      },
    });
    const e2 = await noCreds.listNodeEnis().catch((e: unknown) => e);
    t.ok(e2 instanceof OpError);
    t.match((e2 as Error).message, /cannot make the EKS token .*no instance profile/);
  },
);

// ---- input hardening (issue 13) ------------------------------------------------------------------

t.test(
  "a list answer whose items is not an array, or a body that is not JSON, is an OpError naming the server",
  async (t) => {
    const emu = await emulator(t);
    const c = client(t, emu);
    for (const bad of [{ a: 1 }, "items", null]) {
      (emu as unknown as { list: () => unknown }).list = () => bad;
      const err = await c.listNodeEnis().catch((e: unknown) => e);
      t.ok(err instanceof OpError, `${JSON.stringify(bad)}: ${String(err)}`);
      t.match(
        (err as Error).message,
        new RegExp(
          `the API server ${emu.url.replace(/[.]/g, "\\.")} answered the NodeENI list .* without an items array`,
        ),
      );
      t.match((err as OpError).hint, /expected a NodeENIList/);
    }
    const https = await import("node:https");
    const proxy = https.createServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) =>
      res.end("<html>login</html>"),
    );
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    t.teardown(() => proxy.close());
    const url = `https://127.0.0.1:${(proxy.address() as import("node:net").AddressInfo).port}`;
    const p = client(t, emu, { server: url });
    const err = await p.listNodeEnis().catch((e: unknown) => e);
    t.ok(err instanceof OpError, String(err));
    t.match((err as Error).message, /answered a body that is not JSON \("<html>login<\/html>"\)/);
  },
);

t.test("kubeconfig: shapes are checked and named; its files must be trusted", async (t) => {
  const { InputError, formatProblem } = await import("../../../src/core/errors.js");
  const { chmodSync } = await import("node:fs");
  const root = mkdtempSync(path.join(os.tmpdir(), "kubecfg-"));
  const host = new Host(root);
  mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
  const load = async (yaml: string, mode = 0o600) => {
    const f = path.join(root, "etc/eni-dpdk/kc.yaml");
    writeFileSync(f, yaml);
    chmodSync(f, mode);
    const e = await loadKubeconfig(host, "/etc/eni-dpdk/kc.yaml", { region: "us-west-2" }).catch(
      (x: unknown) => x,
    );
    if (!(e instanceof InputError))
      return String(e instanceof Error ? e.message : JSON.stringify(e));
    return e.problems.map(formatProblem).join(" | ");
  };
  const good = (user: string) =>
    `current-context: ctx\nclusters:\n- name: c1\n  cluster: {server: "https://10.0.0.1"}\n` +
    `contexts:\n- name: ctx\n  context: {cluster: c1, user: u1}\nusers:\n- name: u1\n  user: ${user}\n`;
  t.match(
    await load(good("{token: abc}"), 0o666),
    /^\/etc\/eni-dpdk\/kc\.yaml .*: kubernetes\.kubeconfig: is group- and world-writable \(mode 0666\).*chmod go-w/,
  );
  t.match(
    await load("clusters: {c1: {server: x}}\n"),
    /: clusters: expected a list of \{name, cluster\} entries, got object/,
  );
  t.match(
    await load("contexts:\n- context: {}\n"),
    /: contexts\[0\]\.name: expected a non-empty string/,
  );
  t.match(
    await load("contexts:\n- name: ctx\n  context: [a]\n"),
    /: contexts\[0\]\.context: expected a mapping, got a list/,
  );
  t.match(await load("- a\n- b\n"), /: \(document\): expected a mapping/);
  t.match(await load("current-context: [x]\n"), /: current-context: expected a string/);
  t.match(
    await load("current-context: constructor\ncontexts: []\n"),
    /: current-context: has no context "constructor"/,
    "a context is never found on Object.prototype",
  );
  t.match(
    await load(good("{exec: {args: get-token}}")),
    /users\[u1\]\.user\.exec\.args: expected a list of strings/,
  );
  t.match(
    await load(good("{exec: {args: [eks, get-token, --cluster-name, x], env: {AWS_REGION: x}}}")),
    /users\[u1\]\.user\.exec\.env: expected a list of \{name, value\} string pairs/,
  );
  t.match(
    await load(good("{token: [a]}")),
    /users\[u1\]\.user\.token: expected a string, got a list/,
  );
  await load(
    good(
      "{exec: {args: [eks, get-token, --cluster-name, prod], env: [{name: AWS_REGION, value: eu-west-1}]}}",
    ),
  );
  const tgt = await loadKubeconfig(host, "/etc/eni-dpdk/kc.yaml", { region: "us-west-2" });
  t.same(tgt.auth, { kind: "eks", clusterName: "prod", region: "eu-west-1" });
  writeFileSync(path.join(root, "etc/eni-dpdk/token"), "t0k\n");
  chmodSync(path.join(root, "etc/eni-dpdk/token"), 0o646);
  t.match(
    await load(good("{tokenFile: token}")),
    /: users\[u1\]\.user\.tokenFile: is world-writable \(mode 0646\)/,
    "a file the kubeconfig names is checked too",
  );
  const caRoot = mkdtempSync(path.join(os.tmpdir(), "kubeca-"));
  mkdirSync(path.join(caRoot, "etc"), { recursive: true });
  writeFileSync(path.join(caRoot, "etc/ca.pem"), pki.caCert);
  chmodSync(path.join(caRoot, "etc/ca.pem"), 0o664);
  const k8s = {
    ...defaults().kubernetes,
    api_server: "https://10.0.0.1",
    ca_file: "/etc/ca.pem",
    cluster_name: "x",
  };
  const e = await resolveKubeTarget({ k8s, region: "us-west-2", host: new Host(caRoot) }).catch(
    (x: unknown) => x,
  );
  t.ok(e instanceof InputError, String(e));
  t.match(
    formatProblem((e as InstanceType<typeof InputError>).problems[0]),
    /^\/etc\/ca\.pem .*: kubernetes\.ca_file: is group-writable \(mode 0664\)/,
  );
  const nope = { ...k8s, ca_file: "/etc/nope.pem" };
  const missing = await resolveKubeTarget({
    k8s: nope,
    region: "us-west-2",
    host: new Host(caRoot),
  }).catch((x: unknown) => x);
  t.ok(missing instanceof InputError);
  t.match((missing as Error).message, /kubernetes\.ca_file: no such file/);
});
