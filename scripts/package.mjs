#!/usr/bin/env node
// `npm run package`: the release tarball eni-dpdk-<version>-linux-x64.tar.gz.
//
//   node scripts/package.mjs [--out DIR] [--bundle-dir DIR]
//
// Without --bundle-dir it runs `npm run build` and takes dist/. The archive holds install.sh at its
// root and the tree install.sh copies from (paths as on the target):
//   opt/eni-dpdk/{eni-dpdk.mjs, chunks/, node_modules/sd-notify (when it loads here), VERSION, doc/}
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

/**
 * The sd-notify addon and its two pure-JS dependencies, if the addon loads with this Node. It is
 * ABI-specific: on another Node major the notify seam falls back to `systemd-notify`.
 */
function addonInfo() {
  const probe = spawnSync(
    process.execPath,
    ["-e", "require('sd-notify'); process.stdout.write(process.versions.modules)"],
    { cwd: repo, encoding: "utf8" },
  );
  return probe.status === 0 ? { abi: probe.stdout.trim() } : undefined;
}

export function stage(stageDir, bundleDir, version) {
  const opt = path.join(stageDir, "opt/eni-dpdk");
  copyTree(bundleDir, opt, 0o644, (p) => !p.endsWith(".map") && !p.endsWith(".json"));
  if (!fs.existsSync(path.join(opt, "eni-dpdk.mjs")))
    throw new Error(`${bundleDir}/eni-dpdk.mjs missing: run npm run build`);

  const addon = addonInfo();
  if (addon) {
    const files = {
      "sd-notify": ["package.json", "index.js", "LICENSE", "build/Release/notify.node"],
      bindings: ["package.json", "bindings.js", "LICENSE.md"],
      "file-uri-to-path": ["package.json", "index.js", "LICENSE"],
    };
    for (const [mod, list] of Object.entries(files)) {
      for (const f of list)
        copy(
          path.join(repo, "node_modules", mod, f),
          path.join(opt, "node_modules", mod, f),
          f.endsWith(".node") ? 0o755 : 0o644,
        );
    }
  }
  const versionLines = [
    `eni-dpdk ${version}`,
    `built with node ${process.version}`,
    addon
      ? `sd-notify addon for NODE_MODULE_VERSION ${addon.abi} (other Node majors use systemd-notify)`
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
    stage(stageDir, path.resolve(bundleDir), pkg.version);
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
