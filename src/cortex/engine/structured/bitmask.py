"""Token bitmasks (llguidance's layout: int32 words, bit ``t % 32`` of word ``t // 32`` allows token
``t``) and their application to a step's logits.

``llguidance.torch`` is not imported: it applies ``torch.compile`` at import time, and its
``apply_token_bitmask_inplace`` takes tens of seconds to compile at first use on a CPU. Applying a
bitmask here touches only the tokens it lists (:func:`apply_token_bitmask_`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
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


def _listed(bitmask: np.ndarray, bit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, tokens)`` of the bits equal to ``bit`` (0 or 1). bitmask: int32 [num_rows, num_words];
    rows, tokens: int64 [k]. Only the words that are not all ``1 - bit`` are unpacked."""
    words = bitmask if bit else ~bitmask  # look for set bits
    word_rows, word_ids = np.divmod(np.flatnonzero(words), words.shape[1])
    selected = np.ascontiguousarray(words[word_rows, word_ids]).view(np.uint8)
    hits = np.flatnonzero(np.unpackbits(selected, bitorder="little").view(np.bool_))  # flat bools: fast
    hit_words = hits >> 5
    return word_rows[hit_words], word_ids[hit_words] * 32 + (hits & 31)


def apply_token_bitmask_(
    logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int] | None = None
) -> None:
    """Set disallowed tokens' logits to -inf, in place. logits: [num_logit_rows, vocab], contiguous (any
    float dtype, any device); bitmask: int32 [num_rows, words] on the CPU, where llguidance writes it;
    rows: the logits row of each bitmask row (default: the first ``num_rows``). Tokens past the
    bitmask's width are disallowed.

    Only the words that are neither all-allowed nor all-denied cost anything per token: a row's denied
    tokens are listed from its words that are not all ones and set to -inf (inside a JSON string,
    where nearly everything is allowed), or, when fewer words hold its allowed tokens, those are
    listed and kept while the rest of the row becomes -inf (at a structural position, where a few
    tokens are allowed). Tokens are listed on the host with numpy (where each torch op would cost more
    than the work), as flat indices into the logits; the logits see one scatter (and, for rows listing
    what is allowed, a gather, a row fill and a copy back), so nothing waits on a GPU and no
    vocabulary-wide intermediate is built."""
    words = bitmask.numpy()
    num_rows, num_words = words.shape
    vocab = logits.shape[-1]
    logit_rows = np.arange(num_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    list_denied = np.count_nonzero(words != -1, 1) <= np.count_nonzero(words, 1)  # [num_rows]
    by_allowed = np.flatnonzero(~list_denied)
    by_denied = np.flatnonzero(list_denied)
    allowed_rows, allowed = _listed(words[by_allowed], 1)
    denied_rows, denied = _listed(words[by_denied], 0)
    kept_at = _flat(logit_rows[by_allowed][allowed_rows], allowed, vocab)
    denied_at = _flat(logit_rows[by_denied][denied_rows], denied, vocab)
    if num_words * 32 < vocab:  # tokens past the bitmask: denied too
        past = np.arange(num_words * 32, vocab)
        denied_at = np.concatenate([denied_at, (logit_rows[by_denied, None] * vocab + past).reshape(-1)])
    flat_logits = logits.view(-1)
    kept_index = _on(logits.device, kept_at)
    kept = flat_logits.index_select(0, kept_index)
    for row in logit_rows[by_allowed].tolist():
        logits[row].fill_(float("-inf"))  # a plain fill: several times cheaper than index_fill_ on a CPU
    flat_logits.index_copy_(0, kept_index, kept)
    flat_logits.index_fill_(0, _on(logits.device, denied_at), float("-inf"))


def _on(device: torch.device, indices: np.ndarray) -> torch.Tensor:
    """int64 indices on ``device``; to a GPU through pinned memory, queued behind its work, not waiting."""
    host = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _flat(rows: np.ndarray, tokens: np.ndarray, vocab: int) -> np.ndarray:
    """Flat indices into [*, vocab] logits of the listed tokens within the vocabulary."""
    inside = tokens < vocab
    flat: np.ndarray = rows[inside] * vocab + tokens[inside]
    return flat


def allow_only(row: torch.Tensor, token_ids: Iterable[int]) -> None:
    """Make a bitmask row (int32 [words], on the CPU) allow exactly ``token_ids``."""
    words: dict[int, int] = {}
    for token_id in token_ids:
        words[token_id >> 5] = words.get(token_id >> 5, 0) | 1 << (token_id & 31)
    row.zero_()
    if words:
        signed = [w - (1 << 32) if w >= 1 << 31 else w for w in words.values()]
        row[list(words)] = torch.tensor(signed, dtype=torch.int32)
