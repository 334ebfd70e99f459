#!/usr/bin/env bash
# Starts modelsched for the peer harness (../shared/bench/run_peers.sh --systems-file bench/modelsched.json):
# the dev preset with its SQLite journal on, in a fresh journal file per start, on the given port.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
port=$1
journal_dir=$(mktemp -d -t modelsched-bench-XXXXXX)
export MODELSCHED_JOURNAL_PATH="$journal_dir/journal.db"
export MODELSCHED_LOG_LEVEL=warning
export HF_HUB_OFFLINE=1
export MODELSCHED_TORCH_THREADS=${BENCH_TORCH_THREADS:-1}
exec "$root/.venv/bin/modelsched" serve --preset dev --host 127.0.0.1 --port "$port"
