#!/usr/bin/env bash
# Builds the base guest initramfs (cached): busybox as /init's shell, the host's node and its
# libraries, kmod and iproute2 (the real tools the product spawns), the stock kernel modules the
# scenarios need (NICs, vfio, 9p for the results share), and the NOIOMMU vfio.ko beside them.
# Test assets (the CLI bundle, the guest program) go in a second, small cpio appended per run.
# Usage: build-initramfs.sh KREL OUT.cpio.gz
set -euo pipefail
KREL=$1 OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${E2E_WORK:-$REPO/test/e2e/.work}
K="$WORK/kernel/$KREL/root"
D=$(mktemp -d "$WORK/initramfs.XXXXXX")
trap 'rm -rf "$D"' EXIT

mkdir -p "$D"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,run,tmp,out,opt/e2e,var/lib,root}
# busybox: every applet as a link (never link "busybox" onto itself: the kernel fails /init with -40)
cp /bin/busybox "$D/bin/busybox"
for applet in $(/bin/busybox --list-full); do
  [[ "$applet" == */busybox ]] && continue
  [[ -e "$D/$applet" ]] || ln -s /bin/busybox "$D/$applet"
done

# a binary plus the shared libraries ldd lists, at the same paths
copy_bin() {
  local src=$1 dst=$2
  rm -f "$D/$dst"; mkdir -p "$(dirname "$D/$dst")"; cp -L "$src" "$D/$dst"
  for lib in $(ldd "$src" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$D$(dirname "$lib")"; [[ -e "$D$lib" ]] || cp -L "$lib" "$D$lib"
  done
}
copy_bin "$(command -v node)" /usr/bin/node
copy_bin /usr/bin/kmod /usr/bin/kmod
copy_bin /usr/bin/flock /usr/bin/flock
# strace: crash windows on the real kernel are opened by fault injection, not by luck
copy_bin /usr/bin/strace /usr/bin/strace
for t in modprobe insmod rmmod lsmod modinfo depmod; do rm -f "$D/sbin/$t" "$D/usr/sbin/$t"; ln -s /usr/bin/kmod "$D/sbin/$t"; done
copy_bin "$(command -v ip)" /usr/sbin/ip.iproute2
rm -f "$D/sbin/ip" "$D/bin/ip" "$D/usr/sbin/ip" "$D/usr/bin/ip"; ln -s /usr/sbin/ip.iproute2 "$D/sbin/ip"

# kernel modules with their dependencies, then depmod for the guest tree
MODS=(vfio vfio-pci vfio_iommu_type1 e1000 e1000e virtio_net virtio_pci 9p 9pnet_virtio virtio_blk ext4)
[[ -f "$K/lib/modules/$KREL/modules.dep" ]] || depmod -b "$K" "$KREL"
for f in $(modprobe -S "$KREL" -d "$K" --show-depends -a "${MODS[@]}" | awk '$1=="insmod"{print $2}' | sort -u); do
  rel=${f#"$K"}; mkdir -p "$D$(dirname "$rel")"
  case $f in
    *.ko.xz) xz -dc "$f" > "$D${rel%.xz}" ;;
    *.ko.zst) zstd -qdc "$f" > "$D${rel%.zst}" ;;
    *) cp "$f" "$D$rel" ;;
  esac
done
cp "$K/lib/modules/$KREL"/modules.{order,builtin,builtin.modinfo} "$D/lib/modules/$KREL/"
depmod -b "$D" "$KREL"
cp "$WORK/vfio-noiommu/$KREL/vfio.ko" "$D/opt/e2e/vfio-noiommu.ko"

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$D/etc/passwd"
printf 'root:x:0:\n' > "$D/etc/group"
install -m 0755 "$REPO/test/e2e/guest/init.sh" "$D/init"

(cd "$D" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "[e2e] initramfs $OUT $(du -h "$OUT" | cut -f1)" >&2
