#!/usr/bin/env bash
# Installs what a fresh machine lacks, from package registries only. Idempotent and quick when
# everything is present. Used by scripts/dev.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if ! command -v redis-server >/dev/null 2>&1; then
  step "apt-get install redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi

WORKER_BUILD_VERSION=0.8.7
if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  step "cargo install worker-build $WORKER_BUILD_VERSION"
  cargo install worker-build --version "$WORKER_BUILD_VERSION"
fi

# wasm-bindgen-cli must match the wasm-bindgen version in Cargo.lock exactly. No --locked:
# the registry mirror lacks one pinned dependency (see shared/notes/toolchain.md).
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WB_VERSION"; then
  step "cargo install wasm-bindgen-cli $WB_VERSION"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

if [[ ! -x node_modules/.bin/wrangler || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "npm ci (wrangler, Node 22, binaryen)"
  npm ci --no-audit --no-fund
fi

if [[ ! -x .venv/bin/pytest || tests/requirements.txt -nt .venv/.installed ]]; then
  step "python venv for the test suite and SDK compatibility tests"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
  touch .venv/.installed
fi

# --- observability (issue 7): Debian's chromium for the headless dashboard test, driven by the
# playwright-core npm package (which never downloads a browser).
if ! command -v chromium >/dev/null 2>&1; then
  step "apt-get install chromium (dashboard test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
