#!/usr/bin/env bash
# Sets up (with the test extras), checks the code (ruff format, ruff lint, mypy --strict) and runs the
# test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,text
echo "test.sh: ruff format --check, ruff check, mypy" >&2
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
