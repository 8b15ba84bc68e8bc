"""The whole engine with its ops forced to the Triton kernels produces the greedy tokens of the
reference path, on tiny transformers-built checkpoints of every architecture.

Without CUDA the kernels run on CPU tensors under Triton's interpreter (the suite's root conftest sets
``TRITON_INTERPRET=1``); on a CUDA machine they run compiled, on the GPU. The batch mixes prompts of
different lengths, so steps hold chunked prefills next to decodes; the two engines live in one
process, each with its own kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hf_checkpoints import ARCHS

from cortex.engine.engine import Engine
from cortex.engine.sampling_params import SamplingParams

PROMPTS = [list(range(3, 8)), list(range(10, 80)), [(7 * i) % 500 + 1 for i in range(23)], [42]]
GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_triton_kernels_match_the_reference_path(arch: str, hf_checkpoint: Callable) -> None:
    path = hf_checkpoint(arch).path
    engines = {
        kernels: Engine.from_pretrained(
            path,
            device=DEVICE,
            kernels=kernels,
            max_model_len=128,
            max_num_batched_tokens=48,
            prefill_chunk_size=32,
            block_size=16,
        )
        for kernels in ("ref", "triton")
    }
    try:
        assert engines["ref"].kernels == "ref"
        assert engines["triton"].kernels == "triton"
        outputs = {kernels: engine.generate(PROMPTS, GREEDY) for kernels, engine in engines.items()}
    finally:
        for engine in engines.values():
            engine.close()
    tokens = {kernels: [out.token_ids for out in outs] for kernels, outs in outputs.items()}
    assert tokens["triton"] == tokens["ref"]
