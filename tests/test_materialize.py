"""Writing a whole JSONL version on every core: the bytes, the digest, and refusals."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import pytest

from dsv import materialize
from dsv.blockruns import BlockRuns
from dsv.errors import BadState, CorruptObject
from dsv.objects import Kind, hash_object
from dsv.pack import Pack, PackWriter
from dsv.store import ObjectStore

N = 3000


def _body(i: int) -> bytes:
    return b'{"id":%d,"text":"%s"}' % (i, b"x" * (i % 97) * 24)  # ~1 KiB: several blocks


def _store(tmp_path: Path, packs: int, *, shuffled: bool = True) -> tuple[ObjectStore, list[bytes]]:
    """N datapoints spread over `packs` packs, each pack written in a shuffled order (or in
    the order of their numbers, as an add writes them)."""
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    oids = [hash_object(Kind.DATAPOINT, _body(i)) for i in range(N)]
    order = list(range(N))
    if shuffled:
        random.Random(packs).shuffle(order)
    for p in range(packs):
        writer = PackWriter(store.pack_dir)
        for i in order[p::packs]:
            writer.add(Kind.DATAPOINT, oids[i], _body(i))
        writer.finish()
    store.reload()
    return store, oids


@pytest.fixture(autouse=True)
def _parallel_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(materialize, "PARALLEL_MIN", 0)


@pytest.fixture(params=["runs", "mapped"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a worker reads: runs of blocks, and (once runs waste hashing) id by id."""
    if request.param == "mapped":
        monkeypatch.setattr(BlockRuns, "scattered", lambda self, taken: True)
    return str(request.param)


@pytest.mark.parametrize("packs", [1, 3])
@pytest.mark.parametrize("shuffled", [True, False])
def test_the_file_holds_every_body_in_order_and_its_digest_is_its_hash(
    tmp_path: Path, packs: int, shuffled: bool, reader: str
) -> None:
    store, oids = _store(tmp_path, packs, shuffled=shuffled)
    # Repeats and any order, as a dataset may have them.
    wanted = [oids[i] for i in [5, 2999, 0, 5, *range(1, 2999, 7)]]
    path = tmp_path / "out.jsonl"
    written = materialize.write_jsonl(store, b"".join(wanted), path)
    expected = b"".join(_body(oids.index(oid)) + b"\n" for oid in wanted)
    assert path.read_bytes() == expected
    assert written is not None
    assert written.digest == blake3.blake3(expected).digest()
    assert path.stat().st_mtime_ns <= written.published_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "out.jsonl"]


def test_a_system_without_copy_file_range_gets_the_ordinary_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two parts are joined by copy_file_range (Linux, FreeBSD): elsewhere the caller
    writes the file the ordinary way, rather than failing half way."""
    store, oids = _store(tmp_path, 1, shuffled=False)
    monkeypatch.delattr(os, "copy_file_range")
    assert materialize.write_jsonl(store, b"".join(oids), tmp_path / "out.jsonl") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects"]


def test_a_version_read_in_order_is_taken_a_block_at_a_time(tmp_path: Path) -> None:
    # A version lies in its pack in the order it lists its datapoints (add, push and fetch
    # write it so): one lookup per block, not one per datapoint.
    store, oids = _store(tmp_path, 1, shuffled=False)
    version = [oid for i, oid in enumerate(oids) if i % 100 != 7]  # some deleted
    version[1500:1500] = [oids[42], oids[2999]]  # and some from elsewhere
    runs = BlockRuns(store.packs, Kind.DATAPOINT)
    taken: list[bytes] = []
    calls = 0
    while len(taken) < len(version):
        taken += runs.take(version, len(taken))
        calls += 1
    assert taken == [_body(oids.index(oid)) for oid in version]
    blocks = store.packs[0].nblocks
    assert 1 < blocks < 6
    assert calls <= len(range(7, N, 100)) + blocks + 4
    assert runs.hashed == N  # each block hashed once


def test_datapoints_a_small_fetch_left_loose_are_written(tmp_path: Path, reader: str) -> None:
    store, oids = _store(tmp_path, 2, shuffled=False)
    loose = [_body(N + i) for i in range(3)]
    loose_oids = [hash_object(Kind.DATAPOINT, body) for body in loose]
    for oid, body in zip(loose_oids, loose, strict=True):
        store.write_loose(Kind.DATAPOINT, oid, body)
    version = [loose_oids[0], *oids[:1000], loose_oids[1], *oids[1000:], loose_oids[2]]
    path = tmp_path / "out.jsonl"
    materialize.write_jsonl(store, b"".join(version), path)
    bodies = [_body(i) for i in range(N)]
    assert path.read_bytes() == b"\n".join(
        [loose[0], *bodies[:1000], loose[1], *bodies[1000:], loose[2], b""]
    )


@pytest.mark.usefixtures("packs_of_before")
@pytest.mark.parametrize("where", ["own pack", "inside a run"])
def test_a_body_that_does_not_match_its_id_is_refused(
    tmp_path: Path, where: str, reader: str
) -> None:
    # Frames without checksums (packs written before format version 8) are re-hashed; a pack
    # whose frames carry them is trusted, and fsck finds its lies (test_maintenance).
    forged = hash_object(Kind.DATAPOINT, b'{"forged":true}')
    if where == "own pack":
        store, oids = _store(tmp_path, 2)
        writer = PackWriter(store.pack_dir)
        writer.add(Kind.DATAPOINT, forged, b'{"something":"else"}')
        writer.finish()
    else:
        store = ObjectStore(tmp_path / "objects")
        store.pack_dir.mkdir(parents=True)
        oids = [hash_object(Kind.DATAPOINT, _body(i)) for i in range(N)]
        writer = PackWriter(store.pack_dir)
        for i, oid in enumerate(oids):
            writer.add(Kind.DATAPOINT, oid, _body(i))
            if i == 99:
                writer.add(Kind.DATAPOINT, forged, b'{"something":"else"}')
        writer.finish()
    store.reload()
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")
    with pytest.raises(CorruptObject, match=f"corrupt object {forged.hex()}: content"):
        materialize.write_jsonl(store, b"".join([*oids[:100], forged, *oids[100:]]), path)
    assert path.read_bytes() == b"old\n"  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "out.jsonl"]


def test_a_missing_datapoint_is_named(tmp_path: Path) -> None:
    store, oids = _store(tmp_path, 3)
    absent = hash_object(Kind.DATAPOINT, b'{"absent":1}')
    with pytest.raises(CorruptObject, match=f"missing object {absent.hex()}"):
        materialize.write_jsonl(store, b"".join([*oids, absent]), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_block_whose_lengths_do_not_add_up_is_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, oids = _store(tmp_path, 1, shuffled=False)
    load = Pack._load_block
    monkeypatch.setattr(Pack, "_load_block", lambda self, *a: load(self, *a)[:-1])
    with pytest.raises(
        CorruptObject, match=r"pack pack-[0-9a-f]+: block [0-9]+ has the wrong size"
    ):
        materialize.write_jsonl(store, b"".join(oids), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_file_that_cannot_be_read_back_leaves_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, oids = _store(tmp_path, 1, shuffled=False)
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")

    def unreadable(parts: list[tuple[int, int | None]]) -> bytes:
        raise OSError(5, "Input/output error")

    # The written file is hashed on a thread while it is synced: the error must come back.
    monkeypatch.setattr(materialize, "digest_fds", unreadable)
    with pytest.raises(BadState, match=r"^cannot write .*out.jsonl: Input/output error$"):
        materialize.write_jsonl(store, b"".join(oids), path)
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "out.jsonl"]


class _CountingList(list[bytes]):
    """A list that counts the ids its slices copy: the work of matching runs."""

    copied = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        item = super().__getitem__(key)
        if isinstance(key, slice):
            _CountingList.copied += len(item)
        return item


def test_an_edit_near_the_start_of_a_version_of_small_datapoints_is_no_scattered_order(
    tmp_path: Path,
) -> None:
    # A block of small datapoints holds more than ten thousand. An edit at the 100th
    # datapoint reads a second block (the edit's) before the first is used up: judged
    # scattered, a million-datapoint checkout went id by id through a map of every pack.
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    count = 40_000
    bodies = [b'{"id":%d}' % i for i in range(count)]
    oids = [hash_object(Kind.DATAPOINT, body) for body in bodies]
    for part in (range(count - 1), range(count - 1, count)):  # the edit in a pack of its own
        writer = PackWriter(store.pack_dir)
        for i in part:
            writer.add(Kind.DATAPOINT, oids[i], bodies[i])
        writer.finish()
    store.reload()
    assert max(p.count // p.nblocks for p in store.packs) > 10_000
    version = oids[:-1]
    version[100] = oids[-1]
    runs = BlockRuns(store.packs, Kind.DATAPOINT)
    taken: list[bytes] = []
    while len(taken) < len(version):
        taken += runs.take(version, len(taken))
        assert not runs.scattered(len(taken))
    assert taken == [bodies[oids.index(oid)] for oid in version]
    assert runs.hashed == count


def test_a_scattered_order_still_goes_id_by_id_soon(tmp_path: Path) -> None:
    # The slack counts the largest blocks read, but a version in no order of its packs
    # (each block giving a body or two) is still found out within a few blocks.
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    count = 40_000
    bodies = [b'{"id":%d,"t":"%s"}' % (i, b"x" * 80) for i in range(count)]
    oids = [hash_object(Kind.DATAPOINT, body) for body in bodies]
    writer = PackWriter(store.pack_dir)
    for oid, body in zip(oids, bodies, strict=True):
        writer.add(Kind.DATAPOINT, oid, body)
    writer.finish()
    store.reload()
    assert store.packs[0].nblocks >= 3
    version = list(oids)
    random.Random(3).shuffle(version)
    runs = BlockRuns(store.packs, Kind.DATAPOINT)
    taken: list[bytes] = []
    while not runs.scattered(len(taken)):
        taken += runs.take(version, len(taken))
        assert len(taken) < 100
    assert taken == [bodies[oids.index(oid)] for oid in version[: len(taken)]]


@pytest.mark.parametrize("order", ["forward", "reversed", "pairs swapped"])
def test_matching_runs_costs_a_few_ids_per_id_whatever_the_order(
    tmp_path: Path, order: str
) -> None:
    # Comparing the rest of a block for every id made a reversed version 5x slower to write.
    store, oids = _store(tmp_path, 1, shuffled=False)
    version = list(oids)
    if order == "reversed":
        version.reverse()
    elif order == "pairs swapped":
        version[0::2], version[1::2] = version[1::2], version[0::2]
    runs = BlockRuns(store.packs, Kind.DATAPOINT)
    wanted = _CountingList(version)
    _CountingList.copied = 0
    taken: list[bytes] = []
    while len(taken) < len(version):
        taken += runs.take(wanted, len(taken))
    assert taken == [_body(oids.index(oid)) for oid in version]
    assert _CountingList.copied <= 8 * len(version)
    assert runs.hashed == N


def test_an_empty_body_beside_another_is_told_apart(tmp_path: Path) -> None:
    # An empty body starts where the next one does: the index's offset names both.
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    empty, body = hash_object(Kind.DATAPOINT, b""), hash_object(Kind.DATAPOINT, b'{"a":1}')
    writer = PackWriter(store.pack_dir)
    writer.add(Kind.DATAPOINT, empty, b"")
    writer.add(Kind.DATAPOINT, body, b'{"a":1}')
    writer.finish()
    store.reload()
    path = tmp_path / "out.jsonl"
    materialize.write_jsonl(store, body + empty + body, path)
    assert path.read_bytes() == b'{"a":1}\n\n{"a":1}\n'
