"""Token bitmasks (llguidance's layout: int32 words, bit ``t % 32`` of word ``t // 32`` allows token
``t``) and their application to a step's logits.

``llguidance.torch`` is not imported: it applies ``torch.compile`` at import time, and its
``apply_token_bitmask_inplace`` takes tens of seconds to compile at first use on a CPU; unpacking the
words with shifts is a few torch ops on any device.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from llguidance import LLMatcher


def allocate_token_bitmask(num_rows: int, vocab_size: int) -> torch.Tensor:
    """An all-allowed bitmask: int32 [num_rows, ceil(vocab_size / 32)] on the CPU."""
    return torch.full((num_rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def fill_bitmask(matcher: LLMatcher, row: torch.Tensor) -> None:
    """Write what ``matcher`` allows next into a contiguous int32 CPU bitmask row."""
    assert row.dtype == torch.int32, "bitmask rows are int32"
    assert row.is_contiguous(), "llguidance writes the row through its pointer"
    assert row.device.type == "cpu", "llguidance writes host memory"
    matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set disallowed tokens' logits to -inf, in place. logits: [num_rows, vocab]; bitmask: [num_rows,
    ceil(vocab / 32)] int32 (on any device). Tokens past the bitmask's width are disallowed."""
    vocab = logits.shape[-1]
    bitmask = bitmask.to(logits.device, non_blocking=True)
    shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)  # [num_rows, 32 * words]
    if allowed.shape[-1] < vocab:
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[-1]))
    logits.masked_fill_(~allowed[:, :vocab], float("-inf"))


def allow_only(row: torch.Tensor, token_ids: Iterable[int]) -> None:
    """Make a bitmask row (int32 [words], on the CPU) allow exactly ``token_ids``."""
    words = [0] * row.shape[0]
    for token_id in token_ids:
        words[token_id >> 5] |= 1 << (token_id & 31)
    signed = [w - (1 << 32) if w >= 1 << 31 else w for w in words]
    row.copy_(torch.tensor(signed, dtype=torch.int32))
