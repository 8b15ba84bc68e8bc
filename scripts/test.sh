#!/usr/bin/env bash
# Sets everything up (scripts/setup-env.sh test) and runs every check CI runs: ruff (lint and format),
# mypy, the whole pytest suite with warnings as errors and branch coverage of cortex.translate, the
# notebooks executed in a Jupyter kernel, the documentation site built with `mkdocs build --strict`
# and its internal links checked. Extra arguments go to pytest alone (e.g. scripts/test.sh tests/translate -x).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup-env.sh test
venv="${CORTEX_VENV:-$repo/.venv}"
bin="$venv/bin"

# Optional: the real Claude Code and Codex CLIs, for the tests that drive `claude -p` and `codex exec`
# against the gateway. Where npm exists they install side by side (300 s at most for both, ~15 s on a
# good link); where npm is missing, slow or an install fails, their tests skip and CI carries on.
claude_prefix="$venv/claude-code-2.1.332"
codex_prefix="$venv/codex-0.171.0"
install_cli() {  # prefix binary package@version
  if [ ! -x "$1/node_modules/.bin/$2" ] && command -v npm >/dev/null 2>&1; then
    echo "== installing $3 (optional)"
    if ! timeout 300 npm install --silent --no-audit --no-fund --prefix "$1" "$3" >/dev/null 2>&1; then
      rm -rf "$1"  # nothing half-installed is left for a test to find
      echo "   $3 not installed: its test will skip"
    fi
  fi
}
install_cli "$claude_prefix" claude @anthropic-ai/claude-code@2.1.332 &
install_cli "$codex_prefix" codex @openai/codex@0.171.0 &
wait
for bin_dir in "$claude_prefix/node_modules/.bin" "$codex_prefix/node_modules/.bin"; do
  if [ -d "$bin_dir" ]; then PATH="$bin_dir:$PATH"; fi
done
export PATH

echo "== ruff check"; "$bin/ruff" check .
echo "== ruff format --check"; "$bin/ruff" format --check .
echo "== mypy"; "$bin/mypy"
echo "== pytest"
status=0
whole=0
if [ "$#" -eq 0 ]; then
  # The whole suite: cortex.translate must be covered branch for branch. The notebooks and the
  # documentation site follow as steps of their own, so that CI's output shows each of them.
  whole=1
  set -- --cov=cortex.translate --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100 \
    --deselect tests/test_notebooks.py::test_notebook_runs
fi
"$bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests"
  status=0
fi
if [ "$whole" -eq 1 ]; then
  echo "== notebooks (each executed top to bottom in a Jupyter kernel by nbclient)"
  "$bin/python" -m pytest -v --no-header -p no:cacheprovider tests/test_notebooks.py -k test_notebook_runs \
    || status=$?
  echo "== mkdocs build --strict (the documentation site, into site/)"
  NO_MKDOCS_2_WARNING=1 "$bin/mkdocs" build --strict || status=$?
  echo "== link check (the site's internal links)"
  "$bin/python" scripts/check_links.py site || status=$?
fi
exit "$status"
