"""Token bitmasks (llguidance's layout: int32 words, bit ``t % 32`` of word ``t // 32`` allows token
``t``) and their application to a step's logits.

``llguidance.torch`` is not imported: it applies ``torch.compile`` at import time, and its
``apply_token_bitmask_inplace`` takes tens of seconds to compile at first use on a CPU. Applying a
bitmask here is two table gathers and two integer passes on any device (:func:`token_bitmask_bits`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable

import torch
from llguidance import LLMatcher

assert sys.byteorder == "little", "bitmask words are read byte by byte, least significant first"


def allocate_token_bitmask(num_rows: int, vocab_size: int) -> torch.Tensor:
    """An all-allowed bitmask: int32 [num_rows, ceil(vocab_size / 32)] on the CPU."""
    return torch.full((num_rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def fill_bitmask(matcher: LLMatcher, row: torch.Tensor) -> None:
    """Write what ``matcher`` allows next into a contiguous int32 CPU bitmask row."""
    assert row.dtype == torch.int32, "bitmask rows are int32"
    assert row.is_contiguous(), "llguidance writes the row through its pointer"
    assert row.device.type == "cpu", "llguidance writes host memory"
    matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())


_SAME_WIDTH_INT = {4: torch.int32, 2: torch.int16}


@functools.cache
def _byte_tables(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [256, 8] integer tables of ``dtype``'s width: entry ``[b, k]`` keeps every bit (``keep``) and
    adds none (``fill``) where bit ``k`` of byte ``b`` is set, and clears every bit and sets -inf's
    where it is not."""
    int_dtype = _SAME_WIDTH_INT[torch.empty((), dtype=dtype).element_size()]
    allowed = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).bool()
    minus_inf = int(torch.tensor(float("-inf"), dtype=dtype).view(int_dtype))
    keep = torch.where(allowed, -1, 0).to(int_dtype)
    fill = torch.where(allowed, 0, minus_inf).to(int_dtype)
    return keep.to(device), fill.to(device)


def token_bitmask_bits(
    bitmask: torch.Tensor, vocab_size: int, *, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, fill)`` for ``bitmask``: logits viewed as integers of their width become
    ``logits & keep | fill``, themselves where allowed and exactly -inf where not. bitmask: int32
    [num_rows, words] (any device); keep, fill: [num_rows, vocab_size]. Tokens past the bitmask's width
    are disallowed.

    Each byte of the little-endian int32 words indexes a 256 x 8 table, and applying is two integer
    passes: no branches, no float arithmetic. A masked fill with a token-by-token mask costs ~1 ms per
    248k-token row on a CPU (it branches on every element), unpacking with shifts builds a 32x larger
    intermediate, and a float add is split across the thread pool, which on a busy CPU waits for its
    slowest thread."""
    num_rows = bitmask.shape[0]
    byte_ids = bitmask.to(device, non_blocking=True).contiguous().view(torch.uint8).view(-1).int()
    keep_table, fill_table = _byte_tables(device, dtype)
    keep = keep_table.index_select(0, byte_ids).view(num_rows, -1)
    fill = fill_table.index_select(0, byte_ids).view(num_rows, -1)
    if keep.shape[-1] < vocab_size:
        missing = vocab_size - keep.shape[-1]
        keep = torch.nn.functional.pad(keep, (0, missing), value=0)
        fill = torch.nn.functional.pad(fill, (0, missing), value=int(fill_table[0, 0]))
    return keep[:, :vocab_size], fill[:, :vocab_size]


def apply_bits_(logits: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor) -> None:
    """``logits & keep | fill`` in place, on the logits' bits. logits: [..., vocab], contiguous rows."""
    bits = logits.view(keep.dtype)
    bits.bitwise_and_(keep).bitwise_or_(fill)


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set disallowed tokens' logits to -inf, in place. logits: [num_rows, vocab] (float32, bfloat16 or
    float16, contiguous rows); bitmask: [num_rows, ceil(vocab / 32)] int32 (on any device)."""
    keep, fill = token_bitmask_bits(bitmask, logits.shape[-1], device=logits.device, dtype=logits.dtype)
    apply_bits_(logits, keep, fill)


def allow_only(row: torch.Tensor, token_ids: Iterable[int]) -> None:
    """Make a bitmask row (int32 [words], on the CPU) allow exactly ``token_ids``."""
    words = [0] * row.shape[0]
    for token_id in token_ids:
        words[token_id >> 5] |= 1 << (token_id & 31)
    signed = [w - (1 << 32) if w >= 1 << 31 else w for w in words]
    row.copy_(torch.tensor(signed, dtype=torch.int32))
