"""The sharded model at tensor_parallel_size=2 (two processes, gloo) against the whole model, for every
architecture: prefill logits within 1e-5 in float32 (whole and chunked, past the delta-rule chunk),
and the same batched greedy tokens over chunked prefill and decode; and against transformers (the
oracle) within the 1e-4 the whole model meets there (tests/engine/models/test_model_parity.py)."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable

import pytest
import torch
import tp_group
from hf_checkpoints import ARCHS

from cortex.engine.models import load_model

TOLERANCE = 1e-5
TRANSFORMERS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def parallel_outputs(hf_checkpoint: Callable, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Rank 0's outputs per architecture, from one 2-process group that loads every checkpoint."""
    folders = [(arch, str(hf_checkpoint(arch).path)) for arch in ARCHS]
    store = str(tmp_path_factory.mktemp("tp-store") / "store")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ranks = [
        context.Process(target=tp_group.run_rank, args=(rank, store, folders, results)) for rank in range(2)
    ]
    for process in ranks:
        process.start()
    try:
        outputs = {arch: pickle.loads(data) for arch, data in (results.get(timeout=300) for _ in ARCHS)}
    finally:
        for process in ranks:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in ranks] == [0, 0]
    return outputs


@pytest.mark.parametrize("arch", ARCHS)
def test_tensor_parallel_model_matches_the_whole_model(arch, hf_checkpoint, parallel_outputs):
    model, config = load_model(hf_checkpoint(arch).path, dtype="float32", device="cpu")
    expected = tp_group.model_outputs(model, config)
    got = parallel_outputs[arch]
    assert got["whole"].shape == expected["whole"].shape == (len(tp_group.PROMPT), config.vocab_size)
    assert (got["whole"] - expected["whole"]).abs().max() < TOLERANCE
    assert (got["chunked"] - expected["chunked"]).abs().max() < TOLERANCE
    assert got["greedy"] == expected["greedy"]
    with torch.no_grad():
        oracle = hf_checkpoint(arch).model(torch.tensor([tp_group.PROMPT])).logits[0]
    assert (got["whole"] - oracle).abs().max() < TRANSFORMERS_TOLERANCE
