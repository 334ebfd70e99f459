#!/usr/bin/env bash
# Sets up (with the test extras) and runs the test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,text
exec .venv/bin/python -m pytest "$@"
