// Adversarial input (issue 13): every case drives the built bundle against a World and asserts the
// promise for bad input: exit 2 (1 for the few that are operational), an error naming the source
// and the key and saying what was expected, the root byte-identical, no mutating EC2 call. The few
// inputs that must be accepted assert what the bundle then reports (`config --json`).
// Case names are "<area>/<class>: <case>"; prototype-pollution cases are area security.
import t, { type Test } from "tap";
import { spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import type { World } from "../../../src/sim/world.js";
import { SG_DPDK, SUBNET_A } from "../../../src/sim/node.js";
import {
  BUNDLE,
  baseToml,
  converge,
  diffSnapshots,
  expectRejected,
  lastError,
  parseLog,
  put,
  runCli,
  snapshotRoot,
  world,
  type Rejection,
} from "../../support/harness.js";
import { KUBE_TOML, kubeconfig, nodeEni, pki, withKube } from "../../support/kube.js";

const MISSING_ROOT = `/tmp/eni-dpdk-no-such-root-${process.pid}-${Date.now()}`;

const INSTANCE = "i-0123456789abcdef0";
const OUR = "application/eni-dpdk+toml";
const NODEADM = "application/node.eks.aws";
const NODE_CONFIG =
  "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: demo\n";
/** A valid kernel ENI, to append to a document. */
const KERNEL_ENI = (name = "k9", index = 9) =>
  `[[eni]]\nname = "${name}"\ndevice_index = ${index}\nsubnet_id = "${SUBNET_A}"\n` +
  `security_group_ids = ["${SG_DPDK}"]\ndpdk.enabled = false\n`;

const part = (type: string, body: string, boundary = "B", headers = "") =>
  `--${boundary}\nContent-Type: ${type}\n${headers}\n${body}\n`;
const mime = (parts: string[], boundary = "B", declared = boundary) =>
  `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="${declared}"\n\n${parts.join("")}--${boundary}--\n`;
const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");
/** gzip of `n` bytes of spaces: a few KiB that inflate to n */
const bomb = (n: number) => gzipSync(Buffer.alloc(n, 0x20));

/** A directory under the world's root (parents too); its absolute path. */
function dir(w: World, rel: string): string {
  const d = path.join(w.root, rel);
  mkdirSync(d, { recursive: true });
  return d;
}

/** The world's instance tags as DescribeTags answers them (instance metadata tags off). */
function describeTags(w: World, tags: Record<string, string>): void {
  w.imds.instance.tags = null;
  w.ec2.instances.get(INSTANCE)!.tags = tags;
}

/** Setups for the table: IMDS instance tags, user-data, NodeENI objects. */
const imdsTags = (tags: Record<string, string>) => (w: World) => void (w.imds.instance.tags = tags);
const userData = (data: string | Buffer) => (w: World) => void (w.imds.instance.userData = data);
const nodeEnis = (objects: object[]) => async (w: World, t: Test) =>
  void (await withKube(t, w, objects));

// ---- table-driven rejections ------------------------------------------------------------------------

interface Case {
  name: string;
  /** config.toml (default: baseToml()) */
  toml?: string;
  /** apply once first, so the rejected run starts from a converged node */
  converged?: boolean;
  setup?: (w: World, t: Test) => void | Promise<void>;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  want: Rejection;
}

function rejected(c: Case): void {
  t.test(c.name, async (t) => {
    const w = await world(t, { configToml: c.toml ?? baseToml() });
    if (c.converged) await converge(t, w);
    await c.setup?.(w, t);
    await expectRejected(t, w, c.args ?? ["apply"], c.want, { env: c.env });
  });
}

const protoMsg = /Object\.prototype member name/;

// ---- class 1: Object.prototype names (area security) -------------------------------------------------

const prototypeCases: Case[] = [
  {
    name: "security/prototype: IMDS tag eni-dpdk:dpdk = __proto__.LD_PRELOAD=/x.so",
    setup: imdsTags({ "eni-dpdk:dpdk": "__proto__.LD_PRELOAD=/x.so" }),
    want: { source: "tag eni-dpdk:dpdk", key: "dpdk.__proto__.LD_PRELOAD", message: protoMsg },
  },
  {
    name: "security/prototype: DescribeTags eni-dpdk:eni:data1 = __proto__.mtu=1",
    setup: (w) => describeTags(w, { "eni-dpdk:eni:data1": "__proto__.mtu=1" }),
    want: { source: "tag eni-dpdk:eni:data1", key: "eni.data1.__proto__.mtu", message: protoMsg },
  },
  {
    name: "security/prototype: tag key eni-dpdk:__proto__",
    setup: imdsTags({ "eni-dpdk:__proto__": "enabled=true" }),
    want: {
      source: "tag eni-dpdk:__proto__",
      key: "eni-dpdk:__proto__",
      message: /"__proto__" is an Object\.prototype member name.*expected one of eni-dpdk:service/,
    },
  },
  {
    name: "security/prototype: tag key eni-dpdk:constructor (DescribeTags)",
    setup: (w) => describeTags(w, { "eni-dpdk:constructor": "x=1" }),
    want: { source: "tag eni-dpdk:constructor", key: "eni-dpdk:constructor", message: protoMsg },
  },
  {
    name: "security/prototype: tag value constructor.prototype.polluted=1",
    setup: imdsTags({ "eni-dpdk:eni:data1": "constructor.prototype.polluted=1" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.constructor.prototype.polluted",
      message: /"constructor" is an Object\.prototype member name/,
    },
  },
  {
    name: "security/prototype: file table [__proto__]",
    toml: baseToml('[__proto__]\nLD_PRELOAD = "/x.so"\n'),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.toml:\d+:\d+$/,
      key: /^__proto__$/,
      message: protoMsg,
    },
  },
  {
    name: "security/prototype: file [dpdk] toString",
    toml: baseToml('[dpdk]\ntoString = "x"\n'),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "dpdk.toString",
      message:
        /unknown key: "toString" is an Object\.prototype member name, which is never a valid key \(known: enabled/,
    },
  },
  {
    name: "security/prototype: file [[eni]] hasOwnProperty",
    toml: baseToml(`${KERNEL_ENI()}hasOwnProperty = 1\n`),
    want: { source: /config\.toml:\d+:1$/, key: "eni.k9.hasOwnProperty", message: protoMsg },
  },
  {
    name: "security/prototype: file [eni.dpdk] valueOf",
    toml: baseToml(
      `${KERNEL_ENI().replace("dpdk.enabled = false\n", "")}[eni.dpdk]\nenabled = false\nvalueOf = 1\n`,
    ),
    want: { source: /config\.toml:\d+:1$/, key: "eni.k9.dpdk.valueOf", message: protoMsg },
  },
  {
    name: "security/prototype: file eni tags map with a __proto__ key",
    toml: baseToml(`${KERNEL_ENI()}tags = { "__proto__" = "x" }\n`),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "eni.k9.tags",
      message: /expected a table of strings; "__proto__" is an Object\.prototype member name/,
    },
  },
  {
    name: "security/prototype: file [kubernetes] node_labels with a constructor key",
    toml: baseToml('[kubernetes]\nnode_labels = { constructor = "x" }\n'),
    want: { source: /config\.toml:\d+:1$/, key: "kubernetes.node_labels", message: protoMsg },
  },
  {
    name: "security/prototype: config.d top-level inline table __proto__",
    setup: (w) =>
      void put(w, "etc/eni-dpdk/config.d/10-p.toml", '"__proto__" = { polluted = "yes" }\n'),
    want: { source: "/etc/eni-dpdk/config.d/10-p.toml:1:1", key: "__proto__", message: protoMsg },
  },
  {
    name: 'security/prototype: raw user-data [dpdk] "__proto__" key',
    setup: userData('[dpdk]\n"__proto__" = { enabled = false }\n'),
    want: { source: "user-data:2:1", key: "dpdk.__proto__", message: protoMsg },
  },
  {
    name: "security/prototype: MIME user-data part with [prototype]",
    setup: userData(mime([part(NODEADM, NODE_CONFIG), part(OUR, "[prototype]\nx = 1\n")])),
    want: {
      source: /^user-data part 2 \(application\/eni-dpdk\+toml\):1:1$/,
      key: "prototype",
      message: protoMsg,
    },
  },
  {
    name: "security/prototype: NodeENI spec.__proto__",
    toml: KUBE_TOML,
    setup: nodeEnis([
      {
        metadata: { name: "p" },
        spec: JSON.parse(
          `{"nodeSelector": {}, "subnetID": "${SUBNET_A}", "securityGroupIDs": ["${SG_DPDK}"], "__proto__": {"mtu": 1}}`,
        ),
      },
    ]),
    want: { source: "NodeENI p", key: "spec.__proto__", message: protoMsg },
  },
  {
    name: "security/prototype: NodeENI spec.constructor",
    toml: KUBE_TOML,
    setup: nodeEnis([nodeEni("c", { constructor: { prototype: { x: 1 } } })]),
    want: { source: "NodeENI c", key: "spec.constructor", message: protoMsg },
  },
  {
    name: "security/prototype: kubeconfig current-context: constructor",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      const emu = await withKube(t, w, []);
      put(
        w,
        "etc/eni-dpdk/kubeconfig",
        kubeconfig(emu.url).replace("current-context: ctx", "current-context: constructor"),
        0o600,
      );
    },
    want: {
      source: /^kubeconfig .*\/etc\/eni-dpdk\/kubeconfig$/,
      key: "current-context",
      message: /has no context "constructor"/,
    },
  },
];

// ---- class 2: types --------------------------------------------------------------------------------

const floatMsg = /expected an integer, got a float/;
const typeCases: Case[] = [
  {
    name: "input/types: file device_index = 1.0",
    toml: baseToml(KERNEL_ENI().replace("device_index = 9", "device_index = 9.0")),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "eni.k9.device_index",
      message: /got a float 9\.0/,
    },
  },
  {
    name: "input/types: file mtu = 9.001e3",
    toml: baseToml(`${KERNEL_ENI()}mtu = 9.001e3\n`),
    want: { source: /config\.toml:\d+:1$/, key: "eni.k9.mtu", message: /got a float 9001\.0/ },
  },
  {
    name: "input/types: file timeout_seconds = 3e2",
    toml: baseToml().replace(
      "reconcile_interval_seconds = 0",
      "reconcile_interval_seconds = 0\ntimeout_seconds = 3e2",
    ),
    want: { source: /config\.toml:\d+:1$/, key: "service.timeout_seconds", message: floatMsg },
  },
  {
    name: "input/types: file mtu past 2^53 is out of range with the range",
    toml: baseToml(`${KERNEL_ENI()}mtu = 9007199254740993\n`),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "eni.k9.mtu",
      message: /out of range: expected 576\.\.9216, got 9007199254740993/,
    },
  },
  {
    name: "input/types: file hugepages past 2^63 is a syntax error at line:col naming the key",
    toml: baseToml("[dpdk]\nhugepages_2m = 99999999999999999999\n"),
    want: {
      source: /config\.toml:\d+:16$/,
      key: "dpdk.hugepages_2m",
      message: /not valid TOML: Integer literal is outside the 64-bit/,
    },
  },
  {
    name: "input/types: file grammar error carries line:col",
    toml: baseToml("[dpdk]\nenabled = = true\n"),
    want: { source: /config\.toml:\d+:11$/, key: "(syntax)", message: /not valid TOML/ },
  },
  {
    name: "input/types: file redefined key carries line:col and the key",
    toml: baseToml("[dpdk]\nenabled = true\nenabled = false\n"),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "dpdk.enabled",
      message: /Cannot redefine existing key/,
    },
  },
  {
    name: "input/types: config.d network_card_index = 1.5",
    setup: (w) =>
      void put(
        w,
        "etc/eni-dpdk/config.d/20-n.toml",
        `[[eni]]\nname = "data1"\nnetwork_card_index = 1.5\n`,
      ),
    want: {
      source: "/etc/eni-dpdk/config.d/20-n.toml:3:1",
      key: "eni.data1.network_card_index",
      message: /got a float 1\.5/,
    },
  },
  {
    name: "input/types: raw user-data device_index = 2.0",
    setup: userData(`[[eni]]\nname = "data1"\ndevice_index = 2.0\n`),
    want: { source: "user-data:3:1", key: "eni.data1.device_index", message: floatMsg },
  },
  {
    name: 'input/types: user-data [kubernetes] adjust_max_pods = "yes"',
    setup: userData('[kubernetes]\nadjust_max_pods = "yes"\n'),
    want: {
      source: "user-data:2:1",
      key: "kubernetes.adjust_max_pods",
      message: /expected true or false, got string/,
    },
  },
  {
    name: "input/types: tag eni-dpdk:kubernetes adjust_max_pods=1",
    setup: imdsTags({ "eni-dpdk:kubernetes": "adjust_max_pods=1" }),
    want: {
      source: "tag eni-dpdk:kubernetes",
      key: "kubernetes.adjust_max_pods",
      message: /expected true or false, got "1"/,
    },
  },
  {
    name: "input/types: base64 user-data hugepages_1g = 1e1",
    setup: userData(b64("[dpdk]\nhugepages_1g = 1e1\n")),
    want: { source: "user-data:2:1", key: "dpdk.hugepages_1g", message: /got a float 10\.0/ },
  },
  {
    name: "input/types: gzip user-data syntax error carries line:col",
    setup: userData(gzipSync("[dpdk]\nhugepages_2m = 1\nhugepages_2m = 2\n")),
    want: { source: "user-data:3:1", key: "dpdk.hugepages_2m", message: /Cannot redefine/ },
  },
  {
    name: "input/types: MIME part syntax error carries the part and line:col",
    setup: userData(mime([part(NODEADM, NODE_CONFIG), part(OUR, "[dpdk\n")])),
    want: {
      source: /^user-data part 2 \(application\/eni-dpdk\+toml\):1:\d+$/,
      key: "(syntax)",
      message: /not valid TOML/,
    },
  },
  {
    name: "input/types: tag hugepages_2m=1e3",
    setup: imdsTags({ "eni-dpdk:dpdk": "hugepages_2m=1e3" }),
    want: {
      source: "tag eni-dpdk:dpdk",
      key: "dpdk.hugepages_2m",
      message: /expected an integer, got "1e3" \(plain decimal digits/,
    },
  },
  {
    name: "input/types: tag device_index=0x10",
    setup: imdsTags({ "eni-dpdk:eni:data1": "device_index=0x10" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.device_index",
      message: /expected an integer, got "0x10"/,
    },
  },
  {
    name: "input/types: tag mtu=+9001 (DescribeTags)",
    setup: (w) => describeTags(w, { "eni-dpdk:eni:data1": "mtu=+9001" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.mtu",
      message: /expected an integer, got "\+9001"/,
    },
  },
  {
    name: "input/types: tag device_index=01",
    setup: imdsTags({ "eni-dpdk:eni:data1": "device_index=01" }),
    want: { source: "tag eni-dpdk:eni:data1", key: "eni.data1.device_index", message: /got "01"/ },
  },
  {
    name: "input/types: tag hugepages_2m=1_000",
    setup: imdsTags({ "eni-dpdk:dpdk": "hugepages_2m=1_000" }),
    want: { source: "tag eni-dpdk:dpdk", key: "dpdk.hugepages_2m", message: /got "1_000"/ },
  },
  {
    name: "input/types: NodeENI deviceIndex 1.5",
    toml: KUBE_TOML,
    setup: nodeEnis([nodeEni("f", { deviceIndex: 1.5 })]),
    want: {
      source: "NodeENI f",
      key: "spec.deviceIndex",
      message: /expected an integer, got 1\.5/,
    },
  },
  {
    name: "input/types: a config.d file that is not UTF-8",
    setup: (w) =>
      void put(
        w,
        "etc/eni-dpdk/config.d/30-latin1.toml",
        Buffer.concat([
          Buffer.from('[[eni]]\nname = "data1"\ndescription = "caf'),
          Buffer.from([0xe9]),
          Buffer.from('"\n'),
        ]),
      ),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.d\/30-latin1\.toml /,
      key: "(file)",
      message: /is not valid UTF-8 \(first bad byte at 3:19\); save it as UTF-8/,
    },
  },
  {
    name: "input/types: our MIME part that is not UTF-8",
    setup: userData(
      Buffer.from(
        mime([part(NODEADM, NODE_CONFIG), part(OUR, '[dpdk]\ndriver = "vfio-pci\xff"\n')]),
        "latin1",
      ),
    ),
    want: {
      source: "user-data part 2 (application/eni-dpdk+toml)",
      key: "(encoding)",
      message: /is not valid UTF-8 \(first bad byte at 2:19\)/,
    },
  },
  {
    name: "input/types: env ENABLE_DPDK=yes",
    env: { ENABLE_DPDK: "yes" },
    want: {
      source: "env ENABLE_DPDK",
      key: "dpdk.enabled",
      message: /expected true or false, got "yes"/,
    },
  },
];

// ---- class 3: user-data ------------------------------------------------------------------------------

const userDataCases: Case[] = [
  {
    name: "input/user-data: declared boundary matches no part",
    setup: userData(
      mime(
        [part(NODEADM, NODE_CONFIG, "X"), part(OUR, "[dpdk]\nhugepages_2m = 2\n", "X")],
        "X",
        "B",
      ),
    ),
    want: {
      source: "user-data",
      key: "(mime)",
      message: /declares boundary "B", but no line is "--B"/,
    },
  },
  {
    name: "input/user-data: our part behind a boundary other than the declared one",
    setup: userData(
      mime([part(NODEADM, NODE_CONFIG), part(OUR, "[dpdk]\nhugepages_2m = 2\n", "OTHER")]),
    ),
    want: {
      source: "user-data",
      key: "(mime)",
      message: /1 line\(s\) say Content-Type: application\/eni-dpdk\+toml, but only 0 part\(s\)/,
    },
  },
  {
    name: "input/user-data: multipart without a boundary parameter",
    setup: userData(
      `MIME-Version: 1.0\nContent-Type: multipart/mixed\n\n${part(OUR, "[dpdk]\nhugepages_2m = 2\n")}--B--\n`,
    ),
    want: { source: "user-data", key: "(mime)", message: /no boundary parameter/ },
  },
  {
    name: "input/user-data: our part nested in a multipart/mixed part",
    setup: userData(
      mime([
        part(NODEADM, NODE_CONFIG),
        part(
          'multipart/mixed; boundary="IN"',
          `${part(OUR, "[dpdk]\nhugepages_2m = 2\n", "IN")}--IN--`,
        ),
      ]),
    ),
    want: {
      source: "user-data part 2.1 (application/eni-dpdk+toml)",
      key: "(mime)",
      message:
        /is nested inside user-data part 2 \(multipart\/mixed\); nodeadm reads only top-level parts/,
    },
  },
  {
    name: "input/user-data: our tables nested two levels deep in an untyped part",
    setup: (w) => {
      const inner = `${part('multipart/alternative; boundary="L2"', `--L2\n\n[[eni]]\nname = "x"\n--L2--`, "L1")}--L1--`;
      w.imds.instance.userData = mime([part('multipart/mixed; boundary="L1"', inner)]);
    },
    want: {
      source: "user-data part 1.1.1 (text/plain)",
      key: "(mime)",
      message: /is nested inside user-data part 1\.1 \(multipart\/alternative\)/,
    },
  },
  {
    name: "input/user-data: our tables in a text/plain part",
    setup: userData(
      mime([
        part(NODEADM, NODE_CONFIG),
        part("text/plain; charset=us-ascii", "[dpdk]\nhugepages_2m = 2\n"),
      ]),
    ),
    want: {
      source: "user-data part 2 (text/plain)",
      key: "Content-Type",
      message:
        /holds eni-dpdk tables but is typed text\/plain .*only parts with Content-Type: application\/eni-dpdk\+toml/,
    },
  },
  {
    name: "input/user-data: our tables in a part without Content-Type",
    setup: userData(mime([part(NODEADM, NODE_CONFIG), `--B\n\n${KERNEL_ENI()}\n`])),
    want: {
      source: "user-data part 2 (text/plain)",
      key: "Content-Type",
      message: /typed text\/plain \(or untyped\)/,
    },
  },
  {
    name: "input/user-data: gzip bomb as the whole blob",
    setup: userData(bomb(64 * 1024 * 1024)),
    want: {
      source: "user-data",
      key: "(encoding)",
      message: /gzip data inflates past the 1 MiB limit/,
    },
  },
  {
    name: "input/user-data: base64 of a gzip bomb as the whole blob",
    setup: userData(b64(bomb(8 * 1024 * 1024))),
    want: { source: "user-data", key: "(encoding)", message: /inflates past the 1 MiB limit/ },
  },
  {
    name: "input/user-data: gzip bomb inside our MIME part (base64 transfer encoding)",
    setup: userData(
      mime([
        part(NODEADM, NODE_CONFIG),
        part(OUR, b64(bomb(4 * 1024 * 1024)), "B", "Content-Transfer-Encoding: base64\n"),
      ]),
    ),
    want: {
      source: "user-data part 2 (application/eni-dpdk+toml)",
      key: "(encoding)",
      message: /inflates past the 1 MiB limit for all of user-data/,
    },
  },
  {
    name: "input/user-data: two gzip parts that together inflate past the limit",
    setup: (w) => {
      const big = (n: number) => b64(gzipSync(`[dpdk]\nhugepages_2m = 1\n# ${"x".repeat(n)}\n`));
      w.imds.instance.userData = mime([part(OUR, big(700 * 1024)), part(OUR, big(700 * 1024))]);
    },
    want: {
      source: "user-data part 2 (application/eni-dpdk+toml)",
      key: "(encoding)",
      message: /1 MiB limit/,
    },
  },
  {
    name: "input/user-data: corrupt gzip in our part",
    setup: userData(
      mime([
        part(
          OUR,
          b64(Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3, 4])),
          "B",
          "Content-Transfer-Encoding: base64\n",
        ),
      ]),
    ),
    want: {
      source: "user-data part 1 (application/eni-dpdk+toml)",
      key: "(encoding)",
      message: /gzip data is corrupt/,
    },
  },
  {
    name: "input/user-data: a text/plain single document with our headers and broken TOML",
    setup: userData("Content-Type: text/plain\n\n[dpdk]\nhugepages_2m = \n"),
    want: { source: /^user-data:2:\d+$/, key: "(syntax)", message: /not valid TOML/ },
  },
  {
    name: "input/user-data: broken TOML that mentions kind: NodeConfig is still ours",
    setup: userData("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n[[eni]]\nname = \n"),
    want: { source: /^user-data:1:\d+$/, key: "(syntax)", message: /not valid TOML/ },
  },
];

// ---- class 4: tag values -----------------------------------------------------------------------------

const tagCases: Case[] = [
  {
    name: "input/tags: a key repeated in one value (IMDS)",
    setup: imdsTags({ "eni-dpdk:eni:data1": "device_index=1;device_index=5" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.device_index",
      message: /"device_index" is set twice in this tag value/,
    },
  },
  {
    name: "input/tags: a key repeated in one value (DescribeTags)",
    setup: (w) =>
      describeTags(w, { "eni-dpdk:dpdk": "driver=vfio-pci;hugepages_2m=2;driver=igb_uio" }),
    want: { source: "tag eni-dpdk:dpdk", key: "dpdk.driver", message: /set twice/ },
  },
  {
    name: "input/tags: a dotted key repeated with spaces",
    setup: imdsTags({ "eni-dpdk:eni:data1": "dpdk.driver=vfio-pci; dpdk . driver=igb_uio" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: /^eni\.data1\.dpdk \. driver$/,
      message: /"dpdk\.driver" is set twice/,
    },
  },
  {
    name: "input/tags: empty segment a..b",
    setup: imdsTags({ "eni-dpdk:dpdk": "a..b=1" }),
    want: {
      source: "tag eni-dpdk:dpdk",
      key: "dpdk.a..b",
      message: /empty key segment in "a\.\.b"/,
    },
  },
  {
    name: "input/tags: leading dot .x",
    setup: imdsTags({ "eni-dpdk:sriov": ".x=1" }),
    want: { source: "tag eni-dpdk:sriov", key: "sriov..x", message: /empty key segment in "\.x"/ },
  },
  {
    name: "input/tags: trailing dot dpdk.",
    setup: (w) => describeTags(w, { "eni-dpdk:eni:data1": "dpdk.=1" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.dpdk.",
      message: /empty key segment/,
    },
  },
  {
    name: "input/tags: dpdk=… then dpdk.x=…",
    setup: imdsTags({ "eni-dpdk:eni:data1": "dpdk=1;dpdk.enabled=false" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.dpdk.enabled",
      message: /descends into "dpdk", which is already set as a value/,
    },
  },
  {
    name: "input/tags: dpdk.x=… then dpdk=…",
    setup: imdsTags({ "eni-dpdk:eni:data1": "dpdk.enabled=false;dpdk=1" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.dpdk",
      message: /"dpdk" is set as a value, but "dpdk\.…" keys are also set/,
    },
  },
  {
    name: "input/tags: a path into a non-table (device_index.x)",
    setup: imdsTags({ "eni-dpdk:eni:data1": "device_index.x=1" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "eni.data1.device_index",
      message: /expected a value, got dotted sub-keys \(x\): this key is not a table/,
    },
  },
  {
    name: "input/tags: a pair without =",
    setup: imdsTags({ "eni-dpdk:dpdk": "enabled" }),
    want: {
      source: "tag eni-dpdk:dpdk",
      key: "dpdk.enabled",
      message: /expected key=value, got "enabled"/,
    },
  },
  {
    name: "input/tags: name= in an eni tag differs from the key",
    setup: imdsTags({ "eni-dpdk:eni:data1": "name=other" }),
    want: {
      source: "tag eni-dpdk:eni:data1",
      key: "name",
      message: /the ENI name comes from the tag key/,
    },
  },
  {
    name: "input/tags: unknown eni-dpdk tag",
    setup: imdsTags({ "eni-dpdk:hugepages": "x=1" }),
    want: {
      source: "tag eni-dpdk:hugepages",
      key: "eni-dpdk:hugepages",
      message: /unknown eni-dpdk tag; expected one of/,
    },
  },
];

// ---- class 5: the user's mistakes, said as such --------------------------------------------------------

const noItemsArray = /answered the NodeENI list .* without an items array/;
const errorCases: Case[] = [
  {
    name: "input/errors: --config names a directory",
    setup: (w) => void dir(w, "etc/eni-dpdk/conf.toml"),
    args: ["apply", "--config", "/etc/eni-dpdk/conf.toml"],
    want: {
      source:
        /^\/etc\/eni-dpdk\/conf\.toml \(resolved under --root as .*\/etc\/eni-dpdk\/conf\.toml\)$/,
      key: "(file)",
      message: /is a directory; --config names one TOML file/,
    },
  },
  {
    name: "input/errors: a relative --config",
    args: ["apply", "--config", "etc/eni-dpdk/config.toml"],
    want: {
      source: "--config etc/eni-dpdk/config.toml",
      key: "(file)",
      message: /must be absolute; it is resolved under --root/,
    },
  },
  {
    name: "input/errors: a missing --config shows the path resolved under --root",
    args: ["plan", "--config", "/etc/eni-dpdk/nope.toml"],
    want: {
      source:
        /^\/etc\/eni-dpdk\/nope\.toml \(resolved under --root as \/.*\/etc\/eni-dpdk\/nope\.toml\)$/,
      key: "(file)",
      message: /no such file/,
    },
  },
  {
    name: "input/errors: --root that does not exist",
    // unique per run: an older build that created it would otherwise make the case vacuous
    args: ["apply", "--root", MISSING_ROOT],
    want: {
      source: `--root ${MISSING_ROOT}`,
      key: "(root)",
      message: /is not an existing directory/,
    },
  },
  {
    name: "input/errors: a config.d entry that is a directory",
    setup: (w) => void dir(w, "etc/eni-dpdk/config.d/50-x.toml"),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.d\/50-x\.toml /,
      key: "(file)",
      message: /is a directory; config\.d holds \*\.toml files only/,
    },
  },
  {
    name: "input/errors: a config.d entry that is a FIFO",
    setup: async (w) => runQuiet("mkfifo", [dir(w, "etc/eni-dpdk/config.d") + "/60-fifo.toml"]),
    want: { source: /60-fifo\.toml/, key: "(file)", message: /is not a regular file/ },
  },
  {
    name: "input/errors: config.d is a file",
    setup: (w) => void put(w, "etc/eni-dpdk/config.d", "[dpdk]\n"),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.d /,
      key: "(directory)",
      message: /is not a directory; it should hold \*\.toml files/,
    },
  },
  {
    name: "input/errors: config.toml is a directory",
    setup: (w) =>
      void (
        rmSync(path.join(w.root, "etc/eni-dpdk/config.toml")),
        dir(w, "etc/eni-dpdk/config.toml")
      ),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.toml /,
      key: "(file)",
      message: /is a directory; expected the TOML config file/,
    },
  },
  {
    name: "input/errors: a single table [eni] instead of [[eni]]",
    toml: baseToml('[eni]\nname = "x"\n').replace(/\[\[eni\]\][\s\S]*?(?=\[eni\]\nname = "x")/, ""),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "eni",
      message:
        /expected an array of tables \[\[eni\]\], got table \(a single table \[eni\]; write \[\[eni\]\]/,
    },
  },
  {
    name: "input/errors: [[dpdk]] as an array of tables",
    toml: baseToml("[[dpdk]]\nenabled = true\n"),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "dpdk",
      message:
        /expected a table \[dpdk\], got array \(an array; write \[dpdk\] with single brackets/,
    },
  },
  {
    name: "input/errors: NodeENI without metadata.name",
    toml: KUBE_TOML,
    setup: nodeEnis([nodeEni("a"), nodeEni("b"), { metadata: {}, spec: { nodeSelector: {} } }]),
    want: {
      source: /^NodeENI items\[\d\] \(from https:\/\/127\.0\.0\.1:\d+\)$/,
      key: "metadata.name",
      message: /expected a non-empty string, got nothing/,
    },
  },
  {
    name: "input/errors: NodeENI metadata.name is a number",
    toml: KUBE_TOML,
    setup: nodeEnis([{ metadata: { name: 7 }, spec: {} }]),
    want: {
      source: /^NodeENI items\[0\]/,
      key: "metadata.name",
      message: /expected a non-empty string, got 7/,
    },
  },
  {
    name: "input/errors: NodeENI spec is a list",
    toml: KUBE_TOML,
    setup: nodeEnis([{ metadata: { name: "l" }, spec: ["x"] }]),
    want: {
      source: /^NodeENI items\[0\]/,
      key: "spec",
      message: /expected an object, got \["x"\]/,
    },
  },
  {
    name: "input/errors: a NodeENI list whose items is not an array is an OpError naming the API server",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      const emu = await withKube(t, w, [nodeEni("a")]);
      (emu as unknown as { list: () => unknown }).list = () => ({ a: nodeEni("a") });
    },
    want: {
      code: 1,
      source: /the API server https:\/\/127\.0\.0\.1:\d+ answered the NodeENI list/,
      key: noItemsArray,
      message: noItemsArray,
    },
  },
  {
    name: "input/errors: kubeconfig clusters is a map, not a list",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      await withKube(t, w, []);
      put(
        w,
        "etc/eni-dpdk/kubeconfig",
        "current-context: ctx\nclusters:\n  c1: {server: https://x}\n",
        0o600,
      );
    },
    want: {
      source: /^kubeconfig .*\/etc\/eni-dpdk\/kubeconfig$/,
      key: "clusters",
      message: /expected a list of \{name, cluster\} entries, got object/,
    },
  },
  {
    name: "input/errors: kubeconfig exec args is a string",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      const emu = await withKube(t, w, []);
      put(
        w,
        "etc/eni-dpdk/kubeconfig",
        kubeconfig(emu.url, "{exec: {command: aws, args: eks get-token}}"),
        0o600,
      );
    },
    want: {
      source: /^kubeconfig /,
      key: "users[u1].user.exec.args",
      message: /expected a list of strings/,
    },
  },
  {
    name: "input/errors: env DEFAULT_DPDK_DRIVER=vfio",
    env: { DEFAULT_DPDK_DRIVER: "vfio" },
    want: {
      source: "env DEFAULT_DPDK_DRIVER",
      key: "dpdk.driver",
      message: /expected one of vfio-pci, igb_uio, uio_pci_generic, got "vfio"/,
    },
  },
  {
    name: "input/errors: env SRIOV_DP_CONFIG_PATH relative",
    env: { SRIOV_DP_CONFIG_PATH: "etc/pcidp/config.json" },
    want: {
      source: "env SRIOV_DP_CONFIG_PATH",
      key: "sriov.config_path",
      message: /expected an absolute path/,
    },
  },
  {
    name: "input/errors: the rejected second run after a converged apply changes nothing",
    converged: true,
    setup: imdsTags({ "eni-dpdk:eni:data1": "mtu=9001;mtu=1500" }),
    want: { source: "tag eni-dpdk:eni:data1", key: "eni.data1.mtu", message: /set twice/ },
  },
];

// ---- class 6: files others can change -------------------------------------------------------------------

const chmodFix = (rel: string) => new RegExp(`chmod go-w /.*/${rel.replace(/[.]/g, "\\.")}$`);
const permissionCases: Case[] = [
  {
    name: "input/permissions: world-writable config.toml",
    setup: (w) => chmodSync(path.join(w.root, "etc/eni-dpdk/config.toml"), 0o666),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.toml /,
      key: "(file)",
      message:
        /is group- and world-writable \(mode 0666\); .*chmod go-w \/.*\/etc\/eni-dpdk\/config\.toml$/,
    },
  },
  {
    name: "input/permissions: group-writable config.toml on a converged node",
    converged: true,
    setup: (w) => chmodSync(path.join(w.root, "etc/eni-dpdk/config.toml"), 0o664),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.toml /,
      key: "(file)",
      message: /is group-writable \(mode 0664\)/,
    },
  },
  {
    name: "input/permissions: config.toml owned by another user",
    setup: (w) => chownSync(path.join(w.root, "etc/eni-dpdk/config.toml"), 1234, 1234),
    want: {
      source: /config\.toml /,
      key: "(file)",
      message: /is owned by uid 1234, not root; .*chown root /,
    },
  },
  {
    name: "input/permissions: world-writable config.d file",
    setup: (w) =>
      void put(w, "etc/eni-dpdk/config.d/10-a.toml", "[dpdk]\nhugepages_2m = 1\n", 0o646),
    want: {
      source: /config\.d\/10-a\.toml /,
      key: "(file)",
      message: chmodFix("etc/eni-dpdk/config.d/10-a.toml"),
    },
  },
  {
    name: "input/permissions: world-writable config.d directory",
    setup: (w) => chmodSync(dir(w, "etc/eni-dpdk/config.d"), 0o777),
    want: {
      source: /^\/etc\/eni-dpdk\/config\.d /,
      key: "(directory)",
      message: /is group- and world-writable \(mode 0777\)/,
    },
  },
  {
    name: "input/permissions: group-writable /etc/eni-dpdk",
    converged: true,
    setup: (w) => chmodSync(path.join(w.root, "etc/eni-dpdk"), 0o775),
    want: { source: /^\/etc\/eni-dpdk \(/, key: "(directory)", message: chmodFix("etc/eni-dpdk") },
  },
  {
    name: "input/permissions: world-writable --config file",
    setup: (w) => void put(w, "etc/eni-dpdk/other.toml", baseToml(), 0o666),
    args: ["apply", "--config", "/etc/eni-dpdk/other.toml"],
    want: { source: /^\/etc\/eni-dpdk\/other\.toml /, key: "(file)", message: /world-writable/ },
  },
  {
    name: "input/permissions: config.d symlink to a world-writable file",
    setup: (w) => {
      const target = put(w, "var/tmp/evil.toml", "[dpdk]\nhugepages_2m = 1\n", 0o666);
      mkdirSync(path.join(w.root, "etc/eni-dpdk/config.d"), { recursive: true });
      symlinkSync(target, path.join(w.root, "etc/eni-dpdk/config.d/90-link.toml"));
    },
    want: {
      source: /config\.d\/90-link\.toml /,
      key: "(file)",
      message: /world-writable \(mode 0666\)/,
    },
  },
  {
    name: "input/permissions: world-writable kubeconfig",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      await withKube(t, w, []);
      chmodSync(path.join(w.root, "etc/eni-dpdk/kubeconfig"), 0o666);
    },
    want: {
      source: /^\/etc\/eni-dpdk\/kubeconfig /,
      key: "kubernetes.kubeconfig",
      message: chmodFix("etc/eni-dpdk/kubeconfig"),
    },
  },
  {
    name: "input/permissions: group-writable [kubernetes].ca_file",
    toml:
      `[service]\nsources = ["file", "nodeeni"]\n` +
      `[kubernetes]\napi_server = "https://127.0.0.1:1"\ncluster_name = "demo"\nca_file = "/etc/eni-dpdk/ca.pem"\n`,
    setup: (w) => void put(w, "etc/eni-dpdk/ca.pem", pki.caCert, 0o664),
    want: {
      source: /^\/etc\/eni-dpdk\/ca\.pem /,
      key: "kubernetes.ca_file",
      message: /is group-writable \(mode 0664\)/,
    },
  },
  {
    name: "input/permissions: a kubeconfig tokenFile others can write",
    toml: KUBE_TOML,
    setup: async (w, t) => {
      const emu = await withKube(t, w, []);
      put(w, "etc/eni-dpdk/token", "t0k\n", 0o622);
      put(w, "etc/eni-dpdk/kubeconfig", kubeconfig(emu.url, "{tokenFile: token}"), 0o600);
    },
    want: {
      source: /^\/etc\/eni-dpdk\/token /,
      key: "users[u1].user.tokenFile",
      message: /is group- and world-writable \(mode 0622\)/,
    },
  },
];

// ---- class 7: one program path -----------------------------------------------------------------------

const oneProgram = /binding_script takes one program path, no arguments/;
const bindingCases: Case[] = [
  {
    name: "input/binding: binding_script with an argument (file)",
    toml: baseToml('[dpdk]\nbinding_script = "/usr/bin/dpdk-devbind.py --force"\n'),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "dpdk.binding_script",
      message: /contains whitespace: binding_script takes one program path, no arguments/,
    },
  },
  {
    name: "input/binding: binding_script relative (tag)",
    setup: imdsTags({ "eni-dpdk:dpdk": "binding_script=dpdk-devbind.py" }),
    want: { source: "tag eni-dpdk:dpdk", key: "dpdk.binding_script", message: oneProgram },
  },
  {
    name: "input/binding: binding_script with .. (user-data)",
    setup: userData('[dpdk]\nbinding_script = "/usr/bin/../sbin/devbind"\n'),
    want: {
      source: "user-data:2:1",
      key: "dpdk.binding_script",
      message: /is not an absolute, normalized path/,
    },
  },
  {
    name: "input/binding: binding_script with a trailing /",
    toml: baseToml('[dpdk]\nbinding_script = "/usr/bin/"\n'),
    want: { source: /config\.toml/, key: "dpdk.binding_script", message: oneProgram },
  },
  {
    name: "input/binding: env DPDK_BINDING_SCRIPT with --force",
    env: { DPDK_BINDING_SCRIPT: "/opt/dpdk/dpdk-devbind.py --force" },
    want: { source: "env DPDK_BINDING_SCRIPT", key: "dpdk.binding_script", message: oneProgram },
  },
  {
    name: "input/binding: restart_command with an empty program",
    toml: baseToml('[sriov]\nrestart_command = [""]\n'),
    want: {
      source: /config\.toml:\d+:1$/,
      key: "sriov.restart_command",
      message: /must be an absolute path; "" is empty/,
    },
  },
  {
    name: "input/binding: restart_command with a stray comma (tag)",
    setup: imdsTags({ "eni-dpdk:sriov": "restart_command=/usr/bin/kubectl,,pod" }),
    want: {
      source: "tag eni-dpdk:sriov",
      key: "sriov.restart_command",
      message: /element 1 of "\/usr\/bin\/kubectl,,pod" is empty; remove the stray comma/,
    },
  },
  {
    name: "input/binding: restart_command program relative",
    toml: baseToml('[sriov]\nrestart_command = ["kubectl", "delete"]\n'),
    want: {
      source: /config\.toml/,
      key: "sriov.restart_command",
      message: /must be an absolute path; "kubectl" is not an absolute, normalized path/,
    },
  },
  {
    name: "input/binding: restart_command program with // (tag)",
    setup: imdsTags({ "eni-dpdk:sriov": "restart_command=/usr//bin/kubectl,delete" }),
    want: {
      source: "tag eni-dpdk:sriov",
      key: "sriov.restart_command",
      message: /must be an absolute path/,
    },
  },
  {
    name: "input/binding: restart_command program with arguments in one word",
    toml: baseToml('[sriov]\nrestart_command = ["/usr/bin/kubectl delete pod"]\n'),
    want: { source: /config\.toml/, key: "sriov.restart_command", message: /contains whitespace/ },
  },
];

// ---- class 8: IMDS tag keys ------------------------------------------------------------------------------

const imdsCases: Case[] = [
  {
    name: "input/imds: a listed tag key whose value answers 404 is an OpError naming the key",
    setup: (w) => {
      w.imds.instance.tags = { "eni-dpdk:dpdk": "hugepages_2m=1" };
      const lookup = w.imds.lookup.bind(w.imds);
      w.imds.lookup = (p) =>
        p === "meta-data/tags/instance/eni-dpdk:dpdk" ? undefined : lookup(p);
    },
    want: {
      code: 1,
      source: /IMDS lists instance tag "eni-dpdk:dpdk" but answered 404/,
      key: /eni-dpdk:dpdk/,
      message: /answered 404 for meta-data\/tags\/instance\/eni-dpdk:dpdk/,
    },
  },
];

const tables = [
  prototypeCases,
  typeCases,
  userDataCases,
  tagCases,
  errorCases,
  permissionCases,
  bindingCases,
  imdsCases,
];
for (const c of tables.flat()) rejected(c);

// ---- cases that are not table-shaped ----------------------------------------------------------------------

/** Run a program quietly (mkfifo). */
function runQuiet(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: "ignore" });
    p.on("error", reject);
    p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

t.test(
  "input/errors: a config file root cannot read (EACCES, run as nobody) names the file and the cause",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    chmodSync(w.root, 0o755);
    chmodSync(path.join(w.root, "etc/eni-dpdk/config.toml"), 0o600);
    const before = snapshotRoot(w.root);
    const child = spawn(process.execPath, [BUNDLE, "validate"], {
      env: w.env(),
      uid: 65534,
      gid: 65534,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.on("close", r));
    t.equal(code, 2, stderr);
    const err = parseLog(stderr).find((l) => l.level === "error" && l.key === "(file)");
    t.match(err?.source, /^\/etc\/eni-dpdk\/config\.toml /);
    t.match(err?.msg, /cannot be read: permission denied \(EACCES\)/);
    t.same(diffSnapshots(before, snapshotRoot(w.root)), [], "the root is byte-identical");
    t.equal(w.ec2.mutatingCalls(), 0);
  },
);

t.test(
  "input/errors: status and plan run by a user other than root name root's state file and say to run as root; plan never says nothing to do",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    await converge(t, w);
    chmodSync(w.root, 0o755);
    const before = snapshotRoot(w.root);
    const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    for (const args of [["status"], ["status", "--json"], ["plan"]]) {
      const r = await runCli(w, args, { wrap: asNobody });
      t.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
      const err = r.log.find((l) => l.level === "error");
      t.match(
        err?.msg,
        /^cannot read \/var\/lib\/eni-dpdk\/state\.json \(under --root .*\): permission denied \(EACCES\)$/,
        args.join(" "),
      );
      t.match(err?.next, /run the same command as root \(sudo eni-dpdk …\)/);
      t.notMatch(r.stdout, /nothing to do/, `${args.join(" ")} claims nothing`);
      if (args[0] === "plan")
        t.match(r.stdout, /^no plan: cannot read \/var\/lib\/eni-dpdk\/state\.json/);
    }
    t.same(diffSnapshots(before, snapshotRoot(w.root)), [], "the root is byte-identical");
  },
);

t.test(
  "security/prototype: after a polluting tag, Object.prototype here is clean and the bundle's next run converges",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.instance.tags = {
      "eni-dpdk:dpdk": "__proto__.polluted=yes;constructor.prototype.polluted=yes",
    };
    await expectRejected(t, w, ["apply"], {
      source: "tag eni-dpdk:dpdk",
      key: /__proto__|constructor/,
      message: protoMsg,
    });
    const { tagLayers } = await import("../../../src/sources/tags.js");
    t.throws(() => tagLayers({ "eni-dpdk:dpdk": "__proto__.polluted=yes" }));
    t.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype is clean");
    w.imds.instance.tags = {};
    await converge(t, w);
  },
);

/** `config --json` on the bundle: the effective config and where each value came from. */
async function effective(
  t: Test,
  w: World,
  args: string[] = [],
): Promise<{ config: Record<string, any>; origin: Record<string, string> }> {
  const r = await runCli(w, ["config", "--json", ...args]);
  t.equal(r.code, 0, lastError(r));
  return JSON.parse(r.stdout || "{}");
}

t.test(
  "input/user-data: accepted: a TOML document mentioning kind: NodeConfig in a string is read as ours",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const mention = `description = """\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n"""\n`;
    w.imds.instance.userData = `[dpdk]\nhugepages_2m = 6\n\n${KERNEL_ENI()}${mention}`;
    const eff = await effective(t, w);
    t.equal(eff.config.dpdk.hugepages_2m, 6);
    t.equal(eff.origin["dpdk.hugepages_2m"], "user-data:2:1");
    t.match(
      eff.config.eni.find((e: { name: string }) => e.name === "k9")?.description,
      /kind: NodeConfig/,
    );
  },
);

t.test(
  "input/user-data: accepted: a nested multipart without our content is skipped as nodeadm skips it",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    const nested = part(
      'multipart/mixed; boundary="IN"',
      `${part("text/x-shellscript", "#!/bin/sh\ntrue", "IN")}${part(NODEADM, NODE_CONFIG, "IN")}--IN--`,
    );
    w.imds.instance.userData = b64(
      mime([
        nested,
        part(
          OUR,
          gzipSync("[dpdk]\nhugepages_1g = 3\n").toString("base64"),
          "B",
          "Content-Transfer-Encoding: base64\n",
        ),
      ]),
    );
    const eff = await effective(t, w);
    t.equal(eff.config.dpdk.hugepages_1g, 3);
    t.equal(eff.origin["dpdk.hugepages_1g"], "user-data part 2 (application/eni-dpdk+toml):2:1");
  },
);

t.test(
  "input/user-data: accepted: a compressed foreign part is not inflated, whatever its size",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.instance.userData = mime([
      part(
        "text/x-shellscript",
        b64(bomb(32 * 1024 * 1024)),
        "B",
        "Content-Transfer-Encoding: base64\n",
      ),
      part(OUR, "[dpdk]\nhugepages_2m = 5\n"),
    ]);
    t.equal((await effective(t, w)).config.dpdk.hugepages_2m, 5);
  },
);

t.test(
  "input/types: accepted: a memo hit gives the same config as a parse (BigInt survives the memo)",
  async (t) => {
    const w = await world(t, { configToml: baseToml("[dpdk]\nhugepages_2m = 0x0\n") });
    w.imds.instance.userData = "[dpdk]\nhugepages_1g = 0\n";
    const parsed = await effective(t, w);
    await converge(t, w);
    const memo = readFileSync(path.join(w.root, "var/lib/eni-dpdk/toml-memo.json"), "utf8");
    t.match(memo, /"device_index":1,/, "integers as JSON numbers, read back as BigInt");
    const fromMemo = await effective(t, w);
    t.same(fromMemo.config, parsed.config, "the same effective config");
    t.equal(typeof fromMemo.config.eni[0].device_index, "number");
    await converge(t, w);
  },
);

t.test(
  "input/imds: accepted: tag keys are read raw; a key IMDS cannot serve is skipped with a warning",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.instance.tags = {
      "eni-dpdk:dpdk": "hugepages_2m=4",
      "kubernetes.io/cluster/demo": "owned",
      "eni-dpdk:eni:data1": "mtu=1500",
    };
    const r = await runCli(w, ["config", "--json"]);
    t.equal(r.code, 0, lastError(r));
    const eff = JSON.parse(r.stdout);
    t.equal(eff.config.dpdk.hugepages_2m, 4);
    t.equal(eff.config.eni.find((e: { name: string }) => e.name === "data1").mtu, 1500);
    t.ok(
      w.imds.requests.some(
        (q) => q.path === "/latest/meta-data/tags/instance/eni-dpdk:eni:data1" && q.status === 200,
      ),
      "the raw key, answered",
    );
    t.ok(
      r.log.some((l) => l.level === "warn" && l.tag === "kubernetes.io/cluster/demo"),
      "a warning names the unservable key",
    );
  },
);

t.test("input/tags: accepted: whitespace around separators is ignored", async (t) => {
  const w = await world(t, { configToml: baseToml() });
  w.imds.instance.tags = { "eni-dpdk:dpdk": " hugepages_2m = 7 ; noiommu = auto ;" };
  const eff = await effective(t, w);
  t.equal(eff.config.dpdk.hugepages_2m, 7);
  t.equal(eff.origin["dpdk.hugepages_2m"], "tag eni-dpdk:dpdk");
});

t.test(
  "input/imds: accepted: every character IMDS allows in a key (+ - = . , _ : @) is sent raw and answered",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.instance.tags = {
      "team+ops=a.b,c_d:e@f": "x",
      "eni-dpdk:sriov": "resource_prefix=example.com",
    };
    const eff = await effective(t, w);
    t.equal(eff.config.sriov.resource_prefix, "example.com");
    t.ok(
      w.imds.requests.some(
        (q) =>
          q.path === "/latest/meta-data/tags/instance/team+ops=a.b,c_d:e@f" && q.status === 200,
      ),
      "raw, not percent-encoded",
    );
    t.notOk(
      w.imds.requests.some((q) => /%[0-9A-F]{2}/i.test(q.path)),
      "no percent-encoding at all",
    );
  },
);

t.test(
  "input/imds: an eni-dpdk key IMDS could not have served is skipped with a warning naming it, not read",
  async (t) => {
    const w = await world(t, { configToml: baseToml() });
    w.imds.instance.tags = { "eni-dpdk:eni:data 1": "mtu=1500" };
    const r = await runCli(w, ["config", "--json"]);
    t.equal(r.code, 0, lastError(r));
    t.ok(
      r.log.some(
        (l) =>
          l.level === "warn" &&
          l.tag === "eni-dpdk:eni:data 1" &&
          /DescribeTags would read it/.test(l.msg ?? ""),
      ),
      lastError(r),
    );
    t.notOk(
      w.imds.requests.some((q) => q.path.includes("data 1") || q.path.includes("data%201")),
      "never requested",
    );
    t.equal(
      JSON.parse(r.stdout).config.eni.find((e: { name: string }) => e.name === "data1").mtu,
      9001,
      "the file's value stands",
    );
  },
);
