"""Packs received whole (protocol version 2): indexed where they lie, every hostile shape refused,
and blocks copied between packs as they are stored."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import blake3
import pytest
import zstandard

from dsv.canonical import canonicalize
from dsv.errors import CorruptObject
from dsv.objects import Kind, hash_object
from dsv.pack import MAX_RAW, Pack, PackWriter
from dsv.packindex import index_pack
from dsv.store import ObjectStore

MAGIC = b"DSVPACK\n"


def _bodies(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    return [
        canonicalize(
            json.dumps({"i": i, "t": " ".join(rng.choice(words) for _ in range(120))}).encode()
        )
        for i in range(n)
    ]


def _written(directory: Path, bodies: list[bytes]) -> tuple[str, list[bytes]]:
    writer = PackWriter(directory)
    oids = []
    for body in bodies:
        oid = hash_object(Kind.DATAPOINT, body)
        writer.add(Kind.DATAPOINT, oid, body)
        oids.append(oid)
    return writer.finish(), oids


def _raw_block(kinds: bytes, bodies: list[bytes]) -> bytes:
    return (
        struct.pack("<I", len(bodies))
        + kinds
        + struct.pack(f"<{len(bodies)}I", *map(len, bodies))
        + b"".join(bodies)
    )


def _hand_pack(path: Path, blocks: list[tuple[int, list[bytes], list[int] | None]]) -> Path:
    """A version-2 pack of data blocks given as (dictionary field, frames' raw bytes, raw sizes
    claimed or None for the true ones), framed and summed as format.md §4 says."""
    out = bytearray(struct.pack("<8sII", MAGIC, 2, 0))
    compressor = zstandard.ZstdCompressor()
    for dictionary, parts, claimed in blocks:
        frames = [compressor.compress(part) for part in parts]
        sizes = claimed or [len(part) for part in parts]
        out += struct.pack("<IIII", sum(map(len, frames)), sum(sizes), dictionary, len(frames))
        out += b"".join(struct.pack("<II", len(f), r) for f, r in zip(frames, sizes, strict=True))
        out += b"".join(frames)
    out += blake3.blake3(bytes(out)).digest()
    path.write_bytes(bytes(out))
    return path


def test_a_received_pack_is_indexed_exactly_as_its_writer_indexed_it(tmp_path: Path) -> None:
    bodies = _bodies(12000)
    name, oids = _written(tmp_path, bodies)
    assert Pack(tmp_path, name).dictionaries == 1  # large enough to have trained one
    received = tmp_path / "in"
    received.mkdir()
    copy = received / ".incoming.pack"
    copy.write_bytes((tmp_path / f"{name}.pack").read_bytes())
    seen: list[bytes] = []
    prepared = index_pack(copy, check=lambda kinds, ids, got: seen.extend(ids))
    assert prepared is not None and prepared.name == name
    assert seen == oids
    assert prepared.idx_tmp.read_bytes() == (tmp_path / f"{name}.idx").read_bytes()


def test_a_check_that_raises_stops_the_index(tmp_path: Path) -> None:
    name, _ = _written(tmp_path, _bodies(10))

    def refuse(kinds: bytes, ids: list[bytes], bodies: list[bytes]) -> None:
        raise CorruptObject("not wanted here")

    with pytest.raises(CorruptObject, match="not wanted here"):
        index_pack(tmp_path / f"{name}.pack", check=refuse)
    assert not list(tmp_path.glob(".tmp-*.idx"))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("trailer", "pack checksum mismatch"),
        ("truncated", "truncated|runs past"),
        ("version", "not a dsv pack of version 2"),
        ("frame_inside_body", "a frame ends inside a body"),
        ("later_dictionary", "names no dictionary before it"),
        ("unknown_kind", "unknown kind"),
        ("sizes", "wrong size|do not add up"),
        ("huge", "over the"),
        ("empty_block", "header is empty"),
    ],
)
def test_hostile_packs_are_refused_with_what_is_wrong(
    tmp_path: Path, shape: str, message: str
) -> None:
    body = b'{"a":1}'
    good = _raw_block(bytes([Kind.DATAPOINT]) * 2, [body, b'{"b":2}'])
    path = tmp_path / ".in.pack"
    if shape in ("trailer", "truncated", "version"):
        data = bytearray(_hand_pack(path, [(0, [good], None)]).read_bytes())
        if shape == "trailer":
            data[-1] ^= 1
        elif shape == "truncated":
            data = data[:40]
        else:
            data[8] = 3
        path.write_bytes(bytes(data))
    elif shape == "frame_inside_body":
        _hand_pack(path, [(0, [good[:-3], good[-3:]], None)])
    elif shape == "later_dictionary":
        _hand_pack(path, [(1, [good], None)])
    elif shape == "unknown_kind":
        _hand_pack(path, [(0, [_raw_block(bytes([99, 99]), [body, body])], None)])
    elif shape == "sizes":
        _hand_pack(path, [(0, [good], [len(good) + 5])])
    elif shape == "huge":
        _hand_pack(path, [(0, [good], [MAX_RAW + 1])])
    else:
        _hand_pack(path, [(0, [struct.pack("<I", 0)], None)])
    with pytest.raises(CorruptObject, match=message):
        index_pack(path)


def test_blocks_are_copied_as_stored_with_their_dictionary(tmp_path: Path) -> None:
    store_dir = tmp_path / "objects"
    (store_dir / "pack").mkdir(parents=True)
    bodies = _bodies(12000)
    name, oids = _written(store_dir / "pack", bodies)
    store = ObjectStore(store_dir)
    source = Pack(store_dir / "pack", name)
    # A version's datapoints in stored order: whole blocks, copied; one edited in the middle
    # and a reversed tail are read and compressed again.
    extra = _bodies(1, seed=9)[0]
    extra_oid = hash_object(Kind.DATAPOINT, extra)
    with store.writer() as writer:
        writer.write(Kind.DATAPOINT, extra)
    wanted = [*oids[:6000], extra_oid, *oids[6000:11000], *oids[11000:][::-1]]
    parts = store.plan_copy(Kind.DATAPOINT, wanted)
    copied = [p for p in parts if p.pack is not None]
    assert copied and sum(len(p.oids) for p in parts) == len(wanted)
    assert [o for p in parts for o in p.oids] == wanted
    out = tmp_path / "out"
    out.mkdir()
    writer = PackWriter(out)
    store.write_parts(writer, Kind.DATAPOINT, parts)
    made = writer.finish()
    pack = Pack(out, made)
    assert pack.verify() is None and pack.dictionaries == 1
    stored = {source.read_block_data(p.block)[3] for p in copied}
    assert stored <= {pack.read_block_data(b)[3] for b in range(pack.nblocks)}
    reader = ObjectStore(tmp_path / "reader")
    (tmp_path / "reader" / "pack").mkdir(parents=True)
    for ext in (".pack", ".idx"):
        (tmp_path / "reader" / "pack" / f"{made}{ext}").write_bytes(
            (out / f"{made}{ext}").read_bytes()
        )
    everything = dict(zip(oids, bodies, strict=True)) | {extra_oid: extra}
    assert reader.read_bulk(wanted, Kind.DATAPOINT) == [everything[o] for o in wanted]
