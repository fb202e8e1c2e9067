import t from "tap";
import { readdirSync, readFileSync } from "node:fs";
import { buildConfig, ec2BucketOf, nearest } from "../../../src/config/model.js";
import { ec2Bucket, resourceNameProblems } from "../../../src/config/facts.js";
import { InputError, formatProblem } from "../../../src/core/errors.js";
import { loadToml, tomlLayer } from "../../../src/sources/toml.js";
import { REPO_URL } from "../../support/repo.js";

// tomlLayer and userDataLayers are synchronous; the parser itself loads lazily (see loadToml).
await loadToml();

const corpus = new URL("test/corpus/bad/", REPO_URL);

t.test("bad-input corpus: every file is rejected with a message naming its key", async (t) => {
  const files = readdirSync(corpus).filter((f) => f.endsWith(".toml"));
  t.ok(files.length >= 30, `corpus has ${files.length} files`);
  for (const f of files) {
    const text = readFileSync(new URL(f, corpus), "utf8");
    const [key, message] = /^# expect: (.*)$/m.exec(text)![1].split(" | ");
    try {
      buildConfig([tomlLayer(text, `/etc/eni-dpdk/${f}`)]);
      t.fail(`${f} was accepted`);
    } catch (e) {
      t.type(e, InputError, f);
      const lines = (e as InputError).problems.map(formatProblem);
      const hit = (e as InputError).problems.find(
        (p) => p.key === key && p.message.includes(message),
      );
      t.ok(hit, `${f}: expected key ${key} with "${message}"; got:\n${lines.join("\n")}`);
      t.ok(
        hit?.source.startsWith(`/etc/eni-dpdk/${f}`),
        `${f}: source names the file (${hit?.source})`,
      );
    }
  }
});

t.test("problem sources carry line and column", async (t) => {
  const text =
    '[dpdk]\nenabled = true\n\n[[eni]]\nname = "a"\ndevice_index = 1\nsubnet_id = "subnet-0123456789abcdef0"\nsecurity_group_ids = ["sg-01234567"]\nmtu = 100\ndpdk.enabled = false\n';
  const e = t.throws(() =>
    buildConfig([tomlLayer(text, "/etc/eni-dpdk/config.toml")]),
  ) as InputError;
  t.same(e.problems.map(formatProblem), [
    "/etc/eni-dpdk/config.toml:9:1: eni.a.mtu: expected 576..9216, got 100",
  ]);
  const syn = t.throws(() => tomlLayer("[dpdk]\nenabled = = 1\n", "f.toml")) as InputError;
  t.match(syn.problems[0].source, /^f\.toml:2:\d+$/);
});

t.test("all problems are reported in one run", async (t) => {
  const text =
    '[dpdk]\ndriver = "x"\nnoiommu = "maybe"\n[sriov]\nconfig_path = "rel"\n[[eni]]\nname = "A"\n';
  const e = t.throws(() => buildConfig([tomlLayer(text, "c.toml")])) as InputError;
  const keys = e.problems.map((p) => p.key).sort();
  t.same(keys, [
    "dpdk.driver",
    "dpdk.noiommu",
    "eni.A.device_index",
    "eni.A.dpdk.resource_name",
    "eni.A.name",
    "eni.A.security_group_ids",
    "eni.A.subnet_id",
    "sriov.config_path",
  ]);
});

t.test("defaults and the documented example", async (t) => {
  const eff = buildConfig([
    tomlLayer(
      readFileSync(new URL("test/corpus/good/example.toml", REPO_URL), "utf8"),
      "example.toml",
    ),
  ]);
  const c = eff.config;
  t.equal(c.service.reconcile_interval_seconds, 60);
  t.equal(c.dpdk.hugepages_2m, 1024);
  t.same(
    c.eni.map((e) => [e.name, e.device_index, e.dpdk.enabled, e.dpdk.driver, e.mtu]),
    [
      ["dpdk1", 1, true, "vfio-pci", 9001],
      ["dpdk2", 2, true, "vfio-pci", 9001],
      ["kernel1", 3, false, "vfio-pci", 9001],
    ],
  );
  t.equal(eff.origin["eni.dpdk1.description"], "example.toml:21:1");
  t.equal(eff.origin["eni.dpdk1.mtu"], "default");
  t.match(eff.origin["eni.dpdk1.dpdk.driver"], /example\.toml:8:1 \(\[dpdk\]\.driver\)/);
});

t.test("merge: node tables key by key, ENIs by name field by field, later wins", async (t) => {
  const file = tomlLayer(
    '[dpdk]\ndriver = "vfio-pci"\nhugepages_2m = 512\n[[eni]]\nname = "d1"\ndevice_index = 1\nsubnet_id = "subnet-01234567"\nsecurity_group_ids = ["sg-01234567"]\nmtu = 1500\n[eni.dpdk]\nresource_name = "ena_dpdk"\n',
    "file.toml",
  );
  const ud = tomlLayer(
    '[dpdk]\nhugepages_2m = 1024\n[[eni]]\nname = "d1"\nmtu = 9001\n',
    "user-data part 2 (application/eni-dpdk+toml)",
  );
  const tag = {
    source: "tag eni-dpdk:eni:d1",
    stringly: true,
    data: { eni: [{ name: "d1", dpdk: { driver: "uio_pci_generic" } }] },
  };
  const eff = buildConfig([file, ud, tag]);
  const e = eff.config.eni[0];
  t.equal(eff.config.dpdk.driver, "vfio-pci");
  t.equal(eff.config.dpdk.hugepages_2m, 1024);
  t.equal(e.mtu, 9001);
  t.equal(e.subnet_id, "subnet-01234567");
  t.equal(e.dpdk.driver, "uio_pci_generic");
  t.equal(eff.origin["eni.d1.mtu"], "user-data part 2 (application/eni-dpdk+toml):5:1");
  t.equal(eff.origin["eni.d1.subnet_id"], "file.toml:7:1");
  t.equal(eff.origin["eni.d1.dpdk.driver"], "tag eni-dpdk:eni:d1");
  t.equal(eff.origin["dpdk.hugepages_2m"], "user-data part 2 (application/eni-dpdk+toml):2:1");
});

t.test("a device-index clash between sources is caught after the merge", async (t) => {
  const a = tomlLayer(
    '[[eni]]\nname = "a"\ndevice_index = 1\nsubnet_id = "subnet-01234567"\nsecurity_group_ids = ["sg-01234567"]\ndpdk.enabled = false\n',
    "file.toml",
  );
  const b = {
    source: "tag eni-dpdk:eni:b",
    stringly: true,
    data: {
      eni: [
        {
          name: "b",
          device_index: "1",
          subnet_id: "subnet-01234567",
          security_group_ids: "sg-01234567",
          dpdk: { enabled: "false" },
        },
      ],
    },
  };
  const e = t.throws(() => buildConfig([a, b])) as InputError;
  t.same(e.problems.map(formatProblem), [
    'tag eni-dpdk:eni:b: eni.b.device_index: device index 1 on network card 0 is also used by ENI "a"',
  ]);
});

t.test("the number of ENIs is bounded", async (t) => {
  const eni = Array.from({ length: 33 }, (_, i) => ({
    name: `e${i}`,
    device_index: i + 1,
    subnet_id: "subnet-01234567",
    security_group_ids: ["sg-01234567"],
    dpdk: { enabled: false },
  }));
  const e = t.throws(() => buildConfig([{ source: "x", data: { eni } }])) as InputError;
  t.ok(e.problems.some((p) => p.key === "eni" && /at most 32/.test(p.message)));
});

t.test("resource names and did-you-mean", async (t) => {
  t.same(resourceNameProblems("amazon.com/ena_dpdk_1", "x.io"), []);
  t.same(resourceNameProblems("ena_dpdk", "amazon.com"), []);
  t.match(resourceNameProblems("a/b/c", "x")[0], /more than one/);
  t.match(resourceNameProblems("amazon.com/" + "x".repeat(64), "x")[0], /\{1,63\}/);
  t.equal(nearest("subnetid", ["subnet_id", "mtu"]), "subnet_id");
  t.equal(nearest("zzzzzz", ["subnet_id", "mtu"]), undefined);
});

// ---- input hardening (issue 13) ------------------------------------------------------------------

const oneEni = (extra: string) =>
  `[[eni]]\nname = "a"\ndevice_index = 1\nsubnet_id = "subnet-01234567"\n` +
  `security_group_ids = ["sg-01234567"]\ndpdk.enabled = false\n${extra}`;
const problemsOf = (f: () => unknown): string[] => {
  try {
    f();
  } catch (e) {
    if (e instanceof InputError) return e.problems.map(formatProblem);
    throw e;
  }
  return [];
};

t.test(
  "Object.prototype member names are unknown keys at every level, and nothing is polluted",
  async (t) => {
    const { FORBIDDEN_KEYS } = await import("../../../src/core/records.js");
    for (const k of [
      "constructor",
      "toString",
      "hasOwnProperty",
      "valueOf",
      "__proto__",
      "prototype",
    ])
      t.ok(FORBIDDEN_KEYS.has(k), k);
    const eni = oneEni('hasOwnProperty = 1\ndpdk.prototype = 1\ntags = { "__proto__" = "x" }\n');
    const text = `"__proto__" = { polluted = "yes" }\n[constructor]\nx = 1\n[dpdk]\ntoString = "x"\nvalueOf = 1\n${eni}`;
    const got = problemsOf(() => buildConfig([tomlLayer(text, "c.toml")]));
    const keys = [
      "__proto__",
      "constructor",
      "dpdk.toString",
      "dpdk.valueOf",
      "eni.a.hasOwnProperty",
      "eni.a.dpdk.prototype",
      "eni.a.tags",
    ];
    for (const key of keys) {
      t.ok(
        got.some((l) => l.includes(`: ${key}: `) && /Object\.prototype member name/.test(l)),
        `${key} rejected by name: ${got.join(" | ")}`,
      );
    }
    t.ok(
      got.every((l) => /^c\.toml:\d+:\d+: /.test(l)),
      "each with file:line:col",
    );
    t.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype is clean");
    t.same(Object.keys(Object.prototype), []);
    // A layer built in code with a __proto__ own key (as JSON.parse makes) is rejected too.
    const data = JSON.parse('{"__proto__": {"x": 1}, "dpdk": {"__proto__": 1}}') as Record<
      string,
      unknown
    >;
    t.same(
      problemsOf(() => buildConfig([{ source: "json", data }])).map((l) => l.split(": ")[1]),
      ["__proto__", "dpdk.__proto__"],
    );
  },
);

t.test(
  "TOML integers are BigInt: floats are refused, ranges apply to huge values, 64-bit overflow has a position",
  async (t) => {
    const float = problemsOf(() =>
      buildConfig([tomlLayer(`[[eni]]\nname = "a"\ndevice_index = 1.0\n`, "c.toml")]),
    );
    t.same(
      float.filter((l) => l.includes("device_index")),
      [
        "c.toml:3:1: eni.a.device_index: expected an integer, got a float 1.0; write it without a decimal point or exponent",
      ],
    );
    t.match(
      problemsOf(() => buildConfig([tomlLayer(oneEni("mtu = 9.001e3\n"), "c.toml")])),
      [/c\.toml:7:1: eni\.a\.mtu: expected an integer, got a float 9001\.0/],
    );
    t.same(
      problemsOf(() => buildConfig([tomlLayer(oneEni("mtu = 9007199254740993\n"), "c.toml")])),
      ["c.toml:7:1: eni.a.mtu: out of range: expected 576..9216, got 9007199254740993"],
    );
    t.same(
      problemsOf(() =>
        buildConfig([tomlLayer("[dpdk]\nhugepages_2m = 4611686018427387904\n", "c.toml")]),
      ),
      [
        "c.toml:2:1: dpdk.hugepages_2m: out of range: expected a page count 0..1000000, got 4611686018427387904",
      ],
    );
    const over = problemsOf(() =>
      tomlLayer("[dpdk]\nhugepages_2m = 99999999999999999999\n", "c.toml"),
    );
    t.match(over, [
      /^c\.toml:2:\d+: dpdk\.hugepages_2m: not valid TOML: Integer literal is outside the 64-bit/,
    ]);
    t.equal(
      buildConfig([tomlLayer(oneEni("mtu = 0x5dc\n"), "c.toml")]).config.eni[0].mtu,
      1500,
      "hex is a TOML integer",
    );
    const c = buildConfig([tomlLayer(oneEni("mtu = 1_500\n"), "c.toml")]).config.eni[0];
    t.same(
      [typeof c.mtu, c.mtu, typeof c.device_index],
      ["number", 1500, "number"],
      "the config holds numbers",
    );
    t.same(
      problemsOf(() => buildConfig([tomlLayer("[service]\ntimeout_seconds = 3e2\n", "c.toml")])),
      [
        "c.toml:2:1: service.timeout_seconds: expected an integer, got a float 300.0; write it without a decimal point or exponent",
      ],
    );
    // Layers from JSON sources (NodeENI) carry JS numbers, which stay integers there.
    t.equal(
      buildConfig([
        {
          source: "x",
          data: {
            eni: [
              {
                name: "a",
                device_index: 2,
                subnet_id: "subnet-01234567",
                security_group_ids: ["sg-01234567"],
                dpdk: { enabled: false },
              },
            ],
          },
        },
      ]).config.eni[0].device_index,
      2,
    );
  },
);

t.test("every syntax error carries file:line:col, and a redefined key is named", async (t) => {
  for (const [text, where] of [
    ["[dpdk]\nenabled = = true\n", "c.toml:2:11"],
    ["[dpdk]\nenabled = true\nenabled = false\n", "c.toml:3:1"],
    ['[[eni]]\nname = "a"\n[eni]\nname = "b"\n', "c.toml:3:1"],
    ["[dpdk\n", "c.toml:1:6"],
    ['x = "unterminated\n', "c.toml:1:"],
  ] as const) {
    const p = problemsOf(() => tomlLayer(text, "c.toml"));
    t.equal(p.length, 1, JSON.stringify(text));
    t.ok(p[0].startsWith(where), `${JSON.stringify(text)} → ${p[0]}`);
  }
  t.match(
    problemsOf(() => tomlLayer("[dpdk]\nenabled = true\nenabled = false\n", "c.toml"))[0],
    /: dpdk\.enabled: not valid TOML: Cannot redefine/,
  );
});

t.test("key positions skip TOML multi-line strings", async (t) => {
  const text = `[dpdk]\nhugepages_2m = 1\n[[eni]]\nname = "a"\ndescription = """\n[dpdk]\nmtu = 5\n"""\nmtu = 100\n`;
  const e = problemsOf(() => buildConfig([tomlLayer(text, "c.toml")]));
  t.ok(e.includes("c.toml:9:1: eni.a.mtu: expected 576..9216, got 100"), e.join(" | "));
});

t.test("[eni] and [[dpdk]] in the wrong bracket form say which form to use", async (t) => {
  t.match(
    problemsOf(() => buildConfig([tomlLayer('[eni]\nname = "x"\n', "c.toml")])),
    [
      /eni: expected an array of tables \[\[eni\]\], got table \(a single table \[eni\]; write \[\[eni\]\]/,
    ],
  );
  t.match(
    problemsOf(() => buildConfig([tomlLayer("[[dpdk]]\nenabled = true\n", "c.toml")])),
    [/dpdk: expected a table \[dpdk\], got array \(an array; write \[dpdk\] with single brackets/],
  );
});

t.test(
  "binding_script and restart_command take one absolute, normalized program path",
  async (t) => {
    const script = (v: string) =>
      problemsOf(() =>
        buildConfig([tomlLayer(`[dpdk]\nbinding_script = ${JSON.stringify(v)}\n`, "c.toml")]),
      );
    t.same(script("/usr/bin/dpdk-devbind.py"), []);
    t.match(script("/usr/bin/dpdk-devbind.py --force"), [
      /dpdk\.binding_script: "\/usr\/bin\/dpdk-devbind\.py --force" contains whitespace: binding_script takes one program path/,
    ]);
    for (const bad of [
      "dpdk-devbind.py",
      "/usr/bin/../bin/x",
      "/usr/bin/",
      "/usr//bin/x",
      "/usr/./bin/x",
      "/usr/bin/x\t",
    ]) {
      t.match(script(bad), [/dpdk\.binding_script: .*takes one program path, no arguments/], bad);
    }
    const restart = (v: string[]) =>
      problemsOf(() =>
        buildConfig([tomlLayer(`[sriov]\nrestart_command = ${JSON.stringify(v)}\n`, "c.toml")]),
      );
    t.same(restart(["/usr/bin/kubectl", "delete", "pod"]), []);
    t.match(restart(["/usr/bin/../bin/kubectl"]), [
      /sriov\.restart_command: the program \(first element\) must be an absolute path; .* is not an absolute, normalized path/,
    ]);
    t.match(restart(["/usr/bin/kubectl delete"]), [/contains whitespace/]);
    t.same(restart(["/usr/bin/node", "-e", ""]), [], "an empty argument is a real argv word");
    t.match(restart([""]), [
      /sriov\.restart_command: the program \(first element\) must be an absolute path; "" is empty/,
    ]);
    const tag = {
      source: "tag eni-dpdk:sriov",
      stringly: true,
      data: { sriov: { restart_command: "/usr/bin/kubectl,,pod" } },
    };
    t.same(
      problemsOf(() => buildConfig([tag])),
      [
        'tag eni-dpdk:sriov: sriov.restart_command: element 1 of "/usr/bin/kubectl,,pod" is empty; remove the stray comma',
      ],
    );
  },
);

t.test(
  "attach and the ENI attributes: defaults, what external relaxes, what it refuses",
  async (t) => {
    const layer = (eni: Record<string, unknown>) => ({
      source: "c.toml",
      data: { eni: [{ name: "x", device_index: 1, dpdk: { enabled: false }, ...eni }] },
    });
    const plain = buildConfig([
      layer({ subnet_id: "subnet-01234567", security_group_ids: ["sg-01234567"] }),
    ]);
    const e = plain.config.eni[0];
    t.equal(e.attach, "eni-dpdk", "default: eni-dpdk attaches it");
    t.equal(e.external_ec2, false);
    for (const k of ["ena_express", "ena_express_udp", "source_dest_check", "ena_queue_count"])
      t.notOk(k in e, `${k} absent unless set: EC2's value is left alone`);

    const ext = buildConfig([layer({ attach: "external" })]).config.eni[0];
    t.same(
      [ext.attach, ext.subnet_id, ext.security_group_ids],
      ["external", "", []],
      "no subnet or SG needed",
    );
    const managed = t.throws(() => buildConfig([layer({})])) as InputError;
    t.same(
      managed.problems.map((p) => p.key).sort(),
      ["eni.x.security_group_ids", "eni.x.subnet_id"],
      "eni-dpdk mode still needs them",
    );
    const all = buildConfig([
      layer({
        attach: "external",
        external_ec2: true,
        ena_express: true,
        ena_express_udp: false,
        source_dest_check: false,
        ena_queue_count: 8,
      }),
    ]);
    t.match(all.config.eni[0], {
      ena_express: true,
      ena_express_udp: false,
      source_dest_check: false,
      ena_queue_count: 8,
    });
    t.equal(all.origin["eni.x.attach"], "c.toml");
    const tag = buildConfig([
      {
        source: "tag eni-dpdk:eni:x",
        stringly: true,
        data: {
          eni: [
            {
              name: "x",
              attach: "external",
              device_index: "1",
              ena_queue_count: "4",
              source_dest_check: "false",
              external_ec2: "true",
              dpdk: { enabled: "false" },
            },
          ],
        },
      },
    ]);
    t.match(
      tag.config.eni[0],
      { attach: "external", ena_queue_count: 4, source_dest_check: false, external_ec2: true },
      "tags coerce",
    );
  },
);

t.test(
  "[gc] is a config table like the others: defaults, and checked in every source",
  async (t) => {
    const { tagLayers } = await import("../../../src/sources/tags.js");
    const { userDataLayers } = await import("../../../src/sources/userdata.js");
    t.same(buildConfig([]).config.gc, {
      enabled: true,
      grace_minutes: 5,
      max_deletes: 200,
      delay_seconds: 300,
    });
    const fromTag = buildConfig(tagLayers({ "eni-dpdk:gc": "enabled=false;max_deletes=7" })).config;
    t.same([fromTag.gc.enabled, fromTag.gc.max_deletes], [false, 7], "instance tags, coerced");
    const bad = (layers: Parameters<typeof buildConfig>[0]) => {
      try {
        buildConfig(layers);
      } catch (e) {
        return (e as InputError).problems.map(formatProblem).join("\n");
      }
      return "accepted";
    };
    t.match(
      bad(tagLayers({ "eni-dpdk:gc": "enabled=maybe" })),
      /tag eni-dpdk:gc: gc.enabled: expected true or false, got "maybe"/,
    );
    t.match(
      bad(tagLayers({ "eni-dpdk:gc": "grace_minutes=0" })),
      /tag eni-dpdk:gc: gc.grace_minutes: expected 1..10080 minutes, got 0/,
    );
    const ud = userDataLayers(Buffer.from("[gc]\ndelay_seconds = 3601\n")).layers;
    t.match(bad(ud), /gc.delay_seconds: expected 0..3600 seconds, got 3601/, "user-data");
  },
);

t.test(
  "[ec2.limits]: the account's buckets, merged bucket by bucket and field by field, each field's source kept",
  async (t) => {
    const { tagLayers } = await import("../../../src/sources/tags.js");
    const { userDataLayers } = await import("../../../src/sources/userdata.js");
    t.same(buildConfig([]).config.ec2, { limits: {} }, "none by default");
    t.equal(
      ec2BucketOf(buildConfig([]).config.ec2),
      ec2Bucket,
      "no limits: EC2's documented sizes",
    );
    const file = tomlLayer(
      [
        "[ec2.limits]",
        "AttachNetworkInterface = { capacity = 200, refill_per_sec = 20 }",
        '"DescribeInstances:unfiltered" = { capacity = 100 }',
        "[ec2.limits.CreateNetworkInterface]",
        "capacity = 400",
        "refill_per_sec = 2.5",
        "",
      ].join("\n"),
      "/etc/eni-dpdk/config.toml",
    );
    const ud = userDataLayers(
      Buffer.from("[ec2.limits]\nmutating = { refill_per_sec = 50 }\n"),
    ).layers;
    const tag = tagLayers({
      "eni-dpdk:ec2":
        "limits.AttachNetworkInterface.refill_per_sec=30;limits.describe.capacity=300",
    });
    const eff = buildConfig([file, ...ud, ...tag]);
    t.same(eff.config.ec2.limits, {
      AttachNetworkInterface: { capacity: 200, refill_per_sec: 30 },
      "DescribeInstances:unfiltered": { capacity: 100 },
      CreateNetworkInterface: { capacity: 400, refill_per_sec: 2.5 },
      mutating: { refill_per_sec: 50 },
      describe: { capacity: 300 },
    });
    t.equal(
      eff.origin["ec2.limits.AttachNetworkInterface.capacity"],
      "/etc/eni-dpdk/config.toml:2:1",
    );
    t.equal(eff.origin["ec2.limits.AttachNetworkInterface.refill_per_sec"], "tag eni-dpdk:ec2");
    t.equal(
      eff.origin["ec2.limits.DescribeInstances:unfiltered.capacity"],
      "/etc/eni-dpdk/config.toml:3:1",
      "a quoted key with a colon has its own position",
    );
    t.equal(
      eff.origin["ec2.limits.CreateNetworkInterface.refill_per_sec"],
      "/etc/eni-dpdk/config.toml:6:1",
    );
    t.match(eff.origin["ec2.limits.mutating.refill_per_sec"], /^user-data/);

    // What the pacer paces by: the bucket's own entry, then its category's, then EC2's documented size.
    const bucket = ec2BucketOf(eff.config.ec2);
    t.same(bucket("AttachNetworkInterface"), { capacity: 200, refillPerSec: 30 });
    t.same(bucket("CreateNetworkInterface"), { capacity: 400, refillPerSec: 2.5 });
    t.same(
      bucket("ModifyNetworkInterfaceAttribute"),
      { capacity: 100, refillPerSec: 50 },
      "mutating's refill, the documented capacity",
    );
    t.same(bucket("DescribeInstances:unfiltered"), { capacity: 100, refillPerSec: 10 });
    t.same(bucket("DescribeSubnets"), { capacity: 300, refillPerSec: 20 }, "describe's capacity");
    t.same(
      bucket("DescribeNetworkInterfaces:unfiltered"),
      { capacity: 300, refillPerSec: 10 },
      "an unfiltered bucket not named falls back to describe, then to its documented size",
    );
  },
);

t.test(
  "[ec2.limits]: unknown actions, non-positive or non-finite numbers and wrong types are rejected, naming source, key and what was expected",
  async (t) => {
    const { tagLayers } = await import("../../../src/sources/tags.js");
    const { userDataLayers } = await import("../../../src/sources/userdata.js");
    const problems = (layers: Parameters<typeof buildConfig>[0]) => {
      const e = t.throws(() => buildConfig(layers)) as InputError;
      return e.problems.map(formatProblem);
    };
    const text = [
      "[ec2.limits]",
      "CreateTags = { capacity = 1 }",
      "attachnetworkinterface = { capacity = 1 }",
      "ModifyNetworkInterfaceAttribute = { capacity = 0, refill_per_sec = -1 }",
      "DescribeSubnets = { capacity = 2.5, refill_per_sec = nan }",
      "DescribeTags = { capacity = 100000000, refill_per_sec = true }",
      "DescribeInstanceTypes = {}",
      "DeleteNetworkInterface = { capacty = 5 }",
      "[ec2]",
      "limit = 1",
      "",
    ].join("\n");
    t.same(problems([tomlLayer(text, "/etc/eni-dpdk/config.toml")]), [
      '/etc/eni-dpdk/config.toml:2:1: ec2.limits.CreateTags: unknown EC2 action "CreateTags"; expected an action eni-dpdk calls, an unfiltered describe\'s own bucket, or "mutating" or "describe" for every bucket not named (known: CreateNetworkInterface, AttachNetworkInterface, ModifyNetworkInterfaceAttribute, DeleteNetworkInterface, DescribeNetworkInterfaces, DescribeInstances, DescribeSubnets, DescribeSecurityGroups, DescribeInstanceTypes, DescribeTags, DescribeInstances:unfiltered, DescribeNetworkInterfaces:unfiltered, DescribeSecurityGroups:unfiltered, mutating, describe)',
      '/etc/eni-dpdk/config.toml:3:1: ec2.limits.attachnetworkinterface: unknown EC2 action "attachnetworkinterface" (did you mean "AttachNetworkInterface"?); expected an action eni-dpdk calls, an unfiltered describe\'s own bucket, or "mutating" or "describe" for every bucket not named (known: CreateNetworkInterface, AttachNetworkInterface, ModifyNetworkInterfaceAttribute, DeleteNetworkInterface, DescribeNetworkInterfaces, DescribeInstances, DescribeSubnets, DescribeSecurityGroups, DescribeInstanceTypes, DescribeTags, DescribeInstances:unfiltered, DescribeNetworkInterfaces:unfiltered, DescribeSecurityGroups:unfiltered, mutating, describe)',
      "/etc/eni-dpdk/config.toml:4:1: ec2.limits.ModifyNetworkInterfaceAttribute.capacity: expected a whole number of requests 1..100000 (the bucket's burst), got 0",
      "/etc/eni-dpdk/config.toml:4:1: ec2.limits.ModifyNetworkInterfaceAttribute.refill_per_sec: expected a number of requests per second above 0, up to 100000 (e.g. 20 or 2.5), got -1",
      "/etc/eni-dpdk/config.toml:5:1: ec2.limits.DescribeSubnets.capacity: expected a whole number of requests 1..100000 (the bucket's burst), got a float 2.5; write it without a decimal point or exponent",
      "/etc/eni-dpdk/config.toml:5:1: ec2.limits.DescribeSubnets.refill_per_sec: expected a number of requests per second above 0, up to 100000 (e.g. 20 or 2.5), got nan",
      "/etc/eni-dpdk/config.toml:6:1: ec2.limits.DescribeTags.capacity: expected a whole number of requests 1..100000 (the bucket's burst), got 100000000",
      "/etc/eni-dpdk/config.toml:6:1: ec2.limits.DescribeTags.refill_per_sec: expected a number of requests per second above 0, up to 100000 (e.g. 20 or 2.5), got boolean",
      "/etc/eni-dpdk/config.toml:7:1: ec2.limits.DescribeInstanceTypes: expected capacity, refill_per_sec or both in { capacity = N, refill_per_sec = N }; the table is empty",
      '/etc/eni-dpdk/config.toml:8:1: ec2.limits.DeleteNetworkInterface.capacty: unknown key; did you mean "capacity"? (known: capacity, refill_per_sec)',
      '/etc/eni-dpdk/config.toml:10:1: ec2.limit: unknown key; did you mean "limits"? (known: limits)',
    ]);
    t.same(
      problems(
        tagLayers({
          "eni-dpdk:ec2":
            "limits.AttachNetworkInterface.capacity=0;limits.CreateNetworkInterface.refill_per_sec=fast;limits.mutating=5;limits.DescribeSubnets.capacity=1.5",
        }),
      ),
      [
        "tag eni-dpdk:ec2: ec2.limits.AttachNetworkInterface.capacity: expected a whole number of requests 1..100000 (the bucket's burst), got 0",
        'tag eni-dpdk:ec2: ec2.limits.CreateNetworkInterface.refill_per_sec: expected a number of requests per second above 0, up to 100000 (e.g. 20 or 2.5), got "fast"',
        "tag eni-dpdk:ec2: ec2.limits.mutating: expected a table { capacity = N, refill_per_sec = N }, got string",
        'tag eni-dpdk:ec2: ec2.limits.DescribeSubnets.capacity: expected a whole number of requests 1..100000 (the bucket\'s burst), got "1.5"',
      ],
      "instance tags: values are strings, checked the same way",
    );
    t.same(
      problems(userDataLayers(Buffer.from("[ec2]\nlimits = 5\n")).layers),
      [
        "user-data:2:1: ec2.limits: expected a table of EC2 actions, each { capacity = N, refill_per_sec = N } (e.g. [ec2.limits] AttachNetworkInterface = { capacity = 200, refill_per_sec = 20 }), got integer",
      ],
      "user-data",
    );
  },
);
