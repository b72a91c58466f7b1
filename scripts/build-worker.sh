#!/usr/bin/env bash
# Builds the worker to build/ with worker-build, using only registry-installed tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${SKIP_WORKER_BUILD:-}" == "1" && -f build/index.js ]]; then
  exit 0
fi
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$HOME/.cargo/bin/wasm-bindgen}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/esbuild/bin/esbuild}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/binaryen/bin/wasm-opt}"
exec worker-build --release
