#!/usr/bin/env bash
# Builds the DPDK layer of the guest initramfs (cached; appended after the base image only for the
# boots that run a DPDK application). From the host's Debian packages (setup.sh installs them):
#  - dpdk-dev's dpdk-testpmd with every library ldd lists, and the three PMDs it dlopens here:
#    net_e1000 (QEMU's e1000/e1000e), mempool_ring, bus_pci;
#  - dpdk's dpdk-devbind.py with python3 and exactly the stdlib modules devbind loads (found by
#    running it on this host), lspci and pci.ids, which devbind runs and reads.
# The layer is then checked in a chroot: every library resolves and devbind starts.
# Usage: build-dpdk-layer.sh OUT.cpio.gz
set -euo pipefail
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${E2E_WORK:-$REPO/test/e2e/.work}
D=$(mktemp -d "$WORK/dpdk-layer.XXXXXX")
trap 'rm -rf "$D"' EXIT
for f in /usr/bin/dpdk-testpmd /usr/bin/dpdk-devbind.py /usr/bin/lspci /usr/share/misc/pci.ids; do
  [[ -e "$f" ]] || { echo "[e2e] $f missing (scripts/e2e/setup.sh installs dpdk-dev, dpdk, pciutils)" >&2; exit 1; }
done

# a file at the same path, plus the shared libraries ldd lists for it
copy() {
  local src=$1 lib
  mkdir -p "$D$(dirname "$src")"; [[ -e "$D$src" ]] || cp -L "$src" "$D$src"
  if [[ "$src" == *.so* || -x "$src" ]]; then
    for lib in $(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*'); do
      mkdir -p "$D$(dirname "$lib")"; [[ -e "$D$lib" ]] || cp -L "$lib" "$D$lib"
    done
  fi
}

copy /usr/bin/dpdk-testpmd
# EAL dlopens every *.so in its driver directory: only these three go in
PMDS=$(echo /usr/lib/x86_64-linux-gnu/dpdk/pmds-*)
[[ -d "$PMDS" ]] || { echo "[e2e] no single DPDK driver directory: $PMDS" >&2; exit 1; }
mkdir -p "$D$PMDS"
for pmd in librte_net_e1000 librte_mempool_ring librte_bus_pci; do
  for f in "$PMDS/$pmd".so*; do
    if [[ -L "$f" ]]; then cp -P "$f" "$D$f"; else copy "$f"; fi
  done
done

copy /usr/bin/lspci
copy /usr/share/misc/pci.ids
copy /usr/bin/dpdk-devbind.py
PY=$(readlink -f /usr/bin/python3)
copy "$PY"
ln -sfn "$(basename "$PY")" "$D/usr/bin/python3"
# The stdlib modules devbind imports, in the guest's bare environment, with their compiled caches
# (compiling them under TCG would cost seconds per call) and the libraries of their extensions.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$PY" -c '
import importlib.util, runpy, sys
out = open(sys.argv[1], "w")
for argv in (["--help"], ["--status-dev", "net"]):
    sys.argv = ["/usr/bin/dpdk-devbind.py", *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit:
        pass
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if not f:
        continue
    print(f, file=out)
    if f.endswith(".py"):
        print(importlib.util.cache_from_source(f), file=out)
' "$D/.modules" >/dev/null 2>&1
stdlib=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
n=0
for f in $(sort -u "$D/.modules"); do
  [[ "$f" == "$stdlib"/* && -e "$f" ]] || continue
  copy "$f"; n=$((n + 1))
done
rm "$D/.modules"
copy "$stdlib/os.py" # the landmark python3 finds its prefix by

# EAL keeps its runtime files under /var/run/dpdk
mkdir -p "$D/var"; ln -sfn /run "$D/var/run"

# the check: nothing missing
missing=$(for f in "$D/usr/bin/dpdk-testpmd" "$D$PMDS"/*.so "$D/usr/bin/lspci" "$D$PY"; do
  chroot "$D" /lib64/ld-linux-x86-64.so.2 --list "${f#"$D"}" 2>&1 | grep -i "not found" || true
done)
[[ -z "$missing" ]] || { echo "[e2e] DPDK layer: unresolved libraries: $missing" >&2; exit 1; }
# devbind starts with `which lspci` and opens /dev/null: in the guest busybox and devtmpfs give them
mkdir -p "$D/dev" "$D/check" && mknod -m 0666 "$D/dev/null" c 1 3 && cp /bin/busybox "$D/check/which"
PATH=/check:/usr/bin "$(command -v chroot)" "$D" /usr/bin/python3 /usr/bin/dpdk-devbind.py --help >/dev/null ||
  { echo "[e2e] DPDK layer: dpdk-devbind.py does not start in the layer" >&2; exit 1; }
rm -rf "$D/dev" "$D/check"

(cd "$D" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "[e2e] DPDK layer $OUT $(du -h "$OUT" | cut -f1) (testpmd, 3 PMDs, devbind with $n python files, lspci)" >&2
