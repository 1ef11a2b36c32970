"""Sorting and deduplicating packed ids: pyarrow's kernels give what Python gives."""

from __future__ import annotations

import random

import pytest

from dsv import sorting
from dsv.sorting import absent_oids, argsort_keys, sort_oids, unique_oids


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
