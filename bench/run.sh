#!/usr/bin/env bash
# The one benchmark command (issue 8): router vs LiteLLM, same run, same mock and Redis.
#
#   bash bench/run.sh            # full run (~7-9 min on 2 cores)
#   bash bench/run.sh --quick    # smoke test with small counts
#   BENCH_SKIP_BUILD=1 bash bench/run.sh   # reuse build/ and target/release as they are
#   bash bench/run.sh --log-level INFO     # the router's LOG_LEVEL (default WARN)
#
# Builds the native helpers, tools/loadgen and the worker, makes bench/.venv with
# litellm[proxy] (first run only), then runs bench/run.py, which measures a private snapshot of
# build/ in `wrangler dev` and in plain `workerd serve` (bench/hosts.py) next to LiteLLM and writes
# bench/results/latest.json and latest.md and prints the table. Every process it starts is
# stopped at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run bench/results
export PATH="$HOME/.cargo/bin:$PATH"

if [[ "${BENCH_SKIP_BUILD:-}" != "1" ]]; then
  echo "[bench] building native helpers and loadgen" >&2
  cargo build --release -q -p upstash-local -p mock-gemini -p loadgen
  echo "[bench] building the worker" >&2
  if bash scripts/build-worker.sh > .run/bench-worker-build.log 2>&1; then
    export BENCH_WORKER_BUILD=fresh
  elif [[ -f build/index.js && -f build/index_bg.wasm ]]; then
    # src/ may be mid-edit by others; measure the last good build and say so in the results.
    echo "[bench] WARNING: worker build failed (see .run/bench-worker-build.log); measuring the existing build/" >&2
    export BENCH_WORKER_BUILD=stale
  else
    cat .run/bench-worker-build.log >&2; exit 1
  fi
else
  export BENCH_WORKER_BUILD=skipped
fi

if [[ ! -x bench/.venv/bin/litellm ]] || ! bench/.venv/bin/python -c 'import pytest, requests' 2>/dev/null; then
  echo "[bench] creating bench/.venv with litellm[proxy]" >&2
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q --disable-pip-version-check 'litellm[proxy]' pytest requests
fi

# LiteLLM: no telemetry, no remote model-cost map, no database.
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False
exec bench/.venv/bin/python bench/run.py "$@"
