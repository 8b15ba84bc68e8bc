"""CachePlan: how many KV pages, recurrent-state slots and state snapshots fit a memory budget, and the
context they allow.

Sizing only (no tensors, no torch): one KV page holds ``block_size`` tokens of K and V for every
full-attention layer; one state slot holds the conv history (model dtype) and the delta-rule state
(float32, or bfloat16 by ``EngineConfig.ssm_state_dtype``) of every linear-attention layer. Slots are
reserved first (at most ``max_num_seqs``, and never so many that one full-length request no longer
fits), the rest of the budget becomes pages, and neither exceeds what ``max_num_seqs`` full-length
requests could use.

With prefix caching on a model with linear-attention layers (``snapshot_memory_fraction`` given), that
fraction of the budget is set aside first for prefix-cache snapshots (each the size of a slot), shrunk
if an explicit ``max_model_len`` would not fit otherwise; snapshots also take whatever the pages and
slots leave, up to one snapshot per page (a snapshot is only of use at the end of a cached page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cortex.engine.cache.layer_cache import AttentionCacheSpec, LayerCacheSpec, LinearStateSpec
from cortex.engine.errors import CacheExhaustedError

SSM_STATE_BYTES = 4  # the delta-rule state's default dtype, float32 (bfloat16 is an engine option)


@dataclass(frozen=True, slots=True)
class CachePlan:
    num_blocks: int
    num_slots: int
    block_size: int
    max_model_len: int
    bytes_per_block: int
    bytes_per_slot: int  # also the size of one snapshot
    num_snapshots: int = 0

    @property
    def total_bytes(self) -> int:
        num_rows = self.num_slots + self.num_snapshots
        return self.num_blocks * self.bytes_per_block + num_rows * self.bytes_per_slot

    @property
    def snapshot_bytes(self) -> int:
        return self.num_snapshots * self.bytes_per_slot


def bytes_per_block(specs: Sequence[LayerCacheSpec], *, block_size: int, dtype_bytes: int) -> int:
    """K and V bytes of one page across all full-attention layers."""
    return sum(
        2 * block_size * spec.num_kv_heads * spec.head_dim * dtype_bytes
        for spec in specs
        if isinstance(spec, AttentionCacheSpec)
    )


def bytes_per_slot(
    specs: Sequence[LayerCacheSpec], *, dtype_bytes: int, ssm_dtype_bytes: int = SSM_STATE_BYTES
) -> int:
    """Conv history (model dtype) plus delta-rule state of one request across all linear-attention layers."""
    return sum(
        spec.conv_dim * (spec.conv_kernel - 1) * dtype_bytes
        + spec.num_v_heads * spec.head_k_dim * spec.head_v_dim * ssm_dtype_bytes
        for spec in specs
        if isinstance(spec, LinearStateSpec)
    )


def plan_cache(
    specs: Sequence[LayerCacheSpec],
    *,
    cache_memory_bytes: int,
    block_size: int,
    dtype_bytes: int,
    max_num_seqs: int,
    max_model_len: int | None,
    model_max_len: int,
    snapshot_memory_fraction: float | None = None,
    ssm_dtype_bytes: int = SSM_STATE_BYTES,
) -> CachePlan:
    """Size the caches. ``max_model_len=None`` takes ``model_max_len``, lowered to fit one request.
    ``snapshot_memory_fraction=None``: no snapshots (prefix caching off, or no linear-attention layers).

    Raises CacheExhaustedError when the budget cannot hold one request of ``max_model_len`` tokens.
    """
    block_bytes = bytes_per_block(specs, block_size=block_size, dtype_bytes=dtype_bytes)
    slot_bytes = bytes_per_slot(specs, dtype_bytes=dtype_bytes, ssm_dtype_bytes=ssm_dtype_bytes)
    total_budget = cache_memory_bytes
    if snapshot_memory_fraction is not None and slot_bytes:
        reserve = int(cache_memory_bytes * snapshot_memory_fraction)
        if max_model_len is not None:  # an explicit context length comes before snapshots
            one_request = slot_bytes + -(-max_model_len // block_size) * block_bytes
            reserve = max(0, min(reserve, cache_memory_bytes - one_request))
        cache_memory_bytes -= reserve
    if max_model_len is None:
        max_model_len = model_max_len
        if block_bytes:
            fitting_blocks = max(0, cache_memory_bytes - slot_bytes) // block_bytes
            max_model_len = min(max_model_len, fitting_blocks * block_size)
    blocks_per_seq = -(-max_model_len // block_size)
    need = slot_bytes + blocks_per_seq * block_bytes
    if max_model_len < 1 or need > cache_memory_bytes:
        raise CacheExhaustedError(
            f"cache_memory_bytes={cache_memory_bytes} cannot hold one request of "
            f"max_model_len={max(max_model_len, 1)} tokens (needs {need} bytes: {slot_bytes} per state "
            f"slot, {block_bytes} per {block_size}-token KV block); raise the budget or lower max_model_len"
        )
    # One full-length request must always fit: every slot beyond the first is paid for with its slot and
    # one page from what is left after that request.
    per_seq_min = slot_bytes + block_bytes
    num_slots = (
        max_num_seqs
        if per_seq_min == 0
        else min(max_num_seqs, 1 + (cache_memory_bytes - need) // per_seq_min)
    )
    max_blocks = max_num_seqs * blocks_per_seq
    if block_bytes:
        num_blocks = min(max_blocks, (cache_memory_bytes - num_slots * slot_bytes) // block_bytes)
    else:
        num_blocks = max_blocks  # no attention layers: pages are bookkeeping only, with no tensors behind
    num_snapshots = 0
    if snapshot_memory_fraction is not None and slot_bytes:
        left = total_budget - num_blocks * block_bytes - num_slots * slot_bytes
        num_snapshots = min(num_blocks, left // slot_bytes)
    return CachePlan(
        num_blocks=num_blocks,
        num_slots=num_slots,
        block_size=block_size,
        max_model_len=max_model_len,
        bytes_per_block=block_bytes,
        bytes_per_slot=slot_bytes,
        num_snapshots=num_snapshots,
    )
