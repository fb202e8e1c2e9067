// The CLI as a real process: exit codes, stdout/stderr separation, messages.
import t from "tap";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO } from "../support/repo.js";
import { BUNDLE, NODE } from "../support/harness.js";

const repo = REPO;
export function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(NODE[0], [...NODE.slice(1), BUNDLE, ...args], {
    encoding: "utf8",
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    cwd: repo,
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = mkdtempSync(path.join(tmpdir(), "eni-dpdk-cli-"));
const good = path.join(repo, "test/corpus/good/example.toml");

t.test("--help and --version exit 0", async (t) => {
  const h = cli(["--help"]);
  t.equal(h.code, 0);
  t.match(h.stdout, /eni-dpdk validate \[files\.\.\]/);
  t.match(h.stdout, /--root/);
  const v = cli(["--version"]);
  t.equal(v.code, 0);
  t.match(v.stdout, /^\d+\.\d+\.\d+/);
});

t.test("usage errors exit 2 with a pointer to --help", async (t) => {
  for (const args of [
    [],
    ["frobnicate"],
    ["validate", "--no-such-flag"],
    ["status", "--log-level", "loud"],
  ]) {
    const r = cli(args);
    t.equal(r.code, 2, args.join(" "));
    t.match(r.stderr, /eni-dpdk --help/);
    t.equal(r.stdout, "");
  }
});

t.test("validate FILE: ok on stdout, exit 0", async (t) => {
  const r = cli(["validate", good]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^ok: .*example\.toml: 3 ENI\(s\) \(2 DPDK, 1 kernel\): dpdk1, dpdk2, kernel1/);
});

t.test(
  "validate bad FILEs: every problem on stderr with source:line:col and key, exit 2",
  async (t) => {
    const a = path.join(dir, "a.toml");
    const b = path.join(dir, "b.toml");
    writeFileSync(a, '[dpdk]\ndriver = "vfio"\n');
    writeFileSync(
      b,
      '[[eni]]\nname = "x"\ndevice_index = 0\nsubnet_id = "subnet-01234567"\nsecurity_group_ids = ["sg-01234567"]\ndpdk.enabled = false\n',
    );
    const r = cli(["validate", a, b, path.join(dir, "missing.toml")]);
    t.equal(r.code, 2);
    t.equal(r.stdout, "");
    t.match(
      r.stderr,
      new RegExp(
        `${a}:2:1: dpdk.driver: expected one of vfio-pci, igb_uio, uio_pci_generic, got \\\\"vfio\\\\"`,
      ),
    );
    t.match(r.stderr, new RegExp(`${b}:3:1: eni.x.device_index: expected 1..127`));
    t.match(r.stderr, /missing\.toml: \(file\): no such file/);
    t.match(r.stderr, /3 problem\(s\); nothing was changed/);
  },
);

t.test("--log-format json makes every stderr line a JSON object", async (t) => {
  const a = path.join(dir, "j.toml");
  writeFileSync(a, "[dpdk]\nhugepages_2m = -5\n");
  const r = cli(["--log-format", "json", "validate", a]);
  t.equal(r.code, 2);
  const lines = r.stderr
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  t.equal(lines[0].level, "error");
  t.equal(lines[0].key, "dpdk.hugepages_2m");
  t.equal(lines[0].source, `${a}:2:1`);
  t.ok(lines.at(-1).next, "the last line says what to do next");
});

t.test("userdata renders a multipart document that validates", async (t) => {
  const nc = path.join(dir, "nodeconfig.yaml");
  writeFileSync(
    nc,
    "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: prod\n",
  );
  const r = cli(["userdata", "--nodeconfig", nc, "--config", good]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Content-Type: multipart\/mixed; boundary=/);
  t.match(r.stdout, /Content-Type: application\/node\.eks\.aws/);
  t.match(r.stdout, /Content-Type: application\/eni-dpdk\+toml/);
  const notNc = cli(["userdata", "--nodeconfig", good, "--config", good]);
  t.equal(notNc.code, 2);
  t.match(notNc.stderr, /expected a nodeadm NodeConfig/);
});

t.test(
  "the boot argv fast path accepts exactly the units' shapes; everything else goes to yargs",
  async (t) => {
    const { parseBootArgv } = await import("../../src/cli.js");
    t.same(parseBootArgv(["run"]), {
      command: "run",
      args: { "log-level": "info", "log-format": "text", "dry-run": false, full: false },
    });
    t.same(
      parseBootArgv([
        "--root",
        "/r",
        "apply",
        "--dry-run",
        "--log-format=json",
        "--config",
        "/c.toml",
      ]),
      {
        command: "apply",
        args: {
          "log-level": "info",
          "log-format": "json",
          "dry-run": true,
          full: false,
          root: "/r",
          config: "/c.toml",
        },
      },
    );
    t.equal(parseBootArgv(["early", "--log-level", "debug"])?.args["log-level"], "debug");
    t.equal(parseBootArgv(["apply", "--full"])?.args.full, true, "apply --full plans every stage");
    for (const argv of [
      [],
      ["run", "--dry-run"],
      ["run", "--full"],
      ["apply", "--full=true"],
      ["apply", "--help"],
      ["apply", "--log-level", "loud"],
      ["apply", "run"],
      ["status"],
      ["apply", "--root"],
      ["apply", "--dry-run=false"],
    ]) {
      t.equal(parseBootArgv(argv), undefined, argv.join(" ") || "(empty)");
    }
    const r = cli(["apply", "--no-such-flag"]);
    t.equal(r.code, 2);
    t.match(r.stderr, /Unknown arguments?: .*such-flag/);
  },
);

t.test(
  "user mistakes on the command line are exit 2 naming the input, never 'unexpected'",
  async (t) => {
    const { mkdirSync } = await import("node:fs");
    const { execFileSync } = await import("node:child_process");
    const sub = path.join(dir, "adir.toml");
    mkdirSync(sub, { recursive: true });
    const fifo = path.join(dir, "fifo.toml");
    execFileSync("mkfifo", [fifo]);
    const v = cli(["validate", sub, fifo]);
    t.equal(v.code, 2, v.stderr);
    t.match(v.stderr, new RegExp(`${sub}: \\(file\\): is a directory; name a file`));
    t.match(
      v.stderr,
      new RegExp(`${fifo}: \\(file\\): is not a regular file`),
      "a FIFO is refused, never read",
    );
    t.notMatch(v.stderr, /unexpected/);
    const root = path.join(dir, "no-such-root");
    const r = cli(["config", "--root", root]);
    t.equal(r.code, 2, r.stderr);
    t.match(r.stderr, new RegExp(`--root ${root}: \\(root\\): is not an existing directory`));
    const envRoot = cli(["config"], { ENI_DPDK_ROOT: root });
    t.match(envRoot.stderr, new RegExp(`env ENI_DPDK_ROOT ${root}: \\(root\\)`));
    const real = mkdtempSync(path.join(tmpdir(), "eni-dpdk-cli-root-"));
    const rel = cli(["apply", "--dry-run", "--root", real, "--config", "etc/eni-dpdk/config.toml"]);
    t.equal(rel.code, 2, rel.stderr);
    t.match(
      rel.stderr,
      /--config etc\/eni-dpdk\/config\.toml: \(file\): must be absolute; it is resolved under --root/,
    );
    const isDir = cli(["apply", "--dry-run", "--root", real, "--config", "/"]);
    t.equal(isDir.code, 2, isDir.stderr);
    t.match(
      isDir.stderr,
      new RegExp(
        `/ \\(resolved under --root as ${real}/?\\): \\(file\\): is a directory; --config names one TOML file`,
      ),
    );
  },
);
