"""Qwen3-Next (``qwen3_next``) checkpoints: the model is the Qwen3.5-MoE stack (``causal_lm.py``), but
the checkpoint lays out the Gated DeltaNet projections differently; they are converted here when loading.

transformers 5.24 ``Qwen3NextGatedDeltaNet.fix_query_key_value_ordering``: ``in_proj_qkvz`` is grouped
by key head; for group ``g`` its rows are ``[q_g (dk) | k_g (dk) | v_g (r*dv) | z_g (r*dv)]`` with
``r = num_v_heads // num_k_heads``; ``in_proj_ba`` per group is ``[b_g (r) | a_g (r)]``.
"""

from __future__ import annotations

import torch

from cortex.engine.config import ModelConfig


def split_qkvz(weight: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_proj_qkvz [2*HK*dk + 2*HV*dv, H]`` -> (``in_proj_qkv [2*HK*dk + HV*dv, H]``, ``in_proj_z``)."""
    hk, dk, dv = config.linear_num_key_heads, config.linear_key_head_dim, config.linear_value_head_dim
    r = config.linear_num_value_heads // hk
    grouped = weight.view(hk, 2 * dk + 2 * r * dv, -1)
    q, k, v, z = torch.split(grouped, [dk, dk, r * dv, r * dv], dim=1)
    hidden = weight.shape[-1]
    qkv = torch.cat([t.reshape(-1, hidden) for t in (q, k, v)])
    return qkv, z.reshape(-1, hidden)


def split_ba(weight: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_proj_ba [2*HV, H]`` -> (``in_proj_b [HV, H]``, ``in_proj_a [HV, H]``)."""
    hk = config.linear_num_key_heads
    r = config.linear_num_value_heads // hk
    b, a = torch.split(weight.view(hk, 2 * r, -1), [r, r], dim=1)
    hidden = weight.shape[-1]
    return b.reshape(-1, hidden), a.reshape(-1, hidden)
