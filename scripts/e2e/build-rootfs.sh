#!/usr/bin/env bash
# A minimal Debian bookworm root filesystem with systemd as PID 1, for the systemd scenario.
# debootstrap runs once; the result is cached as a tarball (OUT; the harness names it by a hash of
# this script, so a change here builds a new one). Per-run content (node, kernel
# modules, the installed product, test units) is added by the harness on a copy.
# Usage: build-rootfs.sh OUT.tar
set -euo pipefail
OUT=$1
[[ -f "$OUT" ]] && exit 0
MIRROR=${E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
R=$(mktemp -d "$(dirname "$OUT")/rootfs.XXXXXX")
trap 'rm -rf "$R"' EXIT
t0=$(date +%s)
echo "[e2e] debootstrap bookworm (minbase + systemd) from $MIRROR" >&2
# procps: the unit's ExecReload=/bin/kill, which AL2023 has and the Packer template's
# `systemd-analyze verify` checks
debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,kmod,iproute2,libstdc++6,procps \
  bookworm "$R" "$MIRROR" >"$R.log" 2>&1 || { tail -20 "$R.log" >&2; exit 1; }
rm -f "$R.log"
# no package caches or docs in the image
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/*
tar -C "$R" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "[e2e] rootfs cached in $OUT ($(du -h "$OUT" | cut -f1), $(( $(date +%s) - t0 )) s)" >&2
