"""Sorting and deduplicating ids and keys held packed, at C speed where there are many.

A million ids as Python objects take 72 MB and more, and a sort of them as much again; held
packed (32 bytes an id) they are handed to pyarrow's kernels, which work in C and give their
memory back through the system allocator. Below a few tens of thousands Python is faster
than pyarrow loads (0.1-0.3 s), so small inputs never import it.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from dsv.objects import OID_SIZE, split_oids

__all__ = [
    "absent_oids",
    "argsort_keys",
    "arrow_kernel",
    "gatherer",
    "invert",
    "location_keys",
    "location_order",
    "permute",
    "sort_oids",
    "unique_oids",
]

# Below this many ids Python sorts them faster than pyarrow loads (0.1-0.3 s).
_ARROW_SORT = 1 << 16
# An entry order is sorted by pyarrow when it is loaded already, or past this many entries
# whatever its load costs: a checkout of 100k should not pay for it, a 1M one's memory does.
_ARROW_ARGSORT = 1 << 19
# Ids `absent_oids` looks up at a time.
_LOOKUP_SLICE = 1 << 17


def arrow_kernel(name: str, *args: Any, options: Any = None) -> Any:
    """pyarrow's compute kernel `name` on `args`, called as itself (pyarrow's Python wrappers,
    and pa.scalar, import pandas when it is installed: half a second) and on the system
    allocator (pyarrow's own keeps what a kernel used)."""
    import pyarrow as pa  # here: only large inputs need it
    import pyarrow.compute as pc

    return pc.call_function(name, list(args), options=options, memory_pool=pa.system_memory_pool())


def _ids_array(oids: bytes | bytearray | memoryview) -> Any:
    """The packed `oids` as a pyarrow array of 32-byte values, sharing their memory."""
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.binary(OID_SIZE), len(oids) // OID_SIZE, [None, pa.py_buffer(oids)]
    )


def argsort_keys(keys: bytes | bytearray, count: int) -> array[int]:
    """Positions of the `count` native 64-bit `keys` in key order (stable)."""
    if count >= _ARROW_SORT and ("pyarrow" in sys.modules or count >= _ARROW_ARGSORT):
        import pyarrow as pa

        values = pa.Array.from_buffers(pa.uint64(), count, [None, pa.py_buffer(keys)])
        return _narrowed(arrow_kernel("array_sort_indices", values))[1]
    # Each key with its position in its low bits, sorted as plain integers: half the memory
    # of sorting positions by a key function (75 MB at 1M), which held both as objects.
    shift = max(1, count.bit_length())
    ranked = [key << shift | i for i, key in enumerate(memoryview(keys).cast("Q"))]
    ranked.sort()
    mask = (1 << shift) - 1
    return array("I", [k & mask for k in ranked])


def sort_oids(oids: bytes | bytearray) -> tuple[array[int], bytes | memoryview]:
    """The packed `oids` sorted (a stable sort: equal ids keep their order), and the position
    each of those came from, as u32s (an index's positions)."""
    count = len(oids) // OID_SIZE
    if count < _ARROW_SORT:
        listed = split_oids(oids)
        ranked = sorted(range(count), key=listed.__getitem__)
        return array("I", ranked), b"".join([listed[i] for i in ranked])
    # pyarrow's sort is stable and bytewise, as Python's: a million ids as Python objects,
    # and their sort, had been most of a large fetch's peak memory.
    values = _ids_array(oids)
    found = _sort_by_heads(values, count)
    if found is None:
        found = arrow_kernel("array_sort_indices", values)
    # The kernel's u64 positions narrowed and let go before the take: at a 1M fetch's peak
    # they were 8 MB, and a u64 copy of them 8 more.
    found, order = _narrowed(found)
    ordered = arrow_kernel("take", values, found)
    del found
    # The kernel's own buffer, not a copy of it: the view keeps it alive.
    start = OID_SIZE * ordered.offset
    return order, memoryview(ordered.buffers()[1]).cast("B")[start : start + OID_SIZE * count]


def _narrowed(positions: Any) -> tuple[Any, array[int]]:
    """pyarrow's u64 positions as u32s (checked: a position past 2^32 raises), on the system
    allocator as every kernel here; and one copy of them as an array. By way of bytes, a
    slice of them and a u64 array, they had been 36 MB at once at a 1M clone's peak."""
    import pyarrow as pa
    import pyarrow.compute as pc

    narrow = arrow_kernel("cast", positions, options=pc.CastOptions.safe(pa.uint32()))
    copied = array("I")
    start = 4 * narrow.offset
    copied.frombytes(memoryview(narrow.buffers()[1])[start : start + 4 * len(narrow)])
    return narrow, copied


def _sort_by_heads(values: Any, count: int) -> Any | None:
    """The order of the ids `values` by their first 8 bytes, as one integer each; None if two
    share them (only a sort of whole ids orders those, and stably).

    Ids are hashes, so their heads differ but for a crafted or repeated id. Sorting 64-bit
    integers takes half the time of sorting 32-byte strings (0.15 s against 0.31 s at 1M)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        heads = arrow_kernel("binary_slice", values, options=pc.SliceOptions(0, 8))
    except pa.ArrowNotImplementedError:
        return None
    if not pa.types.is_fixed_size_binary(heads.type):  # (pyarrow gave another layout)
        return None
    keys = array("Q")
    keys.frombytes(memoryview(heads.buffers()[1])[8 * heads.offset : 8 * (heads.offset + count)])
    del heads  # 8 MB a million: a large fetch's peak is in this sort
    if sys.byteorder == "little":
        keys.byteswap()  # the integers' order must be the bytes' order
    numbers = pa.Array.from_buffers(pa.uint64(), count, [None, pa.py_buffer(keys)])
    found = arrow_kernel("array_sort_indices", numbers)
    ordered = arrow_kernel("take", numbers, found)
    tied = arrow_kernel("equal", ordered.slice(1), ordered.slice(0, count - 1))
    del ordered, numbers, keys
    return None if arrow_kernel("any", tied).as_py() else found


def gatherer(positions: Sequence[int]) -> Callable[[Sequence[int]], tuple[int, ...]]:
    """A function that takes the items at `positions` of a sequence in one C-level call (an
    itemgetter), as a tuple: no Python call per item, as a map of `__getitem__` makes."""
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


def permute(values: array[int] | bytearray, order: array[int] | memoryview) -> bytes:
    """The bytes of `values` (an array of fixed-size integers, or of bytes) taken in `order`."""
    count = len(order)
    if count < _ARROW_SORT or "pyarrow" not in sys.modules:
        # A map, not a gatherer: the array fills as it goes, where a gatherer would hold
        # every position and every value as objects at once (tens of MB at 500k).
        if isinstance(values, bytearray):
            return bytes(map(values.__getitem__, order))
        return array(values.typecode, map(values.__getitem__, order)).tobytes()
    import pyarrow as pa

    if isinstance(values, bytearray):
        kind, size = pa.uint8(), 1
    else:
        kind, size = (
            {1: pa.uint8(), 2: pa.uint16(), 4: pa.uint32(), 8: pa.uint64()}[values.itemsize],
            values.itemsize,
        )
    column = pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])
    positions = pa.Array.from_buffers(
        {4: pa.uint32(), 8: pa.uint64()}[order.itemsize], count, [None, pa.py_buffer(order)]
    )
    taken = arrow_kernel("take", column, positions)
    data: bytes = taken.buffers()[1].to_pybytes()
    return data[taken.offset * size : (taken.offset + count) * size]


def location_keys(blocks: bytes, offsets: bytes, count: int) -> bytearray:
    """Each entry's block << 32 | offset as a native u64, from u32 columns, put together
    bytewise at C speed."""
    keys = bytearray(8 * count)
    low, high = (0, 4) if sys.byteorder == "little" else (4, 0)
    for k in range(4):
        keys[low + k :: 8] = offsets[k::4]
        keys[high + k :: 8] = blocks[k::4]
    return keys


def location_order(
    blocks: array[int] | memoryview, offsets: array[int] | memoryview, count: int
) -> array[int]:
    """Positions of `count` entries in the order of (block, offset), from their u32 columns;
    stable."""
    return argsort_keys(location_keys(blocks.tobytes(), offsets.tobytes(), count), count)


def invert(order: array[int] | memoryview) -> array[int]:
    """The inverse of the permutation `order` of 0..n-1 (where each position went), as u32s.

    A Python loop, in one pass: pyarrow's sort of the permutation took 13 ms at 100k and
    155-200 ms at a million, against 5 and 56 ms."""
    inverse = array("I", bytes(4 * len(order)))
    for i, position in enumerate(order):
        inverse[position] = i
    return inverse


def unique_oids(packed: bytes) -> bytes:
    """The ids `packed` (32 bytes each) without repeats, each where it first appears."""
    if len(packed) < _ARROW_SORT * OID_SIZE:
        return b"".join(dict.fromkeys(split_oids(packed)))
    # Its hash table keeps first appearances in order.
    found = arrow_kernel("unique", _ids_array(packed))
    data: bytes = found.buffers()[1].to_pybytes()
    return data[found.offset * OID_SIZE : (found.offset + len(found)) * OID_SIZE]


def absent_oids(wanted: bytes, tables: Sequence[bytes | memoryview]) -> bytes:
    """The packed `wanted` ids that none of the packed id `tables` holds, in their order.

    By hash lookups in C: a server checking that a pushed million datapoints are stored had
    spent two seconds sorting and bisecting them as Python objects. A slice of `wanted` at a
    time is hashed and each table probed against it, so the hash tables stay small (hashing
    a 1M table instead was 30-40 MB more at the server's peak)."""
    import pyarrow.compute as pc

    def lookup(values: Any, held: Any) -> Any:
        return arrow_kernel("is_in", values, options=pc.SetLookupOptions(held))

    view = memoryview(wanted)
    left: list[bytes] = []
    for at in range(0, len(view), _LOOKUP_SLICE * OID_SIZE):
        values = _ids_array(view[at : at + _LOOKUP_SLICE * OID_SIZE])
        for table in tables:
            if not len(values):
                break
            held = _ids_array(table)
            found = arrow_kernel("filter", held, lookup(held, values))
            if len(found):
                kept = arrow_kernel("invert", lookup(values, found))
                values = arrow_kernel("filter", values, kept)
        if len(values):
            data: bytes = values.buffers()[1].to_pybytes()
            left.append(data[values.offset * OID_SIZE : (values.offset + len(values)) * OID_SIZE])
    return b"".join(left)
