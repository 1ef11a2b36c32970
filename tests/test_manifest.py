"""Dataset manifests: paging, reuse of a parent's pages, and content identity."""

from __future__ import annotations

import random
from pathlib import Path

import blake3
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv.errors import CorruptObject
from dsv.manifest import (
    PAGE_MAX,
    PAGE_MIN,
    build_dataset,
    check_slices,
    chunk_pages,
    iter_datapoint_oids,
    read_oid_list,
)
from dsv.objects import OID_SIZE, Format, Kind
from dsv.store import ObjectStore


def _ids(n: int, seed: int = 0) -> list[bytes]:
    return [blake3.blake3(b"%d-%d" % (seed, i)).digest() for i in range(n)]


def test_pages_are_content_defined_and_bounded() -> None:
    ids = b"".join(_ids(60_000))
    pages = chunk_pages(ids)
    assert b"".join(pages) == ids
    assert all(PAGE_MIN <= len(p) // OID_SIZE <= PAGE_MAX for p in pages[:-1])
    # Prepending ids changes only the first pages: later boundaries depend on ids alone.
    shifted = chunk_pages(b"".join(_ids(700, seed=9)) + ids)
    assert len(set(pages) & set(shifted)) >= len(pages) - 2


def _page_lengths_by_the_rule(ids: list[bytes]) -> list[int]:
    """docs/format.md §3 read literally: a page ends after an id whose first 12 bits are
    zero once it holds PAGE_MIN ids, and after PAGE_MAX ids in any case."""
    lengths, length = [], 0
    for oid in ids:
        length += 1
        if length >= PAGE_MAX or (length >= PAGE_MIN and oid[0] == 0 and oid[1] < 16):
            lengths.append(length)
            length = 0
    return [*lengths, length] if length else lengths


def test_pages_end_exactly_where_the_format_says() -> None:
    def cut(oid: bytes, second: int) -> bytes:
        return bytes([0, second]) + oid[2:]

    ids = _ids(90_000)
    for i in (3, 600, 601, 1111, 1112):  # qualifying ids too early in their page, and not
        ids[i] = cut(ids[i], 15)
    ids[2000] = cut(ids[2000], 16)  # the 13th bit set: no boundary
    for i in range(20_000, 60_000):  # no qualifying id at all: cut every PAGE_MAX ids
        if ids[i][0] == 0:
            ids[i] = b"\x01" + ids[i][1:]
    ids[-1] = cut(ids[-1], 0)
    pages = chunk_pages(b"".join(ids))
    assert [len(p) // OID_SIZE for p in pages] == _page_lengths_by_the_rule(ids)
    assert b"".join(pages) == b"".join(ids)
    assert PAGE_MAX in [len(p) // OID_SIZE for p in pages]
    for n in (0, 1, PAGE_MAX, PAGE_MAX + 1, 2 * PAGE_MAX):
        block = [b"\x01" + oid[1:] for oid in ids[:n]]
        assert [len(p) // OID_SIZE for p in chunk_pages(b"".join(block))] == (
            _page_lengths_by_the_rule(block)
        )


def test_a_one_percent_change_writes_bytes_in_proportion(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    old = _ids(200_000)
    with store.writer() as writer:
        _, base = build_dataset(writer, b"".join(old), Format("jsonl"))
    first = writer.bytes_written
    rng = random.Random(7)
    new = list(old)
    for _ in range(1000):
        new[rng.randrange(len(new))] = rng.randbytes(32)
    for _ in range(500):
        del new[rng.randrange(len(new))]
    for _ in range(500):
        new.insert(rng.randrange(len(new)), rng.randbytes(32))
    with store.writer() as writer:
        _, second = build_dataset(
            writer, b"".join(new), Format("jsonl"), base=base, base_oids=b"".join(old)
        )
    assert read_oid_list(store, second) == b"".join(new)
    assert writer.bytes_written < first * 0.10
    # Same content built from scratch: another paging, same identity.
    with store.writer() as writer:
        _, fresh = build_dataset(writer, b"".join(new), Format("jsonl"))
    assert fresh.same_as(second) and fresh.slices != second.slices


def test_unchanged_content_reuses_the_manifest(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    ids = b"".join(_ids(3000))
    with store.writer() as writer:
        oid1, base = build_dataset(writer, ids, Format("jsonl"), ("id",))
    with store.writer() as writer:
        oid2, _ = build_dataset(writer, ids, Format("jsonl"), ("id",), base=base, base_oids=ids)
    assert oid1 == oid2
    assert writer.written == 0


_POOL = _ids(64, seed=5)


@settings(max_examples=150, deadline=None)
@given(
    old=st.lists(st.sampled_from(_POOL), max_size=80),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, 200),
            st.sampled_from(_POOL + _ids(8, seed=6)),
        ),
        max_size=12,
    ),
)
def test_any_edited_version_reads_back_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    old: list[bytes],
    edits: list[tuple[str, int, bytes]],
) -> None:
    new = list(old)
    for op, at, oid in edits:
        if op == "insert":
            new.insert(at % (len(new) + 1), oid)
        elif new and op == "delete":
            del new[at % len(new)]
        elif new:
            new[at % len(new)] = oid
    store = ObjectStore(tmp_path_factory.mktemp("store"))
    with store.writer() as writer:
        _, base = build_dataset(writer, b"".join(old), Format("jsonl"))
        _, second = build_dataset(
            writer, b"".join(new), Format("jsonl"), base=base, base_oids=b"".join(old)
        )
    assert read_oid_list(store, second) == b"".join(new)
    assert b"".join(iter_datapoint_oids(store, second)) == b"".join(new)
    assert second.count == len(new)


@pytest.mark.parametrize("damage", ["a slice dropped", "a slice past its page", "count"])
def test_streamed_ids_are_checked_before_the_first_is_given(tmp_path: Path, damage: str) -> None:
    # iter_records streams a dataset's ids a page at a time; a manifest whose pages do not
    # give its content id must fail before any datapoint is yielded, as the joined read does.
    store = ObjectStore(tmp_path)
    ids = b"".join(_ids(9000))
    with store.writer() as writer:
        _, dataset = build_dataset(writer, ids, Format("jsonl"))
    assert len(dataset.slices) > 1
    if damage == "a slice dropped":
        bad = msgspec.structs.replace(dataset, slices=dataset.slices[1:])
    elif damage == "a slice past its page":
        last = dataset.slices[-1]
        moved = msgspec.structs.replace(last, stop=last.stop + 1)
        bad = msgspec.structs.replace(dataset, slices=(*dataset.slices[:-1], moved))
    else:
        bad = msgspec.structs.replace(dataset, count=dataset.count + 1)
    message = "slice outside its page" if damage == "a slice past its page" else "content id"
    with pytest.raises(CorruptObject, match=f"corrupt dataset manifest: .*{message}"):
        next(iter_datapoint_oids(store, bad))
    with pytest.raises(CorruptObject, match=message):
        read_oid_list(store, bad)
    # A server checks a pushed dataset's slices where they lie, without joining its ids.
    pages = {s.page: store.read(s.page, Kind.PAGE)[1] for s in dataset.slices}
    check_slices(dataset, pages)
    with pytest.raises(CorruptObject, match=f"corrupt dataset manifest: .*{message}"):
        check_slices(bad, pages)


def test_runs_that_do_not_rebuild_the_ids_are_not_trusted(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    old = b"".join(_ids(3000))
    new = b"".join(_ids(3000, seed=1)[:10]) + old[10 * OID_SIZE :]
    with store.writer() as writer:
        _, base = build_dataset(writer, old, Format("jsonl"))
        # Claims the whole new list is the base's: wrong for its first ten ids.
        wrong = ([(True, 0, 3000)], b"")
        _, dataset = build_dataset(
            writer, new, Format("jsonl"), base=base, base_oids=old, runs=wrong
        )
    assert read_oid_list(store, dataset) == new
