"""The gated delta rule (Gated DeltaNet, Yang et al. 2024, arXiv:2412.06464) over ragged sequences.

Per value head, with fp32 state ``S: [head_k_dim, head_v_dim]`` and, at each token,
``q = l2norm(q) * head_k_dim**-0.5``, ``k = l2norm(k)``::

    S <- exp(g_t) * S ;  u_t = beta_t * (v_t - S^T k_t) ;  S <- S + k_t u_t^T ;  o_t = S^T q_t

GVA: value head ``j`` reads q/k head ``j // (num_v_heads // num_k_heads)``. A sequence's state lives in
``state[slot]``; ``has_initial_state`` false means start from zeros (a fresh prefill). Every op
writes the final state back into the slot, in place. ``g`` (log decay, <= 0) and ``beta`` arrive
already gated (``g = -exp(A_log) * softplus(a + dt_bias)``, ``beta = sigmoid(b)``).

``gated_delta_rule_ref`` loops over time and is exact; ``chunk_gated_delta_rule_ref`` is the chunked
(WY / UT transform) form with chunk size 64, checked against it and against transformers'
``torch_chunk_gated_delta_rule``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CHUNK_SIZE = 64


def _normalise_qk(q: torch.Tensor, k: torch.Tensor, num_v_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    # q, k: [..., num_k_heads, head_k_dim] -> fp32 [..., num_v_heads, head_k_dim], l2-normalised, q scaled
    q = q.float()
    k = k.float()
    q = q * torch.rsqrt(q.pow(2).sum(-1, keepdim=True) + 1e-6) * q.shape[-1] ** -0.5
    k = k * torch.rsqrt(k.pow(2).sum(-1, keepdim=True) + 1e-6)
    group = num_v_heads // q.shape[-2]
    return q.repeat_interleave(group, dim=-2), k.repeat_interleave(group, dim=-2)


def gated_delta_rule_decode_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    state_slots: torch.Tensor,
) -> torch.Tensor:
    # q, k: [num_seqs, num_k_heads, head_k_dim]; v: [num_seqs, num_v_heads, head_v_dim]; g, beta: [num_seqs,
    # num_v_heads]; state: [num_slots, num_v_heads, head_k_dim, head_v_dim] fp32; one step per sequence
    # With the decay d = exp(g) and the old state S, both products come from S in one batched matmul:
    #   S^T k_t after decay = d * (S^T k),  o = S_new^T q = d * (S^T q) + (k . q) * u,
    # and the new state d * S + k u^T is formed in the gathered copy, then written back: the state is
    # read and written once each (it is the largest tensor of a decode step).
    q32, k32 = _normalise_qk(q, k, v.shape[1])
    num_seqs, num_heads, dk = k32.shape
    decay = g.float().exp()[:, :, None]  # [num_seqs, num_v_heads, 1]
    s = state[state_slots].view(num_seqs * num_heads, dk, -1)  # a copy: [num_seqs * num_v_heads, dk, dv]
    qk = torch.stack((q32, k32), dim=2).view(num_seqs * num_heads, 2, dk)
    sq, sk = torch.bmm(qk, s).view(num_seqs, num_heads, 2, -1).unbind(2)  # S^T q, S^T k: [B, H, dv]
    u = beta.float()[:, :, None] * (v.float() - decay * sk)
    o = decay * sq + (q32 * k32).sum(-1, keepdim=True) * u
    s.mul_(decay.view(-1, 1, 1)).baddbmm_(k32.reshape(-1, dk, 1), u.reshape(-1, 1, u.shape[-1]))
    state.index_copy_(0, state_slots, s.view(num_seqs, num_heads, dk, -1))
    return o.to(v.dtype)


def gated_delta_rule_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    query_lens: Sequence[int],
    state_slots: torch.Tensor,
    has_initial_state: Sequence[bool],
) -> torch.Tensor:
    # q, k: [num_tokens, num_k_heads, head_k_dim]; v: [num_tokens, num_v_heads, head_v_dim];
    # g, beta: [num_tokens, num_v_heads]; state: [num_slots, num_v_heads, head_k_dim, head_v_dim] fp32
    # returns o: [num_tokens, num_v_heads, head_v_dim] in v's dtype
    q32, k32 = _normalise_qk(q, k, v.shape[1])
    v32, g32, b32 = v.float(), g.float(), beta.float()
    out = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    start = 0
    for i, query_len in enumerate(query_lens):
        slot = int(state_slots[i])
        s = state[slot].clone() if has_initial_state[i] else torch.zeros_like(state[slot])
        for t in range(start, start + query_len):
            s = s * g32[t].exp()[:, None, None]
            u = b32[t][:, None] * (v32[t] - torch.einsum("hk,hkv->hv", k32[t], s))
            s = s + k32[t][:, :, None] * u[:, None, :]
            out[t] = torch.einsum("hk,hkv->hv", q32[t], s)
        state[slot] = s
        start += query_len
    return out.to(v.dtype)


def chunk_gated_delta_rule_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    query_lens: Sequence[int],
    state_slots: torch.Tensor,
    has_initial_state: Sequence[bool],
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    # same contract as gated_delta_rule_ref; per sequence, chunks of chunk_size tokens
    q32, k32 = _normalise_qk(q, k, v.shape[1])
    out = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    start = 0
    for i, query_len in enumerate(query_lens):
        slot = int(state_slots[i])
        s0 = state[slot] if has_initial_state[i] else torch.zeros_like(state[slot])
        span = slice(start, start + query_len)
        o, s = _chunk_one(
            q32[span], k32[span], v[span].float(), g[span].float(), beta[span].float(), s0, chunk_size
        )
        out[span] = o
        state[slot] = s
        start += query_len
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
    # q, k: [L, H, dk]; v: [L, H, dv]; g, beta: [L, H]; s: [H, dk, dv], all fp32 -> o [L, H, dv], final s
    length = q.shape[0]
    pad = -length % chunk_size
    q, k, v = (torch.nn.functional.pad(x.transpose(0, 1), (0, 0, 0, pad)) for x in (q, k, v))
    g, beta = (torch.nn.functional.pad(x.t(), (0, pad)) for x in (g, beta))
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
    eye = torch.eye(chunk_size, device=q.device)
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


# Dispatch points (see kernels/__init__.py): the references serve every device until a GPU kernel lands.
gated_delta_rule_prefill = chunk_gated_delta_rule_ref
gated_delta_rule_decode = gated_delta_rule_decode_ref
