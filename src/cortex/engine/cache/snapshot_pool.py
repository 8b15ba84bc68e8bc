"""SnapshotPool: which recurrent-state snapshot rows hold which prefix, and which to evict first.

Pure bookkeeping (no tensors). A Gated DeltaNet layer's state cannot be rewound, so a cached prefix is
usable only where a copy of the state (conv history + delta-rule state, every linear-attention layer)
was taken at its end. Those copies live in rows ``[first_row, first_row + num_snapshots)`` of the same
state tensors as the running requests' slots (rows ``[0, first_row)``), each keyed by the
:mod:`block hash <cortex.engine.cache.block_hash>` of the last block of its prefix.

A row's life: :meth:`reserve` (for a save that a step will make; evicts a snapshot if no row is empty)
-> :meth:`commit` once that step ran (now :meth:`lookup` finds it) or :meth:`cancel` if it did not. A
request restoring from a snapshot :meth:`pin` s it until its step ran; a pinned row is never evicted or
dropped. :meth:`drop` forgets a snapshot whose prefix lost a KV block, or that a newer one replaced.

Eviction is least recently used within two tiers: *spare* snapshots (taken on speculation: every few
blocks of a long prefill, the rolling snapshot of a generation) go before *kept* ones (where a request
said the next turn comes back to: its turn boundary, its prompt's end, a finished generation's end).
A snapshot that a request resumed from is kept from then on. So one long prompt's interval snapshots
cannot push every other conversation's turn out of a small pool.
"""

from __future__ import annotations

from collections import OrderedDict

from cortex.engine.cache.block_hash import BlockHash


class SnapshotPool:
    def __init__(self, num_snapshots: int, *, first_row: int) -> None:
        if num_snapshots < 0:
            raise ValueError(f"num_snapshots must be >= 0, got {num_snapshots}")
        self.num_snapshots = num_snapshots
        self.first_row = first_row
        self._empty = list(range(first_row + num_snapshots - 1, first_row - 1, -1))
        self._row_of: dict[BlockHash, int] = {}  # committed snapshots
        self._key_of: dict[int, BlockHash] = {}
        # committed, unpinned rows, oldest first: spare ones are evicted before kept ones
        self._spare: OrderedDict[int, None] = OrderedDict()
        self._kept: OrderedDict[int, None] = OrderedDict()
        self._pending: dict[BlockHash, tuple[int, bool]] = {}  # (row, kept) for a save not yet run
        self._pins: dict[int, int] = {}  # row -> restores in flight

    @property
    def num_used(self) -> int:
        """Rows holding a snapshot or reserved for one."""
        return self.num_snapshots - len(self._empty)

    def lookup(self, key: BlockHash) -> int | None:
        """The committed snapshot row for ``key``; does not change the pool."""
        return self._row_of.get(key)

    def has(self, key: BlockHash) -> bool:
        """True when ``key`` is committed or a save for it is pending."""
        return key in self._row_of or key in self._pending

    def reserve(self, key: BlockHash, *, kept: bool) -> int | None:
        """A row for a new snapshot of ``key`` (in the kept tier once committed, if ``kept``), or None
        when ``key`` is already held or pending, or every row is pinned or pending. Takes an empty row,
        else evicts the least recently used spare snapshot, else the least recently used kept one."""
        if self.has(key):
            return None
        if self._empty:
            row = self._empty.pop()
        elif self._spare or self._kept:
            row, _ = (self._spare or self._kept).popitem(last=False)
            del self._row_of[self._key_of.pop(row)]
        else:
            return None
        self._pending[key] = (row, kept)
        return row

    def commit(self, key: BlockHash) -> None:
        """The save for ``key`` ran: its snapshot is usable, as the most recently used of its tier."""
        row, kept = self._pending.pop(key)
        self._row_of[key] = row
        self._key_of[row] = key
        (self._kept if kept else self._spare)[row] = None

    def cancel(self, key: BlockHash) -> None:
        """The save for ``key`` will not be used (its step failed, or its request went away)."""
        row, _ = self._pending.pop(key)
        self._empty.append(row)

    def keep(self, key: BlockHash) -> None:
        """Move the committed snapshot of ``key``, if any, to the kept tier (a pinned one goes there when
        its restores end)."""
        row = self._row_of.get(key)
        if row is not None and row in self._spare:
            del self._spare[row]
            self._kept[row] = None

    def pin(self, row: int) -> None:
        """A restore from committed ``row`` is scheduled: keep it until :meth:`unpin`."""
        count = self._pins.get(row, 0)
        if count == 0:
            self._spare.pop(row, None)
            self._kept.pop(row, None)
        self._pins[row] = count + 1

    def unpin(self, row: int) -> None:
        """A restore from ``row`` ran; the row becomes evictable again, kept and most recently used."""
        count = self._pins.pop(row) - 1
        if count:
            self._pins[row] = count
        else:
            self._kept[row] = None

    def drop(self, key: BlockHash, *, only_spare: bool = False) -> None:
        """Forget the snapshot of ``key`` if there is one and nobody is restoring from it (and, with
        ``only_spare``, if it is not kept: a snapshot some request resumed from stays)."""
        row = self._row_of.get(key)
        if row is not None and row not in self._pins and (row in self._spare or not only_spare):
            del self._row_of[key]
            del self._key_of[row]
            self._spare.pop(row, None)
            self._kept.pop(row, None)
            self._empty.append(row)
