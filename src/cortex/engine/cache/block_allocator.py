"""BlockAllocator: which KV-cache pages are free, a reference count per page, and the cached full pages.

Pure bookkeeping (no tensors). A page is owned by every request whose block table lists it. A full page
whose contents were computed can be registered under its :mod:`block hash <cortex.engine.cache.block_hash>`
(:meth:`cache_block`); from then on any request whose prefix has that hash may share it
(:meth:`lookup`, then :meth:`share`). When its last owner frees a cached page it stays cached: it joins
the most-recently-used end of the evictable queue, and is evicted (its hash forgotten, ``on_evict``
told) only when :meth:`allocate` runs out of pages that hold nothing, oldest first, as in vLLM v1's
block pool. A page that is shared is never written again: requests only write pages they alone own.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from cortex.engine.cache.block_hash import BlockHash


class BlockAllocator:
    """Hands out block ids in ``[0, num_blocks)``. Invariant: a block is free iff its ref count is 0; a
    free block is either empty (no hash) or cached (evictable, in least-recently-freed order)."""

    def __init__(self, num_blocks: int, *, on_evict: Callable[[BlockHash], None] | None = None) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.num_blocks = num_blocks
        self._on_evict = on_evict
        self._ref_counts = [0] * num_blocks
        self._empty: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # free cached blocks, oldest first
        self._hash_of: dict[int, BlockHash] = {}
        self._block_of: dict[BlockHash, int] = {}

    @property
    def num_free(self) -> int:
        """Blocks with no owner: empty ones and cached ones that may be evicted."""
        return len(self._empty) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        """Blocks registered under a hash, owned or not."""
        return len(self._block_of)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def allocate(self, num_blocks: int) -> list[int]:
        """Take ``num_blocks`` free blocks (ref count 1 each), empty ones first, then evicting the least
        recently freed cached ones. Raises ValueError when too few are free."""
        if num_blocks > self.num_free:
            raise ValueError(f"asked for {num_blocks} blocks, only {self.num_free} free")
        blocks = []
        for _ in range(num_blocks):
            if self._empty:
                block_id = self._empty.popleft()
            else:
                block_id, _ = self._evictable.popitem(last=False)
                self._evict(block_id)
            self._ref_counts[block_id] = 1
            blocks.append(block_id)
        return blocks

    def _evict(self, block_id: int) -> None:
        block_hash = self._hash_of.pop(block_id)
        del self._block_of[block_hash]
        if self._on_evict is not None:
            self._on_evict(block_hash)

    def share(self, block_id: int) -> None:
        """Add an owner to a block in use, or take a free cached block back into use."""
        if self._ref_counts[block_id] == 0:
            if block_id not in self._evictable:
                raise ValueError(f"block {block_id} is free and cannot be shared")
            del self._evictable[block_id]
        self._ref_counts[block_id] += 1

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one owner from each block, in order; blocks left without owners become free (cached
        ones at the most-recently-used end, so free a request's table tail first to keep its head)."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                raise ValueError(f"block {block_id} is already free")
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                if block_id in self._hash_of:
                    self._evictable[block_id] = None
                else:
                    self._empty.append(block_id)

    def cache_block(self, block_id: int, block_hash: BlockHash) -> bool:
        """Register a computed full block in use under its hash. False (and nothing changes) when the block
        is cached already or another block holds that hash (two requests computed the same prefix)."""
        if self._ref_counts[block_id] == 0:
            raise ValueError(f"block {block_id} is free and cannot be cached")
        if block_id in self._hash_of or block_hash in self._block_of:
            return False
        self._hash_of[block_id] = block_hash
        self._block_of[block_hash] = block_id
        return True

    def lookup(self, block_hash: BlockHash) -> int | None:
        """The cached block holding ``block_hash``, in use or free; does not change the cache."""
        return self._block_of.get(block_hash)
