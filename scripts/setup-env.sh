#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs cortex into it.
#
#   scripts/setup-env.sh [EXTRA]     EXTRA is a pip extra of cortex, e.g. "test"
#
# The environment lives in $CORTEX_VENV (default: .venv in the repository). torch comes by the
# ordinary route where an NVIDIA GPU is present (a CUDA build from PyPI); on a machine without one it
# comes from PyTorch's CPU wheel index, which keeps the install lean (about 200 MB instead of several GB).
# A stamp file skips the install when pyproject.toml has not changed since the last one.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CORTEX_VENV:-$repo/.venv}"
extra="${1:-}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "cortex needs Python 3.11 or newer (found $("$python" --version 2>&1))" >&2
  exit 1
}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

stamp="$venv/.cortex-install-${extra:-runtime}"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
torch_spec="torch>=2.4,<2.14"
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing torch with CUDA from PyPI" >&2
    "${pip[@]}" "$torch_spec"
  else
    echo "setup: no NVIDIA GPU: installing the CPU build of torch" >&2
    "${pip[@]}" --timeout 15 --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu "$torch_spec"
  fi
fi
target="$repo"
[ -n "$extra" ] && target="$repo[$extra]"
"${pip[@]}" -e "$target"
echo "$want" > "$stamp"
