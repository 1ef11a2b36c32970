"""Which objects each block of a pack holds, in their order in it, from the pack's index.

The index lists objects by id; a sender that copies stored blocks needs the other way round
(block -> its ids), to see with one comparison whether the next ids it sends are exactly a
block. An index of version 3 stores that order; an older one is sorted by (block, offset),
by pyarrow in C where it is large (a second in Python at a million entries).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence

from dsv.objects import OID_SIZE
from dsv.pack import Pack
from dsv.sorting import invert, permute

__all__ = ["BlockIndex", "common_run"]

_RECENT_BLOCKS = 4


def common_run(wanted: Sequence[bytes], at: int, have: Sequence[bytes], q: int) -> int:
    """How many ids from `wanted[at]` on equal those from `have[q]` on (the first do).

    Galloping (runs of 1, 2, 4... more) then bisecting the last step keeps a short run as
    cheap as a long one per id, in C-level slice comparisons, whatever the order."""
    n = min(len(wanted) - at, len(have) - q)
    good, step = 1, 1
    while good < n:
        probe = min(good + step, n)
        if wanted[at + good : at + probe] == have[q + good : q + probe]:
            good, step = probe, step * 2
            continue
        low, high = good, probe - 1  # ids good..probe differ somewhere
        while low < high:
            middle = (low + high + 1) // 2
            if wanted[at + good : at + middle] == have[q + good : q + middle]:
                low = middle
            else:
                high = middle - 1
        return low
    return good


class BlockIndex:
    """The entries of every block of `pack` in stored order, and each entry's place."""

    def __init__(self, pack: Pack) -> None:
        # Loaded, pyarrow takes a large pack's columns in C (`permute`); only large sends
        # build a block index, and it takes 0.1-0.3 s to load.
        import pyarrow  # noqa: F401

        self.pack = pack
        # order[k]: the index position of the k-th entry in stored order; rank its inverse.
        self.order = pack.pack_order()
        self.rank = invert(self.order)
        block_column, _ = pack.location_columns()
        self._blocks = array("I", permute(array("I", block_column), self.order))
        self._oids = pack.oid_column
        self._recent: dict[int, list[bytes]] = {}

    def members(self, block: int) -> tuple[int, int]:
        """Where `block`'s entries lie in stored order: [start, stop) of `order`."""
        return (
            bisect.bisect_left(self._blocks, block),
            bisect.bisect_right(self._blocks, block),
        )

    def block_oids(self, block: int) -> list[bytes]:
        """Ids of `block`'s entries in stored order (the last few blocks asked are kept: a
        version with scattered edits asks for one block many times, a run at a time)."""
        cached = self._recent.get(block)
        if cached is not None:
            return cached
        start, stop = self.members(block)
        table = self._oids
        found = [bytes(table[p * OID_SIZE : (p + 1) * OID_SIZE]) for p in self.order[start:stop]]
        self._recent[block] = found
        if len(self._recent) > _RECENT_BLOCKS:
            del self._recent[next(iter(self._recent))]
        return found
