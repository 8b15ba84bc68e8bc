"""The gated delta rule (Gated DeltaNet, Yang et al. 2024, arXiv:2412.06464) over ragged sequences.

Per value head, with state ``S: [head_k_dim, head_v_dim]`` and, at each token,
``q = l2norm(q) * head_k_dim**-0.5``, ``k = l2norm(k)``, ``g = -exp(A_log) * softplus(a + dt_bias)``
(log decay, <= 0) and ``beta = sigmoid(b)``, all in float32::

    S <- exp(g_t) * S ;  u_t = beta_t * (v_t - S^T k_t) ;  S <- S + k_t u_t^T ;  o_t = S^T q_t

The ops take the raw projections (``a``, ``b``, unnormalised ``q``/``k`` straight from the conv) and do
the normalisation and gating themselves, fused into the kernels on the GPU. GVA: value head ``j`` reads
q/k head ``j // (num_v_heads // num_k_heads)``. A sequence's state lives in ``state[slot]``
(``[num_slots, num_v_heads, head_k_dim, head_v_dim]``, float32 by default; bfloat16 halves its bytes
and is rounded once per op); ``has_initial_state`` false means start from zeros (a fresh prefill).
Every op writes the new state back into the slots, in place; the slots of one call must be distinct.

Three ops, each a dispatch point (``kernels``, see ``selection.py``: the Triton kernels or the references):

- ``gated_delta_rule_prefill``: ragged sequences (``cu_seqlens``), chunked (WY / UT form, chunk 64);
  reference ``chunk_gated_delta_rule_ref``; kernels in ``gated_delta_chunk.py``.
- ``gated_delta_rule_decode``: one token per sequence; reference ``gated_delta_rule_decode_ref``. With
  the references on an x86 CPU with AVX2 + FMA, a float32 state pool is updated by cortex's C kernel
  (``cpu_gated_delta_decode.c``: the state read and written once, not three times) where it is built.
- ``gated_delta_rule_decode_multi``: ``num_tokens`` tokens per sequence, the state after *each* token
  kept in its own slot (speculative decoding's verify step; see the function); reference
  ``gated_delta_rule_decode_multi_ref``. Both decode kernels are in ``gated_delta_recurrent.py``.

``gated_delta_rule_ref`` is the exact per-token recurrence (in float64 when given float64), against
which the chunked reference and every kernel are checked; the chunked reference was also checked
against transformers' ``torch_chunk_gated_delta_rule``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cortex.engine.cpu import cpu_capabilities
from cortex.engine.kernels import cpu_gated_delta_decode
from cortex.engine.kernels.gated_delta_chunk import CHUNK_SIZE, chunk_gated_delta_rule_launches
from cortex.engine.kernels.gated_delta_recurrent import gated_delta_rule_recurrent_launch
from cortex.engine.kernels.selection import KernelBackend


def gated_delta_gates_ref(
    a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # a, b: [..., num_v_heads]; A_log, dt_bias: [num_v_heads] -> g, beta: [..., num_v_heads] in dtype
    g = -A_log.to(dtype).exp() * F.softplus(a.to(dtype) + dt_bias.to(dtype))
    return g, torch.sigmoid(b.to(dtype))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # float32 for 16-bit and float32 inputs; float64 stays float64 (the exact reference)
    return torch.promote_types(x.dtype, torch.float32)


def _normalise_qk(q: torch.Tensor, k: torch.Tensor, num_v_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    # q, k: [..., num_k_heads, head_k_dim] -> [..., num_v_heads, head_k_dim], l2-normalised, q scaled
    dtype = _compute_dtype(q)
    q = q.to(dtype)
    k = k.to(dtype)
    q = q * torch.rsqrt(q.pow(2).sum(-1, keepdim=True) + 1e-6) * q.shape[-1] ** -0.5
    k = k * torch.rsqrt(k.pow(2).sum(-1, keepdim=True) + 1e-6)
    group = num_v_heads // q.shape[-2]
    return q.repeat_interleave(group, dim=-2), k.repeat_interleave(group, dim=-2)


def _recurrent_step_(
    s: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """One token of the recurrence, updating ``s`` (contiguous: a copy or a pool slot) in place; returns o.

    With the decay ``d = exp(g)`` and the old state S, both products come from S in one batched matmul:
    ``(d S)^T k = d (S^T k)`` and ``o = S_new^T q = d (S^T q) + (k . q) u``, and the new state ``d S + k u^T``
    is formed in place, so a decode reads and writes the state (its largest tensor) once each.
    """
    # s: [..., H, dk, dv]; q, k: [..., H, dk] (normalised); v: [..., H, dv]; g, beta: [..., H]
    dk, dv = s.shape[-2:]
    flat = s.view(-1, dk, dv)
    sq, sk = torch.bmm(torch.stack((q, k), dim=-2).reshape(-1, 2, dk), flat).unbind(1)  # [N, dv] each
    decay = g.exp().reshape(-1, 1)
    u = beta.reshape(-1, 1) * (v.reshape(-1, dv) - decay * sk)
    o = decay * sq + (q * k).sum(-1).reshape(-1, 1) * u
    flat.mul_(decay[:, :, None]).baddbmm_(k.reshape(-1, dk, 1), u[:, None, :])
    return o.view(v.shape)


def gated_delta_rule_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
) -> torch.Tensor:
    """The exact recurrence, token by token; same contract as ``gated_delta_rule_prefill``."""
    # q, k: [num_tokens, num_k_heads, head_k_dim]; v: [num_tokens, num_v_heads, head_v_dim];
    # a, b: [num_tokens, num_v_heads]; cu_seqlens: [num_seqs + 1]; state_slots, has_initial_state: [num_seqs]
    # returns o: [num_tokens, num_v_heads, head_v_dim] in v's dtype
    dtype = _compute_dtype(v)
    q_n, k_n = _normalise_qk(q, k, v.shape[1])
    g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, dtype)
    v_c = v.to(dtype)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    bounds = cu_seqlens.tolist()
    for i, (slot, initial) in enumerate(zip(state_slots.tolist(), has_initial_state.tolist(), strict=True)):
        s = state[slot].to(dtype, copy=True) if initial else state.new_zeros(state.shape[1:], dtype=dtype)
        for t in range(bounds[i], bounds[i + 1]):
            out[t] = _recurrent_step_(s, q_n[t], k_n[t], v_c[t], g[t], beta[t])
        state[slot] = s.to(state.dtype)
    return out.to(v.dtype)


def chunk_gated_delta_rule_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """The chunked (WY / UT) form, per sequence; same contract as ``gated_delta_rule_prefill``."""
    dtype = _compute_dtype(v)
    q_n, k_n = _normalise_qk(q, k, v.shape[1])
    g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, dtype)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    bounds = cu_seqlens.tolist()
    for i, (slot, initial) in enumerate(zip(state_slots.tolist(), has_initial_state.tolist(), strict=True)):
        s0 = state[slot].to(dtype) if initial else state.new_zeros(state.shape[1:], dtype=dtype)
        span = slice(bounds[i], bounds[i + 1])
        o, s = _chunk_one(q_n[span], k_n[span], v[span].to(dtype), g[span], beta[span], s0, chunk_size)
        out[span] = o
        state[slot] = s.to(state.dtype)
    return out.to(v.dtype)


def _chunk_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    s: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    # q, k: [L, H, dk]; v: [L, H, dv]; g, beta: [L, H]; s: [H, dk, dv], one dtype -> o [L, H, dv], final s
    length = q.shape[0]
    pad = -length % chunk_size
    q, k, v = (F.pad(x.transpose(0, 1), (0, 0, 0, pad)) for x in (q, k, v))
    g, beta = (F.pad(x.t(), (0, pad)) for x in (g, beta))
    num_heads, padded, _ = q.shape
    n = padded // chunk_size
    q, k, v = (x.reshape(num_heads, n, chunk_size, -1) for x in (q, k, v))
    g, beta = g.reshape(num_heads, n, chunk_size), beta.reshape(num_heads, n, chunk_size)
    kb = k * beta[..., None]
    vb = v * beta[..., None]
    gc = g.cumsum(-1)  # [H, N, C]
    lower = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    strict_lower = lower.tril(-1)
    a = (kb @ k.transpose(-1, -2) * decay).masked_fill(~strict_lower, 0)
    eye = torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    t_inv = torch.linalg.solve_triangular(eye + a, eye.expand_as(a), upper=False, unitriangular=True)
    u = t_inv @ vb
    w = t_inv @ (kb * gc.exp()[..., None])
    out = torch.empty_like(v)
    for c in range(n):
        v_new = u[:, c] - w[:, c] @ s
        attn = q[:, c] @ k[:, c].transpose(-1, -2) * decay[:, c]
        out[:, c] = (q[:, c] * gc[:, c, :, None].exp()) @ s + attn @ v_new
        last = gc[:, c, -1]
        s = (
            s * last.exp()[:, None, None]
            + (k[:, c] * (last[:, None] - gc[:, c]).exp()[..., None]).transpose(-1, -2) @ v_new
        )
    return out.reshape(num_heads, padded, -1)[:, :length].transpose(0, 1), s


def gated_delta_rule_decode_multi_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
) -> torch.Tensor:
    """Same contract as ``gated_delta_rule_decode_multi``."""
    # q, k: [num_seqs * num_tokens, num_k_heads, head_k_dim], sequence-major; v: [.., num_v_heads, head_v_dim]
    # initial_state_slots: [num_seqs]; token_state_slots: [num_seqs, num_tokens]
    num_seqs, num_tokens = token_state_slots.shape
    dtype = _compute_dtype(v)
    q_n, k_n = _normalise_qk(q, k, v.shape[1])
    g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, dtype)

    def per_seq(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(num_seqs, num_tokens, *x.shape[1:])

    q_n, k_n, v_c, g, beta = (per_seq(x) for x in (q_n, k_n, v.to(dtype), g, beta))
    s = state[initial_state_slots].to(dtype)  # [num_seqs, H, dk, dv], a gathered copy
    out = torch.empty(v_c.shape, dtype=dtype, device=v.device)
    for t in range(num_tokens):
        out[:, t] = _recurrent_step_(s, q_n[:, t], k_n[:, t], v_c[:, t], g[:, t], beta[:, t])
        state.index_copy_(0, token_state_slots[:, t], s.to(state.dtype))
    return out.reshape(v.shape).to(v.dtype)


def gated_delta_rule_decode_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    state_slots: torch.Tensor,
) -> torch.Tensor:
    """Same contract as ``gated_delta_rule_decode``.

    Sequence by sequence, updating each slot's state where it lies when it is held in the compute
    dtype (a copy otherwise): a sequence's state (1 MiB at Qwen3.5's shape) stays in the CPU's cache
    across the step's passes over it, where a batch gathered into one copy would not.
    """
    # q, k: [num_seqs, num_k_heads, head_k_dim]; v: [num_seqs, num_v_heads, head_v_dim]; slots: [num_seqs]
    dtype = _compute_dtype(v)
    q_n, k_n = _normalise_qk(q, k, v.shape[1])
    g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, dtype)
    v_c = v.to(dtype)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    in_place = state.dtype == dtype
    for i, slot in enumerate(state_slots.tolist()):
        s = state[slot] if in_place else state[slot].to(dtype)  # [H, dk, dv], contiguous
        out[i] = _recurrent_step_(s, q_n[i], k_n[i], v_c[i], g[i], beta[i])
        if not in_place:
            state[slot] = s.to(state.dtype)
    return out.to(v.dtype)


def gated_delta_rule_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """The gated delta rule over ragged sequences, from each slot's state (or zeros) to the new state.

    q, k: ``[num_tokens, num_k_heads, head_k_dim]`` and v: ``[num_tokens, num_v_heads, head_v_dim]``
    (views of the conv output are fine: only the last two dims need to be packed); a, b:
    ``[num_tokens, num_v_heads]`` raw projections; A_log, dt_bias: ``[num_v_heads]``; cu_seqlens:
    ``[num_seqs + 1]`` int32; state_slots: ``[num_seqs]`` int64; has_initial_state: ``[num_seqs]`` bool.
    All on one device; nothing is read back to the host on CUDA. Returns o in v's dtype.
    """
    kwargs: dict[str, Any] = {
        "a": a,
        "b": b,
        "A_log": A_log,
        "dt_bias": dt_bias,
        "state": state,
        "cu_seqlens": cu_seqlens,
        "state_slots": state_slots,
        "has_initial_state": has_initial_state,
    }
    if kernels == "ref":
        return chunk_gated_delta_rule_ref(q, k, v, **kwargs)
    out = v.new_empty(v.shape)
    for launch in chunk_gated_delta_rule_launches(q, k, v, **kwargs, out=out):
        launch()
    return out


def gated_delta_rule_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    state_slots: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """One token per sequence (``num_tokens == num_seqs``), continuing ``state[state_slots]`` in place.

    Shapes as ``gated_delta_rule_prefill`` with one token per sequence; every sequence has a state.
    """
    if kernels == "ref":
        cpu_kernel = _cpu_decode_kernel(v, state)
        if cpu_kernel is not None:
            q_n, k_n = _normalise_qk(q, k, v.shape[1])
            g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, torch.float32)
            return cpu_kernel(state, state_slots, q_n, k_n, v, g.exp(), beta).to(v.dtype)
        return gated_delta_rule_decode_ref(
            q, k, v, a=a, b=b, A_log=A_log, dt_bias=dt_bias, state=state, state_slots=state_slots
        )
    return gated_delta_rule_decode_multi(
        q, k, v, a=a, b=b, A_log=A_log, dt_bias=dt_bias, state=state, initial_state_slots=state_slots,
        token_state_slots=state_slots[:, None], kernels=kernels,
    )  # fmt: skip


def _cpu_decode_kernel(
    v: torch.Tensor, state: torch.Tensor
) -> cpu_gated_delta_decode.GatedDeltaDecode | None:
    """cortex's C decode kernel where it takes these tensors (CPU, a float32 pool, 16/32-bit values)."""
    if state.device.type != "cpu" or v.dtype == torch.float64:
        return None
    kernel = cpu_gated_delta_decode.load(cpu_capabilities().flags)
    return kernel if kernel is not None and kernel.supports(state) else None


def gated_delta_rule_decode_multi(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
    kernels: KernelBackend,
) -> torch.Tensor:
    """``num_tokens`` tokens per sequence, keeping the state after every one of them.

    Sequence ``i`` starts from ``state[initial_state_slots[i]]`` and its tokens are rows
    ``i * num_tokens ... (i + 1) * num_tokens - 1`` of q, k, v, a and b; the state after its token ``t``
    is written to ``state[token_state_slots[i, t]]`` (``token_state_slots: [num_seqs, num_tokens]``
    int64, all distinct from each other and from the other sequences' initial slots; the initial slot
    itself may be reused, as it is read before anything is written).

    A speculative-decoding verifier runs the draft tokens through this, samples, and for a sequence
    that accepted ``n`` tokens keeps ``token_state_slots[i, n - 1]`` as its state: it makes that slot
    the sequence's slot, or copies it back with ``state[home] = state[token_state_slots[i, n - 1]]``
    (a device gather, no host read). Passing the home slot as the last token's slot leaves the fully
    accepted case in place with nothing to copy.
    """
    kwargs = {
        "a": a,
        "b": b,
        "A_log": A_log,
        "dt_bias": dt_bias,
        "state": state,
        "initial_state_slots": initial_state_slots,
        "token_state_slots": token_state_slots,
    }
    if kernels == "ref":
        return gated_delta_rule_decode_multi_ref(q, k, v, **kwargs)
    out = v.new_empty(v.shape)
    gated_delta_rule_recurrent_launch(q, k, v, **kwargs, out=out)()
    return out
