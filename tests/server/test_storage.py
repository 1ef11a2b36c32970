"""The server's storage contract, run against every implementation, and the wire codec.

A new blob store (S3) or metadata store (PostgreSQL) is added to the `params` lists below and
must pass the same tests.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.services import Postgres
from dsv.canonical import canonicalize
from dsv.errors import BadInput, CorruptObject, Forbidden, Unauthorized
from dsv.objects import (
    Commit,
    Dataset,
    Format,
    Kind,
    Slice,
    Tree,
    TreeEntry,
    content_id,
    encode_object,
    hash_object,
)
from dsv.pack import PackWriter
from dsv.protocol import (
    MAX_BLOCK_RAW,
    check_datapoints,
    encode_pack,
    iter_pack,
    references,
)
from dsv.server.dialects.humanloop.backends import open_store
from dsv.server.dialects.humanloop.store import DatasetMove, HumanloopStore, VersionNote
from dsv.server.keys import AccessDenied, authorize, create_key, key_digest, revoke_key
from dsv.server.storage import (
    BlobStore,
    MetaStore,
    RefChange,
    RefConflict,
    check_repo_name,
    publish_pack,
)
from dsv.server.storage.local import LocalBlobStore
from dsv.server.storage.sqlite import SqliteMetaStore

BlobFactory = Callable[[pytest.FixtureRequest, Path], BlobStore]
MetaFactory = Callable[[pytest.FixtureRequest, Path], MetaStore]


def _s3_blobs(request: pytest.FixtureRequest, root: Path) -> BlobStore:
    from dsv.server.storage.s3 import S3BlobStore

    request.getfixturevalue("seaweedfs")
    # A prefix of its own per test: one bucket serves the whole run.
    return S3BlobStore(f"s3://dsv/{uuid.uuid4().hex}", root / "cache")


def _postgres_meta(request: pytest.FixtureRequest, root: Path) -> MetaStore:
    from dsv.server.storage.postgres import PostgresMetaStore

    postgres: Postgres = request.getfixturevalue("postgres")
    return PostgresMetaStore(postgres.database())


@pytest.fixture(params=[lambda request, root: LocalBlobStore(root), _s3_blobs], ids=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    factory: BlobFactory = request.param
    store = factory(request, tmp_path / "blobs")
    yield store
    store.close()


@pytest.fixture(
    params=[lambda request, root: SqliteMetaStore(root / "meta.sqlite3"), _postgres_meta],
    ids=["sqlite", "postgres"],
)
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    factory: MetaFactory = request.param
    store = factory(request, tmp_path)
    yield store
    store.close()


@pytest.fixture
def humanloop(meta: MetaStore) -> HumanloopStore:
    """The Humanloop dialect's store beside `meta`."""
    return open_store(meta)


def _pack(tmp_path: Path, objects: list[tuple[Kind, bytes]]) -> tuple[object, list[bytes]]:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    writer = PackWriter(staging)
    oids = []
    for kind, body in objects:
        oid = hash_object(kind, body)
        writer.add(kind, oid, body)
        oids.append(oid)
    return writer.prepare(), oids


def _points(n: int, tag: str = "") -> list[tuple[Kind, bytes]]:
    return [
        (Kind.DATAPOINT, canonicalize(f'{{"i": {i}, "t": "{tag}"}}'.encode())) for i in range(n)
    ]


def _copied(
    blobs: BlobStore, tmp_path: Path, oids: list[bytes], *, extra: bool = False
) -> list[tuple[Kind, bytes]]:
    """What `copy_objects` of `oids` puts in a new pack, in order."""
    from dsv.packindex import scan_pack

    out = tmp_path / "copied"
    out.mkdir(exist_ok=True)
    writer = PackWriter(out)
    blobs.copy_objects("acme/evals", Kind.DATAPOINT, oids, writer, extra=extra)
    prepared = writer.prepare()
    assert prepared is not None
    try:
        return list(scan_pack(prepared.pack_tmp))
    finally:
        prepared.discard()


# -- blob store contract ------------------------------------------------------------------------


def test_blob_store_copies_objects_into_a_pack_and_refuses_an_absent_one(
    blobs: BlobStore, tmp_path: Path
) -> None:
    objects = _points(30)
    prepared, oids = _pack(tmp_path, objects)
    blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    for extra in (False, True):
        assert _copied(blobs, tmp_path, oids[5:25], extra=extra) == objects[5:25]
    absent = hash_object(Kind.DATAPOINT, b'{"absent": true}')
    writer = PackWriter(tmp_path)
    with pytest.raises(CorruptObject):
        blobs.copy_objects("acme/evals", Kind.DATAPOINT, [*oids[:3], absent], writer)
    assert len(writer) == 0  # refused before anything was written
    writer.abort()


def test_blob_store_holds_nothing_at_first(blobs: BlobStore) -> None:
    oid = hash_object(Kind.DATAPOINT, b"{}")
    assert blobs.missing("acme/evals", [oid]) == {oid}
    assert blobs.missing("acme/evals", []) == set()
    with pytest.raises(CorruptObject):
        blobs.read("acme/evals", Kind.DATAPOINT, [oid])


def test_blob_store_keeps_a_pack_and_reads_back_verified(blobs: BlobStore, tmp_path: Path) -> None:
    objects = _points(300)
    prepared, oids = _pack(tmp_path, objects)
    blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    assert blobs.missing("acme/evals", oids) == set()
    shuffled = random.Random(1).sample(oids, len(oids))
    bodies = dict((hash_object(k, b), b) for k, b in objects)
    assert blobs.read("acme/evals", Kind.DATAPOINT, shuffled) == [bodies[o] for o in shuffled]
    with pytest.raises(CorruptObject):
        blobs.read("acme/evals", Kind.PAGE, oids[:1])  # the wrong kind is refused


def test_blob_store_keeps_repositories_apart(blobs: BlobStore, tmp_path: Path) -> None:
    prepared, oids = _pack(tmp_path, _points(3))
    blobs.put_pack("acme/one", prepared)  # type: ignore[arg-type]
    assert blobs.missing("acme/two", oids) == set(oids)
    assert blobs.missing("acme/one", oids) == set()


def test_blob_store_takes_the_same_objects_twice(blobs: BlobStore, tmp_path: Path) -> None:
    first, oids = _pack(tmp_path, _points(5))
    blobs.put_pack("acme/evals", first)  # type: ignore[arg-type]
    second, _ = _pack(tmp_path, _points(8))
    blobs.put_pack("acme/evals", second)  # type: ignore[arg-type]
    more = [hash_object(k, b) for k, b in _points(8)]
    assert blobs.missing("acme/evals", more) == set()
    assert len(blobs.read("acme/evals", Kind.DATAPOINT, oids)) == 5


def test_blob_store_answers_missing_for_more_than_4096_ids(
    blobs: BlobStore, tmp_path: Path
) -> None:
    # What /missing asks of a push's datapoints: thousands of ids, some held in two packs.
    first, held = _pack(tmp_path, _points(3000, "a"))
    blobs.put_pack("acme/evals", first)  # type: ignore[arg-type]
    second, more = _pack(tmp_path, _points(2000, "b"))
    blobs.put_pack("acme/evals", second)  # type: ignore[arg-type]
    new = [hash_object(k, b) for k, b in _points(2500, "c")]
    assert blobs.missing("acme/evals", [*new, *held, *more]) == set(new)
    assert blobs.missing("acme/evals", [*held, *more]) == set()


def test_every_pairing_of_stores_publishes_a_pack_all_or_nothing(
    blobs: BlobStore, meta: MetaStore, tmp_path: Path
) -> None:
    """What a push and an API write do, on each blob store with each metadata store."""
    staging = tmp_path / "publish"
    staging.mkdir()
    objects = _points(10)

    def fill(writer: PackWriter) -> list[bytes]:
        oids = []
        for kind, body in objects:
            oid = hash_object(kind, body)
            writer.add(kind, oid, body)
            oids.append(oid)
        return oids

    oids = publish_pack(blobs, meta, staging, "acme/evals", fill)
    assert [r.name for r in meta.list_repos()] == ["acme/evals"]
    assert blobs.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in objects]

    def failing(writer: PackWriter) -> None:
        writer.add(Kind.DATAPOINT, hash_object(*_points(1, "x")[0]), _points(1, "x")[0][1])
        raise RuntimeError("cut short")

    with pytest.raises(RuntimeError):
        publish_pack(blobs, meta, staging, "acme/other", failing)
    assert [r.name for r in meta.list_repos()] == ["acme/evals"]
    assert list(staging.iterdir()) == []


def test_blob_store_refuses_bad_repository_names(blobs: BlobStore) -> None:
    for bad in ("acme", "../x/y", "a/b/c", ".hidden/x", "a/b.lock", "a/", "acme/evil\n"):
        with pytest.raises(BadInput):
            blobs.missing(bad, [bytes(32)])


# -- metadata store contract ----------------------------------------------------------------------


def test_repositories_are_created_once(meta: MetaStore) -> None:
    assert meta.get_repo("acme/evals") is None
    meta.create_repo("acme/evals")
    meta.create_repo("acme/evals")
    record = meta.get_repo("acme/evals")
    assert record is not None and record.head is None
    assert [r.name for r in meta.list_repos()] == ["acme/evals"]
    assert meta.list_refs("acme/evals") == {}


def test_refs_move_by_compare_and_swap_all_or_none(meta: MetaStore) -> None:
    a, b, c = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    meta.create_repo("acme/evals")
    meta.update_refs(
        "acme/evals",
        [RefChange("refs/heads/main", None, a), RefChange("refs/envs/production", None, a)],
        user="u",
        reason="push",
        head="refs/heads/main",
    )
    assert meta.list_refs("acme/evals") == {"refs/heads/main": a, "refs/envs/production": a}
    record = meta.get_repo("acme/evals")
    assert record is not None and record.head == "refs/heads/main"
    # The second change's expectation is stale: neither ref moves.
    with pytest.raises(RefConflict) as caught:
        meta.update_refs(
            "acme/evals",
            [RefChange("refs/heads/main", a, b), RefChange("refs/envs/production", c, b)],
            user="u",
            reason="push",
        )
    assert caught.value.name == "refs/envs/production" and caught.value.current == a
    assert meta.list_refs("acme/evals")["refs/heads/main"] == a
    with pytest.raises(RefConflict):
        meta.update_refs("acme/evals", [RefChange("refs/heads/new", a, b)], user="u", reason="")
    meta.update_refs("acme/evals", [RefChange("refs/heads/main", a, b)], user="u", reason="ff")
    log = meta.ref_log("acme/evals", "refs/heads/main")
    assert [(e.old, e.new, e.user, e.reason) for e in log] == [
        (None, a, "u", "push"),
        (a, b, "u", "ff"),
    ]
    assert meta.list_refs("other/repo") == {}


def test_a_ref_is_deleted_by_compare_and_swap_and_logged(meta: MetaStore) -> None:
    a = bytes([1]) * 32
    meta.update_refs("acme/evals", [RefChange("refs/envs/qa", None, a)], user="u", reason="set")
    with pytest.raises(RefConflict):
        meta.update_refs(
            "acme/evals", [RefChange("refs/envs/qa", bytes(32), None)], user="u", reason="rm"
        )
    meta.update_refs("acme/evals", [RefChange("refs/envs/qa", a, None)], user="u", reason="rm")
    assert meta.list_refs("acme/evals") == {}
    log = meta.ref_log("acme/evals", "refs/envs/qa")
    assert [(e.old, e.new, e.reason) for e in log] == [(None, a, "set"), (a, bytes(32), "rm")]


def test_datasets_keep_their_id_through_moves(humanloop: HumanloopStore) -> None:
    first = humanloop.register_dataset("acme/evals", "qa.jsonl", ["ds_a", "ds_b"], created=5)
    assert (first.id, first.path, first.created) == ("ds_a", "qa.jsonl", 5)
    # Registering again finds the record; another path skips the id that is taken.
    assert humanloop.register_dataset("acme/evals", "qa.jsonl", ["ds_z"], created=9) == first
    other = humanloop.register_dataset("acme/evals", "rag.jsonl", ["ds_a", "ds_b"], created=6)
    assert other.id == "ds_b"
    assert humanloop.dataset_by_id("ds_b") == other and humanloop.dataset_by_id("ds_x") is None
    # Moving onto a path whose record is stale drops that record.
    # A move is recorded with the ref update that made it, or not at all.
    commit, later = bytes([7]) * 32, bytes([8]) * 32
    move = DatasetMove("ds_a", "rag.jsonl", commit, "qa.jsonl")
    change = RefChange("refs/heads/main", None, commit)
    with pytest.raises(RefConflict):
        humanloop.update_refs(
            "acme/evals",
            [RefChange("refs/heads/main", later, commit)],
            user="u",
            reason="move",
            move=move,
        )
    assert humanloop.dataset_moves("ds_a") == {}
    humanloop.update_refs("acme/evals", [change], user="u", reason="move", move=move)
    moved = humanloop.dataset_by_id("ds_a")
    assert moved is not None and moved.path == "rag.jsonl"
    assert humanloop.dataset_by_id("ds_b") is None
    back = DatasetMove("ds_a", "qa.jsonl", later, "rag.jsonl")
    change = RefChange("refs/heads/main", commit, later)
    humanloop.update_refs("acme/evals", [change], user="u", reason="move", move=back)
    # Oldest move first, whatever the commit ids.
    assert list(humanloop.dataset_moves("ds_a").items()) == [
        (commit, "qa.jsonl"),
        (later, "rag.jsonl"),
    ]
    assert humanloop.register_dataset("acme/evals", "rag.jsonl", ["ds_c"], created=7).id == "ds_c"


def test_version_notes_are_replaced_whole(humanloop: HumanloopStore) -> None:
    c1, c2 = bytes([1]) * 32, bytes([2]) * 32
    assert humanloop.version_notes("ds_a") == {}
    humanloop.put_version_note(VersionNote("ds_a", c1, "v1", "first", b'{"k":1}'))
    humanloop.put_version_note(VersionNote("ds_a", c2, None, None, b"", hidden=True))
    humanloop.put_version_note(VersionNote("ds_b", c1, "other"))
    humanloop.put_version_note(VersionNote("ds_a", c1, "v1.1", None, b""))
    assert humanloop.version_notes("ds_a") == {
        c1: VersionNote("ds_a", c1, "v1.1", None, b""),
        c2: VersionNote("ds_a", c2, None, None, b"", hidden=True),
    }


def test_a_schema_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "meta.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE repos (name TEXT PRIMARY KEY, head TEXT, created INTEGER NOT NULL);"
        "INSERT INTO repos VALUES ('acme/evals', 'refs/heads/main', 1);"
        "PRAGMA user_version = 1;"
    )
    db.close()
    meta = SqliteMetaStore(path)
    try:
        assert [r.name for r in meta.list_repos()] == ["acme/evals"]
        datasets = open_store(meta)
        assert datasets.register_dataset("acme/evals", "qa.jsonl", ["ds_a"], created=1).id == "ds_a"
    finally:
        meta.close()


def test_concurrent_compare_and_swap_lets_exactly_one_win(meta: MetaStore) -> None:
    base = bytes(32)
    meta.create_repo("acme/evals")
    meta.update_refs("acme/evals", [RefChange("refs/heads/main", None, base)], user="", reason="")
    wins: list[int] = []
    conflicts: list[int] = []

    def attempt(n: int) -> None:
        try:
            meta.update_refs(
                "acme/evals",
                [RefChange("refs/heads/main", base, bytes([n + 1]) * 32)],
                user=str(n),
                reason="race",
            )
            wins.append(n)
        except RefConflict:
            conflicts.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(conflicts) == 7
    assert meta.list_refs("acme/evals")["refs/heads/main"] == bytes([wins[0] + 1]) * 32


def test_keys_are_stored_hashed_and_checked(meta: MetaStore, tmp_path: Path) -> None:
    record, key = create_key(meta, "read", "acme/evals", note="ci")
    assert key.startswith("dsv_") and record.id in key
    assert record.digest == key_digest(key)
    found = meta.key_by_digest(key_digest(key))
    assert found is not None and found.scope == "read" and found.note == "ci"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes()
    assert authorize(meta, key, "acme/evals", write=False).id == record.id
    with pytest.raises(AccessDenied) as denied:
        authorize(meta, key, "acme/evals", write=True)
    assert isinstance(denied.value, Forbidden)
    with pytest.raises(AccessDenied) as denied:
        authorize(meta, key, "acme/other", write=False)
    assert (
        isinstance(denied.value, Forbidden)
        and "is for repository acme/evals" in denied.value.message
    )
    for bad in (None, "", "dsv_nope"):
        with pytest.raises(AccessDenied) as denied:
            authorize(meta, bad, "acme/evals", write=False)
        assert isinstance(denied.value, Unauthorized)
    revoke_key(meta, record.id)
    with pytest.raises(AccessDenied) as denied:
        authorize(meta, key, "acme/evals", write=False)
    assert isinstance(denied.value, Unauthorized) and "revoked" in denied.value.message
    with pytest.raises(BadInput, match="revoked already"):
        revoke_key(meta, record.id)
    with pytest.raises(BadInput, match="no key"):
        revoke_key(meta, "nope")
    _, admin = create_key(meta, "write")
    assert authorize(meta, admin, "any/repo", write=True).repo is None
    assert [k.revoked is not None for k in meta.list_keys()] == [True, False]


def test_repository_names() -> None:
    assert check_repo_name("acme/evals-v2.1_x") == "acme/evals-v2.1_x"
    # `$` would match before a final newline: names are matched whole.
    for bad in ("acme/-x", "acme/evil\n", "acme\n/evil", "acme/evil\r", "acme/evil.lock\n"):
        with pytest.raises(BadInput, match="invalid repository name"):
            check_repo_name(bad)


# -- the wire codec ------------------------------------------------------------------------


def _rechunk(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at = 0
    i = 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        yield data[at : at + n]
        at += n
        i += 1


def test_pack_stream_round_trips_at_any_chunking() -> None:
    objects = [*_points(2000), (Kind.PAGE, bytes(range(32)) * 3)]
    data = b"".join(encode_pack(objects, block_size=4096))
    for sizes in ([1], [7, 3], [65536], [len(data)]):
        assert list(iter_pack(_rechunk(data, sizes))) == objects
    assert list(iter_pack([b"".join(encode_pack([]))])) == []


def test_damaged_pack_streams_are_refused() -> None:
    data = b"".join(encode_pack(_points(50), block_size=512))
    flipped = bytearray(data)
    flipped[40] ^= 1
    damaged = {
        "truncated": data[:-10],
        "no trailer": data[:-32],
        "flipped": bytes(flipped),
        "bad trailer": data[:-1] + bytes([data[-1] ^ 1]),
        "not a pack": b"hello world" * 10,
        "empty": b"",
    }
    for name, body in damaged.items():
        with pytest.raises(CorruptObject):
            list(iter_pack([body]))
        assert name


def test_a_block_claiming_a_huge_size_is_refused_before_decompression() -> None:
    data = bytearray(b"".join(encode_pack(_points(3))))
    data[16 + 4 : 16 + 8] = (MAX_BLOCK_RAW + 1).to_bytes(4, "little")
    with pytest.raises(CorruptObject, match="over the"):
        list(iter_pack([bytes(data)]))


def test_references_check_every_kind() -> None:
    point = canonicalize(b'{"a": 1}')
    dp = hash_object(Kind.DATAPOINT, point)
    page = dp * 2
    page_oid = hash_object(Kind.PAGE, page)
    dataset = Dataset(Format("jsonl"), (), 2, content_id(page), (Slice(page_oid, 0, 2),))
    ds_body = encode_object(dataset)
    ds_oid = hash_object(Kind.DATASET, ds_body)
    tree_body = encode_object(Tree((TreeEntry("a.jsonl", ds_oid),)))
    tree_oid = hash_object(Kind.TREE, tree_body)
    commit_body = encode_object(Commit(tree_oid, (bytes(32),), "a <b>", 0, 0, "m\n"))
    assert references(Kind.DATAPOINT, dp, point) == []
    assert references(Kind.PAGE, page_oid, page) == [dp, dp]
    assert references(Kind.DATASET, ds_oid, ds_body) == [page_oid]
    assert references(Kind.TREE, tree_oid, tree_body) == [ds_oid]
    assert references(Kind.COMMIT, bytes(32), commit_body) == [tree_oid, bytes(32)]
    unsorted = encode_object(Tree((TreeEntry("b", ds_oid), TreeEntry("a", ds_oid))))
    for kind, body in [
        (Kind.PAGE, b""),
        (Kind.PAGE, dp[:31]),
        (Kind.TREE, unsorted),
        (Kind.COMMIT, commit_body + b"\x00"),
        (Kind.DATASET, b"\x90"),
    ]:
        with pytest.raises(CorruptObject):
            references(kind, bytes(32), body)


def test_datapoints_must_be_canonical_json_objects() -> None:
    good = [canonicalize(b'{"b": 1, "a": [1.50, "x"]}')]
    check_datapoints([bytes(32)], good)
    for bad in (b'{"b":1,"a":2}', b'{"a": 1}', b"[1]", b"not json", b'{"a":NaN}'):
        with pytest.raises(CorruptObject, match="datapoint"):
            check_datapoints([bytes(32), bytes(32)], [good[0], bad])


# -- the shared stores: what two servers on one S3 bucket and one database see ------------------


@pytest.fixture
def two_servers(seaweedfs: object, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The S3 stores of two servers on one new prefix, each with a read cache of its own."""
    from dsv.server.storage.s3 import S3BlobStore

    url = f"s3://dsv/{uuid.uuid4().hex}"
    one, two = S3BlobStore(url, tmp_path / "one"), S3BlobStore(url, tmp_path / "two")
    yield one, two
    one.close()
    two.close()


def test_a_pack_stored_by_one_server_is_read_by_another(two_servers: Any, tmp_path: Path) -> None:
    from dsv.server.storage.s3 import S3BlobStore

    one, two = two_servers
    url = one.url
    objects = _points(50)
    assert two.missing("acme/evals", [hash_object(*objects[0])])  # cached "absent"...
    prepared, oids = _pack(tmp_path, objects)
    one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    # ...is never believed: a miss looks in S3 again and fetches the new pack.
    assert two.missing("acme/evals", oids) == set()
    assert two.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in objects]
    # A server starting later on the same cache fetches nothing twice.
    three = S3BlobStore(url, tmp_path / "two")
    assert three.read("acme/evals", Kind.DATAPOINT, oids[:1]) == [objects[0][1]]
    assert not three._sync("acme/evals", since=0)
    three.close()


def test_a_miss_is_read_again_when_another_thread_fetched_the_pack_meanwhile(
    two_servers: Any, tmp_path: Path
) -> None:
    """Two requests miss the same new pack: one fetches it, the other must still find it."""
    one, two = two_servers
    objects = _points(20)
    two.missing("acme/evals", [hash_object(*objects[0])])
    prepared, oids = _pack(tmp_path, objects)
    one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    cache_read, cache_missing = two.cache.read, two.cache.missing

    def read_then_other_thread_syncs(repo: str, kind: Kind, wanted: Any) -> list[bytes]:
        try:
            return cache_read(repo, kind, wanted)
        finally:
            # This read missed; another request's sync fetches the pack before ours runs.
            two.cache.read = cache_read  # type: ignore[method-assign]
            two._sync(repo, since=two._fetched.get(repo, 0))

    two.cache.read = read_then_other_thread_syncs  # type: ignore[method-assign]
    assert two.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in objects]

    more = _points(20, "more")
    prepared, more_oids = _pack(tmp_path, more)
    one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]

    def missing_then_other_thread_syncs(repo: str, wanted: Any) -> set[bytes]:
        try:
            return cache_missing(repo, wanted)
        finally:
            two.cache.missing = cache_missing  # type: ignore[method-assign]
            two._sync(repo, since=two._fetched.get(repo, 0))

    two.cache.missing = missing_then_other_thread_syncs  # type: ignore[method-assign]
    assert two.missing("acme/evals", more_oids) == set()


def test_a_copy_by_a_server_whose_cache_lacks_the_pack_fetches_it_first(
    two_servers: Any, tmp_path: Path
) -> None:
    """A server that listed the repository before another stored a pack copies from it."""
    one, two = two_servers
    objects = _points(40)
    two.missing("acme/evals", [hash_object(*objects[0])])  # lists: nothing yet
    prepared, oids = _pack(tmp_path, objects)
    one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    assert _copied(two, tmp_path, oids) == objects
    more = _points(40, "more")
    prepared, more_oids = _pack(tmp_path, more)
    one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    assert _copied(two, tmp_path, more_oids, extra=True) == more


def _s3_pack_names(blobs: Any, repo: str = "acme/evals") -> set[str]:
    return set(blobs._list_packs(repo))


def test_s3_packs_past_the_limit_are_compacted_in_the_background(
    seaweedfs: object, tmp_path: Path
) -> None:
    from dsv.server.storage.s3 import S3BlobStore
    from dsv.store import PACKS_MOST

    url = f"s3://dsv/{uuid.uuid4().hex}"
    writer, early = S3BlobStore(url, tmp_path / "w"), S3BlobStore(url, tmp_path / "early")
    everything: list[tuple[Kind, bytes]] = []
    try:
        for n in range(PACKS_MOST + 8):
            objects = _points(10, f"write {n}")
            everything += objects
            prepared, oids = _pack(tmp_path, objects)
            writer.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
            if n == 3:
                # A server that fetched the first packs before they were merged away.
                assert early.missing("acme/evals", oids) == set()
    finally:
        writer.close()  # waits for the compaction under way
    oids = [hash_object(*o) for o in everything]
    assert len(_s3_pack_names(early)) <= PACKS_MOST
    late = S3BlobStore(url, tmp_path / "late")
    try:
        for reader in (early, late):
            assert reader.missing("acme/evals", oids) == set()
            assert reader.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
    finally:
        early.close()
        late.close()


def test_packs_a_server_fetched_before_compaction_are_merged_in_its_cache(
    seaweedfs: object, tmp_path: Path
) -> None:
    """A server that fetched packs as they were stored keeps a few, not one per write: every
    read tries each pack its cache holds."""
    from dsv.server.storage.s3 import S3BlobStore
    from dsv.store import PACKS_MOST

    url = f"s3://dsv/{uuid.uuid4().hex}"
    writer, reader = S3BlobStore(url, tmp_path / "w"), S3BlobStore(url, tmp_path / "r")
    writer.request_compaction = lambda repo: None  # type: ignore[method-assign]
    cached = tmp_path / "r" / "repos" / "acme" / "evals" / "objects" / "pack"
    everything: list[tuple[Kind, bytes]] = []
    try:
        for n in range(PACKS_MOST + 8):
            objects = _points(10, f"write {n}")
            everything += objects
            prepared, oids = _pack(tmp_path, objects)
            writer.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
            assert reader.missing("acme/evals", oids) == set()  # fetched as stored
        assert len(_s3_pack_names(writer)) == PACKS_MOST + 8  # S3 itself is not compacted
        deadline = time.monotonic() + 60
        while len(list(cached.glob("*.idx"))) > PACKS_MOST:
            assert time.monotonic() < deadline, "the cache was not compacted"
            time.sleep(0.1)
        oids = [hash_object(*o) for o in everything]
        assert reader.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
        assert reader.missing("acme/evals", oids) == set()
    finally:
        writer.close()
        reader.close()


def test_a_pack_compacted_away_between_listing_and_fetch_is_read_from_the_merged_one(
    two_servers: Any, tmp_path: Path
) -> None:
    one, two = two_servers
    everything: list[tuple[Kind, bytes]] = []
    for n in range(4):
        objects = _points(10, f"write {n}")
        everything += objects
        prepared, _ = _pack(tmp_path, objects)
        one.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    listed = two._list_packs

    def list_then_compacted(repo: str) -> Any:
        names = listed(repo)
        two._list_packs = listed  # type: ignore[method-assign]
        assert one.compact(repo, most=1) is not None
        return names

    two._list_packs = list_then_compacted  # type: ignore[method-assign]
    oids = [hash_object(*o) for o in everything]
    assert two.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
    assert len(_s3_pack_names(two)) == 1


def test_servers_compacting_at_once_lose_nothing(seaweedfs: object, tmp_path: Path) -> None:
    from dsv.server.storage.s3 import S3BlobStore

    url = f"s3://dsv/{uuid.uuid4().hex}"
    servers = [S3BlobStore(url, tmp_path / f"s{n}") for n in range(3)]
    everything: list[tuple[Kind, bytes]] = []
    try:
        for n in range(9):
            objects = _points(20, f"write {n}")
            everything += objects
            prepared, _ = _pack(tmp_path, objects)
            servers[n % 3].put_pack("acme/evals", prepared)  # type: ignore[arg-type]
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def compact(server: Any) -> None:
            barrier.wait()
            try:
                server.compact("acme/evals", most=1)
            except BaseException as exc:  # pragma: no cover - the assertion names it
                errors.append(exc)

        threads = [threading.Thread(target=compact, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
    finally:
        for server in servers:
            server.close()
    fresh = S3BlobStore(url, tmp_path / "fresh")
    try:
        oids = [hash_object(*o) for o in everything]
        assert fresh.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
        assert len(_s3_pack_names(fresh)) < 9
    finally:
        fresh.close()


def test_a_pack_without_its_index_in_s3_is_invisible(seaweedfs: object, tmp_path: Path) -> None:
    import obstore

    from dsv.server.storage.s3 import S3BlobStore

    url = f"s3://dsv/{uuid.uuid4().hex}"
    blobs = S3BlobStore(url, tmp_path / "cache")
    try:
        prepared, oids = _pack(tmp_path, _points(5))
        # An upload cut short after the pack, before its index.
        obstore.put(blobs.store, f"acme/evals/pack/{prepared.name}.pack", prepared.pack_tmp)  # type: ignore[attr-defined]
        assert blobs.missing("acme/evals", oids) == set(oids)
    finally:
        blobs.close()


def test_an_unreachable_object_store_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.services import free_port
    from dsv.server.storage import StorageError
    from dsv.server.storage.s3 import S3BlobStore

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    blobs = S3BlobStore("s3://dsv/x", tmp_path / "cache", retry_seconds=1)
    try:
        with pytest.raises(
            StorageError, match=r"^object store s3://dsv/x: cannot list the packs of acme/evals: "
        ):
            blobs.missing("acme/evals", [bytes(32)])
        with pytest.raises(StorageError, match="cannot answer a health check"):
            blobs.health()
    finally:
        blobs.close()
    with pytest.raises(BadInput, match="invalid object store URL 'dsv/x'"):
        S3BlobStore("dsv/x", tmp_path / "cache")


def test_postgres_migrations_run_once_and_refuse_a_newer_database(postgres: Postgres) -> None:
    import psycopg

    from dsv.server.storage import StorageError
    from dsv.server.storage.postgres import CORE_MIGRATIONS, PostgresMetaStore

    dsn = postgres.database()
    # Servers starting at once: the migration runs once, the others find it done.
    stores: list[PostgresMetaStore] = []
    threads = [
        threading.Thread(target=lambda: stores.append(PostgresMetaStore(dsn))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 4
    open_store(stores[0])
    for store in stores:
        store.close()
    with psycopg.connect(dsn, autocommit=True) as db:
        rows = db.execute("SELECT component, version FROM dsv_schema ORDER BY 1").fetchall()
        assert rows == [("core", len(CORE_MIGRATIONS)), ("humanloop", 1)]
        db.execute("UPDATE dsv_schema SET version = 99 WHERE component = 'core'")
    with pytest.raises(StorageError, match="has core schema version 99; this dsv knows 1"):
        PostgresMetaStore(dsn)


def test_a_pooled_connection_is_checked_by_its_socket_and_a_dead_one_replaced(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live idle connection is lent without a round trip; one whose session the server
    ended is found dead on loan, and the query runs on a fresh one."""
    import psycopg
    import psycopg_pool

    from dsv.server.storage.postgres import PostgresMetaStore, check_on_loan

    dsn = postgres.database()
    meta = PostgresMetaStore(dsn)
    try:
        meta.create_repo("acme/evals")
        with meta.pool.connection() as db:
            pid = db.info.backend_pid
        checks: list[int] = []
        real_check = psycopg_pool.ConnectionPool.check_connection
        monkeypatch.setattr(
            psycopg_pool.ConnectionPool,
            "check_connection",
            staticmethod(lambda conn: (checks.append(1), real_check(conn))[1]),
        )
        for _ in range(5):
            assert meta.list_refs("acme/evals") == {}
        assert checks == []  # nothing arrived on the idle socket: no round trip
        with psycopg.connect(dsn, autocommit=True) as admin:
            # Waits for the backend to end (5 s), so its goodbye is on the idle socket: a
            # loan made before it arrives cannot know, which failed this test once.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        with meta.pool.connection() as db:
            # The ended session was refused on loan (a real check ran) and replaced.
            assert checks and db.info.backend_pid != pid
            check_on_loan(db)  # a live one passes
        assert meta.list_refs("acme/evals") == {}
    finally:
        meta.close()


def test_a_repository_head_set_on_one_server_is_read_by_another(postgres: Postgres) -> None:
    from dsv.server.storage.postgres import PostgresMetaStore

    dsn = postgres.database()
    one, two = PostgresMetaStore(dsn), PostgresMetaStore(dsn)
    try:
        one.create_repo("acme/evals")
        before = two.get_repo("acme/evals")
        assert before is not None and before.head is None  # not final: read again next time
        one.update_refs(
            "acme/evals",
            [RefChange("refs/heads/trunk", None, bytes(32))],
            user="u",
            reason="push",
            head="refs/heads/trunk",
        )
        for _ in range(2):  # the second read is the kept record
            after = two.get_repo("acme/evals")
            assert after is not None and after.head == "refs/heads/trunk"
    finally:
        one.close()
        two.close()


def test_two_servers_on_one_database_share_refs_keys_and_the_write_lock(
    postgres: Postgres,
) -> None:
    from dsv.server.storage.postgres import PostgresMetaStore

    dsn = postgres.database()
    one, two = PostgresMetaStore(dsn), PostgresMetaStore(dsn)
    try:
        one.create_repo("acme/evals")
        main = "refs/heads/main"
        one.update_refs("acme/evals", [RefChange(main, None, bytes(32))], user="a", reason="r")
        with pytest.raises(RefConflict):
            two.update_refs("acme/evals", [RefChange(main, None, bytes(32))], user="b", reason="r")
        record, key = create_key(one, "write", "acme/evals")
        assert authorize(two, key, "acme/evals", write=True).id == record.id
        revoke_key(two, record.id)
        with pytest.raises(Unauthorized, match="has been revoked"):
            authorize(one, key, "acme/evals", write=False)
        # The write lock of one server holds against the other's threads.
        order: list[str] = []

        def wait() -> None:
            with two.locked("acme/evals"):
                order.append("two")

        with one.locked("acme/evals"), one.locked("acme/evals"):  # re-entrant in a thread
            waiter = threading.Thread(target=wait)
            waiter.start()
            waiter.join(0.5)
            order.append("one")
        waiter.join(10)
        assert order == ["one", "two"]
    finally:
        one.close()
        two.close()


# -- the embedded store's background compaction ------------------------------------------------


def _local_pack_count(root: Path, repo: str = "acme/evals") -> int:
    return len(list((root / "repos" / repo / "objects" / "pack").glob("*.idx")))


def _settle(blobs: LocalBlobStore) -> None:
    """Wait until the compactor has merged everything asked of it (closing drops the rest)."""
    deadline = time.monotonic() + 60
    while blobs._compactor.busy and time.monotonic() < deadline:
        time.sleep(0.01)


def _write_packs(blobs: LocalBlobStore, tmp_path: Path, count: int) -> list[tuple[Kind, bytes]]:
    everything: list[tuple[Kind, bytes]] = []
    for n in range(count):
        objects = _points(10, f"write {n}")
        everything += objects
        prepared, _ = _pack(tmp_path, objects)
        blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    return everything


def test_local_packs_are_merged_in_the_background_not_in_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsv.store import PACKS_MOST

    merging_threads: list[str] = []
    finish = PackWriter.finish

    def noting(self: PackWriter) -> str:
        merging_threads.append(threading.current_thread().name)  # a write only prepares
        return finish(self)

    monkeypatch.setattr(PackWriter, "finish", noting)
    blobs = LocalBlobStore(tmp_path / "root")
    try:
        everything = _write_packs(blobs, tmp_path, PACKS_MOST + 8)
        _settle(blobs)
    finally:
        blobs.close()
    assert merging_threads and set(merging_threads) == {"dsv-compact"}
    assert _local_pack_count(tmp_path / "root") <= PACKS_MOST
    reader = LocalBlobStore(tmp_path / "root")
    try:
        oids = [hash_object(*o) for o in everything]
        assert reader.missing("acme/evals", oids) == set()
        assert reader.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
    finally:
        reader.close()


def test_reads_go_on_while_a_merge_removes_the_packs_it_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the merged pack's publication and each removal, the writing server's own
    store and another store on the same root read everything, without waiting for the merge."""
    from dsv.store import PACKS_MOST, ObjectStore

    root = tmp_path / "root"
    blobs, other = LocalBlobStore(root), LocalBlobStore(root)
    monkeypatch.setattr(LocalBlobStore, "request_compaction", lambda self, repo: None)
    everything = _write_packs(blobs, tmp_path, PACKS_MOST + 4)
    oids = [hash_object(*o) for o in everything]
    bodies = [b for _, b in everything]
    # Both have every pack open before the merge starts.
    assert blobs.read("acme/evals", Kind.DATAPOINT, oids) == bodies
    assert other.read("acme/evals", Kind.DATAPOINT, oids) == bodies
    seen: list[tuple[bool, bool]] = []
    remove_pack = ObjectStore.remove_pack

    def read_around(self: ObjectStore, name: str) -> None:
        got: list[bool] = []
        # In another thread: a merge holding the repository's lock would stall it.
        reader = threading.Thread(
            target=lambda: got.append(
                blobs.missing("acme/evals", oids) == set()
                and blobs.read("acme/evals", Kind.DATAPOINT, oids) == bodies
            )
        )
        reader.start()
        reader.join(timeout=30)
        remove_pack(self, name)
        fresh = LocalBlobStore(root)  # as a process that starts mid-merge
        try:
            seen.append(
                (
                    got == [True],
                    other.read("acme/evals", Kind.DATAPOINT, oids) == bodies
                    and fresh.read("acme/evals", Kind.DATAPOINT, oids) == bodies,
                )
            )
        finally:
            fresh.close()

    monkeypatch.setattr(ObjectStore, "remove_pack", read_around)
    try:
        assert blobs.compact("acme/evals") is not None
    finally:
        blobs.close()
        other.close()
    assert len(seen) >= 2
    assert all(own and others for own, others in seen)
    assert _local_pack_count(root) <= PACKS_MOST


_READER = """
import sys, time
from pathlib import Path
from dsv.objects import Kind
from dsv.server.storage.local import LocalBlobStore

root, stop, want = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
oids = [bytes.fromhex(h) for h in Path(want).read_text().split()]
blobs = LocalBlobStore(root)
reads = 0
while not stop.exists():
    got = blobs.read("acme/evals", Kind.DATAPOINT, oids)
    if blobs.missing("acme/evals", oids) or len(got) != len(oids):
        sys.exit("an object went missing")
    if not reads:
        Path(want + ".ready").touch()
    reads += 1
blobs.close()
print(reads - 1)
"""


def test_another_process_reads_everything_while_packs_are_merged(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dsv.store import PACKS_MOST

    root = tmp_path / "root"
    blobs = LocalBlobStore(root)
    first = _write_packs(blobs, tmp_path, 2)
    want = tmp_path / "oids"
    want.write_text(" ".join(hash_object(*o).hex() for o in first))
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(root), str(stop), str(want)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = Path(f"{want}.ready")
        deadline = time.monotonic() + 60
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # Several rounds of merges, each of packs the reader has open.
        _write_packs(blobs, tmp_path, 4 * PACKS_MOST)
        _settle(blobs)
        blobs.close()
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 0
    assert _local_pack_count(root) <= PACKS_MOST


def test_a_failed_background_merge_is_logged_and_the_write_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dsv.store import PACKS_MOST

    def disk_full(self: PackWriter) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PackWriter, "finish", disk_full)
    blobs = LocalBlobStore(tmp_path / "root")
    with caplog.at_level("WARNING", logger="dsv.serve"):
        try:
            everything = _write_packs(blobs, tmp_path, PACKS_MOST + 1)
            _settle(blobs)
        finally:
            blobs.close()
    assert any(
        r.name == "dsv.serve"
        and r.levelname == "WARNING"
        and r.getMessage().startswith("compacting the packs of acme/evals failed: ")
        and "No space left on device" in r.getMessage()
        for r in caplog.records
    )
    assert _local_pack_count(tmp_path / "root") == PACKS_MOST + 1
    reader = LocalBlobStore(tmp_path / "root")
    try:
        oids = [hash_object(*o) for o in everything]
        assert reader.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in everything]
    finally:
        reader.close()


@pytest.mark.parametrize("pushes", ["rewritten", "past REWRITE_MOST"])
def test_a_merge_with_small_blocks_writes_all_anew_and_one_of_full_blocks_copies_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pushes: str
) -> None:
    """Packs of API writes (a block of a few objects each) are written anew, datapoints
    first, with every pack merged beside them but for full ones larger than REWRITE_MOST,
    copied after them; packs of full blocks alone are copied."""
    from dsv.pack import BLOCK_SIZE, Pack
    from dsv.server.storage import local
    from dsv.store import PACKS_MOST

    monkeypatch.setattr(LocalBlobStore, "request_compaction", lambda self, repo: None)
    if pushes == "past REWRITE_MOST":
        monkeypatch.setattr(local, "REWRITE_MOST", 2000)  # the two pushes' pack holds 2,200
    root = tmp_path / "root"
    blobs = LocalBlobStore(root)
    filler = "x" * 1000
    pack_dir = root / "repos" / "acme" / "evals" / "objects" / "pack"

    def push(n: int) -> tuple[list[tuple[Kind, bytes]], list[bytes]]:
        pushed = [
            (Kind.DATAPOINT, canonicalize(f'{{"i": {i}, "f": "{filler}", "p": {n}}}'.encode()))
            for i in range(1100)
        ]
        before = {p.stem for p in pack_dir.glob("*.idx")}
        prepared, _ = _pack(tmp_path, pushed)
        blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
        (name,) = {p.stem for p in pack_dir.glob("*.idx")} - before
        pack = Pack(pack_dir, name)
        try:
            return pushed, [pack.read_block_data(b)[3] for b in range(pack.nblocks)]
        finally:
            pack.close()

    everything, first_blocks = push(0)
    second, _ = push(1)
    everything += second
    try:
        # Two pushes (full blocks only): copied, so blocks come through as they were.
        merged_name = blobs.compact("acme/evals", most=1)
        assert merged_name is not None
        assert [p.stem for p in pack_dir.glob("*.idx")] == [merged_name]
        merged = Pack(pack_dir, merged_name)
        try:
            assert merged.nblocks == 2 * len(first_blocks)
            copied = [merged.read_block_data(b)[3] for b in range(merged.nblocks)]
            assert copied[: len(first_blocks)] == first_blocks
        finally:
            merged.close()
        for n in range(PACKS_MOST + 4):
            # One object stored by every write (as after two merges at once) is kept once.
            shared = (Kind.PAGE, b"in every write")
            objects = [shared, (Kind.PAGE, f"page of write {n}".encode()), *_points(100, f"w{n}")]
            everything += objects[1:] if n else objects
            prepared, _ = _pack(tmp_path, objects)
            blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
        # By count, the pushes' pack is below twice the rest: the geometric rule merges it
        # too, and beside small blocks it is written anew.
        merged_name = blobs.compact("acme/evals")
        assert merged_name is not None
        (rest_name,) = {p.stem for p in pack_dir.glob("*.idx")} - {merged_name}
        merged, rest = Pack(pack_dir, merged_name), Pack(pack_dir, rest_name)
        try:
            assert {merged.kind_at(i) for i in range(merged.count)} == {Kind.DATAPOINT}
            assert merged.count == 2200 + 100 * (PACKS_MOST + 4)
            tail = [merged.read_block_data(b)[3] for b in range(merged.nblocks)][-len(copied) :]
            if pushes == "rewritten":
                # Full blocks, with small frames: none is left holding one write's 100.
                assert merged.nblocks - 1 <= merged.raw_bytes // BLOCK_SIZE + 1  # (dictionary)
                assert tail != copied
            else:
                assert tail == copied  # the pushes' blocks, as they were, after the writes
            assert [rest.kind_at(i) for i in range(rest.count)] == [Kind.PAGE] * (PACKS_MOST + 5)
        finally:
            merged.close()
            rest.close()
        oids = [hash_object(*o) for o in everything]
        assert blobs.missing("acme/evals", oids) == set()
        for kind in (Kind.PAGE, Kind.DATAPOINT):
            wanted = [
                (oid, body) for oid, (k, body) in zip(oids, everything, strict=True) if k == kind
            ]
            assert blobs.read("acme/evals", kind, [o for o, _ in wanted]) == [b for _, b in wanted]
    finally:
        blobs.close()


def test_a_merge_lays_api_written_datapoints_out_in_the_order_their_datasets_list_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API writes interleave their datasets a few datapoints at a time; merged, each
    dataset's datapoints lie together in its order, as a push would have sent them, so a
    page of one dataset reads a block or two instead of one per write."""
    from dsv.manifest import build_dataset
    from dsv.objects import Format
    from dsv.pack import Pack
    from dsv.store import PACKS_MOST

    monkeypatch.setattr(LocalBlobStore, "request_compaction", lambda self, repo: None)
    root = tmp_path / "root"
    blobs = LocalBlobStore(root)

    class Sink:
        def __init__(self) -> None:
            self.objects: list[tuple[Kind, bytes]] = []

        def write(self, kind: Kind, body: bytes) -> bytes:
            self.objects.append((kind, body))
            return hash_object(kind, body)

    listed: dict[str, list[bytes]] = {"a": [], "b": []}
    versions: dict[str, Any] = {"a": None, "b": None}
    for n in range(PACKS_MOST + 3):
        name = "ab"[n % 2]
        sink = Sink()
        points = _points(7, f"{name}{n}")
        sink.objects += points
        base_oids = b"".join(listed[name])
        listed[name] += [hash_object(*p) for p in points]
        if n == 5:
            listed[name].reverse()  # an edit of the order: the newest version decides
        _, versions[name] = build_dataset(
            sink,
            b"".join(listed[name]),
            Format("jsonl"),
            base=versions[name],
            base_oids=base_oids or None,
        )
        prepared, _ = _pack(tmp_path, sink.objects)
        blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
    pack_dir = root / "repos" / "acme" / "evals" / "objects" / "pack"
    try:
        assert blobs.compact("acme/evals") is not None
        laid_out: dict[Kind, list[bytes]] = {Kind.DATAPOINT: [], Kind.PAGE: []}
        for path in pack_dir.glob("*.idx"):
            pack = Pack(pack_dir, path.stem)
            try:
                entries = sorted(range(pack.count), key=lambda i: pack.location(i)[:2])
                for i in entries:
                    laid_out.get(pack.kind_at(i), []).append(pack.oid_at(i))
            finally:
                pack.close()
        # The newest versions first (the last write was of "a"), each in its own order; the
        # pages of those versions first among the pages, in the same order.
        assert laid_out[Kind.DATAPOINT] == listed["a"] + listed["b"]
        newest_pages = list(dict.fromkeys(p.page for n in "ab" for p in versions[n].slices))
        assert laid_out[Kind.PAGE][: len(newest_pages)] == newest_pages
    finally:
        blobs.close()


def test_the_spans_of_a_page_already_walked_are_those_a_set_of_positions_gives() -> None:
    """A merge passes over a slice of a page already walked: the spans it keeps a page by
    (joined as they meet) must answer as the set of every position walked would."""
    from dsv.server.storage.local import _cover, _covered

    rng = random.Random(7)
    for _ in range(200):
        spans: list[int] = []
        walked: set[int] = set()
        for _ in range(rng.randint(1, 12)):
            start = rng.randint(0, 60)
            stop = start + rng.randint(0, 12)
            assert _covered(spans, start, stop) == walked.issuperset(range(start, stop))
            _cover(spans, start, stop)
            walked.update(range(start, stop))
            assert spans == sorted(spans) and len(spans) % 2 == 0
            assert all(spans[k] < spans[k + 1] for k in range(len(spans) - 1))  # disjoint


def test_a_merge_orders_by_datasets_that_lie_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The datasets a merge orders by are read from the packs it merges: one that does not
    decode, or whose slices run past their page or name a page that is not there, only
    leaves the order to the packs; every object is kept and read back."""
    from dsv.objects import Dataset, Format, Slice, encode_object
    from dsv.store import PACKS_MOST

    monkeypatch.setattr(LocalBlobStore, "request_compaction", lambda self, repo: None)
    blobs = LocalBlobStore(tmp_path / "root")
    points = _points(5 * (PACKS_MOST + 2), "lies")
    oids = [hash_object(*p) for p in points]
    page = b"".join(oids[:3])
    past_its_page = Slice(hash_object(Kind.PAGE, page), 1, 99)
    no_such_page = Slice(bytes(32), 0, 2)
    lies = [
        (Kind.DATASET, b"\xc1 not msgpack"),
        (Kind.DATASET, encode_object(Dataset(Format("jsonl"), (), 9, bytes(32), (past_its_page,)))),
        (Kind.DATASET, encode_object(Dataset(Format("jsonl"), (), 2, bytes(32), (no_such_page,)))),
        (Kind.PAGE, page),
    ]
    everything = list(points) + lies
    try:
        for n in range(PACKS_MOST + 2):
            objects = points[5 * n : 5 * n + 5] + (lies if n == 3 else [])
            prepared, _ = _pack(tmp_path, objects)
            blobs.put_pack("acme/evals", prepared)  # type: ignore[arg-type]
        assert blobs.compact("acme/evals") is not None
        assert blobs.missing("acme/evals", [hash_object(*o) for o in everything]) == set()
        assert blobs.read("acme/evals", Kind.DATAPOINT, oids) == [b for _, b in points]
    finally:
        blobs.close()
