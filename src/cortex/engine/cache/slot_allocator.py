"""SlotAllocator: which recurrent-state slots (conv history + delta-rule state) are free.

Pure bookkeeping (no tensors). One slot per running request, taken at admission and given back when the
request finishes, is preempted or is aborted. A fresh prefill never reads its slot's old contents (the
model starts from zero state when ``num_cached_tokens == 0``), so slots are not cleared on reuse.
"""

from __future__ import annotations


class SlotAllocator:
    """Hands out slot ids in ``[0, num_slots)``; the most recently freed slot is reused first."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 0:
            raise ValueError(f"num_slots must be >= 0, got {num_slots}")
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        if not self._free:
            raise ValueError("no free state slot")
        slot = self._free.pop()
        self._used.add(slot)
        return slot

    def free(self, slot: int) -> None:
        if slot not in self._used:
            raise ValueError(f"state slot {slot} is not in use")
        self._used.remove(slot)
        self._free.append(slot)
