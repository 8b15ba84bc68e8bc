"""ForwardBatch: the one explicit per-step argument a model forward takes (no global context).

The runner builds it from the scheduler's decision; models and layers only read it. A step holds a
ragged batch of sequences, flattened: sequence ``i`` contributes the query tokens
``input_ids[cu_seqlens_q[i]:cu_seqlens_q[i+1]]``, whose positions continue after its
``num_cached_tokens[i]`` tokens already in the caches (a decode step is a 1-token query).

The tensors are on the model's device; the host fields say what the runner knew when it built them,
so layers choose code paths and kernel grids without reading a device value back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class ForwardBatch:
    # input_ids: [num_tokens] int64, every sequence's new tokens, concatenated
    input_ids: torch.Tensor
    # positions: [num_tokens] int64, absolute position of each new token in its sequence
    positions: torch.Tensor
    # cu_seqlens_q: [num_seqs + 1] int32, prefix sums of the new-token counts
    cu_seqlens_q: torch.Tensor
    # num_cached_tokens: [num_seqs] int32, tokens of each sequence already in the caches
    num_cached_tokens: torch.Tensor
    # seq_lens: [num_seqs] int32, num_cached_tokens + new tokens (context length after this step)
    seq_lens: torch.Tensor
    # slot_mapping: [num_tokens] int64, KV-cache slot (block_id * block_size + offset) of each new token
    slot_mapping: torch.Tensor
    # block_tables: [num_seqs, max_num_blocks] int32, each sequence's KV blocks, padded with -1
    block_tables: torch.Tensor
    # state_slots: [num_seqs] int64, each sequence's recurrent-state slot (conv history + delta state)
    state_slots: torch.Tensor
    # logits_indices: [num_logits] int64, rows of the flattened hidden states to compute logits for
    logits_indices: torch.Tensor
    # host copies of the small metadata, so layers can loop over sequences without device syncs
    query_lens_host: tuple[int, ...]
    num_cached_tokens_host: tuple[int, ...]
    # host bounds: max_query_len >= every query length, max_seq_len >= every seq_lens[i] (a captured
    # CUDA graph is built with the largest values it may replay with)
    max_query_len: int
    max_seq_len: int

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens_host)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
