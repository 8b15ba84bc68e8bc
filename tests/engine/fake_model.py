"""A scripted fake model with the real forward signature, for fast engine and scheduler tests.

It stores each token id in the paged K cache (and position + 1 in V) at ``slot_mapping``, keeps a rolling
hash of the sequence in every linear layer's ``ssm`` slot, and raises ``CacheCorrupted`` unless the hash
it carried equals the hash of the context it reads back through the block table: so a wrong block
table, slot mapping, state slot or chunk boundary fails loudly. Its logits are a deterministic function
of the hash (random-looking, so sampling tests have a real distribution to draw from).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache, LayerCache, LinearStateCache
from cortex.engine.config import ModelConfig

VOCAB_SIZE = 64
HASH_MODULUS = 10007


class CacheCorruptedError(AssertionError):
    pass


def fake_config(
    *, eos_token_id: int | list[int] = VOCAB_SIZE - 1, max_position_embeddings: int = 256, **generation: Any
) -> ModelConfig:
    """A Qwen3.5-shaped config (3 linear-attention layers, then 1 full-attention layer), tiny dims."""
    raw = {
        "model_type": "qwen3_5_text",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 4,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "linear_num_key_heads": 1,
        "linear_num_value_heads": 1,
        "linear_key_head_dim": 2,
        "linear_value_head_dim": 2,
        "linear_conv_kernel_dim": 2,
        "max_position_embeddings": max_position_embeddings,
    }
    return ModelConfig.from_dicts(raw, {"eos_token_id": eos_token_id, **generation})


def rolling_hash(token_ids: Sequence[int], start: int = 0) -> int:
    h = start
    for token_id in token_ids:
        h = (h * 31 + token_id + 1) % HASH_MODULUS
    return h


def fake_logits(h: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(h)
    return 3.0 * torch.randn(VOCAB_SIZE, generator=generator)


def next_greedy_tokens(prompt: Sequence[int], n: int) -> list[int]:
    """The tokens greedy decoding from ``prompt`` produces with this model (the test oracle)."""
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(fake_logits(rolling_hash(tokens)).argmax()))
    return tokens[len(prompt) :]


class FakeModel:
    """``delay_s`` slows each step down, so that a test can act on a request while it runs."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.steps: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (query lens, cached lens)

    def __call__(self, batch: ForwardBatch, caches: Sequence[LayerCache]) -> torch.Tensor:
        self.steps.append((batch.query_lens_host, batch.num_cached_tokens_host))
        time.sleep(self.delay_s)
        attention = [c for c in caches if isinstance(c, AttentionCache)]
        linear = [c for c in caches if isinstance(c, LinearStateCache)]
        block_size = attention[0].k.shape[1]
        logit_rows = set(batch.logits_indices.tolist())
        rows: dict[int, torch.Tensor] = {}
        for i, (num_new, num_cached) in enumerate(
            zip(batch.query_lens_host, batch.num_cached_tokens_host, strict=True)
        ):
            start = int(batch.cu_seqlens_q[i])
            new_ids = batch.input_ids[start : start + num_new]
            positions = batch.positions[start : start + num_new]
            assert positions.tolist() == list(range(num_cached, num_cached + num_new))
            slots = batch.slot_mapping[start : start + num_new]
            for cache in attention:
                cache.k.view(-1)[slots * cache.k[0, 0].numel()] = new_ids.to(cache.k.dtype)
                cache.v.view(-1)[slots * cache.v[0, 0].numel()] = (positions + 1).to(cache.v.dtype)
            seq_len = int(batch.seq_lens[i])
            table = batch.block_tables[i]
            context_slots = torch.stack(
                [table[p // block_size] * block_size + p % block_size for p in range(seq_len)]
            ).long()
            k = attention[0].k
            context = k.view(-1)[context_slots * k[0, 0].numel()].long().tolist()
            stored_positions = attention[0].v.view(-1)[context_slots * k[0, 0].numel()].long().tolist()
            if stored_positions != list(range(1, seq_len + 1)):
                raise CacheCorruptedError(f"KV pages hold positions {stored_positions}")
            slot = int(batch.state_slots[i])
            h = 0
            for cache in linear:
                carried = int(cache.ssm[slot, 0, 0, 0]) if num_cached else 0
                h = rolling_hash(new_ids.tolist(), carried)
                cache.ssm[slot, 0, 0, 0] = h
            if h != rolling_hash(context):
                raise CacheCorruptedError(f"state hash {h} != hash of the cached context {context}")
            last = start + num_new - 1
            if last in logit_rows:
                rows[last] = fake_logits(h)
        assert set(rows) == logit_rows, "logits asked for a row that is not a sequence's last token"
        order = batch.logits_indices.tolist()
        if not order:
            return torch.empty(0, VOCAB_SIZE)
        return torch.stack([rows[r] for r in order]).to(batch.input_ids.device)


CHARS = "abcdefghijklmnopqrstuvwxyz .,!?'0123456789ABCDEFGHIJKLMNOPQRSTU"  # ids 0..62; 63 is <eos>


def char_tokenizer() -> Any:
    """A one-character-per-token tokenizer over the fake model's 64 ids (id 63 is the special <eos>)."""
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers

    from cortex.engine.text.tokenizer import Tokenizer

    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab["<eos>"] = VOCAB_SIZE - 1
    backend = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(["<eos>"])
    return Tokenizer(backend, special_tokens={"eos_token": "<eos>"})
