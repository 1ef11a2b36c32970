"""The user cache: one dataset version at a time, fetched from a remote without a repository.

A dsv object store under `$DSV_CACHE_DIR` (else `$XDG_CACHE_HOME/dsv`, else `~/.cache/dsv`).
It is content-addressed, so an object held is never asked for again, whichever remote or
version it came with. It is not a repository and keeps a weaker invariant of its own: a
*dataset* it holds has all its pages and datapoints (stored before it); a tree or commit
it holds says nothing about what else it reaches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from dsv.errors import BadInput, CorruptObject, RemoteError
from dsv.manifest import iter_datapoint_oids, iter_oids, join_slices
from dsv.objects import OID_SIZE, Dataset, Kind, decode_commit, decode_dataset, decode_tree
from dsv.protocol import references
from dsv.refs import BRANCHES, ENVS, TAGS
from dsv.remote.connection import Connection
from dsv.store import ObjectStore

__all__ = [
    "CachedVersion",
    "cache_dir",
    "fetch_version",
    "iter_datapoints",
    "locate_dataset",
    "open_cache",
    "read_cached",
    "resolve_remote_rev",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """Where the user cache lives (`DSV_CACHE_DIR`, else the XDG cache directory)."""
    explicit = os.environ.get("DSV_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dsv"


def open_cache(path: Path | None = None) -> ObjectStore:
    """The cache's object store (created on first write)."""
    return ObjectStore((path or cache_dir()) / "objects")


class CachedVersion(msgspec.Struct, frozen=True):
    """A dataset version held in the cache, and what getting it cost."""

    commit: bytes
    path: str
    dataset_oid: bytes
    dataset: Dataset
    objects_received: int = 0
    bytes_received: int = 0


def resolve_remote_rev(conn: Connection, rev: str) -> bytes:
    """The commit a revision names on the remote: HEAD, a ref, branch, tag, environment or a
    full commit id (history suffixes like `~1` need a local repository)."""
    name = rev.strip()
    refs = conn.info.refs
    if name == "HEAD":
        if conn.info.head and conn.info.head in refs:
            return bytes.fromhex(refs[conn.info.head])
        raise BadInput(f"{conn.name}: HEAD has no versions")
    for prefix in ("", BRANCHES, TAGS, ENVS):
        full = prefix + name
        if full.startswith("refs/") and full in refs:
            return bytes.fromhex(refs[full])
    if _HEX64.fullmatch(name.lower()):
        return bytes.fromhex(name.lower())
    raise BadInput(
        f"{conn.name}: no branch, tag or environment named {name!r}",
        hint="name one the remote has, or give a full 64-digit commit id",
    )


def _dataset_in(tree_body: bytes, tree_oid: bytes, path: str, commit: bytes) -> bytes:
    for entry in decode_tree(tree_body, tree_oid).entries:
        if entry.path == path:
            return entry.dataset
    raise BadInput(f"{path}: no such dataset in version {commit.hex()[:12]}")


def read_cached(store: ObjectStore, commit: bytes, path: str) -> CachedVersion | None:
    """The version if the cache holds it whole (commit, tree and the dataset), else None."""
    if store.missing([commit]):
        return None
    entry = decode_commit(store.read_body(commit, Kind.COMMIT), commit)
    if store.missing([entry.tree]):
        return None
    dataset_oid = _dataset_in(store.read_body(entry.tree, Kind.TREE), entry.tree, path, commit)
    if store.missing([dataset_oid]):
        return None
    dataset = decode_dataset(store.read_body(dataset_oid, Kind.DATASET), dataset_oid)
    return CachedVersion(commit, path, dataset_oid, dataset)


def _one(conn: Connection, kind: Kind, oid: bytes) -> bytes:
    for got, body in conn.objects(kind, [oid]):
        if got == oid:
            return body
    raise RemoteError(f"{conn.name} left out {kind.name.lower()} {oid.hex()}")


def _checked(conn: Connection, kind: Kind, oid: bytes, body: bytes) -> None:
    try:
        references(kind, oid, body)
    except CorruptObject as exc:
        raise RemoteError(
            f"{conn.name} sent a {kind.name.lower()} that dsv refuses: {exc.message}",
            hint="nothing of it was kept in the cache",
        ) from exc


def locate_dataset(conn: Connection, store: ObjectStore, commit: bytes, path: str) -> bytes:
    """The id of dataset `path` in version `commit`, fetching the commit and its tree into the
    cache when it lacks them (nothing else)."""
    return _locate(conn, store, commit, path)[0]


def _locate(conn: Connection, store: ObjectStore, commit: bytes, path: str) -> tuple[bytes, int]:
    received = 0
    if store.missing([commit]):
        received += 1
        got = dict(conn.commits([commit], [], limit=1))
        body = got.get(commit)
        if body is None:
            raise RemoteError(f"{conn.name} did not send commit {commit.hex()}")
        _checked(conn, Kind.COMMIT, commit, body)
        with store.writer() as writer:
            writer.add(Kind.COMMIT, commit, body)
    tree = decode_commit(store.read_body(commit, Kind.COMMIT), commit).tree
    if store.missing([tree]):
        received += 1
        body = _one(conn, Kind.TREE, tree)
        _checked(conn, Kind.TREE, tree, body)
        with store.writer() as writer:
            writer.add(Kind.TREE, tree, body)
    return _dataset_in(store.read_body(tree, Kind.TREE), tree, path, commit), received


def fetch_version(conn: Connection, store: ObjectStore, commit: bytes, path: str) -> CachedVersion:
    """Bring one dataset version into the cache: the commit, its tree, the one dataset, the
    pages it slices and its datapoints, asking only for what the cache lacks.

    Every object is re-hashed on receipt (the connection does) and checked well formed;
    datapoints are stored first and the dataset after them, so the cache's invariant holds
    after an interruption too.
    """
    start_bytes = conn.bytes_received
    dataset_oid, received = _locate(conn, store, commit, path)
    if store.missing([dataset_oid]):
        body = _one(conn, Kind.DATASET, dataset_oid)
        _checked(conn, Kind.DATASET, dataset_oid, body)
        dataset = decode_dataset(body, dataset_oid)
        received += 1 + _fetch_points(conn, store, dataset, dataset_oid)
        with store.writer() as writer:
            writer.add(Kind.DATASET, dataset_oid, body)
    else:
        dataset = decode_dataset(store.read_body(dataset_oid, Kind.DATASET), dataset_oid)
    return CachedVersion(
        commit, path, dataset_oid, dataset, received, conn.bytes_received - start_bytes
    )


def _fetch_points(conn: Connection, store: ObjectStore, dataset: Dataset, oid: bytes) -> int:
    """Store the pages of `dataset` and its datapoints the cache lacks; return the count."""
    pages_wanted = list(dict.fromkeys(s.page for s in dataset.slices))
    absent = store.missing(pages_wanted)
    pages: dict[bytes, bytes] = {
        p: store.read_body(p, Kind.PAGE) for p in pages_wanted if p not in absent
    }
    received = 0
    fresh_pages: dict[bytes, bytes] = {}
    for page_oid, body in conn.objects(Kind.PAGE, [p for p in pages_wanted if p in absent]):
        if not body or len(body) % OID_SIZE:
            raise RemoteError(f"{conn.name}: page {page_oid.hex()} is malformed")
        fresh_pages[page_oid] = body
        received += 1
    pages.update(fresh_pages)
    try:
        ids = join_slices(dataset, pages, oid)
    except CorruptObject as exc:
        raise RemoteError(f"{conn.name} sent a dataset that dsv refuses: {exc.message}") from exc
    wanted = list(dict.fromkeys(iter_oids(ids)))
    absent_points = store.missing(wanted)
    wanted = [p for p in wanted if p in absent_points]
    with store.writer() as writer:
        for point_oid, body in conn.objects(Kind.DATAPOINT, wanted):
            writer.add(Kind.DATAPOINT, point_oid, body, check_store=False)
            received += 1
    with store.writer() as writer:
        for page_oid, body in fresh_pages.items():
            writer.add(Kind.PAGE, page_oid, body, check_store=False)
    return received


def iter_datapoints(store: ObjectStore, dataset: Dataset) -> Iterator[bytes]:
    """A cached dataset's datapoints, in order, each re-hashed."""
    return store.read_many(iter_datapoint_oids(store, dataset), Kind.DATAPOINT)
