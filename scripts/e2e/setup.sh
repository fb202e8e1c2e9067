#!/usr/bin/env bash
# Host setup for the QEMU end-to-end suite (Debian/Ubuntu, run as root):
#  1. apt: qemu, busybox, cpio, debootstrap, kmod, DPDK's testpmd and devbind, a compiler, and (only
#     while vfio.ko still has to be built) ONE kernel version's headers + source.
#  2. the kernel image of that same version, unpacked into the work dir (not installed: no host hooks).
#  3. vfio.ko rebuilt out of tree with CONFIG_VFIO_NOIOMMU (Debian's kernels lack it).
# Everything is cached under $E2E_WORK. A complete cache (kernel image + vfio.ko for the recorded
# release) runs without asking the archive about kernels, so it survives the archive moving on; an
# incomplete one follows the archive to the release it offers now.
set -euo pipefail
WORK=${E2E_WORK:-$(cd "$(dirname "$0")/../.." && pwd)/test/e2e/.work}
mkdir -p "$WORK"
log() { echo "[e2e-setup] $*" >&2; }
die() { log "$*"; exit 1; }

updated=0
apt_update() { ((updated)) || { apt-get update -q >&2; updated=1; }; }
cached() { [[ -f "$WORK/kernel/$1/stamp" && -f "$WORK/vfio-noiommu/$1/vfio.ko" ]]; }

# --- the kernel release. Chosen once, recorded in $WORK/krel; E2E_KREL overrides.
KREL=${E2E_KREL:-}
[[ -n "$KREL" || ! -f "$WORK/krel" ]] || KREL=$(cat "$WORK/krel")
KVER=""
if [[ -n "$KREL" ]] && cached "$KREL"; then
  KVER=$(cat "$WORK/kernel/$KREL/version" 2>/dev/null || echo "version not recorded")
  log "kernel $KREL (Debian $KVER), cached: the archive is not consulted"
else
  # Something must be downloaded or built, so the lists must be fresh: the archive drops the old
  # release's packages when it publishes a new one (6.1.0-56 → 6.1.0-57 in 2026).
  apt_update
  if [[ -z "${E2E_KREL:-}" ]]; then
    # the release the linux-headers-amd64 metapackage points at now
    now=$(apt-cache depends linux-headers-amd64 | sed -n 's/.*Depends: linux-headers-\(6\.1\.[^ ]*\)$/\1/p' | head -1)
    [[ -n "$now" ]] || die "cannot determine the kernel release (is this Debian bookworm with linux-headers-amd64?)"
    [[ -z "$KREL" || "$KREL" == "$now" ]] ||
      log "the cache for $KREL is incomplete and the archive now offers $now: switching to $now"
    KREL=$now
  fi
  KVER=$(apt-cache policy "linux-image-$KREL" | sed -n 's/ *Candidate: //p')
  [[ -n "$KVER" && "$KVER" != "(none)" ]] ||
    die "the archive has no linux-image-$KREL (unset E2E_KREL to follow the archive's current release)"
  # vfio.ko built from linux-source-6.1 must match the guest kernel's ABI: exactly the same version
  apt-cache madison linux-source-6.1 | awk '{print $3}' | grep -x "$KVER" >/dev/null ||
    die "linux-source-6.1 has no version $KVER (the version of linux-image-$KREL); cannot build a matching vfio.ko"
  log "kernel $KREL (Debian $KVER)"
fi
echo "$KREL" > "$WORK/krel"

K="$WORK/kernel/$KREL"
V="$WORK/vfio-noiommu/$KREL"

# --- apt. dpdk-dev: dpdk-testpmd; dpdk: dpdk-devbind.py; pciutils: the lspci devbind runs.
PKGS=(qemu-system-x86 busybox-static cpio debootstrap kmod make gcc xz-utils e2fsprogs iproute2 strace
      dpdk-dev dpdk pciutils)
[[ -f "$V/vfio.ko" ]] || PKGS+=("linux-headers-$KREL" "linux-source-6.1=$KVER")
missing=()
for p in "${PKGS[@]}"; do
  name=${p%%=*}; want=${p#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  [[ "$have" == "install ok installed"* ]] || { missing+=("$p"); continue; }
  [[ "$p" != *=* || "$have" == *" $want" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  t0=$(date +%s)
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  log "apt took $(( $(date +%s) - t0 )) s"
fi

# --- the kernel image, unpacked (vmlinuz + stock modules)
if [[ ! -f "$K/stamp" ]]; then
  rm -rf "$K"; mkdir -p "$K/root"
  (cd "$K" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$KREL=$KVER" >&2)
  dpkg-deb -x "$K"/linux-image-*.deb "$K/root"
  rm -f "$K"/linux-image-*.deb
  echo "$KVER" > "$K/version"
  touch "$K/stamp"
fi

# --- vfio.ko with NOIOMMU, out of tree
if [[ ! -f "$V/vfio.ko" ]]; then
  rm -rf "$V"; mkdir -p "$V/src"
  log "building NOIOMMU vfio.ko from linux-source-6.1 $KVER"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$V/src" --strip-components=3 \
    linux-source-6.1/drivers/vfio/vfio_main.c linux-source-6.1/drivers/vfio/iova_bitmap.c \
    linux-source-6.1/drivers/vfio/container.c linux-source-6.1/drivers/vfio/vfio.h
  cat > "$V/src/Kbuild" <<'KB'
obj-m := vfio.o
vfio-y := vfio_main.o iova_bitmap.o container.o
ccflags-y := -DCONFIG_VFIO_NOIOMMU=1
KB
  make -s -C "/lib/modules/$KREL/build" M="$V/src" modules >&2
  strip --strip-debug -o "$V/vfio.ko.tmp" "$V/src/vfio.ko"
  mv "$V/vfio.ko.tmp" "$V/vfio.ko"
fi
# prove it is for this kernel and has the NOIOMMU parameter
modinfo -F vermagic "$V/vfio.ko" | grep -q "^$KREL " || die "vfio.ko vermagic mismatch"
modinfo -F parm "$V/vfio.ko" | grep -q enable_unsafe_noiommu_mode || die "vfio.ko lacks enable_unsafe_noiommu_mode"
log "ready: $K/root/boot/vmlinuz-$KREL, $V/vfio.ko"
