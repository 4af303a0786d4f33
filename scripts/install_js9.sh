#!/usr/bin/env bash
# Install JS9 (the npm package `js9`) into app/static/vendor/js9, where the server serves it at
# /js9/vendor/ for the viewer page /js9/. Nothing is fetched from a CDN at run time.
#
#   scripts/install_js9.sh            # install JS9_VERSION (default 3.9.0) unless already there
#   scripts/install_js9.sh --force    # reinstall
#
# Needs npm (the public npm registry, or the one npm is configured for). The package's own
# node_modules (a Node.js helper JS9 does not need in the browser) are left out.
set -euo pipefail

VERSION="${JS9_VERSION:-3.9.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/app/static/vendor/js9"
STAMP="$DEST/.js9-version"

if [ "${1:-}" != "--force" ] && [ -f "$DEST/js9.min.js" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
    echo "JS9 $VERSION already installed in $DEST"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install_js9.sh: npm not found; install Node.js and npm, then rerun" >&2
    exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK" "$DEST.tmp"' EXIT
npm install --prefix "$WORK" --no-audit --no-fund --ignore-scripts --no-save --loglevel=error "js9@$VERSION"
SRC="$WORK/node_modules/js9"
if [ ! -f "$SRC/js9.min.js" ]; then
    echo "install_js9.sh: the js9 package has no js9.min.js" >&2
    exit 1
fi
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
(cd "$SRC" && tar --exclude=./node_modules -cf - .) | tar -xf - -C "$DEST.tmp"
echo "$VERSION" > "$DEST.tmp/.js9-version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "JS9 $VERSION installed in $DEST"
