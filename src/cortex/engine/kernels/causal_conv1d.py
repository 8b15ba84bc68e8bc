"""Depthwise causal conv1d with SiLU over ragged sequences, carrying each sequence's input history.

The history of a sequence is its last ``kernel - 1`` raw (pre-conv) inputs, stored per state slot in
``conv_state[slot]``: ``[conv_dim, kernel - 1]``, oldest first. A sequence with
``has_initial_state`` false starts from zeros (a fresh prefill), whatever its slot holds. Both ops
write the new history back into the slot, in place; the slots of one call must be distinct. Matches
transformers' ``causal_conv1d_fn`` / ``causal_conv1d_update`` fallbacks (``Qwen3_5GatedDeltaNet``).

Each op is a dispatch point (``kernels``, see ``selection.py``): the Triton kernels in
``causal_conv1d_triton.py`` or the references here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.causal_conv1d_triton import (
    causal_conv1d_decode_launch,
    causal_conv1d_prefill_launches,
)
from cortex.engine.kernels.selection import KernelBackend


def causal_conv1d_prefill_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
) -> torch.Tensor:
    """Same contract as ``causal_conv1d_prefill``."""
    conv_dim, kernel = weight.shape
    out = torch.empty_like(x)
    bounds = cu_seqlens.tolist()
    for i, (slot, initial) in enumerate(zip(state_slots.tolist(), has_initial_state.tolist(), strict=True)):
        start, end = bounds[i], bounds[i + 1]
        xi = x[start:end].t()  # [conv_dim, query_len]
        history = conv_state[slot].to(x.dtype) if initial else x.new_zeros(conv_dim, kernel - 1)
        window = torch.cat((history, xi), dim=1)  # [conv_dim, kernel - 1 + query_len]
        y = F.conv1d(window[None], weight[:, None, :], groups=conv_dim)[0]  # [conv_dim, query_len]
        out[start:end] = F.silu(y).t()
        conv_state[slot] = window[:, window.shape[1] - (kernel - 1) :].to(conv_state.dtype)
    return out


def causal_conv1d_decode_ref(
    x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, *, state_slots: torch.Tensor
) -> torch.Tensor:
    """Same contract as ``causal_conv1d_decode``."""
    history = conv_state[state_slots].to(x.dtype)  # [num_seqs, conv_dim, kernel - 1]
    window = torch.cat((history, x[:, :, None]), dim=2)  # [num_seqs, conv_dim, kernel]
    y = (window * weight[None]).sum(-1)
    conv_state[state_slots] = window[:, :, 1:].to(conv_state.dtype)
    return F.silu(y)


def causal_conv1d_prefill(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """``silu(conv(history ++ x))`` per sequence, and the new history into each slot.

    x: ``[num_tokens, conv_dim]`` (rows may be strided); weight: ``[conv_dim, kernel]``; conv_state:
    ``[num_slots, conv_dim, kernel - 1]``; cu_seqlens: ``[num_seqs + 1]`` int32; state_slots:
    ``[num_seqs]`` int64; has_initial_state: ``[num_seqs]`` bool. Returns ``[num_tokens, conv_dim]``.
    """
    kwargs = {"cu_seqlens": cu_seqlens, "state_slots": state_slots, "has_initial_state": has_initial_state}
    if kernels == "ref":
        return causal_conv1d_prefill_ref(x, weight, conv_state, **kwargs)
    out = x.new_empty(x.shape)
    for launch in causal_conv1d_prefill_launches(x, weight, conv_state, **kwargs, out=out):
        launch()
    return out


def causal_conv1d_decode(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    state_slots: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """One new token per sequence continuing its history: x ``[num_seqs, conv_dim]`` -> same shape."""
    if kernels == "ref":
        return causal_conv1d_decode_ref(x, weight, conv_state, state_slots=state_slots)
    out = x.new_empty(x.shape)
    causal_conv1d_decode_launch(x, weight, conv_state, state_slots=state_slots, out=out)()
    return out
