"""Sorting and deduplicating packed ids: pyarrow's kernels give what Python gives."""

from __future__ import annotations

import random
from array import array

import pytest

from dsv import sorting
from dsv.sorting import (
    absent_oids,
    argsort_keys,
    gatherer,
    invert,
    location_keys,
    location_order,
    permute,
    sort_oids,
    unique_oids,
)


def test_a_large_id_table_is_sorted_as_a_small_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 65,536 ids pyarrow sorts them: the same bytes, repeats kept in their order, as
    Python's stable sort gives."""
    rng = random.Random(5)
    ids = [rng.randbytes(32) for _ in range(70_000)]
    ids += ids[:50]  # a repeat keeps its place after the first
    rng.shuffle(ids)
    packed = b"".join(ids)
    order, table = sort_oids(packed)
    assert list(order) == sorted(range(len(ids)), key=ids.__getitem__)
    assert table == b"".join(sorted(ids))
    monkeypatch.setattr(sorting, "_ARROW_SORT", 1 << 30)
    assert sort_oids(packed) == (order, table)


@pytest.mark.parametrize("heads", ["all differ", "two share them", "an id repeated"])
def test_ids_sorted_by_their_first_8_bytes_are_in_the_order_of_whole_ids(heads: str) -> None:
    """Ids sort as 64-bit integers of their heads unless two heads are equal: then whole ids
    decide, and equal ids keep their order."""
    rng = random.Random(11)
    ids = [rng.randbytes(32) for _ in range(70_000)]
    if heads == "two share them":
        ids[10] = ids[20][:8] + bytes(24)  # crafted: sorts before ids[20]
    elif heads == "an id repeated":
        ids[10] = ids[20]
    packed = b"".join(ids)
    order, table = sort_oids(packed)
    assert list(order) == sorted(range(len(ids)), key=ids.__getitem__)
    assert table == b"".join(sorted(ids))
    by_heads = sorting._sort_by_heads(sorting._ids_array(packed), len(ids))
    assert (by_heads is None) == (heads != "all differ")


@pytest.mark.parametrize("count", [1000, 70_000])
@pytest.mark.parametrize("typecode", ["I", "Q", "bytes"])
def test_a_column_is_permuted_as_python_permutes_it(count: int, typecode: str) -> None:
    if count >= 65_536:
        import pyarrow  # noqa: F401 - loaded, as a sort before it leaves it: its take is used
    rng = random.Random(count)
    order = array("Q", rng.sample(range(count), count))
    if typecode == "bytes":
        values: array[int] | bytearray = bytearray(rng.randbytes(count))
        assert permute(values, order) == bytes(values[i] for i in order)
    else:
        values = array(typecode, [rng.getrandbits(32) for _ in range(count)])
        assert permute(values, order) == array(typecode, [values[i] for i in order]).tobytes()


@pytest.mark.parametrize("positions", [[0], [2, 0], [1, 1, 3]])
def test_a_gatherer_takes_the_items_at_its_positions_as_a_tuple(positions: list[int]) -> None:
    values = array("I", [10, 11, 12, 13])
    assert gatherer(positions)(values) == tuple(values[p] for p in positions)
    assert gatherer(positions)(memoryview(values.tobytes()).cast("I")) == tuple(
        values[p] for p in positions
    )


def test_repeats_are_dropped_where_they_first_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [i.to_bytes(4, "big") * 8 for i in range(70_000)]  # past the dict's range
    repeated = [*ids, *ids[::7], *reversed(ids[:1000])]
    expected = b"".join(dict.fromkeys(repeated))
    assert unique_oids(b"".join(repeated)) == expected
    assert unique_oids(b"".join(repeated[:300])) == b"".join(dict.fromkeys(repeated[:300]))
    monkeypatch.setattr(sorting, "_ARROW_SORT", 1 << 30)
    assert unique_oids(b"".join(repeated)) == expected


@pytest.mark.parametrize("count", [0, 1, 1000, 70_000, 600_000])
def test_keys_are_ranked_the_same_by_either_sort(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """A pack's entries in pack order (block << 32 | offset keys), by pyarrow when it is loaded
    or the pack is large, by Python otherwise."""
    rng = random.Random(count)
    keys = rng.sample(range(1 << 40), count)
    packed = b"".join(k.to_bytes(8, "little") for k in keys)
    expected = sorted(range(count), key=keys.__getitem__)
    assert list(argsort_keys(packed, count)) == expected
    monkeypatch.setattr(sorting, "_ARROW_SORT", 1 << 30)  # Python's
    assert list(argsort_keys(packed, count)) == expected


@pytest.mark.parametrize("count", [0, 1, 1000, 70_000])
@pytest.mark.parametrize("typecode", ["I", "Q"])
def test_a_permutation_is_inverted(count: int, typecode: str) -> None:
    """A pack index stores where each entry of pack order sits: the inverse of its sort."""
    order = list(range(count))
    random.Random(count).shuffle(order)
    inverse = invert(array(typecode, order))
    assert inverse.itemsize == 4
    assert [order[i] for i in inverse] == list(range(count))


def test_location_keys_order_as_block_then_offset() -> None:
    """A pack's entries in pack order come from sorting these keys: block first, then offset."""
    blocks, offsets = array("I", [2, 0, 1, 0, 2]), array("I", [5, 70_000, 3, 9, 1])
    keys = location_keys(blocks.tobytes(), offsets.tobytes(), 5)
    expected = [b << 32 | o for b, o in zip(blocks, offsets, strict=True)]
    assert list(memoryview(keys).cast("Q")) == expected
    assert list(argsort_keys(keys, 5)) == [3, 1, 2, 4, 0]


@pytest.mark.parametrize("count", [5, 70_000])
def test_entries_are_put_in_location_order_stably(count: int) -> None:
    """In C (pyarrow, loaded) and in Python alike: block first, then offset, ties in place."""
    if count >= 65_536:
        import pyarrow  # noqa: F401 - loaded, as a merge of packs leaves it
    rng = random.Random(count)
    blocks = array("I", [rng.randrange(4) for _ in range(count)])
    offsets = array("I", [rng.randrange(count // 2 + 1) for _ in range(count)])
    order = location_order(blocks, memoryview(offsets.tobytes()).cast("I"), count)
    assert order.typecode == "I"
    assert list(order) == sorted(range(count), key=lambda i: (blocks[i], offsets[i]))


def test_absent_ids_are_found_by_hash_as_by_a_set() -> None:
    rng = random.Random(9)
    ids = [rng.randbytes(32) for _ in range(3000)]
    tables = [b"".join(sorted(ids[:1000])), b"", memoryview(b"".join(sorted(ids[1500:2500])))]
    wanted = ids[500:3000:2] + ids[:10]
    held = set(ids[:1000]) | set(ids[1500:2500])
    assert absent_oids(b"".join(wanted), tables) == b"".join(o for o in wanted if o not in held)
    assert absent_oids(b"".join(ids[:1000]), tables) == b""
    assert absent_oids(b"", tables) == b""


def test_absent_ids_are_looked_up_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sorting, "_LOOKUP_SLICE", 7)
    rng = random.Random(11)
    ids = [rng.randbytes(32) for _ in range(200)]
    tables = [b"".join(sorted(ids[:60])), b"".join(sorted(ids[100:150]))]
    wanted = ids[::-1] + ids[50:70]
    held = set(ids[:60]) | set(ids[100:150])
    assert absent_oids(b"".join(wanted), tables) == b"".join(o for o in wanted if o not in held)
