"""Block hashes: the key a full KV block is shared under, a hash chain over the tokens of the prefix.

The hash of block ``i`` covers its ``block_size`` token ids and, through its parent (block ``i - 1``'s
hash), every token before it: two requests whose block hashes agree up to block ``i`` have the same
first ``(i + 1) * block_size`` tokens, hence the same keys and values there (positions are absolute),
whatever follows. SHA-256, as vLLM v1 defaults to, so that no crafted prompt can collide with another
request's prefix and be served its cache. Pure Python, no tensors.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Sequence

BlockHash = bytes


def hash_block(parent: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """The chain hash of one full block whose preceding block hashed to ``parent`` (None: the first)."""
    digest = hashlib.sha256(parent or b"")
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


def extend_block_hashes(
    hashes: list[BlockHash],
    token_ids_between: Callable[[int, int], Sequence[int]],
    *,
    num_tokens: int,
    block_size: int,
) -> None:
    """Append to ``hashes`` (in place) the hashes of the full blocks of the first ``num_tokens`` tokens
    that it does not cover yet; ``token_ids_between(start, end)`` reads the sequence's tokens."""
    for index in range(len(hashes), num_tokens // block_size):
        parent = hashes[-1] if hashes else None
        hashes.append(hash_block(parent, token_ids_between(index * block_size, (index + 1) * block_size)))
