#!/usr/bin/env bash
# Sets everything up (scripts/setup-env.sh test) and runs every check CI runs: ruff (lint and format),
# mypy, and the whole pytest suite with warnings as errors and branch coverage of cortex.translate.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/translate -x).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup-env.sh test
venv="${CORTEX_VENV:-$repo/.venv}"
bin="$venv/bin"

# Optional: the real Claude Code CLI, for the test that drives `claude -p` against the gateway.
# Where npm is missing or the install fails, that one test skips.
claude_version="2.1.332"
claude_prefix="$venv/claude-code-$claude_version"
if [ ! -x "$claude_prefix/node_modules/.bin/claude" ] && command -v npm >/dev/null 2>&1; then
  echo "== installing @anthropic-ai/claude-code@$claude_version (optional)"
  timeout 300 npm install --silent --no-audit --no-fund --prefix "$claude_prefix" \
    "@anthropic-ai/claude-code@$claude_version" >/dev/null 2>&1 || echo "   not installed: its test will skip"
fi
[ -x "$claude_prefix/node_modules/.bin/claude" ] && export PATH="$claude_prefix/node_modules/.bin:$PATH"

# Optional too: the real Codex CLI, for the test that drives `codex exec` against the gateway.
codex_version="0.171.0"
codex_prefix="$venv/codex-$codex_version"
if [ ! -x "$codex_prefix/node_modules/.bin/codex" ] && command -v npm >/dev/null 2>&1; then
  echo "== installing @openai/codex@$codex_version (optional)"
  timeout 300 npm install --silent --no-audit --no-fund --prefix "$codex_prefix" \
    "@openai/codex@$codex_version" >/dev/null 2>&1 || echo "   not installed: its test will skip"
fi
[ -x "$codex_prefix/node_modules/.bin/codex" ] && export PATH="$codex_prefix/node_modules/.bin:$PATH"

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
