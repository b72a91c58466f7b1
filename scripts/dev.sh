#!/usr/bin/env bash
# Runs the router locally (see scripts/dev.py). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
cargo build --release -p upstash-local -p mock-gemini
exec .venv/bin/python scripts/dev.py "$@"
