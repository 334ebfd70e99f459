#!/usr/bin/env bash
# Sets up (with the test extras), checks the code (ruff format, ruff lint, mypy --strict) and runs the
# test suite; then runs the REST tests again with two HTTP fronts (`http_workers = 2`: the daemons of
# tests/support/daemon.py read MODELSCHED_TEST_HTTP_WORKERS). Arguments go to both pytest runs;
# MODELSCHED_TEST_SKIP_FRONTS=1 skips the second.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,text
echo "test.sh: ruff format --check, ruff check, mypy" >&2
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
if [[ "${MODELSCHED_TEST_SKIP_FRONTS:-0}" != 1 ]]; then
    echo "test.sh: the REST tests again, with two HTTP fronts" >&2
    MODELSCHED_TEST_HTTP_WORKERS=2 exec .venv/bin/python -m pytest "$@" \
        tests/http tests/pipelines/test_rest.py tests/render/test_rest.py tests/journal/test_readiness.py
fi
