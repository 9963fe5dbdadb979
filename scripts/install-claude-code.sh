#!/usr/bin/env bash
# Install the real Claude Code CLI from the npm registry into a project-local folder
# and print the path of its `claude` executable (the only line on stdout).
#
#   scripts/install-claude-code.sh            # -> .ci/node/node_modules/.bin/claude
#   CLAUDE_CODE_VERSION=2.1.332 CLAUDE_CODE_PREFIX=/tmp/cc scripts/install-claude-code.sh
#   export LOOPVISOR_CLAUDE_BIN="$(scripts/install-claude-code.sh)"   # what the tests read
#
# Idempotent: when the pinned version is already installed and runs, nothing is
# downloaded. npm's Node >= 22 engine warning is harmless: after `install.cjs` has
# put the native binary in place, `claude` does not run on Node at all.
# Progress and npm output go to stderr; any failure exits non-zero.
set -euo pipefail

VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${CLAUDE_CODE_PREFIX:-$ROOT/.ci/node}"
PKG="@anthropic-ai/claude-code"
PKG_DIR="$PREFIX/node_modules/$PKG"
BIN="$PREFIX/node_modules/.bin/claude"

log() { printf 'install-claude-code: %s\n' "$*" >&2; }

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool is not on PATH"; exit 2; }
done

installed_version() {
    # Prints the version the installed binary reports, or nothing.
    [ -x "$BIN" ] || return 0
    "$BIN" --version 2>/dev/null | awk 'NR == 1 { print $1 }' || true
}

if [ "$(installed_version)" = "$VERSION" ]; then
    log "$PKG@$VERSION already installed"
    printf '%s\n' "$BIN"
    exit 0
fi

mkdir -p "$PREFIX"
[ -f "$PREFIX/package.json" ] || printf '{"private": true}\n' >"$PREFIX/package.json"

log "installing $PKG@$VERSION into $PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
    --save-exact "$PKG@$VERSION" >&2

# The package ships a placeholder `bin/claude.exe`; install.cjs replaces it with the
# native binary of this platform (from the optional dependency npm just installed).
# Newer npm versions may skip postinstall scripts, so run it ourselves.
log "placing the native binary"
(cd "$PREFIX" && node "node_modules/$PKG/install.cjs") >&2

[ -d "$PKG_DIR" ] || { log "$PKG_DIR is missing after npm install"; exit 1; }
got="$(installed_version)"
if [ "$got" != "$VERSION" ]; then
    log "expected $VERSION, but '$BIN --version' says '${got:-nothing}'"
    exit 1
fi
log "ok: $("$BIN" --version)"
printf '%s\n' "$BIN"
