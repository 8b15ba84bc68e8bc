#!/usr/bin/env bash
# The one prepared GPU check: runs the GPU tests and the GPU benchmarks on one CUDA machine, needs no
# network, finishes inside 8 minutes on an H200, and writes its results as files into the folder given
# as its first argument.
#
#   benchmarks/gpu_prepare.sh                 # once, with network: fills .gpu/ (wheels, recorded request)
#   benchmarks/gpu_check.sh OUT_DIR           # on the GPU machine, with .gpu carried
#   benchmarks/gpu_check.sh --dry-run OUT_DIR # on a CPU: every stage end to end at tiny sizes
#
# Stages, in order of value, each with its own time cap and all within one budget (GPU_CHECK_BUDGET_S,
# 470 s; the dry run has no stage caps and 1800 s); a stage that would start with under 20 s left is
# skipped and says so in summary.txt:
#   wheels         install .gpu/wheels into a private --target folder (put first on PYTHONPATH)
#   gpu_tests      pytest -m gpu tests/engine: the sync-free step, CUDA-graph replay, CUDA models
#   kernels        benchmarks/kernels.py: every kernel vs its reference and its peer (table + json)
#   engine         benchmarks/engine_gpu.py: 0.8b and 9b, cortex vs transformers (vLLM if installed)
#   kernel_tests   every kernel's parity test and the whole-engine triton-vs-ref test, compiled on the GPU
#   prefix_cache   benchmarks/prefix_cache.py, 0.8b bf16 (needs ../shared/data, shared/data or .gpu/data)
#   bench_*        every benchmarks/bench_*.py (the Gated DeltaNet kernels' fuller table, TP=2 vs TP=1)
# Each stage's output is OUT_DIR/<stage>.txt; summary.txt lists every stage's status and seconds.
set -uo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
out="${1:?usage: benchmarks/gpu_check.sh [--dry-run] OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python3}"
# the dry run checks that every stage runs end to end, not its time: no stage caps, a larger budget
budget_s="${GPU_CHECK_BUDGET_S:-$([ "$dry_run" = 1 ] && echo 1800 || echo 470)}"
deadline=$((SECONDS + budget_s))
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$dry_run" = 1 ]; then
  export TRITON_INTERPRET=1  # the Triton kernels on CPU tensors
fi
status=0
: > "$out/summary.txt"

note() { echo "$*" | tee -a "$out/summary.txt"; }

# stage NAME CAP_S COMMAND...: runs COMMAND into OUT_DIR/NAME.txt under min(CAP_S, what is left)
stage() {
  local name="$1" cap="$2"
  shift 2
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 20 ]; then
    note "$name: skipped (${left} s of the budget left)"
    status=1
    return
  fi
  [ "$dry_run" = 1 ] && cap=$left
  local limit=$((cap < left ? cap : left)) start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.txt" 2>&1 || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    note "$name: TIMED OUT after $((SECONDS - start)) s (limit ${limit} s)"
  else
    note "$name: exit $rc in $((SECONDS - start)) s"
  fi
  [ "$rc" = 0 ] || status=1
}

{
  if [ "$dry_run" = 1 ]; then echo "dry run on $(uname -n): $(nproc) CPUs"; else nvidia-smi; fi
  "$py" -c 'import sys, torch, triton; print(sys.version); print("torch", torch.__version__, torch.version.cuda,
    "triton", triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
} > "$out/device.txt" 2>&1

if compgen -G ".gpu/wheels/*.whl" > /dev/null; then
  stage wheels 120 "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/wheels/*.whl
  if [ "$dry_run" = 0 ]; then
    export PYTHONPATH="$site:$PYTHONPATH"
  else
    note "wheels: installed but not used (fla-core needs a GPU driver even under the interpreter)"
  fi
else
  note "wheels: none in .gpu/wheels (run benchmarks/gpu_prepare.sh): the image's own packages are used"
fi
"$py" -m pip list 2>/dev/null | grep -i -E "^(torch|triton|transformers|fla-core|llguidance|vllm) " \
  >> "$out/device.txt"

# tests/engine/structured needs jsonschema, which the GPU image lacks (and it runs no kernel of its own)
pytest_args=(-q -p no:cacheprovider --continue-on-collection-errors --ignore=tests/engine/structured)
if [ "$dry_run" = 1 ]; then
  stage gpu_tests 300 "$py" -m pytest "${pytest_args[@]}" -m gpu tests/engine/test_cuda_step.py
  stage kernels 300 "$py" benchmarks/kernels.py --device cpu --tiny --json "$out/kernels.json"
  stage engine 300 "$py" benchmarks/engine_gpu.py --tiny --json "$out/engine.json"
  stage kernel_tests 300 "$py" -m pytest "${pytest_args[@]}" -x tests/engine/kernels/test_kv_cache_kernel.py
  prefix_args=(--device cpu --dtype float32 --preset tiny --new-tokens 2)
else
  stage gpu_tests 150 "$py" -m pytest "${pytest_args[@]}" -m gpu tests/engine
  stage kernels 120 "$py" benchmarks/kernels.py --device cuda --json "$out/kernels.json"
  stage engine 200 "$py" benchmarks/engine_gpu.py --device cuda --repeats 2 --json "$out/engine.json"
  stage kernel_tests 100 "$py" -m pytest "${pytest_args[@]}" tests/engine/kernels tests/engine/test_engine_kernels.py \
    tests/engine/test_runner.py
  prefix_args=(--device cuda --dtype bfloat16 --preset 0.8b)
fi
# the recorded Claude Code request: ../shared/data beside the checkout, shared/data inside it, or .gpu/data
recorded=""
for candidate in ../shared/data shared/data .gpu/data; do
  if [ -f "$candidate/claude_code_request.json" ]; then recorded="$candidate/claude_code_request.json"; break; fi
done
if [ -n "$recorded" ]; then
  stage prefix_cache 60 "$py" benchmarks/prefix_cache.py "${prefix_args[@]}" --recorded "$recorded"
else
  note "prefix_cache: skipped (no claude_code_request.json in ../shared/data, shared/data or .gpu/data)"
fi
# every benchmarks/bench_*.py (a kernel family's own fuller table), with what the budget leaves
for bench in benchmarks/bench_*.py; do
  [ -e "$bench" ] || continue
  name="$(basename "$bench" .py)"
  if [ "$dry_run" = 0 ]; then
    bench_args=(--device cuda)
  else
    case "$name" in
      bench_gated_delta) bench_args=(--device cpu --tiny) ;;
      bench_tensor_parallel) bench_args=(--device cpu --preset tiny --batch 2 --tokens 4 --repeats 1) ;;
      *) bench_args=(--device cpu) ;;
    esac
  fi
  stage "$name" 60 "$py" "$bench" "${bench_args[@]}"
done
note "gpu_check exit status: $status (budget ${budget_s} s, used ${SECONDS} s)"
exit "$status"
