"""BlockAllocator: which KV-cache pages are free, with a reference count per page.

Pure bookkeeping (no tensors). A page is owned by every request whose block table lists it; it returns
to the free list when its last owner frees it. Reference counts are what lets a later prefix cache share
a page between requests (:meth:`share`); nothing shares pages yet.
"""

from __future__ import annotations

from collections import deque


class BlockAllocator:
    """Hands out block ids in ``[0, num_blocks)``. Invariant: a block is free iff its ref count is 0."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take ``num_blocks`` free blocks (ref count 1 each). Raises ValueError when too few are free."""
        if num_blocks > len(self._free):
            raise ValueError(f"asked for {num_blocks} blocks, only {len(self._free)} free")
        blocks = [self._free.popleft() for _ in range(num_blocks)]
        for block_id in blocks:
            self._ref_counts[block_id] = 1
        return blocks

    def share(self, block_id: int) -> None:
        """Add an owner to a block in use."""
        if self._ref_counts[block_id] == 0:
            raise ValueError(f"block {block_id} is free and cannot be shared")
        self._ref_counts[block_id] += 1

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def free(self, block_ids: list[int]) -> None:
        """Drop one owner from each block; blocks left without owners become free."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                raise ValueError(f"block {block_id} is already free")
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._free.append(block_id)
