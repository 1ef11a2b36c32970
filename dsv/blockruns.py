"""Reading many objects in a given order as runs of the pack blocks that hold them.

A version's datapoints mostly lie in its packs in the order it lists them (add, push and fetch
write them so). The reader therefore takes the ids of each block it touches whole, once: from
the pack's index where the block is trusted (its frames' checksums verified, `Pack.vouched_oids`;
docs/format.md §4), else by hashing its bodies, which also verifies them. A run of the wanted
ids that equals a run of the block's ids is taken in one slice, without looking each id up in a
map of every pack (which costs about 130 MB per million objects). Where the order is scattered
(few ids per block), reading whole blocks costs more than it gives: `scattered` tells the
caller, who then goes on id by id.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence

from dsv.blockindex import common_run
from dsv.errors import CorruptObject
from dsv.objects import Kind, hash_objects
from dsv.pack import Pack

__all__ = ["BlockRuns", "mismatch"]

_CACHED_BLOCKS = 8
# Bodies a reader may read beyond twice those it takes, besides two of the largest blocks it
# has read, before runs are judged not to pay. The blocks count because one block of small
# datapoints holds ten thousand: an edit near the start of a version reads a second block
# before the first is used up, which is no sign of a scattered order.
_SLACK = 8192


def mismatch(oid: bytes) -> CorruptObject:
    return CorruptObject(f"corrupt object {oid.hex()}: content does not match its id")


class _Block:
    """One decompressed block: its entries' start offsets, bodies and ids as `kind` (hashed,
    or the index's where the block is trusted; b"" for another kind's entry)."""

    __slots__ = ("bodies", "hashes", "positions", "starts")

    def __init__(self, pack: Pack, block: int, kind: Kind) -> None:
        self.starts, self.bodies = pack.block_bodies(block)
        vouched = pack.vouched_oids(block, kind, self.starts, self.bodies)
        # Another kind's body never hashes to an id of `kind`: the tag is part of the hash.
        self.hashes = hash_objects(kind, self.bodies) if vouched is None else vouched
        self.positions: dict[bytes, int] | None = None

    def position(self, oid: bytes) -> int:
        if self.positions is None:
            self.positions = dict(zip(self.hashes, range(len(self.hashes)), strict=True))
        return self.positions.get(oid, -1)


class BlockRuns:
    """Verified bodies of a list of ids of one kind, read as runs of the blocks that hold them."""

    def __init__(self, packs: Sequence[Pack], kind: Kind) -> None:
        self.packs = packs
        self.kind = kind
        self.blocks: OrderedDict[tuple[int, int], _Block] = OrderedDict()
        self.current: _Block | None = None
        self.previous: _Block | None = None
        # Bodies read (hashed or not) so far: see `scattered`.
        self.hashed = 0
        self.largest = 0  # entries of the largest block read

    def scattered(self, taken: int) -> bool:
        """Whether the blocks read cost much more than the `taken` bodies they gave: the
        order is scattered, and the caller should go on id by id."""
        return self.hashed > 2 * taken + _SLACK + 2 * self.largest

    def take(self, wanted: list[bytes], at: int) -> list[bytes]:
        """Verified bodies of `wanted[at:at + k]` for some k >= 1; empty if `wanted[at]` is
        in no pack (a small fetch leaves objects loose)."""
        oid = wanted[at]
        block, q = self.current, -1
        if block is not None:
            q = block.position(oid)
        if q < 0 and self.previous is not None:
            # An edited datapoint sits in a newer pack, and the run goes on in this block after
            # it: switching back should not cost a lookup.
            q = self.previous.position(oid)
            if q >= 0:
                block, self.previous = self.previous, block
                self.current = block
        if q < 0 or block is None:
            located = self._locate(oid)
            if located is None:
                return []
            block, q = located
            if block is not self.current:
                self.previous, self.current = self.current, block
        hashes = block.hashes
        if hashes[q] != oid:
            raise mismatch(oid)
        # The run is as long as the ids go on equal to the block's hashes.
        good = common_run(wanted, at, hashes, q)
        return block.bodies[q : q + good]

    def _locate(self, oid: bytes) -> tuple[_Block, int] | None:
        for number, pack in enumerate(self.packs):
            i = pack.find(oid)
            if i < 0:
                continue
            index, offset, _ = pack.location(i)
            key = (number, index)
            block = self.blocks.get(key)
            if block is None:
                block = self.blocks[key] = _Block(pack, index, self.kind)
                self.hashed += len(block.bodies)
                self.largest = max(self.largest, len(block.bodies))
                if len(self.blocks) > _CACHED_BLOCKS:
                    self.blocks.popitem(last=False)
            else:
                self.blocks.move_to_end(key)
            starts = block.starts
            q = bisect.bisect_left(starts, offset)
            if q == len(starts) or starts[q] != offset:
                raise CorruptObject(f"pack {pack.name}: index places {oid.hex()} off an entry")
            # An empty body starts where the next one does: the entry is the one that hashes.
            while q + 1 < len(starts) and starts[q + 1] == offset and block.hashes[q] != oid:
                q += 1
            return block, q
        return None
