"""Depthwise causal conv1d with SiLU over ragged sequences, carrying each sequence's input history.

The history of a sequence is its last ``kernel - 1`` raw (pre-conv) inputs, stored per state slot in
``conv_state[slot]``: ``[conv_dim, kernel - 1]``, oldest first. A sequence with
``has_initial_state`` false starts from zeros (a fresh prefill), whatever its slot holds. Both ops
write the new history back into the slot, in place. Matches transformers' ``causal_conv1d_fn`` /
``causal_conv1d_update`` fallbacks (``Qwen3_5GatedDeltaNet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def causal_conv1d_prefill_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    query_lens: Sequence[int],
    state_slots: torch.Tensor,
    has_initial_state: Sequence[bool],
) -> torch.Tensor:
    # x: [num_tokens, conv_dim]; weight: [conv_dim, kernel]; conv_state: [num_slots, conv_dim, kernel - 1]
    # state_slots: [num_seqs] int64; returns y: [num_tokens, conv_dim] = silu(conv(history ++ x))
    conv_dim, kernel = weight.shape
    out = torch.empty_like(x)
    start = 0
    for i, query_len in enumerate(query_lens):
        slot = int(state_slots[i])
        xi = x[start : start + query_len].t()  # [conv_dim, query_len]
        history = conv_state[slot].to(x.dtype) if has_initial_state[i] else x.new_zeros(conv_dim, kernel - 1)
        window = torch.cat((history, xi), dim=1)  # [conv_dim, kernel - 1 + query_len]
        y = F.conv1d(window[None], weight[:, None, :], groups=conv_dim)[0]  # [conv_dim, query_len]
        out[start : start + query_len] = F.silu(y).t()
        conv_state[slot] = window[:, window.shape[1] - (kernel - 1) :].to(conv_state.dtype)
        start += query_len
    return out


def causal_conv1d_decode_ref(
    x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, *, state_slots: torch.Tensor
) -> torch.Tensor:
    # x: [num_seqs, conv_dim], one new token per sequence continuing its history; returns [num_seqs, conv_dim]
    history = conv_state[state_slots].to(x.dtype)  # [num_seqs, conv_dim, kernel - 1]
    window = torch.cat((history, x[:, :, None]), dim=2)  # [num_seqs, conv_dim, kernel]
    y = (window * weight[None]).sum(-1)
    conv_state[state_slots] = window[:, :, 1:].to(conv_state.dtype)
    return F.silu(y)


# Dispatch points (see kernels/__init__.py): the references serve every device until a GPU kernel lands.
causal_conv1d_prefill = causal_conv1d_prefill_ref
causal_conv1d_decode = causal_conv1d_decode_ref
