#!/usr/bin/env bash
# Install the real Codex and Gemini CLIs from the npm registry into the project-local
# folder Claude Code uses (.ci/node) and print where they are, one `NAME=PATH` line
# each on stdout (the only lines on stdout):
#
#   scripts/install-agent-clis.sh
#   # LOOPVISOR_CODEX_BIN=/…/.ci/node/node_modules/.bin/codex
#   # LOOPVISOR_GEMINI_BIN=/…/.ci/node/node_modules/.bin/gemini
#   CODEX_VERSION=0.169.0 GEMINI_CLI_VERSION=0.61.0 AGENT_CLIS_PREFIX=/tmp/x scripts/install-agent-clis.sh
#
# Idempotent: a pinned version already installed (its `--version` says so) is not
# downloaded again. `@openai/codex` brings its native binary as an optional
# dependency of the platform (`@openai/codex-linux-x64`, about 400 MB); the Gemini CLI
# is a Node bundle (Node >= 20). Progress goes to stderr; any failure exits non-zero.
set -euo pipefail

CODEX_VERSION="${CODEX_VERSION:-0.169.0}"
GEMINI_VERSION="${GEMINI_CLI_VERSION:-0.61.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${AGENT_CLIS_PREFIX:-$ROOT/.ci/node}"
BIN_DIR="$PREFIX/node_modules/.bin"
# --version must not touch anyone's real config.
SCRATCH_HOME="$(mktemp -d)"
trap 'rm -rf "$SCRATCH_HOME"' EXIT

log() { printf 'install-agent-clis: %s\n' "$*" >&2; }

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool is not on PATH"; exit 2; }
done

version_of() {
    # The version the installed CLI reports (its last word on the first line), or nothing.
    [ -x "$BIN_DIR/$1" ] || return 0
    HOME="$SCRATCH_HOME" "$BIN_DIR/$1" --version 2>/dev/null | awk 'NR == 1 { print $NF }' || true
}

mkdir -p "$PREFIX"
[ -f "$PREFIX/package.json" ] || printf '{"private": true}\n' >"$PREFIX/package.json"

wanted=()
[ "$(version_of codex)" = "$CODEX_VERSION" ] || wanted+=("@openai/codex@$CODEX_VERSION")
[ "$(version_of gemini)" = "$GEMINI_VERSION" ] || wanted+=("@google/gemini-cli@$GEMINI_VERSION")
if [ "${#wanted[@]}" -gt 0 ]; then
    log "installing ${wanted[*]} into $PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error --save-exact \
        "${wanted[@]}" >&2
fi

for pair in "codex:$CODEX_VERSION" "gemini:$GEMINI_VERSION"; do
    exe="${pair%%:*}" want="${pair#*:}"
    got="$(version_of "$exe")"
    if [ "$got" != "$want" ]; then
        log "expected $exe $want, but '$BIN_DIR/$exe --version' says '${got:-nothing}'"
        exit 1
    fi
    log "ok: $exe $got"
done
printf 'LOOPVISOR_CODEX_BIN=%s\n' "$BIN_DIR/codex"
printf 'LOOPVISOR_GEMINI_BIN=%s\n' "$BIN_DIR/gemini"
