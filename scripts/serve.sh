#!/usr/bin/env bash
# Sets up and starts the daemon on the dev preset (SQLite journal under var/, demo models).
# Arguments go to `modelsched serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh text
exec .venv/bin/modelsched serve --preset dev "$@"
