#!/usr/bin/env node
// `npm run package`: the release tarball eni-dpdk-<version>-linux-x64.tar.gz.
//
//   node scripts/package.mjs [--out DIR] [--bundle-dir DIR] [--node NODE]
//
// Without --bundle-dir it runs `npm run build` and takes dist/. --node names the Node binary the
// target runs (the AMI: AL2023's nodejs22; CI: .cache/node22 from scripts/node22.sh): the sd-notify
// addon is ABI-specific, so it is built for that Node, and the package fails without it. Without
// --node the tarball is for the Node running this script, and an addon that cannot be had is left out. The archive holds install.sh at its
// root and the tree install.sh copies from (paths as on the target):
//   opt/eni-dpdk/{eni-dpdk.cjs, chunks/, node_modules/sd-notify (for the target's ABI), VERSION, doc/}
//   usr/lib/systemd/system/{eni-dpdk,eni-dpdk-early}.service
//   etc/eni-dpdk/config.toml, etc/modprobe.d/eni-dpdk.conf, etc/modules-load.d/eni-dpdk.conf
// The tar is deterministic (sorted names, root owner, fixed mtime, no gzip timestamp), so the same
// inputs give the same bytes.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function run(argv, opts = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { stdio: "inherit", ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited with ${r.status}`);
  return r;
}

function arg(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

function copy(from, to, mode) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  fs.chmodSync(to, mode);
}

/** Copy a directory's files (recursively), giving files `mode` and directories 0755. */
function copyTree(from, to, mode, filter = () => true) {
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    if (!filter(src)) continue;
    if (entry.isDirectory()) copyTree(src, path.join(to, entry.name), mode, filter);
    else if (entry.isFile()) copy(src, path.join(to, entry.name), mode);
  }
}

/** The Node binary the tarball is for: its version and ABI (NODE_MODULE_VERSION). */
export function nodeInfo(bin) {
  const r = spawnSync(bin, ["-p", "process.version + ' ' + process.versions.modules"], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`--node ${bin} does not run: ${r.error ?? r.stderr.trim()}`);
  const [version, abi] = r.stdout.trim().split(" ");
  return { bin, version, abi };
}

// The sd-notify addon and its two pure-JS dependencies: what the tarball ships, and what a build needs.
const ADDON_FILES = {
  "sd-notify": ["package.json", "index.js", "LICENSE", "build/Release/notify.node"],
  bindings: ["package.json", "bindings.js", "LICENSE.md"],
  "file-uri-to-path": ["package.json", "index.js", "LICENSE"],
};
const ADDON_SOURCES = [
  "package.json",
  "index.js",
  "LICENSE",
  "binding.gyp",
  "notify.cc",
  "noop.cc",
];

const loads = (target, modules) =>
  spawnSync(target.bin, ["-e", "require(process.argv[1])", path.join(modules, "sd-notify")], {
    encoding: "utf8",
  });

/**
 * A node_modules directory whose sd-notify loads under `target`: the project's own when the ABI
 * matches, else a build for the target's ABI in a scratch directory (npm rebuild, against the
 * target's own headers when it ships them, as the npm package of Node does; else node-gyp fetches
 * the headers of that version). Returns undefined with the reason when there is none.
 */
export function addonFor(target, scratch) {
  const own = path.join(repo, "node_modules");
  if (!fs.existsSync(path.join(own, "sd-notify/package.json")))
    return { why: "sd-notify is not installed (npm ci without libsystemd-dev)" };
  if (loads(target, own).status === 0) return { modules: own };
  const modules = path.join(scratch, "node_modules");
  for (const [mod, list] of Object.entries(ADDON_FILES))
    for (const f of mod === "sd-notify" ? ADDON_SOURCES : list)
      copy(path.join(own, mod, f), path.join(modules, mod, f), 0o644);
  // allowScripts: npm 12 runs no dependency's install script it does not name
  fs.writeFileSync(
    path.join(scratch, "package.json"),
    '{"private": true, "allowScripts": {"sd-notify": true}}\n',
  );
  const prefix = path.dirname(path.dirname(fs.realpathSync(target.bin)));
  const headers = fs.existsSync(path.join(prefix, "include/node/node.h"))
    ? `--nodedir=${prefix}`
    : `--target=${target.version.replace(/^v/, "")}`;
  const r = spawnSync(
    "npm",
    ["rebuild", "sd-notify", headers, "--ignore-scripts=false", "--no-audit", "--no-fund"],
    { cwd: scratch, encoding: "utf8" },
  );
  if (r.status !== 0)
    return {
      why: `building sd-notify for node ${target.version} failed (${headers}): ${`${r.stdout}${r.stderr}`.trim().split("\n").slice(-3).join(" | ")}`,
    };
  const probe = loads(target, modules);
  if (probe.status !== 0)
    return { why: `the addon built for ${target.version} does not load: ${probe.stderr.trim()}` };
  return { modules };
}

/**
 * Stage the tarball's tree for the Node the target runs (`target`, from nodeInfo). With `strict`
 * (an explicit --node), a missing addon is an error: the release for the AMI must carry it.
 */
export function stage(
  stageDir,
  bundleDir,
  version,
  target = nodeInfo(process.execPath),
  strict = false,
) {
  const opt = path.join(stageDir, "opt/eni-dpdk");
  // .v8-cache: V8's compiled code that a run of this bundle left (src/main.ts), for this machine's Node
  copyTree(
    bundleDir,
    opt,
    0o644,
    (p) => !p.endsWith(".map") && !p.endsWith(".json") && path.basename(p) !== ".v8-cache",
  );
  if (!fs.existsSync(path.join(opt, "eni-dpdk.cjs")))
    throw new Error(`${bundleDir}/eni-dpdk.cjs missing: run npm run build`);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-addon-"));
  let addon;
  try {
    addon = addonFor(target, scratch);
    if (addon.modules) {
      for (const [mod, list] of Object.entries(ADDON_FILES))
        for (const f of list)
          copy(
            path.join(addon.modules, mod, f),
            path.join(opt, "node_modules", mod, f),
            f.endsWith(".node") ? 0o755 : 0o644,
          );
    } else if (strict)
      throw new Error(`no sd-notify addon for node ${target.version}: ${addon.why}`);
    else console.error(`package: ${addon.why}; the tarball uses systemd-notify`);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  const versionLines = [
    `eni-dpdk ${version}`,
    `built with node ${process.version} for node ${target.version}`,
    addon.modules
      ? `sd-notify addon for NODE_MODULE_VERSION ${target.abi} (node ${target.version.split(".")[0]}; other Node majors use systemd-notify)`
      : "sd-notify addon not included (systemd-notify is used)",
  ];
  fs.writeFileSync(path.join(opt, "VERSION"), versionLines.join("\n") + "\n", { mode: 0o644 });
  for (const doc of ["README.md", "docs/troubleshooting.md", "docs/user-data.md", "docs/ami.md"]) {
    const src = path.join(repo, doc);
    if (fs.existsSync(src)) copy(src, path.join(opt, "doc", path.basename(doc)), 0o644);
  }

  for (const unit of ["eni-dpdk.service", "eni-dpdk-early.service"]) {
    copy(
      path.join(repo, "systemd", unit),
      path.join(stageDir, "usr/lib/systemd/system", unit),
      0o644,
    );
  }
  for (const f of [
    "eni-dpdk/config.toml",
    "modprobe.d/eni-dpdk.conf",
    "modules-load.d/eni-dpdk.conf",
  ]) {
    copy(path.join(repo, "etc", f), path.join(stageDir, "etc", f), 0o644);
  }
  copy(path.join(repo, "scripts/install.sh"), path.join(stageDir, "install.sh"), 0o755);
}

/** A reproducible .tar.gz of the staging directory's contents. */
export function tarball(stageDir, outFile, mtime) {
  const tar = outFile.replace(/\.gz$/, "");
  run([
    "tar",
    "--create",
    "--file",
    tar,
    "--directory",
    stageDir,
    "--sort=name",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    `--mtime=@${mtime}`,
    "--mode=go-w",
    "--format=gnu",
    ".",
  ]);
  run(["gzip", "--no-name", "--best", "--force", tar]);
}

async function main() {
  const pkg = JSON.parse(fs.readFileSync(path.join(repo, "package.json"), "utf8"));
  const outDir = path.resolve(arg("--out") ?? repo);
  const nodeArg = arg("--node");
  const target = nodeInfo(nodeArg ? path.resolve(nodeArg) : process.execPath);
  let bundleDir = arg("--bundle-dir");
  if (!bundleDir) {
    run(["npm", "run", "--silent", "build"], { cwd: repo });
    bundleDir = path.join(repo, "dist");
  }
  // The commit time makes the archive reproducible; outside git, a fixed epoch.
  const git = spawnSync("git", ["-C", repo, "log", "-1", "--format=%ct"], { encoding: "utf8" });
  const mtime = git.status === 0 && git.stdout.trim() ? git.stdout.trim() : "0";

  const stageDir = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-package-"));
  fs.chmodSync(stageDir, 0o755);
  try {
    stage(stageDir, path.resolve(bundleDir), pkg.version, target, Boolean(nodeArg));
    fs.mkdirSync(outDir, { recursive: true });
    const out = path.join(outDir, `eni-dpdk-${pkg.version}-linux-x64.tar.gz`);
    tarball(stageDir, out, mtime);
    console.log(
      `${path.relative(process.cwd(), out) || out}: ${(fs.statSync(out).size / 1024).toFixed(0)} KiB`,
    );
  } finally {
    fs.rmSync(stageDir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`package: ${e.message}`);
    process.exit(1);
  });
}
