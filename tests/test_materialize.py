"""Writing a whole JSONL version on every core: the bytes, the digest, and refusals."""

from __future__ import annotations

import random
from pathlib import Path

import blake3
import pytest

from dsv import materialize
from dsv.errors import CorruptObject
from dsv.objects import Kind, hash_object
from dsv.pack import PackWriter
from dsv.store import ObjectStore

N = 3000


def _body(i: int) -> bytes:
    return b'{"id":%d,"text":"%s"}' % (i, b"x" * (i % 97) * 24)  # ~1 KiB: several blocks


def _store(tmp_path: Path, packs: int) -> tuple[ObjectStore, list[bytes]]:
    """N datapoints spread over `packs` packs, each pack written in a shuffled order."""
    store = ObjectStore(tmp_path / "objects")
    store.pack_dir.mkdir(parents=True)
    oids = [hash_object(Kind.DATAPOINT, _body(i)) for i in range(N)]
    order = list(range(N))
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


@pytest.mark.parametrize("packs", [1, 3])
def test_the_file_holds_every_body_in_order_and_its_digest_is_its_hash(
    tmp_path: Path, packs: int
) -> None:
    store, oids = _store(tmp_path, packs)
    # Repeats and any order, as a dataset may have them.
    wanted = [oids[i] for i in [5, 2999, 0, 5, *range(1, 2999, 7)]]
    path = tmp_path / "out.jsonl"
    digest = materialize.write_jsonl(store, b"".join(wanted), path)
    expected = b"".join(_body(oids.index(oid)) + b"\n" for oid in wanted)
    assert path.read_bytes() == expected
    assert digest == blake3.blake3(expected).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "out.jsonl"]


def test_a_body_that_does_not_match_its_id_is_refused(tmp_path: Path) -> None:
    store, oids = _store(tmp_path, 2)
    forged = hash_object(Kind.DATAPOINT, b'{"forged":true}')
    writer = PackWriter(store.pack_dir)
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
