"""The object store: write-once objects, loose or packed, re-hashed on read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsv import store as store_module
from dsv.errors import CorruptObject
from dsv.objects import Kind, hash_object
from dsv.pack import Pack, PackWriter
from dsv.packindex import scan_pack
from dsv.store import LOOSE_LIMIT, ObjectStore


def _bodies(n: int) -> list[bytes]:
    return [b'{"i":%d,"text":"%s"}' % (i, b"x" * (i % 50)) for i in range(n)]


def _varied(n: int, seed: int = 1) -> list[bytes]:
    """Datapoint-like bodies: shared field names, varied text (what a dictionary learns)."""
    import random

    rng = random.Random(seed)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(500)
    ]
    return [
        b'{"id":"q%d","inputs":{"question":"%s"},"tags":["%s"],"target":"%s"}'
        % (
            i,
            b" ".join(rng.choices(words, k=60)),
            rng.choice(words),
            b" ".join(rng.choices(words, k=40)),
        )
        for i in range(n)
    ]


@pytest.fixture(params=["loose", "packed"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, list[bytes]]:
    store = ObjectStore(tmp_path / "objects")
    n = 10 if request.param == "loose" else LOOSE_LIMIT * 40
    with store.writer() as writer:
        oids = [writer.write(Kind.DATAPOINT, body) for body in _bodies(n)]
    return store, oids


def test_round_trip_and_lookup(filled: tuple[ObjectStore, list[bytes]]) -> None:
    store, oids = filled
    for body, oid in zip(_bodies(len(oids)), oids, strict=True):
        assert store.read(oid) == (Kind.DATAPOINT, body)
        assert store.contains(oid)
    assert list(store.read_many(oids[:5], Kind.DATAPOINT)) == _bodies(5)
    assert store.missing([*oids, b"\x01" * 32]) == {b"\x01" * 32}
    assert set(store.iter_oids()) == set(oids)
    assert store.find_prefix(oids[3].hex()[:10]) == {oids[3]}


@pytest.mark.parametrize("order", ["stored", "reversed", "shuffled", "repeats and loose"])
def test_read_many_streams_any_order_without_a_map_of_every_pack(
    tmp_path: Path, order: str
) -> None:
    # iter_records over a million datapoints must stay in bounded memory: a map of every
    # pack's ids costs ~130 MB per million, so read_many reads runs of blocks instead, and
    # id by id where the order is scattered.
    import random

    store = ObjectStore(tmp_path / "objects")
    bodies = _varied(3000)
    with store.writer() as writer:
        oids = [writer.write(Kind.DATAPOINT, body) for body in bodies]
    assert store.packs
    wanted = list(range(len(oids)))
    if order == "reversed":
        wanted.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(wanted)
    loose = b'{"loose":true}'
    loose_oid = hash_object(Kind.DATAPOINT, loose)
    by_index = {**dict(enumerate(oids)), -1: loose_oid}
    if order == "repeats and loose":
        store.write_loose(Kind.DATAPOINT, loose_oid, loose)
        wanted = [5, 5, -1, *range(100, 3000, 3), -1, 0]
    got = list(store.read_many(iter([by_index[i] for i in wanted]), Kind.DATAPOINT))
    assert got == [loose if i == -1 else bodies[i] for i in wanted]
    assert all(pack._positions is None for pack in store.packs)


def test_read_many_refuses_a_body_that_does_not_match_its_id(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with store.writer() as writer:
        oids = [writer.write(Kind.DATAPOINT, body) for body in _bodies(LOOSE_LIMIT * 40)]
    with pytest.raises(
        CorruptObject, match=f"object {oids[0].hex()} is a datapoint, expected a page"
    ):
        list(store.read_many(oids[:3], Kind.PAGE))


def test_missing_and_wrong_kind(filled: tuple[ObjectStore, list[bytes]]) -> None:
    store, oids = filled
    with pytest.raises(CorruptObject, match=f"missing object {'ab' * 32}"):
        store.read(bytes.fromhex("ab" * 32))
    with pytest.raises(CorruptObject, match="is a datapoint, expected a commit"):
        store.read(oids[0], Kind.COMMIT)


def test_a_flipped_bit_is_reported_as_corrupt(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with store.writer() as writer:
        oid = writer.write(Kind.DATAPOINT, b'{"a":1}')
    path = tmp_path / "objects" / oid.hex()[:2] / oid.hex()[2:]
    os.chmod(path, 0o644)
    path.write_bytes(bytes([Kind.DATAPOINT]) + __import__("zstandard").compress(b'{"a":2}'))
    with pytest.raises(CorruptObject, match=f"corrupt object {oid.hex()}"):
        ObjectStore(tmp_path / "objects").read(oid)


def test_a_bulk_write_makes_one_pack_not_a_file_per_object(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with store.writer() as writer:
        for body in _bodies(20_000):
            writer.write(Kind.DATAPOINT, body, check_store=False)
    files = [f for _, _, fs in os.walk(tmp_path / "objects") for f in fs]
    assert len(files) == 2
    pack = next((tmp_path / "objects" / "pack").glob("*.pack"))
    scanned = list(scan_pack(pack))
    assert len(scanned) == 20_000
    assert {hash_object(k, b) for k, b in scanned} == set(store.iter_oids())


def test_an_aborted_write_leaves_nothing_visible(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with pytest.raises(RuntimeError), store.writer() as writer:
        for body in _bodies(LOOSE_LIMIT * 3):
            writer.write(Kind.DATAPOINT, body)
        raise RuntimeError("killed")
    assert list(store.iter_oids()) == []
    assert not list((tmp_path / "objects" / "pack").iterdir())


def test_a_truncated_pack_is_refused_by_scan(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with store.writer() as writer:
        for body in _bodies(LOOSE_LIMIT * 3):
            writer.write(Kind.DATAPOINT, body)
    pack = next((tmp_path / "objects" / "pack").glob("*.pack"))
    data = pack.read_bytes()
    broken = tmp_path / "broken.pack"
    broken.write_bytes(data[:-10])
    with pytest.raises(CorruptObject, match="checksum mismatch"):
        list(scan_pack(broken))


def test_a_read_finds_an_object_packed_since_the_packs_were_listed(tmp_path: Path) -> None:
    reader = ObjectStore(tmp_path / "objects")
    with reader.writer() as writer:
        oid = writer.write(Kind.COMMIT, b"fresh")
    assert reader.packs == []  # listed now, while the object is loose
    # What gc does in another process: pack it, then drop the loose file.
    other = ObjectStore(tmp_path / "objects")

    other.pack_dir.mkdir()
    packer = PackWriter(other.pack_dir)
    packer.add(Kind.COMMIT, oid, b"fresh")
    packer.finish()
    other.delete_loose(oid)
    assert reader.read(oid) == (Kind.COMMIT, b"fresh")


def test_once_its_packs_are_open_a_store_reads_packed_objects_without_trying_loose_files(
    filled: tuple[ObjectStore, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, oids = filled
    store = ObjectStore(store.path)
    tried: list[bytes] = []
    real = ObjectStore._loose_path

    def counting(self: ObjectStore, oid: bytes) -> Path:
        tried.append(oid)
        return real(self, oid)

    monkeypatch.setattr(ObjectStore, "_loose_path", counting)
    for oid in oids:
        store.read(oid)
    # fsck reads every object one by one: a failed open for each cost it 2x at 1M.
    assert len(tried) == (len(oids) if not store.packs else 1)


def test_a_pack_removed_between_listing_and_opening_is_skipped(
    filled: tuple[ObjectStore, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, oids = filled
    real = os.listdir

    def listing_with_a_pack_gc_just_removed(path: object) -> list[str]:
        return [*real(path), "pack-" + "ab" * 32 + ".idx"]  # type: ignore[arg-type]

    monkeypatch.setattr("dsv.store.os.listdir", listing_with_a_pack_gc_just_removed)
    fresh = ObjectStore(store.path)
    assert fresh.read(oids[-1]) == (Kind.DATAPOINT, _bodies(len(oids))[-1])
    # A damaged index is still an error, not a pack to skip.
    store.pack_dir.mkdir(exist_ok=True)
    (store.pack_dir / "pack-damaged.pack").write_bytes(b"not a pack")
    (store.pack_dir / "pack-damaged.idx").write_bytes(b"not an index")
    with pytest.raises(CorruptObject, match=r"pack index pack-damaged\.idx is truncated"):
        ObjectStore(store.path).reload()


def test_merging_packs_keeps_every_object_in_one_valid_pack(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    bodies = [body * 40 for body in _bodies(3000)]  # ~1.7 KiB: a few blocks a pack
    names = []
    for part in range(3):
        writer = PackWriter(store.pack_dir)
        for body in bodies[part::3]:
            writer.add(Kind.DATAPOINT, hash_object(Kind.DATAPOINT, body), body)
        names.append(writer.finish())
    store.reload()
    merged = store.merge_packs([names[2], names[0], names[1]])
    assert [p.name for p in store.packs] == [merged]
    assert sorted(os.listdir(store.pack_dir)) == [f"{merged}.idx", f"{merged}.pack"]
    for body in bodies:
        assert store.read(hash_object(Kind.DATAPOINT, body)) == (Kind.DATAPOINT, body)
    # The blocks were copied in the order given; the trailer checksum covers the new file.
    in_order = [body for _, body in scan_pack(store.pack_dir / f"{merged}.pack")]
    assert in_order == bodies[2::3] + bodies[0::3] + bodies[1::3]


def _packs_of(store: ObjectStore, sizes: list[int]) -> list[bytes]:
    """One pack per size, that many datapoints each; every oid, in pack order."""
    store.pack_dir.mkdir(parents=True, exist_ok=True)
    oids = []
    n = 0
    for size in sizes:
        writer = PackWriter(store.pack_dir)
        for body in (b'{"n":%d}' % i for i in range(n, n + size)):
            oids.append(hash_object(Kind.DATAPOINT, body))
            writer.add(Kind.DATAPOINT, oids[-1], body)
        writer.finish()
        n += size
    store.reload()
    return oids


def test_consolidation_merges_the_small_packs_and_keeps_the_large_ones(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    # 1000 is at least twice all the smaller ones together (463); 300 is not (163).
    sizes = [1000, 300, 100, 40, 10, 5, 2, 1, 1, 1, 1, 1, 1]
    oids = _packs_of(store, sizes)
    big = max(store.packs, key=lambda p: p.count).name
    merged = store.consolidate(most=12)
    assert merged is not None
    assert sorted(p.count for p in store.packs) == [463, 1000]
    assert {p.name for p in store.packs} == {big, merged}
    assert len(os.listdir(store.pack_dir)) == 4
    for n, oid in enumerate(oids):
        assert store.read(oid) == (Kind.DATAPOINT, b'{"n":%d}' % n)
    assert store.consolidate(most=1) is None  # 1000 >= 2 * 463: nothing more to merge


def _assert_blocks_vouch_for_the_ids_of_their_bodies(pack: Pack) -> None:
    """Each data block's ids from the index, in pack order, are those hashing its bodies finds."""
    from dsv import pack as pack_module
    from dsv.objects import hash_objects

    for block in range(pack.nblocks):
        if pack.read_block_data(block)[1] == pack_module.DICTIONARY_BLOCK:
            continue
        starts, bodies = pack.block_bodies(block)
        assert pack.vouched_oids(block, Kind.DATAPOINT, starts, bodies) == hash_objects(
            Kind.DATAPOINT, bodies
        )


@pytest.mark.usefixtures("small_blocks")
def test_a_merged_pack_stores_its_own_order_and_merges_again(tmp_path: Path) -> None:
    """Merging copies each pack's blocks; the merged index must list its entries in its own
    pack order, so that it verifies, its blocks are trusted whole, and it merges again."""

    store = ObjectStore(tmp_path / "objects")
    bodies = _varied(1500)
    for at in range(0, 1500, 500):
        _pack_of(store.pack_dir, bodies[at : at + 500]).close()
    store.reload()
    once = store.merge_packs([p.name for p in store.packs])
    _pack_of(store.pack_dir, _varied(300, seed=2)).close()
    store.reload()
    twice = store.merge_packs([p.name for p in store.packs])
    assert once != twice and [p.name for p in store.packs] == [twice]
    merged = store.packs[0]
    assert merged.verify() is None
    assert merged.pack_order() is merged._stored_order  # the stored order holds
    _assert_blocks_vouch_for_the_ids_of_their_bodies(merged)
    oids = [hash_object(Kind.DATAPOINT, b) for b in [*bodies, *_varied(300, seed=2)]]
    assert list(store.read_many(iter(oids), Kind.DATAPOINT)) == [
        *bodies,
        *_varied(300, seed=2),
    ]


def test_consolidation_leaves_few_packs_alone(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    _packs_of(store, [1] * 12)
    before = sorted(os.listdir(store.pack_dir))
    assert store.consolidate(most=12) is None
    assert sorted(os.listdir(store.pack_dir)) == before
    assert ObjectStore(tmp_path / "nothing").consolidate() is None


def test_a_failed_consolidation_is_not_the_writes_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStore(tmp_path / "objects")
    oids = _packs_of(store, [1] * 20)

    def disk_full(self: PackWriter) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PackWriter, "finish", disk_full)
    store.tidy()
    assert len(store.packs) == 20
    assert all(store.read(oid)[0] == Kind.DATAPOINT for oid in oids)


def test_a_reader_finds_objects_another_process_merged_while_it_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader lists the pack directory, then opens each pack; a consolidation in between
    # publishes the merged pack and deletes the listed ones. Listing once more finds it.
    oids = _packs_of(ObjectStore(tmp_path / "objects"), [10] * 13)
    other = ObjectStore(tmp_path / "objects")
    reader = ObjectStore(tmp_path / "objects")
    assert reader.read(oids[0])[0] == Kind.DATAPOINT  # its packs are open
    writer = PackWriter(tmp_path / "objects" / "pack")  # a commit of another process
    fresh = hash_object(Kind.DATAPOINT, b'{"fresh":1}')
    writer.add(Kind.DATAPOINT, fresh, b'{"fresh":1}')
    writer.finish()
    merged: list[str | None] = []
    opening = store_module.Pack

    def merge_first(directory: Path, name: str) -> Pack:
        if not merged:
            monkeypatch.setattr(store_module, "Pack", Pack)
            merged.append(other.consolidate())
            monkeypatch.setattr(store_module, "Pack", merge_first)
        return opening(directory, name)

    monkeypatch.setattr(store_module, "Pack", merge_first)
    assert reader.read(fresh)[0] == Kind.DATAPOINT
    assert merged[0] is not None
    assert all(reader.read(oid)[0] == Kind.DATAPOINT for oid in oids)


def test_a_bulk_read_survives_packs_another_process_removed(tmp_path: Path) -> None:
    oids = _packs_of(ObjectStore(tmp_path / "objects"), [10] * 13)
    reader = ObjectStore(tmp_path / "objects")
    assert reader.read(oids[0])[0] == Kind.DATAPOINT
    writer = ObjectStore(tmp_path / "objects")
    body = b'{"late":1}'
    late = hash_object(Kind.DATAPOINT, body)
    with writer.writer() as objects:
        objects.add(Kind.DATAPOINT, late, body)
        for n in range(LOOSE_LIMIT + 1):  # enough to make it a pack
            objects.write(Kind.DATAPOINT, b'{"more":%d}' % n)
    assert writer.consolidate() is not None
    # The unknown id makes the reader reload mid-read, while it still holds the old packs.
    got = reader.read_bulk([*oids[:5], late, *oids[5:]], Kind.DATAPOINT)
    assert got[5] == body
    assert got[:5] + got[6:] == [b'{"n":%d}' % n for n in range(130)]
    reader.close()


@pytest.mark.parametrize(
    ("bodies", "block_size"),
    [(_bodies(2000), 2048), (_varied(2000), 48 << 10)],
    ids=["one frame a block", "dictionary and frames"],
)
def test_a_bulk_read_decompresses_each_frame_once_in_any_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bodies: list[bytes], block_size: int
) -> None:
    import random

    from dsv import pack as pack_module

    # Small blocks: many of them, and (for varied bodies) a dictionary and many frames.
    monkeypatch.setattr(pack_module, "BLOCK_SIZE", block_size)
    monkeypatch.setattr(pack_module, "DICTIONARY_SIZE", 8 << 10)
    monkeypatch.setattr(pack_module, "FRAME_SIZE", 4096)
    store = ObjectStore(tmp_path / "objects")
    with store.writer() as writer:
        oids = [writer.write(Kind.DATAPOINT, body, check_store=False) for body in bodies]
    (packed,) = store.packs
    assert packed.nblocks > 20
    assert packed.dictionaries == (block_size > 4096)
    loads: list[tuple[int, int]] = []
    real = Pack.load_frames

    def counting(self: Pack, requests: list[tuple[int, list[int]]], **options: int) -> object:
        loads.extend((block, frame) for block, frames in requests for frame in frames)
        return real(self, requests, **options)

    monkeypatch.setattr(Pack, "load_frames", counting)
    # Scattered, repeated and out of storage order, as a diff asks for them.
    wanted = [*random.Random(3).sample(range(2000), 300), 7, 7, 1999]
    got = dict(store.iter_bulk([oids[i] for i in wanted], Kind.DATAPOINT))
    assert got == {j: bodies[i] for j, i in enumerate(wanted)}
    assert loads and sorted(loads) == sorted(set(loads))
    assert len(loads) <= len(set(wanted))
    assert store.read_bulk([oids[i] for i in wanted], Kind.DATAPOINT) == [bodies[i] for i in wanted]


def _pack_of_shared_prefixes(tmp_path: Path) -> tuple[Pack, list[bytes], list[bytes]]:
    """A pack of ids many of which share their first 8 bytes, its ids, and absent such ids."""
    directory = tmp_path / "pack"
    directory.mkdir()
    oids = sorted({bytes([a]) * 8 + bytes([b]) * 24 for a in (0, 7, 255) for b in range(0, 250, 2)})
    writer = PackWriter(directory)
    for oid in oids:
        writer.add(Kind.DATAPOINT, oid, oid)
    absent = [bytes([a]) * 8 + bytes([b]) * 24 for a in (0, 7, 9, 255) for b in (1, 3, 251)]
    return Pack(directory, writer.finish()), oids, absent


def test_bulk_lookups_tell_apart_oids_that_share_their_first_bytes(tmp_path: Path) -> None:
    # Bulk lookups bisect the oids' first 8 bytes; the whole oid must still decide.
    pack, oids, absent = _pack_of_shared_prefixes(tmp_path)
    asked = sorted([*oids[::3], *absent, oids[5], oids[-1]])
    assert pack.find_sorted(asked) == [pack.find(oid) for oid in asked]
    assert [pack.oid_at(at) for at in pack.find_sorted(oids)] == oids
    assert set(pack.find_sorted(sorted(absent))) == {-1}


def test_a_pack_looked_up_often_finds_the_same_by_its_prefix_column(tmp_path: Path) -> None:
    # Past a few thousand lookups `find` bisects the oids' first 8 bytes instead.
    from dsv.pack import _FINDS_BEFORE_PREFIXES

    pack, oids, absent = _pack_of_shared_prefixes(tmp_path)
    asked = [*oids, *absent]
    by_whole = [pack.find(oid) for oid in asked]
    while pack._prefix_col is None:
        assert pack._finds <= _FINDS_BEFORE_PREFIXES
        pack.find(oids[0])
    assert [pack.find(oid) for oid in asked] == by_whole
    assert [pack.oid_at(at) for at in by_whole[: len(oids)]] == oids
    assert set(by_whole[len(oids) :]) == {-1}


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 KiB, so that a pack of a few thousand objects gets a dictionary."""
    from dsv import pack as pack_module

    monkeypatch.setattr(pack_module, "BLOCK_SIZE", 64 << 10)
    monkeypatch.setattr(pack_module, "DICTIONARY_SIZE", 16 << 10)
    monkeypatch.setattr(pack_module, "FRAME_SIZE", 4096)


def _pack_of(directory: Path, bodies: list[bytes]) -> Pack:
    directory.mkdir(parents=True, exist_ok=True)
    writer = PackWriter(directory)
    writer.add_many(Kind.DATAPOINT, [hash_object(Kind.DATAPOINT, b) for b in bodies], bodies)
    return Pack(directory, writer.finish())


@pytest.mark.usefixtures("small_blocks")
def test_a_pack_learns_a_dictionary_and_reads_one_frame_for_one_object(tmp_path: Path) -> None:
    from dsv import pack as pack_module

    bodies = _varied(3000)  # ~1.7 MiB: many blocks
    pack = _pack_of(tmp_path / "pack", bodies)
    assert pack.version == 2 and pack.dictionaries == 1
    by_oid = {hash_object(Kind.DATAPOINT, b): b for b in bodies}
    for at in range(0, pack.count, 97):
        block = pack.location(at)[0]
        [[(start, raw)]] = pack.load_frames([(block, [pack.frame_of(at)])])
        # One frame of about FRAME_SIZE, not the 1 MiB block, holds the body.
        assert len(raw) < pack_module.FRAME_SIZE + max(map(len, bodies))
        assert bytes(pack.entry_in(raw, at, start)[1]) == by_oid[pack.oid_at(at)]
        assert pack.read_at(at) == (Kind.DATAPOINT, by_oid[pack.oid_at(at)])
    assert [body for _, body in scan_pack(pack.pack_path)] == bodies


@pytest.mark.usefixtures("small_blocks")
def test_a_small_pack_gets_no_dictionary(tmp_path: Path) -> None:
    # Under 8 full blocks a dictionary would cost more bytes than it saves.
    bodies = _varied(600)
    pack = _pack_of(tmp_path / "pack", bodies)
    assert pack.nblocks > 4 and pack.dictionaries == 0
    assert [body for _, body in scan_pack(pack.pack_path)] == bodies


def _write_version_1_pack(directory: Path, bodies: list[bytes]) -> str:
    """A pack and index of format version 1 (docs/format.md §4), laid out by hand."""
    import struct

    import blake3
    import zstandard

    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    pack, blocks, where = bytearray(b"DSVPACK\n" + struct.pack("<II", 1, 0)), [], []
    for start in range(0, len(bodies), 100):
        part = bodies[start : start + 100]
        head = struct.pack(f"<I{len(part)}B{len(part)}I", len(part), *[Kind.DATAPOINT] * len(part),
                           *map(len, part))  # fmt: skip
        raw = head + b"".join(part)
        frame = zstandard.ZstdCompressor(level=3).compress(raw)
        offset = len(head)
        for body in part:
            where.append((len(blocks), offset, len(body)))
            offset += len(body)
        blocks.append(struct.pack("<QII", len(pack), len(frame), len(raw)))
        pack += struct.pack("<II", len(frame), len(raw)) + frame
    trailer = blake3.blake3(pack).digest()
    order = sorted(range(len(oids)), key=oids.__getitem__)
    fanout = [sum(oid[0] <= b for oid in oids) for b in range(256)]
    idx = b"".join([
        b"DSVIDX\n\x00" + struct.pack("<III", 1, len(oids), len(blocks)),
        struct.pack("<256I", *fanout),
        b"".join(oids[i] for i in order),
        *(struct.pack(f"<{len(order)}I", *(where[i][c] for i in order)) for c in range(3)),
        bytes(Kind.DATAPOINT for _ in order),
        b"".join(blocks),
        trailer,
    ])  # fmt: skip
    name = f"pack-{trailer.hex()}"
    (directory / f"{name}.pack").write_bytes(bytes(pack) + trailer)
    (directory / f"{name}.idx").write_bytes(idx + blake3.blake3(idx).digest())
    return name


@pytest.mark.usefixtures("small_blocks")
def test_version_1_packs_are_read_and_merged_with_new_ones(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    old, new = _varied(2500, seed=2), _varied(2500, seed=3)
    first = _write_version_1_pack(store.pack_dir, old)
    (packed,) = store.packs
    assert packed.version == 1 and packed.nblocks == 25  # enough for batched reads
    wanted = [hash_object(Kind.DATAPOINT, b) for b in old]
    assert store.read_bulk(wanted[::-3], Kind.DATAPOINT) == old[::-3]
    second = _pack_of(store.pack_dir, new).name
    store.reload()
    merged = store.merge_packs([first, second])
    (packed,) = store.packs
    assert packed.version == 2 and packed.dictionaries == 1
    assert [body for _, body in scan_pack(store.pack_dir / f"{merged}.pack")] == old + new
    everything = [hash_object(Kind.DATAPOINT, b) for b in old + new]
    assert store.read_bulk(everything[::-1], Kind.DATAPOINT) == (old + new)[::-1]


@pytest.mark.usefixtures("small_blocks")
def test_merged_packs_keep_each_block_with_its_own_dictionary(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    parts = [_varied(2000, seed=s) for s in (4, 5, 6)]
    names = [_pack_of(store.pack_dir, part).name for part in parts]
    store.reload()
    merged = store.merge_packs(names)
    (packed,) = store.packs
    assert packed.dictionaries == 3
    assert [body for _, body in scan_pack(store.pack_dir / f"{merged}.pack")] == [
        b for part in parts for b in part
    ]
    for part in parts:
        oids = [hash_object(Kind.DATAPOINT, b) for b in part]
        assert store.read_bulk(oids[::7], Kind.DATAPOINT) == part[::7]


@pytest.mark.usefixtures("small_blocks")
def test_a_damaged_dictionary_is_reported_as_corrupt(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    bodies = _varied(3000)
    pack = _pack_of(store.pack_dir, bodies)
    data = bytearray(pack.pack_path.read_bytes())
    pack.close()
    # The dictionary block comes first, right after the 16-byte pack header and its own.
    for at in range(40, 4000, 50):
        data[at] ^= 0xFF
    os.chmod(pack.pack_path, 0o644)
    pack.pack_path.write_bytes(bytes(data))
    store.reload()
    with pytest.raises(CorruptObject):
        store.read_bulk([hash_object(Kind.DATAPOINT, b) for b in bodies[::5]], Kind.DATAPOINT)
    with pytest.raises(CorruptObject, match="checksum mismatch"):
        list(scan_pack(pack.pack_path))


@pytest.mark.usefixtures("small_blocks")
def test_frames_end_where_bodies_end_whatever_the_bodies(tmp_path: Path) -> None:
    import random

    from dsv import pack as pack_module

    rng = random.Random(8)
    varied = _varied(4000, seed=9)
    # Empty bodies anywhere (also last in a block), and blocks of tiny bodies whose header
    # alone is longer than a frame.
    bodies = [b"" if rng.random() < 0.1 else body for body in varied[:2000]]
    bodies += [b"x%d" % i for i in range(6000)] + varied[2000:]
    writer = PackWriter(tmp_path)
    for i, body in enumerate(bodies):
        writer.add(Kind.DATAPOINT, i.to_bytes(32, "big"), body)
    pack = Pack(tmp_path, writer.finish())
    assert pack.dictionaries == 1
    ends = {pack.location(at)[1] + pack.location(at)[2] for at in range(pack.count)}
    for block in range(pack.nblocks):
        rlen, dictionary, frames, _ = pack.read_block_data(block)
        if dictionary == pack_module.DICTIONARY_BLOCK:
            continue
        cut = 0
        for _, raw in frames:
            assert raw > 0
            cut += raw
            assert cut == rlen or cut in ends
    # Every body read back through the frame holding it (ids made up: not re-hashed here).
    by_id = {i.to_bytes(32, "big"): body for i, body in enumerate(bodies)}
    for at in range(pack.count):
        [[(start, raw)]] = pack.load_frames([(pack.location(at)[0], [pack.frame_of(at)])])
        assert bytes(pack.entry_in(raw, at, start)[1]) == by_id[pack.oid_at(at)]


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("damage", ["frame table", "block column", "kind column"])
def test_a_damaged_index_is_reported_as_corrupt(tmp_path: Path, damage: str) -> None:
    import struct

    bodies = _varied(3000)
    store = ObjectStore(tmp_path / "objects")
    pack = _pack_of(store.pack_dir, bodies)
    count, nblocks = pack.count, pack.nblocks
    assert nblocks > 20  # reads in batches of blocks, by frame
    first_frame_of_block_3 = pack._block_table[3][4]
    pack.close()
    idx = bytearray(pack.idx_path.read_bytes())
    columns = 24 + 1024 + 32 * count
    if damage == "frame table":
        # The second frame of a block made as long as nothing.
        at = columns + 17 * count + 24 * nblocks + 8 * (first_frame_of_block_3 + 1)
        idx[at : at + 8] = idx[at - 8 : at]
    elif damage == "block column":
        for i in range(0, count, 7):  # some entries point past the last block
            idx[columns + 4 * i : columns + 4 * i + 4] = struct.pack("<I", 9999)
    else:
        idx[columns + 16 * count : columns + 17 * count] = b"\x63" * count
    os.chmod(pack.idx_path, 0o644)
    pack.idx_path.write_bytes(bytes(idx))
    store.reload()
    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    with pytest.raises(CorruptObject, match=f"pack {pack.name}"):
        store.read_bulk(oids, Kind.DATAPOINT)
    if damage == "kind column":
        with pytest.raises(CorruptObject, match=f"pack {pack.name}"):
            store.read(oids[5])


@pytest.mark.usefixtures("small_blocks")
def test_the_index_stores_each_blocks_entries_in_pack_order(tmp_path: Path) -> None:
    """Index version 3 stores the pack order: the ids it gives for each block are the ids of
    the block's bodies, as hashing them finds."""
    pack = _pack_of(tmp_path / "pack", _varied(3000))
    assert pack.idx_version == 3 and pack.nblocks > 20
    _assert_blocks_vouch_for_the_ids_of_their_bodies(pack)


@pytest.mark.usefixtures("small_blocks")
def test_an_index_of_version_2_is_read_and_its_order_found_by_sorting(tmp_path: Path) -> None:
    """Indexes written before format version 9 have no stored order: a reader sorts the
    entries to find it, and trusts and reads the blocks as before."""
    import struct

    import blake3

    bodies = _varied(3000)
    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    store = ObjectStore(tmp_path / "objects")
    pack = _pack_of(store.pack_dir, bodies)
    count, stored = pack.count, list(pack.pack_order())
    pack.close()
    idx = bytearray(pack.idx_path.read_bytes())
    at = 24 + 1024 + 32 * count + 12 * count
    del idx[at : at + 4 * count]  # the order column: version 2 has none
    idx[8:12] = struct.pack("<I", 2)
    idx[-32:] = blake3.blake3(bytes(idx[:-32])).digest()
    os.chmod(pack.idx_path, 0o644)
    pack.idx_path.write_bytes(bytes(idx))
    store.reload()
    older = store.packs[0]
    assert (older.idx_version, older.version) == (2, 2) and older.verify() is None
    assert list(older.pack_order()) == stored
    assert list(store.read_many(iter(oids), Kind.DATAPOINT)) == bodies
    assert older.block_trusted(older.location(older.find(oids[0]))[0])


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("lie", ["swapped in a block", "swapped across blocks"])
def test_a_stored_pack_order_that_lies_is_not_believed(tmp_path: Path, lie: str) -> None:
    """An index whose checksum holds but whose pack order pairs ids with the wrong bodies (a
    faulty writer's) must not make a read take a body for another id: the read checks the
    order against the block, and re-hashes where they disagree."""
    import struct

    import blake3

    bodies = _varied(3000)
    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    store = ObjectStore(tmp_path / "objects")
    pack = _pack_of(store.pack_dir, bodies)
    count = pack.count
    order = list(pack.pack_order())
    first_of_block_1 = next(k for k, i in enumerate(order) if pack.location(i)[0] == 1)
    pack.close()
    k = 0 if lie == "swapped in a block" else first_of_block_1 - 1
    order[k], order[k + 1] = order[k + 1], order[k]
    idx = bytearray(pack.idx_path.read_bytes())
    at = 24 + 1024 + 32 * count + 12 * count
    idx[at : at + 4 * count] = struct.pack(f"<{count}I", *order)
    idx[-32:] = blake3.blake3(bytes(idx[:-32])).digest()
    os.chmod(pack.idx_path, 0o644)
    pack.idx_path.write_bytes(bytes(idx))
    store.reload()
    assert store.packs[0].index_intact()
    assert list(store.read_many(iter(oids), Kind.DATAPOINT)) == bodies
    assert store.packs[0].verify() == "index pack order is wrong"  # what fsck reports


@pytest.mark.usefixtures("small_blocks")
def test_an_index_naming_more_bytes_than_its_pack_holds_is_refused_on_opening(
    tmp_path: Path,
) -> None:
    import struct

    pack = _pack_of(tmp_path / "pack", _varied(2000))
    count, nblocks, name = pack.count, pack.nblocks, pack.name
    pack.close()
    idx = bytearray(pack.idx_path.read_bytes())
    table = 24 + 1024 + 49 * count
    for field, value in [(8, 1 << 31), (12, 1 << 30)]:  # a compressed length, a raw length
        damaged = bytearray(idx)
        struct.pack_into("<I", damaged, table + 24 * (nblocks // 2) + field, value)
        os.chmod(pack.idx_path, 0o644)
        pack.idx_path.write_bytes(bytes(damaged))
        # Found before any read would allocate what the index says.
        with pytest.raises(CorruptObject, match=f"{name}.idx names bytes its pack does not hold"):
            Pack(pack.idx_path.parent, name)


@pytest.mark.usefixtures("small_blocks")
def test_a_damaged_pack_is_not_merged_into_a_fresh_checksum(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    parts = [_varied(1000, seed=s) for s in (7, 8)]
    names = [_pack_of(store.pack_dir, part).name for part in parts]
    damaged = store.pack_dir / f"{names[0]}.pack"
    data = bytearray(damaged.read_bytes())
    data[12] ^= 1  # the header's reserved field: no read of an object would notice
    os.chmod(damaged, 0o644)
    damaged.write_bytes(bytes(data))
    store.reload()
    with pytest.raises(CorruptObject, match=f"pack {names[0]}: pack checksum mismatch"):
        store.merge_packs(names)
    assert sorted(p.name for p in store.packs) == sorted(names)  # both kept, as they were


@pytest.mark.parametrize("hashed", [False, True])
def test_missing_above_4096_ids_finds_each_in_packs_and_loose_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: bool
) -> None:
    # Above 4096 ids, missing bisects each pack's index per id instead of walking it, and
    # from 65,536 on it looks them up by hash (`hashed` lowers that limit to every request);
    # the answer must be the same: packed ids in two packs, a loose one, and absent ones.
    if hashed:
        monkeypatch.setattr("dsv.store._HASHED_LOOKUP", 1)
    store = ObjectStore(tmp_path / "objects")
    bodies = _bodies(6000)
    with store.writer() as writer:
        first = [writer.write(Kind.DATAPOINT, b) for b in bodies[:3000]]
    with store.writer() as writer:
        second = [writer.write(Kind.DATAPOINT, b) for b in bodies[3000:5999]]
    assert len(store.packs) == 2
    loose = hash_object(Kind.DATAPOINT, bodies[5999])
    store.write_loose(Kind.DATAPOINT, loose, bodies[5999])
    absent = [hash_object(Kind.DATAPOINT, b"absent %d" % i) for i in range(4500)]
    asked = [*first, *second, loose, *absent]
    # Over 4096 left after the packs: the loose files are listed; under: stat one by one.
    assert store.missing(asked) == set(absent)
    assert store.missing([*first, *second, loose, *absent[:100]]) == set(absent[:100])
    assert store.missing(asked[:4000]) == set()
    assert store.missing(absent * 4) == set(absent)
    assert store.missing([*first, *second]) == set()
    # Few ids against big packs: each is looked up in each pack's sorted index.
    assert store.missing([*first[:100], *second[-100:], *absent[:100]]) == set(absent[:100])
    assert store.missing([first[0], second[0], loose, absent[0]]) == {absent[0]}


@pytest.mark.usefixtures("small_blocks")
def test_a_writer_given_samples_learns_its_dictionary_from_them(tmp_path: Path) -> None:
    # gc writes pages before datapoints: a first full block without datapoints teaches nothing,
    # so a writer that knows its datapoints ahead is given samples of them.
    import random

    rng = random.Random(5)
    pages = [rng.randbytes(4000) for _ in range(200)]  # ~800 KiB of ids: over 8 full blocks
    bodies = _varied(2000)
    oids = [hash_object(Kind.PAGE, p) for p in pages]
    oids += [hash_object(Kind.DATAPOINT, b) for b in bodies]

    def write(directory: Path, **options: object) -> Pack:
        directory.mkdir()
        writer = PackWriter(directory, **options)  # type: ignore[arg-type]
        writer.add_many(Kind.PAGE, oids[: len(pages)], pages)
        writer.add_many(Kind.DATAPOINT, oids[len(pages) :], bodies)
        return Pack(directory, writer.finish())

    plain = write(tmp_path / "plain")
    assert plain.dictionaries == 0
    taught = write(tmp_path / "taught", samples=bodies[::10])
    # With it, the datapoints are cut into frames: a reader of one decompresses its frame.
    assert taught.dictionaries == 1 and taught.nblocks > plain.nblocks
    at = taught.find(oids[-1])
    [[(start, raw)]] = taught.load_frames([(taught.location(at)[0], [taught.frame_of(at)])])
    assert len(raw) < 4096 + max(map(len, bodies)) < 64 << 10
    assert bytes(taught.entry_in(raw, at, start)[1]) == bodies[-1]
    assert [body for _, body in scan_pack(taught.pack_path)] == [*pages, *bodies]
    # Compressing the frames on threads writes the same bytes.
    threaded = write(tmp_path / "threaded", samples=bodies[::10], threads=2)
    assert threaded.name == taught.name
    # A denser level: the same objects in fewer bytes, read back the same.
    dense = write(tmp_path / "dense", samples=bodies[::10], threads=2, level=15)
    assert dense.pack_path.stat().st_size < taught.pack_path.stat().st_size
    assert [body for _, body in scan_pack(dense.pack_path)] == [*pages, *bodies]
    for at in range(0, dense.count, 41):
        assert dense.read_at(at)[1] == taught.read_at(taught.find(dense.oid_at(at)))[1]


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("frames", ["with checksums", "of before"])
def test_bulk_reads_trust_checksummed_frames_and_re_hash_older_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, frames: str
) -> None:
    import zstandard

    from dsv import blockruns, materialize, objects

    if frames == "of before":
        request.getfixturevalue("packs_of_before")
    bodies = _varied(3000)
    store = ObjectStore(tmp_path / "objects")
    pack = _pack_of(store.pack_dir, bodies)
    store.reload()
    assert pack.dictionaries == 1 and pack.nblocks > 20  # one-frame and many-frame blocks
    data = pack.pack_path.read_bytes()
    summed = {
        zstandard.get_frame_parameters(data[start:]).has_checksum for start in _frame_starts(pack)
    }
    assert summed == {frames == "with checksums"}
    hashed: list[int] = []
    real = objects.hash_objects

    def counting(kind: Kind, many: list[bytes]) -> list[bytes]:
        hashed.append(len(many))
        return real(kind, many)

    def counting_one(kind: Kind, body: bytes | memoryview) -> bytes:
        return counting(kind, [bytes(body)])[0]

    for module in (objects, blockruns, materialize):
        monkeypatch.setattr(module, "hash_objects", counting)
    monkeypatch.setattr(store_module, "hash_object", counting_one)
    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    assert list(store.read_many(oids, Kind.DATAPOINT)) == bodies
    assert store.read_bulk(oids[::-7], Kind.DATAPOINT) == bodies[::-7]  # by frame
    assert store.read_bulk(oids[:5], Kind.DATAPOINT) == bodies[:5]  # block by block
    path = tmp_path / "out.jsonl"
    monkeypatch.setattr(materialize, "PARALLEL_MIN", 0)
    materialize.write_jsonl(store, b"".join(oids), path)
    assert path.read_bytes() == b"\n".join([*bodies, b""])
    if frames == "with checksums":
        # Workers are other processes: what they hashed is not counted here, the file is.
        assert hashed == []
    else:
        assert sum(hashed) >= len(oids) + len(oids[::-7]) + 5


def _frame_starts(pack: Pack) -> list[int]:
    """Where each frame of `pack`'s data blocks starts in the pack file."""
    starts = []
    for block in range(pack.nblocks):
        _, dictionary, frames, _ = pack.read_block_data(block)
        if dictionary == 0xFFFFFFFF:
            continue
        at = pack._block_table[block][0] + 16 + 8 * len(frames)
        for compressed, _ in frames:
            starts.append(at)
            at += compressed
    return starts


def test_a_frame_that_fails_its_checksum_names_its_pack(tmp_path: Path) -> None:
    bodies = _varied(300)
    store = ObjectStore(tmp_path / "objects")
    pack = _pack_of(store.pack_dir, bodies)
    _, _, [(compressed, _)], _ = pack.read_block_data(0)
    end = _frame_starts(pack)[0] + compressed
    data = bytearray(pack.pack_path.read_bytes())
    data[end - 1] ^= 1  # the frame's checksum: the content still decompresses
    os.chmod(pack.pack_path, 0o644)
    pack.pack_path.write_bytes(bytes(data))
    store.reload()
    oids = [hash_object(Kind.DATAPOINT, b) for b in bodies]
    message = f"pack {pack.name}: block 0 is corrupt .*checksum"
    with pytest.raises(CorruptObject, match=message):
        list(store.read_many(oids, Kind.DATAPOINT))
    with pytest.raises(CorruptObject, match=message):
        store.read_bulk(oids, Kind.DATAPOINT)
