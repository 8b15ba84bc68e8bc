"""Every Triton kernel compiles for sm_90 (H100/H200) at the published models' shapes, within the
H200's shared memory per block. No GPU needed: Triton cross-compiles (kernels/compile_specs.py).

The compiles run in one subprocess (the harness's command line) without ``TRITON_INTERPRET``, away
from the kernels this suite interprets, and report every spec that fails rather than stopping at one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cortex.engine.kernels.compile_specs import H200_SHARED_MEMORY_BYTES, MODEL_SHAPES, all_compile_specs

pytest.importorskip("triton")
SPECS = all_compile_specs()


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "cortex.engine.kernels.compile_specs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert records, f"the compile harness printed nothing:\n{result.stderr[-4000:]}"
    return {str(record["label"]): record for record in records}


def test_every_model_shape_has_kernels():
    assert {name for spec in SPECS for name in spec.models} == {shape.name for shape in MODEL_SHAPES}


@pytest.mark.parametrize("labelled", SPECS, ids=[spec.label for spec in SPECS])
def test_compiles_for_sm90_within_shared_memory(labelled, compiled):
    record = compiled[labelled.label]
    assert "error" not in record, record.get("error")
    assert record["sm_90"] is True
    assert record["num_warps"] == labelled.spec.num_warps
    shared = record["shared_bytes"]
    assert isinstance(shared, int)
    assert shared <= H200_SHARED_MEMORY_BYTES, f"{labelled.label} ({labelled.models}) needs {shared} B"
