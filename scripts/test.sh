#!/usr/bin/env bash
# Sets everything up (scripts/setup-env.sh test) and runs every check CI runs: ruff (lint and format),
# mypy, and the whole pytest suite with warnings as errors and branch coverage of cortex.translate.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/translate -x).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup-env.sh test
bin="${CORTEX_VENV:-$repo/.venv}/bin"

echo "== ruff check"; "$bin/ruff" check .
echo "== ruff format --check"; "$bin/ruff" format --check .
echo "== mypy"; "$bin/mypy"
echo "== pytest"
status=0
if [ "$#" -eq 0 ]; then
  # The whole suite: cortex.translate must be covered branch for branch.
  set -- --cov=cortex.translate --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100
fi
"$bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests"
  status=0
fi
exit "$status"
