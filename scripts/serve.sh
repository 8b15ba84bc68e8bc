#!/usr/bin/env bash
# Sets everything up (scripts/setup-env.sh) and runs the main job: the gateway with an embedded local
# neuron. With no configuration and no local models it serves a demo model (random weights in the real
# Qwen3.5 architecture with the real Qwen3.5 tokenizer: it produces nonsense text).
# Arguments are passed to `cortex serve` (see `cortex serve --help`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup-env.sh"
exec "${CORTEX_VENV:-$repo/.venv}/bin/cortex" serve "$@"
