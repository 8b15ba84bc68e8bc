"""Depthwise causal conv1d with SiLU over ragged sequences, carrying each sequence's input history.

The history of a sequence is its last ``kernel - 1`` raw (pre-conv) inputs, stored per state slot in
``conv_state[slot]``: ``[conv_dim, kernel - 1]``, oldest first. A sequence with
``has_initial_state`` false starts from zeros (a fresh prefill), whatever its slot holds. The ops
write the new history back into the slot, in place; the slots of one call must be distinct.

Three ops: ``causal_conv1d_prefill`` (ragged, ``cu_seqlens``), ``causal_conv1d_decode`` (one token per
sequence) and ``causal_conv1d_decode_multi`` (``num_tokens`` per sequence, the history after each kept,
for speculative decoding's verify step). They match transformers' ``causal_conv1d_fn`` /
``causal_conv1d_update`` fallbacks (``Qwen3_5GatedDeltaNet``).

Each op is a dispatch point (``kernels``, see ``selection.py``): the Triton kernels in
``causal_conv1d_triton.py`` or the references here. With the references on an x86 CPU with AVX2 + FMA,
the one-token decode runs cortex's C kernel (``cpu_conv1d_decode.c``) where it is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.cpu import cpu_capabilities
from cortex.engine.kernels import cpu_conv1d_decode
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


def causal_conv1d_decode_multi_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
) -> torch.Tensor:
    """Same contract as ``causal_conv1d_decode_multi``."""
    # x: [num_seqs * num_tokens, conv_dim], sequence-major; initial_state_slots: [num_seqs];
    # token_state_slots: [num_seqs, num_tokens]
    num_seqs, num_tokens = token_state_slots.shape
    xs = x.reshape(num_seqs, num_tokens, -1)
    history = conv_state[initial_state_slots].to(x.dtype)  # [num_seqs, conv_dim, kernel - 1], a copy
    out = torch.empty_like(xs)
    for t in range(num_tokens):
        window = torch.cat((history, xs[:, t, :, None]), dim=2)  # [num_seqs, conv_dim, kernel]
        out[:, t] = F.silu((window * weight[None]).sum(-1))
        history = window[:, :, 1:]
        conv_state.index_copy_(0, token_state_slots[:, t], history.to(conv_state.dtype))
    return out.reshape(x.shape)


def causal_conv1d_decode_ref(
    x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, *, state_slots: torch.Tensor
) -> torch.Tensor:
    """Same contract as ``causal_conv1d_decode``."""
    return causal_conv1d_decode_multi_ref(
        x, weight, conv_state, initial_state_slots=state_slots, token_state_slots=state_slots[:, None]
    )


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
    if kernels == "ref" and conv_state.device.type == "cpu":
        cpu_kernel = cpu_conv1d_decode.load(cpu_capabilities().flags)
        if cpu_kernel is not None and cpu_kernel.supports(x, weight, conv_state):
            return cpu_kernel(x, weight, conv_state, state_slots)
    return causal_conv1d_decode_multi(
        x,
        weight,
        conv_state,
        initial_state_slots=state_slots,
        token_state_slots=state_slots[:, None],
        kernels=kernels,
    )


def causal_conv1d_decode_multi(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """``num_tokens`` tokens per sequence, keeping the history after every one of them.

    The conv counterpart of ``gated_delta.gated_delta_rule_decode_multi``, with the same slot contract:
    sequence ``i`` continues ``conv_state[initial_state_slots[i]]`` with rows ``i * num_tokens ...
    (i + 1) * num_tokens - 1`` of x (``[num_seqs * num_tokens, conv_dim]``, rows may be strided), and
    the history after its token ``t`` goes to ``conv_state[token_state_slots[i, t]]``
    (``token_state_slots: [num_seqs, num_tokens]`` int64, distinct from each other and from the other
    sequences' initial slots; the initial slot itself may be reused). A verifier that accepts ``n``
    tokens keeps ``token_state_slots[i, n - 1]`` for both the conv and the delta-rule state.
    Returns ``[num_seqs * num_tokens, conv_dim]``.
    """
    slots = {"initial_state_slots": initial_state_slots, "token_state_slots": token_state_slots}
    if kernels == "ref":
        return causal_conv1d_decode_multi_ref(x, weight, conv_state, **slots)
    out = x.new_empty(x.shape)
    causal_conv1d_decode_launch(x, weight, conv_state, **slots, out=out)()
    return out
