// scripts/e2e/setup.sh's choice of kernel, without the network: the real script runs with stand-ins
// for apt-get, apt-cache, dpkg-query, dpkg-deb, tar, make, strip and modinfo first on PATH. They
// model a Debian archive that moves on (it drops the old release's packages when it publishes a new
// one) and the host's package lists, which only `apt-get update` refreshes. Every tool call is logged,
// so a test can show what the script downloaded, installed and built, and what it never asked for.
import t from "tap";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO } from "../support/repo.js";

const SETUP = path.join(REPO, "scripts/e2e/setup.sh");
const OLD = { krel: "6.1.0-56-amd64", kver: "6.1.192-2" };
const NEW = { krel: "6.1.0-57-amd64", kver: "6.1.192-3" };
const TOOLS = [
  "qemu-system-x86",
  "busybox-static",
  "cpio",
  "debootstrap",
  "kmod",
  "make",
  "gcc",
  "xz-utils",
  "e2fsprogs",
  "iproute2",
  "strace",
  "dpdk-dev",
  "dpdk",
  "pciutils",
];

// State lives in $FAKE: archive (what the mirror serves now), lists (what apt-get update last saw),
// installed (dpkg's database), calls (every invocation).
const FAKES: Record<string, string> = {
  "apt-get": `
echo "apt-get $*" >> "$FAKE/calls"
case "$1" in
  update) cp "$FAKE/archive" "$FAKE/lists" ;;
  install) shift; for a in "$@"; do case "$a" in -*) ;; *) n=\${a%%=*}; v=\${a#*=}; [ "$v" = "$a" ] && v=1.0; echo "$n $v" >> "$FAKE/installed" ;; esac; done ;;
  download)
    for a in "$@"; do case "$a" in linux-image-*=*) p=\${a%%=*}; v=\${a#*=} ;; esac; done
    read -r krel kver < "$FAKE/archive"
    [ "$p" = "linux-image-$krel" ] && [ "$v" = "$kver" ] || { echo "E: Failed to fetch $p $v  404  Not Found" >&2; exit 100; }
    touch "\${p}_\${v}_amd64.deb" ;;
esac`,
  "apt-cache": `
echo "apt-cache $*" >> "$FAKE/calls"
read -r krel kver < "$FAKE/lists" || exit 0
case "$1" in
  depends) printf '%s\\n  Depends: linux-headers-%s\\n' "$2" "$krel" ;;
  policy) [ "$2" = "linux-image-$krel" ] && printf '%s:\\n  Installed: (none)\\n  Candidate: %s\\n' "$2" "$kver" ;;
  madison) printf ' linux-source-6.1 | %s | http://deb.debian.org/debian bookworm/main amd64 Packages\\n' "\${FAKE_SOURCE_KVER:-$kver}" ;;
esac
exit 0`,
  "dpkg-query": `
name=\${@: -1}
v=$(awk -v n="$name" '$1 == n { v = $2 } END { print v }' "$FAKE/installed")
[ -n "$v" ] || exit 1
printf 'install ok installed %s' "$v"`,
  "dpkg-deb": `
echo "dpkg-deb $*" >> "$FAKE/calls"
krel=$(basename "$2" | sed 's/^linux-image-\\(.*\\)_.*_amd64.deb$/\\1/')
mkdir -p "$3/boot" && touch "$3/boot/vmlinuz-$krel"`,
  tar: `
echo "tar $*" >> "$FAKE/calls"
while [ $# -gt 0 ]; do [ "$1" = -C ] && dir=$2; shift; done
touch "$dir/vfio_main.c"`,
  make: `
echo "make $*" >> "$FAKE/calls"
for a in "$@"; do case "$a" in M=*) m=\${a#M=} ;; /lib/modules/*) k=\${a#/lib/modules/}; k=\${k%/build} ;; esac; done
grep -qx "linux-headers-$k .*" "$FAKE/installed" || { echo "make: /lib/modules/$k/build: No such file or directory" >&2; exit 2; }
echo "vermagic=$k" > "$m/vfio.ko"`,
  strip: `cp "$4" "$3"`,
  modinfo: `
case "$2" in
  vermagic) echo "$(sed -n 's/^vermagic=//p' "$3") SMP preempt mod_unload modversions" ;;
  parm) echo "enable_unsafe_noiommu_mode:Enable UNSAFE, no-IOMMU mode. (bool)" ;;
esac`,
};

interface World {
  work: string;
  fake: string;
  env: NodeJS.ProcessEnv;
}

function world(archive: { krel: string; kver: string }, lists = archive): World {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "eni-dpdk-e2e-setup-"));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const bin = path.join(root, "bin");
  const fake = path.join(root, "fake");
  fs.mkdirSync(bin);
  fs.mkdirSync(fake);
  for (const [name, body] of Object.entries(FAKES))
    fs.writeFileSync(path.join(bin, name), `#!/bin/bash\n${body.trim()}\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(fake, "archive"), `${archive.krel} ${archive.kver}\n`);
  fs.writeFileSync(path.join(fake, "lists"), `${lists.krel} ${lists.kver}\n`);
  fs.writeFileSync(path.join(fake, "installed"), TOOLS.map((p) => `${p} 1.0\n`).join(""));
  fs.writeFileSync(path.join(fake, "calls"), "");
  const work = path.join(root, "work");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    FAKE: fake,
    E2E_WORK: work,
  };
  delete env.E2E_KREL;
  return { work, fake, env };
}

/** A work dir as a finished earlier run left it for `krel`. */
function cache(w: World, { krel, kver }: { krel: string; kver: string }, vfio = true): void {
  fs.mkdirSync(path.join(w.work, "kernel", krel, "root/boot"), { recursive: true });
  fs.writeFileSync(path.join(w.work, "kernel", krel, "root/boot", `vmlinuz-${krel}`), "");
  fs.writeFileSync(path.join(w.work, "kernel", krel, "version"), `${kver}\n`);
  fs.writeFileSync(path.join(w.work, "kernel", krel, "stamp"), "");
  if (vfio) {
    fs.mkdirSync(path.join(w.work, "vfio-noiommu", krel), { recursive: true });
    fs.writeFileSync(path.join(w.work, "vfio-noiommu", krel, "vfio.ko"), `vermagic=${krel}\n`);
  }
  fs.writeFileSync(path.join(w.work, "krel"), `${krel}\n`);
}

function setup(w: World, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync("bash", [SETUP], { env: { ...w.env, ...env }, encoding: "utf8" });
  const calls = fs.readFileSync(path.join(w.fake, "calls"), "utf8").trim().split("\n");
  const krel = fs.existsSync(path.join(w.work, "krel"))
    ? fs.readFileSync(path.join(w.work, "krel"), "utf8").trim()
    : undefined;
  return { code: r.status, err: r.stderr, calls: calls.filter(Boolean), krel };
}

t.test("a complete cache runs after the archive moved on, without asking it", async (t) => {
  const w = world(NEW);
  cache(w, OLD);
  const r = setup(w);
  t.equal(r.code, 0, r.err);
  t.equal(r.krel, OLD.krel, "keeps the cached release");
  t.match(r.err, `kernel ${OLD.krel} (Debian ${OLD.kver}), cached`);
  t.match(r.err, `ready: ${w.work}/kernel/${OLD.krel}/root/boot/vmlinuz-${OLD.krel}`);
  t.same(r.calls, [], "no apt-get, apt-cache, download or build at all");
});

t.test("an incomplete cache follows the archive to its new release", async (t) => {
  // vfio.ko was never built for 56, the host's lists still say 56, the mirror serves only 57
  const w = world(NEW, OLD);
  cache(w, OLD, false);
  const r = setup(w);
  t.equal(r.code, 0, r.err);
  t.equal(r.krel, NEW.krel);
  t.match(
    r.err,
    `the cache for ${OLD.krel} is incomplete and the archive now offers ${NEW.krel}: switching`,
  );
  t.equal(r.calls[0], "apt-get update -q", "fresh lists before choosing");
  t.ok(
    r.calls.includes(
      `apt-get install -y -q --no-install-recommends linux-headers-${NEW.krel} linux-source-6.1=${NEW.kver}`,
    ),
    "headers and source of the new release, and nothing else",
  );
  t.ok(
    r.calls.some(
      (c) => c.includes(`download`) && c.includes(`linux-image-${NEW.krel}=${NEW.kver}`),
    ),
    "the new kernel image",
  );
  t.ok(fs.existsSync(path.join(w.work, "kernel", NEW.krel, "root/boot", `vmlinuz-${NEW.krel}`)));
  t.equal(
    fs.readFileSync(path.join(w.work, "vfio-noiommu", NEW.krel, "vfio.ko"), "utf8").trim(),
    `vermagic=${NEW.krel}`,
    "vfio.ko built against the new release's headers",
  );
  t.equal(
    fs.readFileSync(path.join(w.work, "kernel", NEW.krel, "version"), "utf8").trim(),
    NEW.kver,
  );

  // and the next run is a cached one
  fs.writeFileSync(path.join(w.fake, "calls"), "");
  const again = setup(w);
  t.equal(again.code, 0, again.err);
  t.match(again.err, `kernel ${NEW.krel} (Debian ${NEW.kver}), cached`);
  t.same(again.calls, []);
});

t.test("a vfio.ko build that was interrupted is not a cache", async (t) => {
  const w = world(OLD);
  cache(w, OLD, false);
  fs.mkdirSync(path.join(w.work, "vfio-noiommu", OLD.krel), { recursive: true });
  fs.writeFileSync(path.join(w.work, "vfio-noiommu", OLD.krel, "vfio.ko.tmp"), "trunc");
  const r = setup(w);
  t.equal(r.code, 0, r.err);
  t.equal(r.krel, OLD.krel, "the archive still has it: same release");
  t.notOk(
    r.calls.some((c) => c.includes("download")),
    "the kernel image was complete: not downloaded again",
  );
  t.ok(
    r.calls.some((c) => c.startsWith("make ")),
    "vfio.ko rebuilt",
  );
});

t.test("a fresh work dir picks what linux-headers-amd64 points at", async (t) => {
  const w = world(NEW, OLD);
  const r = setup(w);
  t.equal(r.code, 0, r.err);
  t.equal(r.krel, NEW.krel, "from fresh lists, not the stale ones");
  t.notMatch(r.err, /switching/);
});

t.test("a cached work dir on a fresh host installs only the tools", async (t) => {
  const w = world(NEW);
  cache(w, OLD);
  fs.writeFileSync(path.join(w.fake, "installed"), "");
  const r = setup(w);
  t.equal(r.code, 0, r.err);
  const install = r.calls.find((c) => c.startsWith("apt-get install"));
  t.equal(install, `apt-get install -y -q --no-install-recommends ${TOOLS.join(" ")}`);
  t.equal(r.calls.filter((c) => c === "apt-get update -q").length, 1, "one update");
  t.notOk(
    r.calls.some((c) => c.startsWith("apt-cache")),
    "no kernel question to the archive",
  );
});

t.test("refusals name what is missing", async (t) => {
  const gone = world(NEW);
  const pinned = setup(gone, { E2E_KREL: OLD.krel });
  t.equal(pinned.code, 1);
  t.match(pinned.err, `the archive has no linux-image-${OLD.krel} (unset E2E_KREL`);

  const skew = world(NEW);
  const r = setup(skew, { FAKE_SOURCE_KVER: "6.1.192-9" });
  t.equal(r.code, 1);
  t.match(r.err, `linux-source-6.1 has no version ${NEW.kver}`);
  t.notOk(
    fs.existsSync(path.join(skew.work, "kernel", NEW.krel)),
    "nothing downloaded before the refusal",
  );
});
