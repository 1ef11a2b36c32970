"""What a push sends, as packs of protocol version 2 that each fit a byte budget.

A version-2 pack is a pack file as stored (format.md §4), so the blocks `add` made travel as
they are: a run of objects that is exactly a stored block is copied compressed, unread, and
only what is not is read and compressed again. The budget is kept by exact sizes for copied
blocks and by an upper bound (raw size plus framing) for the rest.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

from dsv.errors import RemoteError
from dsv.objects import OID_SIZE, Kind, split_oids
from dsv.pack import PackWriter, PreparedPack
from dsv.store import CopyPart, ObjectStore

__all__ = ["Sending", "cut_packs"]

# Ids planned at a time: what one plan holds in memory (a few MB), whatever the push's size.
_PLAN_BATCH = 1 << 16
_HEADER_AND_TRAILER = 16 + 32


class Sending:
    """What a push sends, in order: runs of one kind's ids, packed 32 bytes an id (a list of
    (kind, id) tuples had held a million ids in 140 MB; packed they take 32)."""

    def __init__(self) -> None:
        self._runs: list[tuple[Kind, bytes]] = []
        self._count = 0

    def add(self, kind: Kind, packed: bytes) -> None:
        """Append the ids `packed` (32 bytes each), of `kind`."""
        if packed:
            self._runs.append((kind, packed))
            self._count += len(packed) // OID_SIZE

    def __len__(self) -> int:
        return self._count

    def batches(self, start: int, size: int) -> Iterator[tuple[Kind, list[bytes]]]:
        """From the `start`-th id on, in order: lists of at most `size` ids of one kind."""
        at = 0
        for kind, packed in self._runs:
            count = len(packed) // OID_SIZE
            view = memoryview(packed)
            for lo in range(max(0, start - at), count, size):
                yield kind, split_oids(view[lo * OID_SIZE : min(count, lo + size) * OID_SIZE])
            at += count


def _parts(store: ObjectStore, items: Sending, start: int) -> Iterator[tuple[Kind, CopyPart]]:
    for kind, oids in items.batches(start, _PLAN_BATCH):
        for part in store.plan_copy(kind, oids):
            yield kind, part


def _fit(part: CopyPart, room: int) -> int:
    """How many of a read part's objects fit in `room` bytes (by their upper bound)."""
    used = 512
    for n, size in enumerate(part.sizes):
        used += size + 5
        if used > room:
            return n
    return len(part.sizes)


def cut_packs(
    store: ObjectStore,
    items: Sending,
    directory: Path,
    budget: int,
    *,
    start: int = 0,
) -> Generator[tuple[PreparedPack, int], None, None]:
    """Packs of `items[start:]`, in order, each at most `budget` bytes; with the number of
    items each holds. The caller sends each, then discards it."""
    parts = _parts(store, items, start)
    carry: tuple[Kind, CopyPart] | None = None
    while True:
        writer = PackWriter(directory)
        used = _HEADER_AND_TRAILER
        count = 0
        try:
            while True:
                if carry is None:
                    carry = next(parts, None)
                    if carry is None:
                        break
                kind, part = carry
                if part.pack is not None:
                    cost = writer.copy_cost(part.pack, part.block)
                    if used + cost <= budget:
                        writer.copy_block(part.pack, part.block, part.entries)
                        used += cost
                        count += len(part.oids)
                        carry = None
                        continue
                    # A block too big for the room left: its objects go one by one.
                    part = CopyPart(part.oids, part.sizes)
                take = _fit(part, budget - used)
                if take == 0:
                    if count == 0:
                        raise RemoteError(
                            f"{kind.name.lower()} {part.oids[0].hex()} is {part.sizes[0]} bytes, "
                            f"more than the remote accepts in one request ({budget} bytes)",
                            hint="raise the server's --max-request-size",
                        )
                    carry = (kind, part)
                    break
                head = CopyPart(part.oids[:take], part.sizes[:take])
                store.write_parts(writer, kind, [head])
                used += head.stored
                count += take
                carry = (
                    (kind, CopyPart(part.oids[take:], part.sizes[take:]))
                    if take < len(part.oids)
                    else None
                )
                if carry is not None:
                    break
            prepared = writer.prepare()
        except BaseException:
            writer.abort()
            raise
        if prepared is None:
            return
        yield prepared, count
