#!/usr/bin/env bash
# Host setup for the QEMU end-to-end suite (Debian/Ubuntu, run as root):
#  1. apt: qemu, busybox, cpio, debootstrap, kmod, a compiler, and ONE kernel version's headers + source.
#  2. the kernel image of that same version, unpacked into the work dir (not installed: no host hooks).
#  3. vfio.ko rebuilt out of tree with CONFIG_VFIO_NOIOMMU (Debian's kernels lack it).
# Everything is cached under $E2E_WORK; a re-run only checks stamps.
set -euo pipefail
WORK=${E2E_WORK:-$(cd "$(dirname "$0")/../.." && pwd)/test/e2e/.work}
mkdir -p "$WORK"
log() { echo "[e2e-setup] $*" >&2; }

# --- the kernel: the release the linux-headers-amd64 metapackage points at, if linux-source-6.1 has
# exactly the same Debian version (vfio.ko built from that source must match the guest kernel ABI).
if [[ -z "${E2E_KREL:-}" ]]; then
  if [[ -f "$WORK/krel" ]]; then E2E_KREL=$(cat "$WORK/krel"); else
    # first run in this work dir: fresh lists, so the chosen versions can still be downloaded
    apt-get update -q >&2 && touch "$WORK/apt-updated"
    E2E_KREL=$(apt-cache depends linux-headers-amd64 | sed -n 's/.*Depends: linux-headers-\(6\.1\.[^ ]*\)$/\1/p' | head -1)
  fi
fi
[[ -n "$E2E_KREL" ]] || { log "cannot determine the kernel release (is this Debian bookworm with linux-headers-amd64?)"; exit 1; }
KVER=$(apt-cache policy "linux-image-$E2E_KREL" | sed -n 's/ *Candidate: //p')
if ! apt-cache madison linux-source-6.1 | awk '{print $3}' | grep -qx "$KVER"; then
  log "linux-source-6.1 has no version $KVER (the version of linux-image-$E2E_KREL); cannot build a matching vfio.ko"
  exit 1
fi
echo "$E2E_KREL" > "$WORK/krel"
log "kernel $E2E_KREL (Debian $KVER)"

# --- apt
PKGS=(qemu-system-x86 busybox-static cpio debootstrap kmod make gcc xz-utils e2fsprogs iproute2 strace
      "linux-headers-$E2E_KREL" "linux-source-6.1=$KVER")
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
  [[ -f "$WORK/apt-updated" ]] || { apt-get update -q >&2; touch "$WORK/apt-updated"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  log "apt took $(( $(date +%s) - t0 )) s"
fi

# --- the kernel image, unpacked (vmlinuz + stock modules)
K="$WORK/kernel/$E2E_KREL"
if [[ ! -f "$K/stamp" ]]; then
  rm -rf "$K"; mkdir -p "$K/root"
  (cd "$K" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$E2E_KREL=$KVER" >&2)
  dpkg-deb -x "$K"/linux-image-*.deb "$K/root"
  rm -f "$K"/linux-image-*.deb
  touch "$K/stamp"
fi

# --- vfio.ko with NOIOMMU, out of tree
V="$WORK/vfio-noiommu/$E2E_KREL"
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
  make -s -C "/lib/modules/$E2E_KREL/build" M="$V/src" modules >&2
  strip --strip-debug -o "$V/vfio.ko" "$V/src/vfio.ko"
fi
# prove it is for this kernel and has the NOIOMMU parameter
modinfo -F vermagic "$V/vfio.ko" | grep -q "^$E2E_KREL " || { log "vfio.ko vermagic mismatch"; exit 1; }
modinfo -F parm "$V/vfio.ko" | grep -q enable_unsafe_noiommu_mode || { log "vfio.ko lacks enable_unsafe_noiommu_mode"; exit 1; }
log "ready: $K/root/boot/vmlinuz-$E2E_KREL, $V/vfio.ko"
