"""What a push sends, as packs of protocol version 2 that each fit a byte budget.

A version-2 pack is a pack file as stored (format.md §4), so the blocks `add` made travel as
they are: a run of objects that is exactly a stored block is copied compressed, unread, and
only what is not is read and compressed again. The budget is kept by exact sizes for copied
blocks and by an upper bound (raw size plus framing) for the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from dsv.errors import RemoteError
from dsv.objects import Kind
from dsv.pack import PackWriter, PreparedPack
from dsv.store import CopyPart, ObjectStore

__all__ = ["cut_packs"]

# Ids planned at a time: what one plan holds in memory (a few MB), whatever the push's size.
_PLAN_BATCH = 1 << 16
_HEADER_AND_TRAILER = 16 + 32


def _parts(
    store: ObjectStore, items: Sequence[tuple[Kind, bytes]]
) -> Iterator[tuple[Kind, CopyPart]]:
    for kind, group in itertools.groupby(items, key=lambda item: item[0]):
        oids = [oid for _, oid in group]
        for start in range(0, len(oids), _PLAN_BATCH):
            for part in store.plan_copy(kind, oids[start : start + _PLAN_BATCH]):
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
    items: Sequence[tuple[Kind, bytes]],
    directory: Path,
    budget: int,
    *,
    start: int = 0,
) -> Generator[tuple[PreparedPack, int], None, None]:
    """Packs of `items[start:]`, in order, each at most `budget` bytes; with the number of
    items each holds. The caller sends each, then discards it."""
    parts = _parts(store, items[start:])
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
