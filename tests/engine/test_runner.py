"""ModelRunner: a pure-decode step laid out for a CUDA graph (padded rows) computes what the unpadded
step computes, and the padding rows write nothing but the spare state slot.

Run eagerly on the CPU with the Triton kernels (interpreted), so CI checks the padded layout the
decode graphs replay on a GPU (tests/engine/test_cuda_step.py replays the graphs themselves).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cortex.engine.cache.cache_plan import plan_cache
from cortex.engine.cache.layer_cache import AttentionCache
from cortex.engine.cache.pools import allocate_caches
from cortex.engine.host_packet import HostPacket
from cortex.engine.models import load_model
from cortex.engine.request import Request
from cortex.engine.runner import ModelRunner
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import ScheduledBatch, ScheduledSeq
from cortex.engine.step_input import build_step_input

BLOCK = 16
PROMPTS = [list(range(3, 20)), [42], list(range(100, 105))]  # the first crosses a block boundary


def test_padded_decode_step_equals_the_unpadded_one(hf_checkpoint: Callable) -> None:
    model, config = load_model(hf_checkpoint("qwen3_5").path, dtype="float32", device="cpu", kernels="triton")
    specs = config.layer_cache_specs()
    plan = plan_cache(
        specs,
        cache_memory_bytes=1 << 26,
        block_size=BLOCK,
        dtype_bytes=4,
        max_num_seqs=4,
        max_model_len=128,
        model_max_len=config.max_position_embeddings,
    )
    caches = allocate_caches(specs, plan, dtype=torch.float32, device=torch.device("cpu"), spare_slots=1)
    runner = ModelRunner(
        model, caches, block_size=BLOCK, vocab_size=config.vocab_size, device=torch.device("cpu")
    )
    spare = plan.num_slots + plan.num_snapshots  # the spare row, after any snapshot rows
    params = SamplingParams(max_tokens=4, temperature=0.0).resolve()
    requests = []
    for i, prompt in enumerate(PROMPTS):
        request = Request(f"r{i}", prompt, params, max_tokens=4, eos_token_ids=frozenset())
        request.block_table = [3 * i, 3 * i + 1, 3 * i + 2]
        request.state_slot = i
        requests.append(request)
    prefill = ScheduledBatch(tuple(ScheduledSeq(r, 0, len(r.prompt_token_ids)) for r in requests))
    with torch.inference_mode():
        for request, token in zip(requests, runner.execute(build_step_input(prefill)).token_ids, strict=True):
            request.output_token_ids.append(token)
        seqs = build_step_input(
            ScheduledBatch(tuple(ScheduledSeq(r, len(r.prompt_token_ids), 1) for r in requests))
        ).seqs
        before = [tuple(t.clone() for t in cache) for cache in caches]
        logits = {}
        after = {}
        for pad_to in (None, 4):
            for cache, saved in zip(caches, before, strict=True):
                for tensor, copy in zip(cache, saved, strict=True):
                    tensor.copy_(copy)
            runner._padding_slot = spare  # what capture_decode_graphs sets
            runner._graph_num_blocks = 128 // BLOCK
            packet = HostPacket()
            query_lens, num_cached = runner._put_forward(seqs, packet, pad_to=pad_to)
            batch = runner._forward_batch(
                packet.to(torch.device("cpu")), query_lens, num_cached, max_seq_len=128
            )
            if pad_to is not None:  # the padding row has no context: attention reads no block of it
                assert batch.seq_lens.tolist()[len(seqs) :] == [0] * (pad_to - len(seqs))
            logits[pad_to] = model(batch, caches)
            after[pad_to] = [tuple(t.clone() for t in cache) for cache in caches]
    assert logits[4].shape[0] == 4
    assert torch.isfinite(logits[4]).all()
    torch.testing.assert_close(logits[4][:3], logits[None], atol=1e-5, rtol=1e-5)
    for layer, (padded, unpadded, old) in enumerate(zip(after[4], after[None], before, strict=True)):
        if isinstance(caches[layer], AttentionCache):
            # the real rows' new keys (matmuls of 4 rows and of 3 differ in the last bits) ...
            torch.testing.assert_close(padded[0], unpadded[0], atol=1e-5, rtol=1e-5)
            # ... and nothing else: the padding row stored no key
            changed = (padded[0] != old[0]).flatten(2).any(-1).nonzero().tolist()
            new_slots = [[r.block_table[n // BLOCK], n % BLOCK] for r in requests for n in [r.num_tokens - 1]]
            assert sorted(map(tuple, changed)) == sorted(map(tuple, new_slots))
        else:
            for p, u, o in zip(padded, unpadded, old, strict=True):
                torch.testing.assert_close(p[:spare], u[:spare], atol=1e-5, rtol=1e-5)
                assert torch.equal(u[spare], o[spare])  # unpadded: the spare row untouched
