import t, { type Test } from "tap";
import { gzipSync } from "node:zlib";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { decodeUserData, renderUserData } from "../../../src/sources/mime.js";
import {
  loadToml,
  parseToml,
  saveTomlMemo,
  TOML_MEMO_PATH,
  TOML_PARSER,
} from "../../../src/sources/toml.js";
import { envLayers } from "../../../src/sources/env.js";
import { fileLayers } from "../../../src/sources/file.js";
import { REPO } from "../../support/repo.js";
import { gather } from "../../../src/sources/chain.js";
import { type SourceContext } from "../../../src/sources/source.js";
import { ImdsClient } from "../../../src/cloud/imds.js";
import { Deadline } from "../../../src/core/deadline.js";
import { silentLogger } from "../../../src/core/log.js";
import { Session } from "../../../src/reconcile/session.js";
import { defaultInstance, ImdsEmulator } from "../../../src/sim/imds.js";
import { tagLayers } from "../../../src/sources/tags.js";
import { userDataLayers } from "../../../src/sources/userdata.js";

// tomlLayer and userDataLayers are synchronous; the parser itself loads lazily (see loadToml).
await loadToml();
import { buildConfig } from "../../../src/config/model.js";
import { InputError, formatProblem } from "../../../src/core/errors.js";
import { Host } from "../../../src/host/host.js";

/** The chain's context without an instance (file and env only). */
const local = (host: Host): SourceContext => ({ host, log: silentLogger, env: {} });

/** An instance for the sources that need one: the IMDSv2 emulator over HTTP, with this user-data and these tags. */
async function onInstance(
  t: Test,
  over: { userData?: string; tags?: Record<string, string> },
): Promise<Session> {
  const imds = await new ImdsEmulator(
    defaultInstance({ userData: over.userData ?? null, tags: over.tags ?? {} }),
  ).start();
  t.teardown(() => imds.close());
  return new Session(
    silentLogger,
    new Deadline(5000),
    new ImdsClient({ endpoint: imds.url, deadline: new Deadline(5000) }),
  );
}

const ours = `[dpdk]
hugepages_2m = 512
[[eni]]
name = "d1"
device_index = 1
subnet_id = "subnet-01234567"
security_group_ids = ["sg-01234567"]
dpdk.resource_name = "amazon.com/ena_dpdk"
`;
const ours2 = `[[eni]]
name = "d1"
mtu = 1500
[[eni]]
name = "k1"
device_index = 2
subnet_id = "subnet-01234567"
security_group_ids = ["sg-01234567"]
dpdk.enabled = false
`;
const nodeConfig = `apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: prod
    apiServerEndpoint: https://example.eks.amazonaws.com
    certificateAuthority: Y2E=
`;
const multipart = (parts: [string, string, Record<string, string>?][]) =>
  `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BOUNDARY"\n\n` +
  parts
    .map(
      ([type, body, h]) =>
        `--BOUNDARY\nContent-Type: ${type}\n${Object.entries(h ?? {})
          .map(([k, v]) => `${k}: ${v}\n`)
          .join("")}\n${body}\n`,
    )
    .join("") +
  `--BOUNDARY--\n`;

const OUR = "application/eni-dpdk+toml";
const merged = (raw: Buffer) => buildConfig(userDataLayers(raw).layers).config;

t.test("decoding paths: raw TOML, base64, gzip, base64(gzip)", async (t) => {
  for (const [label, raw] of [
    ["raw", Buffer.from(ours)],
    ["base64", Buffer.from(Buffer.from(ours).toString("base64"))],
    ["gzip", gzipSync(ours)],
    ["base64 of gzip", Buffer.from(gzipSync(ours).toString("base64"))],
  ] as const) {
    const c = merged(raw);
    t.equal(c.dpdk.hugepages_2m, 512, label);
    t.equal(c.eni[0].name, "d1", label);
  }
});

t.test(
  "MIME: NodeConfig, a shell script and two of our parts (one base64, one gzip+base64) merge in order",
  async (t) => {
    const doc = multipart([
      ["application/node.eks.aws", nodeConfig],
      ["text/x-shellscript; charset=us-ascii", "#!/bin/bash\necho hi"],
      [
        "application/eni-dpdk+toml",
        Buffer.from(ours).toString("base64"),
        { "Content-Transfer-Encoding": "base64" },
      ],
      ["application/eni-dpdk+toml", gzipSync(ours2).toString("base64")],
    ]);
    const r = userDataLayers(Buffer.from(doc));
    t.same(
      r.layers.map((l) => l.source),
      [
        "user-data part 3 (application/eni-dpdk+toml)",
        "user-data part 4 (application/eni-dpdk+toml)",
      ],
    );
    t.same(
      r.parts.map((p) => p.contentType),
      [
        "application/node.eks.aws",
        "text/x-shellscript",
        "application/eni-dpdk+toml",
        "application/eni-dpdk+toml",
      ],
    );
    t.match(r.parts[0].text, /apiServerEndpoint: https:\/\/example/);
    const eff = buildConfig(r.layers);
    t.same(
      eff.config.eni.map((e) => [e.name, e.mtu]),
      [
        ["d1", 1500],
        ["k1", 9001],
      ],
    );
    t.equal(eff.origin["eni.d1.mtu"], "user-data part 4 (application/eni-dpdk+toml):3:1");
    // the whole document base64-encoded, as the EC2 console would pass it through
    t.equal(userDataLayers(Buffer.from(Buffer.from(doc).toString("base64"))).layers.length, 2);
  },
);

t.test("someone else's user-data means no config; empty and absent too", async (t) => {
  for (const [label, raw] of [
    ["script", "#!/bin/bash\nset -e\n/etc/eks/bootstrap.sh prod\n"],
    ["cloud-config", "#cloud-config\npackages: [jq]\n"],
    ["nodeadm yaml", nodeConfig],
    ["foreign TOML", "[agent]\nlevel = 3\n"],
    [
      "mime without our part",
      multipart([
        ["application/node.eks.aws", nodeConfig],
        ["text/x-shellscript", "#!/bin/sh\ntrue"],
      ]),
    ],
  ] as const) {
    const r = userDataLayers(Buffer.from(raw));
    t.equal(r.layers.length, 0, label);
  }
  t.equal(userDataLayers(Buffer.alloc(0)).layers.length, 0, "empty");
  t.equal(userDataLayers(undefined).summary, "no user-data", "404");
});

t.test("a broken document meant for us is an error naming the part and position", async (t) => {
  const broken = multipart([
    ["application/node.eks.aws", nodeConfig],
    ["application/eni-dpdk+toml", "[dpdk]\nenabled = = true\n"],
  ]);
  const e = t.throws(() => userDataLayers(Buffer.from(broken))) as InputError;
  t.match(
    formatProblem(e.problems[0]),
    /^user-data part 2 \(application\/eni-dpdk\+toml\):2:\d+: \(syntax\): not valid TOML/,
  );
  const plain = t.throws(() => userDataLayers(Buffer.from("[[eni]]\nname = \n"))) as InputError;
  t.match(plain.problems[0].source, /^user-data:2:/);
  const typo = t.throws(() =>
    buildConfig(userDataLayers(Buffer.from("[dpdk]\nhugepages = 4\n")).layers),
  ) as InputError;
  t.same(typo.problems.map(formatProblem), [
    'user-data:2:1: dpdk.hugepages: unknown key; did you mean "hugepages_2m"? (known: enabled, driver, binding_script, noiommu, hugepages_2m, hugepages_1g)',
  ]);
  t.throws(() => userDataLayers(Buffer.from([0x1f, 0x8b, 1, 2, 3])), /gzip data is corrupt/);
});

t.test("renderUserData round-trips through the decoder", async (t) => {
  const doc = renderUserData(nodeConfig, ours);
  const parts = decodeUserData(Buffer.from(doc));
  t.same(
    parts.map((p) => p.contentType),
    ["application/node.eks.aws", "application/eni-dpdk+toml"],
  );
  t.equal(parts[1].text.trim(), ours.trim());
  t.equal(merged(Buffer.from(doc)).eni[0].name, "d1");
});

t.test("tags: eni and node-level tags, dotted keys, lists, coercion", async (t) => {
  const layers = tagLayers({
    "eni-dpdk:eni:data1":
      "device_index=1;subnet_id=subnet-01234567;security_group_ids=sg-01234567,sg-89abcdef;mtu=9001;dpdk.driver=vfio-pci;dpdk.resource_name=amazon.com/ena_dpdk_1;tags.team=net",
    "eni-dpdk:dpdk": "enabled=true;hugepages_2m=1024",
    "eni-dpdk:sriov": "resource_prefix=example.com",
    Name: "node-1",
  });
  const eff = buildConfig(layers);
  const e = eff.config.eni[0];
  t.same(
    [e.name, e.device_index, e.security_group_ids, e.mtu, e.dpdk.resource_name, e.tags],
    ["data1", 1, ["sg-01234567", "sg-89abcdef"], 9001, "amazon.com/ena_dpdk_1", { team: "net" }],
  );
  t.equal(eff.config.dpdk.hugepages_2m, 1024);
  t.equal(eff.config.sriov.resource_prefix, "example.com");
  t.equal(eff.origin["eni.data1.mtu"], "tag eni-dpdk:eni:data1");
});

t.test("bad tags name the tag key", async (t) => {
  const e1 = t.throws(() =>
    buildConfig(
      tagLayers({
        "eni-dpdk:eni:d1":
          "device_index=one;subnet_id=subnet-01234567;security_group_ids=sg-01234567;dpdk.enabled=false",
      }),
    ),
  ) as InputError;
  t.same(e1.problems.map(formatProblem), [
    'tag eni-dpdk:eni:d1: eni.d1.device_index: expected an integer, got "one"',
  ]);
  const e2 = t.throws(() =>
    tagLayers({ "eni-dpdk:hugepages": "x=1", "eni-dpdk:dpdk": "enabled" }),
  ) as InputError;
  t.same(e2.problems.map((p) => p.source).sort(), ["tag eni-dpdk:dpdk", "tag eni-dpdk:hugepages"]);
  const e3 = t.throws(() =>
    buildConfig(tagLayers({ "eni-dpdk:dpdk": "enabled=yes" })),
  ) as InputError;
  t.match(
    formatProblem(e3.problems[0]),
    /^tag eni-dpdk:dpdk: dpdk.enabled: expected true or false, got "yes"/,
  );
});

t.test("[kubernetes] adjust_max_pods: a bool in every source, named when it is not", async (t) => {
  t.equal(buildConfig([]).config.kubernetes.adjust_max_pods, true, "on by default");
  t.equal(
    buildConfig(tagLayers({ "eni-dpdk:kubernetes": "adjust_max_pods=false" })).config.kubernetes
      .adjust_max_pods,
    false,
  );
  const ud = (toml: string) => buildConfig(userDataLayers(Buffer.from(toml)).layers);
  t.equal(ud("[kubernetes]\nadjust_max_pods = false\n").config.kubernetes.adjust_max_pods, false);
  const cases: [string, () => unknown, RegExp][] = [
    [
      "tag",
      () => buildConfig(tagLayers({ "eni-dpdk:kubernetes": "adjust_max_pods=maybe" })),
      /^tag eni-dpdk:kubernetes: kubernetes\.adjust_max_pods: expected true or false, got "maybe"$/,
    ],
    [
      "user-data",
      () => ud("[kubernetes]\nadjust_max_pods = 0\n"),
      /^user-data:2:1: kubernetes\.adjust_max_pods: expected true or false, got integer$/,
    ],
    [
      "a misspelt key",
      () => ud("[kubernetes]\nadjust_maxpods = false\n"),
      /kubernetes\.adjust_maxpods: unknown key; did you mean "adjust_max_pods"\?/,
    ],
  ];
  for (const [name, build, want] of cases) {
    const e = t.throws(build, name) as InputError;
    t.match(formatProblem(e.problems[0]), want, name);
  }
});

t.test("the seed's environment variables override the file", async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
  mkdirSync(path.join(root, "etc/eni-dpdk/config.d"), { recursive: true });
  writeFileSync(
    path.join(root, "etc/eni-dpdk/config.toml"),
    '[dpdk]\nenabled = true\ndriver = "vfio-pci"\n[sriov]\nconfig_path = "/etc/pcidp/config.json"\n',
  );
  writeFileSync(path.join(root, "etc/eni-dpdk/config.d/20-b.toml"), "[dpdk]\nhugepages_2m = 2\n");
  writeFileSync(
    path.join(root, "etc/eni-dpdk/config.d/10-a.toml"),
    "[dpdk]\nhugepages_2m = 1\nhugepages_1g = 1\n",
  );
  const host = new Host(root);
  const files = await fileLayers(host);
  t.same(
    files.map((l) => l.source),
    [
      "/etc/eni-dpdk/config.toml",
      "/etc/eni-dpdk/config.d/10-a.toml",
      "/etc/eni-dpdk/config.d/20-b.toml",
    ],
  );
  const env = {
    ENABLE_DPDK: "false",
    DEFAULT_DPDK_DRIVER: "igb_uio",
    SRIOV_DP_CONFIG_PATH: "/etc/pcidp/other.json",
    DPDK_BINDING_SCRIPT: "/opt/dpdk/dpdk-devbind.py",
  };
  const eff = buildConfig([...files, ...envLayers(env)]);
  t.same(
    [
      eff.config.dpdk.enabled,
      eff.config.dpdk.driver,
      eff.config.sriov.config_path,
      eff.config.dpdk.binding_script,
      eff.config.dpdk.hugepages_2m,
      eff.config.dpdk.hugepages_1g,
    ],
    [false, "igb_uio", "/etc/pcidp/other.json", "/opt/dpdk/dpdk-devbind.py", 2, 1],
  );
  t.equal(eff.origin["dpdk.driver"], "env DEFAULT_DPDK_DRIVER");
  await t.rejects(fileLayers(host, "/etc/eni-dpdk/missing.toml"), /no such file/);
});

t.test(
  "gather: precedence follows [service].sources (later wins), all problems reported together",
  async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
    mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
    writeFileSync(
      path.join(root, "etc/eni-dpdk/config.toml"),
      '[service]\nsources = ["tags", "user-data", "file"]\n[dpdk]\nhugepages_2m = 1\n',
    );
    const host = new Host(root);
    const instance = await onInstance(t, {
      userData: "[dpdk]\nhugepages_2m = 2\nhugepages_1g = 2\n",
      tags: { "eni-dpdk:dpdk": "hugepages_2m=3;hugepages_1g=3;noiommu=on" },
    });
    const g = await gather({ ...local(host), instance });
    t.same(
      [g.config.dpdk.hugepages_2m, g.config.dpdk.hugepages_1g, g.config.dpdk.noiommu],
      [1, 2, "on"],
    );
    t.same(
      g.consulted.map((c) => c.source),
      ["tags", "user-data", "file"],
      "consulted, in precedence order",
    );

    writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), "[dpdk]\nhugepage = 1\n");
    const bad = await onInstance(t, {
      userData: "[dpdk]\nenabled = = 1\n",
      tags: { "eni-dpdk:dpdk": "driver=foo" },
    });
    const e = (await gather({ ...local(host), instance: bad }).catch((x) => x)) as InputError;
    t.type(e, InputError);
    t.same(e.problems.map((p) => p.source.replace(/:\d+:\d+$/, "")).sort(), [
      "/etc/eni-dpdk/config.toml",
      "tag eni-dpdk:dpdk",
      "user-data",
    ]);
  },
);

t.test(
  "a bare NodeConfig document is labelled with nodeadm's media type, as nodeadm accepts it",
  async (t) => {
    const parts = decodeUserData(Buffer.from(nodeConfig));
    t.equal(parts.length, 1);
    t.equal(parts[0].contentType, "application/node.eks.aws");
    t.equal(
      decodeUserData(Buffer.from("#!/bin/sh\ntrue\n"))[0].contentType,
      "",
      "a script stays unlabelled",
    );
  },
);

t.test(
  "parsed-TOML memo: keeps what the last gather used, skips what JSON cannot hold, survives a damaged file",
  async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
    mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
    const memoFile = path.join(root, TOML_MEMO_PATH);
    const host = new Host(root);
    const first = "[dpdk]\nhugepages_2m = 4\n";
    writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), first);
    const userData = "[dpdk]\nhugepages_1g = 1\n";
    const g = await gather({
      ...local(host),
      instance: await onInstance(t, { userData, tags: {} }),
    });
    t.same([g.config.dpdk.hugepages_2m, g.config.dpdk.hugepages_1g], [4, 1]);
    t.notOk(existsSync(memoFile), "gathering alone writes nothing");
    t.ok(await saveTomlMemo(host), "saved");
    const memo = JSON.parse(readFileSync(memoFile, "utf8"));
    t.same(
      memo.entries.map((e: { text: string }) => e.text),
      [userData, first],
      "the file and the user-data part, by exact text (sorted)",
    );
    t.same(memo.entries[1].data, { dpdk: { hugepages_2m: 4 } });
    t.notOk(await saveTomlMemo(host), "an unchanged memo is not rewritten");

    const second = "[dpdk]\nhugepages_2m = 8\n";
    writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), second);
    t.equal(
      (await gather(local(host))).config.dpdk.hugepages_2m,
      8,
      "changed text is parsed again",
    );
    t.ok(await saveTomlMemo(host));
    t.same(
      JSON.parse(readFileSync(memoFile, "utf8")).entries.map((e: { text: string }) => e.text),
      [second],
      "only what this gather used is kept",
    );

    const withDate = "when = 1979-05-27T07:32:00Z\n";
    t.type(parseToml(withDate).when, Date, "dates parse as dates");
    t.type(parseToml(withDate).when, Date, "and are parsed again rather than memoised as strings");

    const other = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
    mkdirSync(path.join(other, "etc/eni-dpdk"), { recursive: true });
    mkdirSync(path.dirname(path.join(other, TOML_MEMO_PATH)), { recursive: true });
    writeFileSync(path.join(other, TOML_MEMO_PATH), '{"version": 1, "entries": [{"text": "tor');
    writeFileSync(path.join(other, "etc/eni-dpdk/config.toml"), "[dpdk]\nhugepages_2m = 2\n");
    t.equal(
      (await gather(local(new Host(other)))).config.dpdk.hugepages_2m,
      2,
      "a torn memo costs a parse, not an error",
    );
  },
);

t.test(
  "parsing before the parser is loaded is reported as our bug, never as the user's syntax error",
  async (t) => {
    const script = `import { tomlLayer } from ${JSON.stringify(path.join(REPO, "src/sources/toml.ts"))};
try { tomlLayer("[dpdk]\\nenabled = true\\n", "f.toml"); } catch (e) { console.log(e.constructor.name, e.message); }`;
    const { spawnSync } = await import("node:child_process");
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      { encoding: "utf8" },
    );
    t.match(r.stdout, /^TomlNotLoaded internal error: the TOML parser was not loaded/, r.stderr);
  },
);

t.test("the memo names its parser, and a memo from another parser is not used", async (t) => {
  const pkg = JSON.parse(readFileSync(path.join(REPO, "node_modules/toml/package.json"), "utf8"));
  t.equal(
    TOML_PARSER,
    `toml ${pkg.version}`,
    "TOML_PARSER follows the installed toml (bump it with the dependency)",
  );
  const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
  mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
  mkdirSync(path.dirname(path.join(root, TOML_MEMO_PATH)), { recursive: true });
  const text = "[dpdk]\nhugepages_2m = 16\n";
  writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), text);
  // A memo claiming another answer for this exact text, from a parser we are not running.
  writeFileSync(
    path.join(root, TOML_MEMO_PATH),
    JSON.stringify({
      version: 1,
      parser: "toml 4.0.0",
      entries: [{ text, data: { dpdk: { hugepages_2m: 99 } } }],
    }),
  );
  t.equal((await gather(local(new Host(root)))).config.dpdk.hugepages_2m, 16);
});

// ---- input hardening (issue 13) ------------------------------------------------------------------

const problemLines = async (f: () => unknown): Promise<string[]> => {
  try {
    await f();
  } catch (e) {
    if (e instanceof InputError) return e.problems.map(formatProblem);
    throw e;
  }
  return [];
};

t.test(
  "tag values: a repeated key, empty segments, value-and-table and Object.prototype names are refused by name",
  async (t) => {
    const cases: [Record<string, string>, RegExp][] = [
      [
        { "eni-dpdk:eni:d1": "device_index=1;device_index=5" },
        /^tag eni-dpdk:eni:d1: eni\.d1\.device_index: "device_index" is set twice/,
      ],
      [
        { "eni-dpdk:eni:d1": "dpdk.driver=vfio-pci; dpdk . driver = igb_uio" },
        /: eni\.d1\.dpdk \. driver: "dpdk\.driver" is set twice/,
      ],
      [{ "eni-dpdk:dpdk": "a..b=1" }, /^tag eni-dpdk:dpdk: dpdk\.a\.\.b: empty key segment/],
      [{ "eni-dpdk:dpdk": ".x=1" }, /empty key segment in "\.x"/],
      [{ "eni-dpdk:dpdk": "x.=1" }, /empty key segment in "x\."/],
      [
        { "eni-dpdk:eni:d1": "dpdk=1;dpdk.enabled=false" },
        /eni\.d1\.dpdk\.enabled: "dpdk\.enabled" descends into "dpdk", which is already set as a value/,
      ],
      [
        { "eni-dpdk:eni:d1": "dpdk.enabled=false;dpdk=1" },
        /eni\.d1\.dpdk: "dpdk" is set as a value, but "dpdk\.…" keys are also set/,
      ],
      [
        { "eni-dpdk:dpdk": "__proto__.LD_PRELOAD=/x.so" },
        /^tag eni-dpdk:dpdk: dpdk\.__proto__\.LD_PRELOAD: unknown key: "__proto__" is an Object\.prototype member name/,
      ],
      [{ "eni-dpdk:eni:d1": "constructor.prototype.x=1" }, /unknown key: "constructor"/],
      [
        { "eni-dpdk:__proto__": "x=1" },
        /^tag eni-dpdk:__proto__: eni-dpdk:__proto__: "__proto__" is an Object\.prototype member name/,
      ],
      [{ "eni-dpdk:toString": "x=1" }, /^tag eni-dpdk:toString: eni-dpdk:toString: "toString"/],
    ];
    for (const [tags, want] of cases) {
      const got = await problemLines(() => tagLayers(tags));
      t.ok(
        got.some((l) => want.test(l)),
        `${JSON.stringify(tags)}: ${got.join(" | ")}`,
      );
    }
    t.equal(({} as Record<string, unknown>).LD_PRELOAD, undefined, "Object.prototype is clean");
    t.same(Object.keys(Object.prototype), []);
  },
);

t.test(
  "tag values: integers are plain decimal digits; a dotted key into a value is named",
  async (t) => {
    for (const v of ["1e3", "0x10", "+1", "01", "1_000", "1.0", "", "１"]) {
      const got = await problemLines(() =>
        buildConfig(tagLayers({ "eni-dpdk:dpdk": `hugepages_2m=${v}` })),
      );
      t.match(
        got,
        [
          new RegExp(
            `^tag eni-dpdk:dpdk: dpdk\\.hugepages_2m: expected an integer, got "${v.replace(/[.+]/g, "\\$&")}"`,
          ),
        ],
        JSON.stringify(v),
      );
    }
    t.equal(
      buildConfig(tagLayers({ "eni-dpdk:dpdk": " hugepages_2m = 12 ;" })).config.dpdk.hugepages_2m,
      12,
      "whitespace around separators is ignored",
    );
    t.match(
      await problemLines(() => buildConfig(tagLayers({ "eni-dpdk:dpdk": "hugepages_2m=-1" }))),
      [/expected a page count 0\.\.1000000, got -1/],
      "a minus sign is an integer",
    );
    const into = await problemLines(() =>
      buildConfig(
        tagLayers({
          "eni-dpdk:eni:d1":
            "device_index.x=1;subnet_id=subnet-01234567;security_group_ids=sg-01234567;dpdk.enabled=false",
        }),
      ),
    );
    t.match(into, [
      /^tag eni-dpdk:eni:d1: eni\.d1\.device_index: expected a value, got dotted sub-keys \(x\): this key is not a table/,
    ]);
    const big = await problemLines(() =>
      buildConfig(tagLayers({ "eni-dpdk:dpdk": "hugepages_2m=99999999999999999999" })),
    );
    t.match(big, [
      /dpdk\.hugepages_2m: out of range: expected a page count 0\.\.1000000, got 99999999999999999999/,
    ]);
  },
);

t.test(
  "user-data: a TOML document of ours that mentions a NodeConfig in a string is still ours",
  async (t) => {
    const doc = `[dpdk]\nhugepages_2m = 8\nnote = """\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n"""\n`;
    t.equal(decodeUserData(Buffer.from(doc))[0].contentType, "", "not labelled as a NodeConfig");
    t.match(
      await problemLines(() => buildConfig(userDataLayers(Buffer.from(doc)).layers)),
      [/user-data:3:1: dpdk\.note: unknown key/],
      "taken as ours",
    );
    const dotted = `dpdk.hugepages_2m = 8\ncomment = """\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n"""\n`;
    t.equal(
      userDataLayers(Buffer.from(dotted)).layers.length,
      1,
      "dotted keys, no headers: still ours",
    );
    t.match(
      await problemLines(() =>
        userDataLayers(Buffer.from("kind: NodeConfig\n[dpdk]\nhugepages_2m = 8\n")),
      ),
      [/^user-data:1:5: \(syntax\): not valid TOML/],
      "our headers make it ours: its TOML error is reported, not skipped",
    );
    t.equal(
      decodeUserData(Buffer.from(nodeConfig))[0].contentType,
      "application/node.eks.aws",
      "a real NodeConfig still is one",
    );
    t.equal(
      decodeUserData(Buffer.from("kind: NodeConfig\nspec: {}\n"))[0].contentType,
      "",
      "kind without apiVersion is not a NodeConfig",
    );
  },
);

t.test("user-data: content of ours that cannot be read is an error naming the part", async (t) => {
  const mime = (boundary: string, body: string) =>
    `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="${boundary}"\n\n${body}`;
  const part = (b: string, type: string, body: string) =>
    `--${b}\nContent-Type: ${type}\n\n${body}\n`;
  const cases: [string, string, RegExp][] = [
    [
      "boundary matches no part",
      mime("A", part("B", OUR, ours) + "--B--\n"),
      /^user-data: \(mime\): its Content-Type declares boundary "A", but no line is "--A"/,
    ],
    [
      "one part behind another boundary",
      mime("A", part("A", "text/x-shellscript", "#!/bin/sh") + part("B", OUR, ours) + "--A--\n"),
      /^user-data: \(mime\): 1 line\(s\) say Content-Type: application\/eni-dpdk\+toml, but only 0/,
    ],
    [
      "no boundary parameter",
      `Content-Type: multipart/mixed\n\n${part("A", OUR, ours)}`,
      /^user-data: \(mime\): its multipart Content-Type has no boundary parameter/,
    ],
    [
      "nested multipart",
      mime(
        "A",
        `--A\nContent-Type: multipart/mixed; boundary="B"\n\n${part("B", OUR, ours)}--B--\n--A--\n`,
      ),
      /^user-data part 1\.1 \(application\/eni-dpdk\+toml\): \(mime\): is nested inside user-data part 1 \(multipart\/mixed\)/,
    ],
    [
      "text/plain part with our tables",
      mime("A", part("A", "text/plain", ours) + "--A--\n"),
      /^user-data part 1 \(text\/plain\): Content-Type: holds eni-dpdk tables but is typed text\/plain/,
    ],
    [
      "untyped part with our tables",
      mime("A", `--A\n\n${ours}\n--A--\n`),
      /^user-data part 1 \(text\/plain\): Content-Type: holds eni-dpdk tables/,
    ],
    [
      "application/toml part",
      mime("A", part("A", "application/toml", ours) + "--A--\n"),
      /typed application\/toml/,
    ],
    [
      "gzip bomb, whole blob",
      gzipSync(Buffer.alloc(2 * 1024 * 1024, 0x20)).toString("latin1"),
      /^user-data: \(encoding\): gzip data inflates past the 1 MiB limit/,
    ],
  ];
  for (const [label, doc, want] of cases) {
    const got = await problemLines(() => userDataLayers(Buffer.from(doc, "latin1")));
    t.ok(
      got.some((l) => want.test(l)),
      `${label}: ${got.join(" | ")}`,
    );
  }
  // Our part as base64 of a gzip bomb: the limit holds across encodings, and names the part.
  const bomb = gzipSync(Buffer.alloc(2 * 1024 * 1024, 0x20)).toString("base64");
  const got = await problemLines(() =>
    userDataLayers(
      Buffer.from(
        multipart([
          ["application/node.eks.aws", nodeConfig],
          [OUR, bomb, { "Content-Transfer-Encoding": "base64" }],
        ]),
      ),
    ),
  );
  t.match(got, [
    /^user-data part 2 \(application\/eni-dpdk\+toml\): \(encoding\): gzip data inflates past the 1 MiB limit/,
  ]);
  // The limit is a total: two parts of 600 KiB each exceed it together.
  const big = (n: number) =>
    gzipSync(`[dpdk]\nhugepages_2m = 1\n# ${"x".repeat(n)}\n`).toString("base64");
  t.match(
    await problemLines(() =>
      userDataLayers(
        Buffer.from(
          multipart([
            [OUR, big(600 * 1024)],
            [OUR, big(600 * 1024)],
          ]),
        ),
      ),
    ),
    [/^user-data part 2 .*inflates past the 1 MiB limit/],
  );
  t.equal(
    userDataLayers(
      Buffer.from(
        multipart([
          [OUR, big(300 * 1024)],
          [OUR, big(300 * 1024)],
        ]),
      ),
    ).layers.length,
    2,
    "within the limit",
  );
});

t.test(
  "user-data: foreign parts are left alone (not inflated), a nested multipart without our content is skipped",
  async (t) => {
    const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20)).toString("base64");
    const r = userDataLayers(
      Buffer.from(
        multipart([
          ["text/x-shellscript", bomb, { "Content-Transfer-Encoding": "base64" }],
          [OUR, ours],
        ]),
      ),
    );
    t.equal(r.layers.length, 1, "a compressed script part is not ours to inflate");
    const nested =
      `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="A"\n\n--A\nContent-Type: multipart/mixed; boundary="B"\n\n` +
      `--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\ntrue\n--B\nContent-Type: application/node.eks.aws\n\n${nodeConfig}\n--B--\n` +
      `--A\nContent-Type: ${OUR}\n\n${ours}\n--A--\n`;
    const n = userDataLayers(Buffer.from(nested));
    t.same(
      n.parts.map((p) => p.contentType),
      ["multipart/mixed", OUR],
      "only top-level parts, as nodeadm reads them",
    );
    t.equal(buildConfig(n.layers).config.dpdk.hugepages_2m, 512);
    t.match(
      userDataLayers(
        Buffer.from(
          multipart([
            [
              "text/x-shellscript",
              "#!/bin/sh\ncat > /etc/eni-dpdk/config.d/x.toml <<EOF\n[dpdk]\nhugepages_2m = 1\nEOF",
            ],
          ]),
        ),
      ).summary,
      /0 eni-dpdk part/,
      "a script that writes our tables is not ours",
    );
    const mismatchForeign =
      `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="A"\n\n` +
      `--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--B--\n`;
    t.equal(
      userDataLayers(Buffer.from(mismatchForeign)).layers.length,
      0,
      "unreadable MIME without our content is nodeadm's problem, not ours",
    );
  },
);

t.test(
  "parsed-TOML memo: a hit gives the same types as a parse (BigInt integers, float numbers)",
  async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
    mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
    const text =
      "[dpdk]\nhugepages_2m = 4\n[service]\ntimeout_seconds = 1.5\n[sriov]\nrestart_command = []\n";
    writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), text);
    const host = new Host(root);
    await t.rejects(gather(local(host)), /timeout_seconds: expected an integer, got a float 1\.5/);
    t.ok(await saveTomlMemo(host));
    const parsed = parseToml(text);
    // A fresh process that never loads the parser: parseToml can only answer from the memo file.
    const script = `import { loadTomlMemo, parseToml } from ${JSON.stringify(path.join(REPO, "src/sources/toml.ts"))};
import { Host } from ${JSON.stringify(path.join(REPO, "src/host/host.ts"))};
await loadTomlMemo(new Host(process.argv[1]));
const d = parseToml(process.argv[2]);
console.log(
  JSON.stringify([typeof d.dpdk.hugepages_2m, String(d.dpdk.hugepages_2m), typeof d.service.timeout_seconds, d.service.timeout_seconds]),
);`;
    const { spawnSync } = await import("node:child_process");
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script, root, text],
      { encoding: "utf8" },
    );
    t.equal(r.status, 0, r.stderr);
    t.same(JSON.parse(r.stdout), ["bigint", "4", "number", 1.5], "from the memo");
    t.same(
      [
        typeof (parsed.dpdk as Record<string, unknown>).hugepages_2m,
        typeof (parsed.service as Record<string, unknown>).timeout_seconds,
      ],
      ["bigint", "number"],
      "from a parse",
    );
    t.match(
      readFileSync(path.join(root, TOML_MEMO_PATH), "utf8"),
      /"hugepages_2m":4\}.*"timeout_seconds":\{"\$float":1\.5\}/,
      "integers as JSON numbers, floats boxed",
    );
    t.type(
      parseToml('x = { "$bigint" = "5" }\n').x,
      "object",
      "a table spelled like a box is not memoised as a BigInt",
    );
    t.type(parseToml('x = { "$float" = 5 }\n').x, "object", "nor as a float");
  },
);

t.test(
  "files: --config must be absolute and a file; config.d entries must be files; all must be trusted",
  async (t) => {
    const { chmodSync, chownSync, symlinkSync } = await import("node:fs");
    const { execFileSync } = await import("node:child_process");
    const fresh = () => {
      const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
      mkdirSync(path.join(root, "etc/eni-dpdk/config.d"), { recursive: true });
      writeFileSync(path.join(root, "etc/eni-dpdk/config.toml"), "[dpdk]\nhugepages_2m = 1\n");
      return { root, host: new Host(root), p: (rel: string) => path.join(root, rel) };
    };
    const r = fresh();
    t.match(await problemLines(() => fileLayers(r.host, "etc/eni-dpdk/config.toml")), [
      /^--config etc\/eni-dpdk\/config\.toml: \(file\): must be absolute; it is resolved under --root/,
    ]);
    t.match(await problemLines(() => fileLayers(r.host, "/etc/eni-dpdk")), [
      new RegExp(
        `^/etc/eni-dpdk \\(resolved under --root as ${r.p("etc/eni-dpdk")}\\): \\(file\\): is a directory; --config names one TOML file`,
      ),
    ]);
    t.match(await problemLines(() => fileLayers(r.host, "/etc/missing.toml")), [
      /^\/etc\/missing\.toml \(resolved under --root as .*\/etc\/missing\.toml\): \(file\): no such file/,
    ]);
    mkdirSync(r.p("etc/eni-dpdk/config.d/10-dir.toml"));
    t.match(await problemLines(() => fileLayers(r.host)), [
      /^\/etc\/eni-dpdk\/config\.d\/10-dir\.toml .*: \(file\): is a directory; config\.d holds \*\.toml files only/,
    ]);

    const fifo = fresh();
    execFileSync("mkfifo", [fifo.p("etc/eni-dpdk/config.d/20-fifo.toml")]);
    t.match(
      await problemLines(() => fileLayers(fifo.host)),
      [/20-fifo\.toml .*: \(file\): is not a regular file/],
      "a FIFO is refused, never read (it would block)",
    );

    const ww = fresh();
    chmodSync(ww.p("etc/eni-dpdk/config.toml"), 0o666);
    t.match(await problemLines(() => fileLayers(ww.host)), [
      new RegExp(
        `^/etc/eni-dpdk/config\\.toml .*: \\(file\\): is group- and world-writable \\(mode 0666\\); .*chmod go-w ${ww.root}`,
      ),
    ]);
    const gw = fresh();
    writeFileSync(gw.p("etc/eni-dpdk/config.d/50-x.toml"), "[dpdk]\nhugepages_1g = 1\n");
    chmodSync(gw.p("etc/eni-dpdk/config.d/50-x.toml"), 0o620);
    chmodSync(gw.p("etc/eni-dpdk/config.d"), 0o757);
    chmodSync(gw.p("etc/eni-dpdk"), 0o775);
    const lines = await problemLines(() => fileLayers(gw.host));
    t.ok(
      lines.some((l) =>
        /^\/etc\/eni-dpdk .*: \(directory\): is group-writable \(mode 0775\)/.test(l),
      ),
      lines.join(" | "),
    );
    t.ok(
      lines.some((l) =>
        /^\/etc\/eni-dpdk\/config\.d .*: \(directory\): is world-writable \(mode 0757\)/.test(l),
      ),
      "config.d",
    );
    t.notOk(
      lines.some((l) => l.includes("50-x.toml")),
      "files of an untrusted config.d are not read at all",
    );
    const owned = fresh();
    chownSync(owned.p("etc/eni-dpdk/config.toml"), 4242, 4242);
    t.match(await problemLines(() => fileLayers(owned.host)), [
      /config\.toml .*: \(file\): is owned by uid 4242, not root; .*chown root /,
    ]);
    const linked = fresh();
    writeFileSync(path.join(linked.root, "evil.toml"), "[dpdk]\nhugepages_2m = 9\n", {
      mode: 0o666,
    });
    chmodSync(path.join(linked.root, "evil.toml"), 0o666);
    symlinkSync(
      path.join(linked.root, "evil.toml"),
      linked.p("etc/eni-dpdk/config.d/90-link.toml"),
    );
    t.match(
      await problemLines(() => fileLayers(linked.host)),
      [/90-link\.toml .*world-writable/],
      "a symlink is judged by its target",
    );
    const ok = fresh();
    t.equal(
      (await fileLayers(ok.host)).length,
      1,
      "root-owned 0644 files in 0755 directories are fine",
    );
  },
);

t.test(
  "TOML that is not valid UTF-8 is refused with the position, in a file and in user-data",
  async (t) => {
    const root = mkdtempSync(path.join(tmpdir(), "eni-dpdk-src-"));
    mkdirSync(path.join(root, "etc/eni-dpdk"), { recursive: true });
    writeFileSync(
      path.join(root, "etc/eni-dpdk/config.toml"),
      Buffer.concat([
        Buffer.from('[dpdk]\ndriver = "vfio'),
        Buffer.from([0xff]),
        Buffer.from('"\n'),
      ]),
    );
    t.match(await problemLines(() => fileLayers(new Host(root))), [
      /^\/etc\/eni-dpdk\/config\.toml .*: \(file\): is not valid UTF-8 \(first bad byte at 2:15\)/,
    ]);
    const ud = Buffer.concat([
      Buffer.from("[dpdk]\n# caf"),
      Buffer.from([0xe9]),
      Buffer.from("\nhugepages_2m = 1\n"),
    ]);
    t.match(await problemLines(() => userDataLayers(ud)), [
      /^user-data: \(encoding\): is not valid UTF-8 \(first bad byte at 2:6\)/,
    ]);
  },
);

t.test(
  "user-data parts keep their exact bytes: UTF-8 text survives MIME, invalid UTF-8 in our part is refused",
  async (t) => {
    const doc = (body: Buffer) =>
      Buffer.concat([
        Buffer.from(
          `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: ${OUR}\n\n`,
        ),
        body,
        Buffer.from("\n--B--\n"),
      ]);
    const good = userDataLayers(
      doc(Buffer.from(`[[eni]]\nname = "d1"\ndescription = "café – ünïcode"\n`)),
    );
    t.equal(
      (good.layers[0].data.eni as { description: string }[])[0].description,
      "café – ünïcode",
    );
    const bad = Buffer.concat([
      Buffer.from('[dpdk]\ndriver = "'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"\n'),
    ]);
    t.match(await problemLines(() => userDataLayers(doc(bad))), [
      /^user-data part 1 \(application\/eni-dpdk\+toml\): \(encoding\): is not valid UTF-8 \(first bad byte at 2:11\)/,
    ]);
  },
);

t.test(
  "attach and the ENI attributes from user-data and tags: hostile values name the source, key and what was expected",
  async (t) => {
    const part = (eni: string) =>
      multipart([
        ["application/node.eks.aws", nodeConfig],
        [
          "application/eni-dpdk+toml",
          `[[eni]]\nname = "e1"\ndevice_index = 1\ndpdk.enabled = false\n${eni}`,
        ],
      ]);
    const fromUserData = (eni: string) => {
      try {
        buildConfig(userDataLayers(Buffer.from(part(eni))).layers);
        return [];
      } catch (e) {
        return (e as InputError).problems.map(formatProblem);
      }
    };
    t.same(fromUserData('attach = "external"\n'), [], "external from user-data");
    t.match(fromUserData('attach = "External"\n'), [
      /^user-data part 2 \(application\/eni-dpdk\+toml\):5:1: eni\.e1\.attach: expected "eni-dpdk" .* or "external" .*, got "External"/,
    ]);
    t.match(fromUserData("attach = 1\n"), [
      /^user-data part 2 .*:5:1: eni\.e1\.attach: expected a string, got integer/,
    ]);
    t.match(fromUserData('attach = "external"\nsubnet_name = "data"\n'), [
      /^user-data part 2 .*:6:1: eni\.e1\.subnet_name: attach = "external" checks the ENI against IMDS only/,
    ]);
    t.match(fromUserData('attach = "external"\nena_queue_count = 1.5\n'), [
      /eni\.e1\.ena_queue_count: expected an integer, got a float 1\.5/,
    ]);

    const fromTags = (value: string) => {
      try {
        buildConfig(tagLayers({ "eni-dpdk:eni:e1": `device_index=1;dpdk.enabled=false;${value}` }));
        return [];
      } catch (e) {
        return (e as InputError).problems.map(formatProblem);
      }
    };
    t.same(fromTags("attach=external;ena_express=true;ena_queue_count=4"), []);
    t.match(fromTags("attach=extern"), [
      /^tag eni-dpdk:eni:e1: eni\.e1\.attach: expected "eni-dpdk" .* or "external" .*, got "extern"/,
    ]);
    t.match(fromTags("attach.mode=external"), [
      /^tag eni-dpdk:eni:e1: eni\.e1\.attach: expected a value, got dotted sub-keys \(mode\)/,
    ]);
    t.match(fromTags("attach=external;source_dest_check=false"), [
      /^tag eni-dpdk:eni:e1: eni\.e1\.source_dest_check: on attach = "external" it needs an EC2 call/,
    ]);
    t.match(fromTags("attach=external;ena_queue_count=+4"), [
      /^tag eni-dpdk:eni:e1: eni\.e1\.ena_queue_count: expected an integer, got "\+4"/,
    ]);
    t.match(fromTags("attach=external;external_ec2=yes"), [
      /^tag eni-dpdk:eni:e1: eni\.e1\.external_ec2: expected true or false, got "yes"/,
    ]);
    const zero = t.throws(() =>
      buildConfig(
        tagLayers({ "eni-dpdk:eni:e1": "attach=external;device_index=0;dpdk.enabled=false" }),
      ),
    ) as InputError;
    t.same(zero.problems.map(formatProblem), [
      "tag eni-dpdk:eni:e1: eni.e1.device_index: expected 1..127 (0 is the primary ENI), got 0",
    ]);
  },
);
