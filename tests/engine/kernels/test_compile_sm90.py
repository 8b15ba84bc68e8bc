"""Every Triton kernel compiles for sm_90 (H100/H200) at the published models' shapes, within the
H200's shared memory per block. No GPU needed: Triton cross-compiles (kernels/compile_specs.py)."""

from __future__ import annotations

import pytest

from cortex.engine.kernels.compile_specs import (
    H200_SHARED_MEMORY_BYTES,
    MODEL_SHAPES,
    all_compile_specs,
    compile_sm90,
)

pytest.importorskip("triton")
SPECS = all_compile_specs()


def test_every_model_shape_has_kernels():
    assert {name for spec in SPECS for name in spec.models} == {shape.name for shape in MODEL_SHAPES}


@pytest.mark.parametrize("labelled", SPECS, ids=[spec.label for spec in SPECS])
def test_compiles_for_sm90_within_shared_memory(labelled):
    compiled = compile_sm90(labelled.spec)
    assert compiled.num_warps == labelled.spec.num_warps
    assert ".target sm_90" in compiled.ptx
    assert compiled.shared_bytes <= H200_SHARED_MEMORY_BYTES, (
        f"{labelled.label} ({', '.join(labelled.models)}) needs {compiled.shared_bytes} bytes of shared"
    )
