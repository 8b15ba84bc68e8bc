#!/usr/bin/env bash
# Fills .gpu/ (git-ignored) with what benchmarks/gpu_check.sh needs on a GPU machine that has no network:
#
#   .gpu/wheels/  the Python packages that machine's image lacks, for its Python 3.12 / x86-64:
#                 llguidance (the engine imports it), transformers 5.24 (the correctness oracle and the
#                 engine benchmark's baseline, newer than the image's) and fla-core (flash-linear-attention,
#                 the Gated DeltaNet peer in benchmarks/kernels.py; transformers uses it too)
#   .gpu/data/    the recorded Claude Code request benchmarks/prefix_cache.py replays (from ../shared)
#
# Run it once, here, with network: benchmarks/gpu_prepare.sh. Then carry .gpu with the GPU call and run
# benchmarks/gpu_check.sh OUT_DIR there (about 18 MB travels). vLLM (336 MB) and flashinfer-python
# (101 MB, and it JIT-compiles its kernels) are over the 64 MiB a call can carry, so they are not here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python3}"
mkdir -p .gpu/wheels .gpu/data
wheels=(llguidance==1.9.1 transformers==5.24.0 fla-core==0.6.0)
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${wheels[@]}"
recorded="$repo/../shared/data/claude_code_request.json"
if [ -f "$recorded" ]; then
  cp "$recorded" .gpu/data/
else
  echo "no $recorded: benchmarks/prefix_cache.py will be skipped on the GPU machine" >&2
fi
ls -l .gpu/wheels .gpu/data
