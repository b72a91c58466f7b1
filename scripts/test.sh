#!/usr/bin/env bash
# Runs the whole test suite: native unit tests, wasm tests under Node, the Lua scripts against a
# real redis-server, the Upstash SDK compatibility tests, and the end-to-end tests against the
# real worker in workerd (wrangler dev). Every service is started on free loopback ports and
# stopped afterwards by the test harness (tests/stack.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false

echo "==> building native helpers (upstash-local, mock-gemini)"
cargo build --release -p upstash-local -p mock-gemini
echo "==> building the worker (wasm)"
bash scripts/build-worker.sh

echo "==> native unit tests"
cargo test --workspace

echo "==> wasm tests (wasm-bindgen-test under Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --target wasm32-unknown-unknown -p llm-key-router --test wasm

echo "==> Lua scripts, SDK compatibility and end-to-end tests"
.venv/bin/pytest tests -q -p no:cacheprovider "$@"
