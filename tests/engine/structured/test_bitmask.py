"""Applying token bitmasks against a bit-by-bit reference (both ways of listing tokens), and only masked
rows touched."""

from __future__ import annotations

import torch

from cortex.engine.structured.bitmask import allocate_token_bitmask, allow_only, apply_token_bitmask_
from cortex.engine.structured.logits import mask_logits


def _reference(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    for row in range(logits.shape[0]):
        for token in range(logits.shape[1]):
            word = int(bitmask[row, token // 32]) if token // 32 < bitmask.shape[1] else 0
            if not (word >> (token % 32)) & 1:
                out[row, token] = float("-inf")
    return out


def test_applying_matches_bit_by_bit_unpacking():
    generator = torch.Generator().manual_seed(0)
    for vocab, words in ((70, 3), (64, 2), (70, 2)):  # a partial last word; tokens past the bitmask
        logits = torch.randn(3, vocab, generator=generator)
        bitmask = torch.randint(-(2**31), 2**31 - 1, (3, words), dtype=torch.int32, generator=generator)
        expected = _reference(logits, bitmask)
        apply_token_bitmask_(logits, bitmask)
        assert torch.equal(logits, expected)
    half = torch.randn(2, 64, dtype=torch.bfloat16)
    expected = _reference(half.float(), allocate_token_bitmask(2, 64) & 0x0F0F0F0F).bfloat16()
    apply_token_bitmask_(half, allocate_token_bitmask(2, 64) & 0x0F0F0F0F)
    assert torch.equal(half, expected)


def test_mostly_allowed_and_mostly_denied_rows_in_one_batch():
    """Rows that list their few denied tokens and rows that list their few allowed ones (bit 31
    included), mapped to logits rows out of order."""
    vocab = 300
    bitmask = allocate_token_bitmask(4, vocab)
    bitmask[0, 2] = ~(1 << 5)  # token 69 denied
    bitmask[0, 9] = 0  # tokens 288-299 denied
    allow_only(bitmask[1], [31, 63, 64, 299])
    allow_only(bitmask[2], [])
    logits = torch.randn(6, vocab)
    before = logits.clone()
    apply_token_bitmask_(logits, bitmask, rows=[4, 1, 0, 5])
    expected = before.clone()
    expected[[4, 1, 0, 5]] = _reference(before[[4, 1, 0, 5]], bitmask)
    assert torch.equal(logits, expected)
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [31, 63, 64, 299]
    assert torch.isinf(logits[4]).nonzero().flatten().tolist() == [69, *range(288, 300)]
    assert torch.isinf(logits[0]).all()
    assert torch.equal(logits[[2, 3]], before[[2, 3]])


class _Grammar:
    def __init__(self, allowed: list[int] | None) -> None:
        self.allowed = allowed

    def fill_bitmask(self, row: torch.Tensor, *, remaining: int) -> bool:
        if self.allowed is None:
            return False
        allow_only(row, self.allowed)
        return True


def test_only_constrained_rows_are_masked():
    logits = torch.randn(4, 100)
    before = logits.clone()
    rows = [(1, _Grammar([3, 99]), 8), (2, _Grammar(None), 8), (3, _Grammar([0]), 8)]
    mask_logits(logits, rows)  # type: ignore[arg-type]
    assert torch.equal(logits[0], before[0])
    assert torch.equal(logits[2], before[2])
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [3, 99]
    assert torch.equal(logits[1, [3, 99]], before[1, [3, 99]])
    assert torch.isfinite(logits[3]).nonzero().flatten().tolist() == [0]
    every = torch.randn(2, 40)
    mask_logits(every, [(0, _Grammar([1]), 4), (1, _Grammar([2]), 4)])  # type: ignore[arg-type]
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in every] == [[1], [2]]
