#!/usr/bin/env bash
# Install eni-dpdk from an unpacked release tarball (this script sits at the tarball's root).
#
#   ./install.sh [--destdir DIR] [--prefix /opt/eni-dpdk]
#
# Idempotent: running it again gives the same tree. It never starts the service (an AMI build must
# not attach ENIs) and never writes a state file. With --destdir the tree is built under DIR, units
# are enabled by creating their .wants symlinks, and SELinux labels are left to the real install.
set -euo pipefail

destdir=""
prefix="/opt/eni-dpdk"
usage() { echo "usage: $0 [--destdir DIR] [--prefix /opt/eni-dpdk]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) [ $# -ge 2 ] || usage; destdir="$2"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --prefix) [ $# -ge 2 ] || usage; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case "$prefix" in
  /*) ;;
  *) echo "install.sh: --prefix must be an absolute path, got: $prefix" >&2; exit 2 ;;
esac
prefix="${prefix%/}"
if [ -n "$destdir" ]; then
  mkdir -p "$destdir"
  destdir="$(cd "$destdir" && pwd)"
fi

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -f "$src/opt/eni-dpdk/eni-dpdk.cjs" ]; then
  echo "install.sh: $src/opt/eni-dpdk/eni-dpdk.cjs not found; run this script from an unpacked eni-dpdk release tarball (npm run package)" >&2
  exit 1
fi
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root (or pass --destdir DIR)" >&2
  exit 1
fi
say() { echo "install.sh: $*"; }

# 1. The application: replace the whole directory, so chunks of an older version do not linger.
app="$destdir$prefix"
mkdir -p "$(dirname "$app")"
new="$app.new.$$"
rm -rf "$new"
cp -R "$src/opt/eni-dpdk" "$new"
find "$new" -type d -exec chmod 0755 {} +
find "$new" -type f -exec chmod 0644 {} +
find "$new" -type f -name '*.node' -exec chmod 0755 {} +
if [ -d "$app" ]; then
  rm -rf "$app.old.$$"
  mv "$app" "$app.old.$$"
  mv "$new" "$app"
  rm -rf "$app.old.$$"
else
  mv "$new" "$app"
fi
say "installed $prefix ($(head -n1 "$app/VERSION"))"

# 2. The launcher. A wrapper rather than a symlink: it picks a supported Node (AL2023's nodejs22 or
# nodejs20; plain "node" there may be Node 18) and `exec`s it, so node keeps the PID systemd
# started: NotifyAccess=main accepts READY=1 from node and from the systemd-notify it spawns.
install -d -m 0755 "$destdir/usr/bin"
launcher="$destdir/usr/bin/eni-dpdk"
tmp="$launcher.tmp.$$"
cat >"$tmp" <<EOF
#!/bin/sh
# eni-dpdk launcher, written by install.sh. ENI_DPDK_NODE selects a Node binary explicitly.
for node in "\${ENI_DPDK_NODE:-}" /usr/bin/node-22 /usr/bin/node-20 /usr/bin/node; do
  if [ -n "\$node" ] && [ -x "\$node" ]; then
    exec "\$node" "$prefix/eni-dpdk.cjs" "\$@"
  fi
done
echo "eni-dpdk: no Node.js 20+ found (ENI_DPDK_NODE, /usr/bin/node-22, /usr/bin/node-20, /usr/bin/node); on AL2023: dnf install -y nodejs22" >&2
exit 1
EOF
chmod 0755 "$tmp"
mv -f "$tmp" "$launcher"

# 3. Units, modprobe and modules-load files: ours, replaced on every install.
install -d -m 0755 "$destdir/usr/lib/systemd/system" "$destdir/etc/modprobe.d" "$destdir/etc/modules-load.d"
for unit in eni-dpdk.service eni-dpdk-early.service; do
  install -m 0644 "$src/usr/lib/systemd/system/$unit" "$destdir/usr/lib/systemd/system/$unit"
done
install -m 0644 "$src/etc/modprobe.d/eni-dpdk.conf" "$destdir/etc/modprobe.d/eni-dpdk.conf"
install -m 0644 "$src/etc/modules-load.d/eni-dpdk.conf" "$destdir/etc/modules-load.d/eni-dpdk.conf"

# 4. The config is the admin's once installed: an edited copy is kept, the shipped one lands next to it.
install -d -m 0755 "$destdir/etc/eni-dpdk" "$destdir/etc/eni-dpdk/config.d"
config="$destdir/etc/eni-dpdk/config.toml"
if [ ! -e "$config" ]; then
  install -m 0644 "$src/etc/eni-dpdk/config.toml" "$config"
elif cmp -s "$src/etc/eni-dpdk/config.toml" "$config"; then
  rm -f "$config.dist"
else
  install -m 0644 "$src/etc/eni-dpdk/config.toml" "$config.dist"
  say "kept the existing /etc/eni-dpdk/config.toml; the shipped default is /etc/eni-dpdk/config.toml.dist"
fi

# 5. Directories the hardened unit may write (ReadWritePaths= needs them to exist). No state file:
# an AMI must boot its first instance without one.
install -d -m 0755 "$destdir/etc/pcidp"
install -d -m 0700 "$destdir/var/lib/eni-dpdk"

# 6. Enable: what `systemctl enable` does for WantedBy=, done by hand so it also works under
# --destdir and without a running systemd. Then tell a running systemd about the new units.
for unit in eni-dpdk.service eni-dpdk-early.service; do
  for target in $(sed -n 's/^WantedBy=//p' "$destdir/usr/lib/systemd/system/$unit"); do
    install -d -m 0755 "$destdir/etc/systemd/system/$target.wants"
    ln -sfn "/usr/lib/systemd/system/$unit" "$destdir/etc/systemd/system/$target.wants/$unit"
  done
done
say "enabled eni-dpdk.service and eni-dpdk-early.service (not started)"
if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
fi

# 7. SELinux labels (the EKS AMI build checks them); labels only mean something on the real root.
if [ -z "$destdir" ] && command -v selinuxenabled >/dev/null && selinuxenabled && command -v restorecon >/dev/null; then
  restorecon -R "$prefix" /usr/bin/eni-dpdk /usr/lib/systemd/system/eni-dpdk.service /usr/lib/systemd/system/eni-dpdk-early.service \
    /etc/eni-dpdk /etc/modprobe.d/eni-dpdk.conf /etc/modules-load.d/eni-dpdk.conf /etc/pcidp /var/lib/eni-dpdk \
    /etc/systemd/system/multi-user.target.wants
  say "restored SELinux labels"
fi

# 8. The installed config must validate. Under --destdir the launcher points at the final prefix,
# so run the installed bundle with this host's node when there is one. The run's caches (Node 22
# keeps compiled code of the modules it loads) go to a directory of its own, removed after: an
# install lays down its files and nothing of the machine that ran it.
CACHE_DIRECTORY=$(mktemp -d)
export CACHE_DIRECTORY
trap 'rm -rf "$CACHE_DIRECTORY"' EXIT
if [ -z "$destdir" ]; then
  /usr/bin/eni-dpdk validate /etc/eni-dpdk/config.toml
else
  node=""
  for candidate in "${ENI_DPDK_NODE:-}" /usr/bin/node-22 /usr/bin/node-20 "$(command -v node || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then node="$candidate"; break; fi
  done
  if [ -n "$node" ]; then
    "$node" "$app/eni-dpdk.cjs" validate "$config"
  else
    say "note: no node on this host; skipped 'eni-dpdk validate' of $config"
  fi
fi
say "done"
