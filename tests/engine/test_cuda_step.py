"""The CUDA step: nothing in it reads a device value back but the sampled tokens, and a decode step
replayed from a CUDA graph equals the same step run eagerly. GPU only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from hf_checkpoints import ARCHS

from cortex.engine.engine import Engine
from cortex.engine.sampling_params import SamplingParams

PROMPTS = [list(range(3, 8)), list(range(10, 80)), [(7 * i) % 500 + 1 for i in range(23)]]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
SAMPLED = SamplingParams(
    max_tokens=12,
    temperature=0.8,
    top_k=20,
    top_p=0.9,
    seed=3,
    repetition_penalty=1.2,
    logprobs=2,
    ignore_eos=True,
)


@contextmanager
def syncs_are_errors() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _engine(path, **kwargs) -> Engine:
    return Engine.from_pretrained(
        path,
        device="cuda",
        kernels="triton",
        max_model_len=128,
        max_num_batched_tokens=64,
        prefill_chunk_size=32,
        **kwargs,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [(), None], ids=["eager", "graphs"])
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_steps_read_nothing_back(arch: str, graphs, hf_checkpoint: Callable) -> None:
    with _engine(hf_checkpoint(arch).path, cuda_graph_batch_sizes=graphs) as engine:
        expected = [out.token_ids for out in engine.generate(PROMPTS, [GREEDY, SAMPLED, GREEDY])]
        with syncs_are_errors():  # a sync anywhere in a step fails that step's requests
            got = [out.token_ids for out in engine.generate(PROMPTS, [GREEDY, SAMPLED, GREEDY])]
    assert got == expected


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_graph_replay_equals_eager(arch: str, hf_checkpoint: Callable) -> None:
    path = hf_checkpoint(arch).path
    with _engine(path, cuda_graph_batch_sizes=(1, 2, 4)) as engine:
        assert engine.cuda_graph_sizes == (1, 2, 4)
        with_graphs = [out.token_ids for out in engine.generate(PROMPTS, GREEDY)]
        # white box: the graphs' buffer holds the last decode step (3 rows padded to 4); replay it and
        # run the same batch eagerly from the same cache contents
        runner = engine._runner
        graphs = runner.decode_graphs
        assert graphs is not None
        saved = [tuple(t.clone() for t in cache) for cache in runner.caches]
        replayed = graphs.replay(4).clone()
        for cache, copy in zip(runner.caches, saved, strict=True):
            for tensor, original in zip(cache, copy, strict=True):
                tensor.copy_(original)
        with torch.inference_mode():
            eager = runner.model(graphs.batches[4], runner.caches)
        assert torch.equal(replayed, eager)
    with _engine(path, cuda_graph_batch_sizes=()) as engine:
        assert engine.cuda_graph_sizes == ()
        without = [out.token_ids for out in engine.generate(PROMPTS, GREEDY)]
    assert with_graphs == without
