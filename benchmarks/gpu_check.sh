#!/usr/bin/env bash
# The one prepared GPU check: runs the GPU parity tests and the GPU benchmarks on one CUDA machine,
# needs no network, finishes in well under 8 minutes on an H200, and writes its results as files into
# the folder given as its first argument.
#
#   benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python3}"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{ nvidia-smi; "$py" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; } \
  > "$out/device.txt" 2>&1
status=0
timeout 300 "$py" -m pytest -m gpu -q -p no:cacheprovider tests > "$out/gpu_tests.txt" 2>&1 || status=$?
for bench in benchmarks/bench_*.py; do
  [ -e "$bench" ] || continue
  name="$(basename "$bench" .py)"
  timeout 120 "$py" "$bench" --device cuda > "$out/$name.txt" 2>&1 || status=$?
done
# the recorded Claude Code request: ../shared/data beside the checkout, or shared/data inside it
recorded=""
for candidate in "$repo/../shared/data/claude_code_request.json" "$repo/shared/data/claude_code_request.json"; do
  if [ -f "$candidate" ]; then recorded="$candidate"; break; fi
done
if [ -n "$recorded" ]; then
  timeout 240 "$py" benchmarks/prefix_cache.py --device cuda --dtype bfloat16 --preset 0.8b \
    --recorded "$recorded" > "$out/prefix_cache.txt" 2>&1 || status=$?
else
  echo "skipped: no shared/data/claude_code_request.json beside or inside the checkout" > "$out/prefix_cache.txt"
fi
echo "gpu_check exit status: $status" | tee "$out/summary.txt"
exit "$status"
