"""Server-side storage: a blob store for objects, a ref and metadata store, and their embedded
implementations (a dsv object store per repository; SQLite).

The server speaks only to the two interfaces, so an S3 blob store or a PostgreSQL metadata
store can replace the embedded ones; tests/test_remote_storage.py is the contract both pass.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from dsv.errors import BadInput, BadState
from dsv.fsutil import fsync_dir
from dsv.objects import ZERO_OID, Kind
from dsv.pack import PackWriter, PreparedPack
from dsv.store import ObjectStore

__all__ = [
    "BlobStore",
    "DatasetMove",
    "DatasetRecord",
    "KeyRecord",
    "LocalBlobStore",
    "MetaStore",
    "RefChange",
    "RefConflict",
    "RefLogRecord",
    "RepoRecord",
    "SqliteMetaStore",
    "StorageError",
    "VersionNote",
    "check_repo_name",
    "open_storage",
    "publish_pack",
]

Scope = Literal["read", "write"]
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_repo_name(repo: str) -> str:
    """`OWNER/NAME`, each part letters, digits, `.`, `_`, `-`, not starting with a symbol."""
    parts = repo.split("/")
    if len(parts) != 2 or not all(
        _REPO_PART.fullmatch(p) and not p.endswith((".lock", ".")) for p in parts
    ):
        # A hostile name can be kilobytes long; quote enough of it to recognise.
        shown = repr(repo) if len(repo) <= 80 else repr(repo[:80]) + "…"
        raise BadInput(
            f"invalid repository name {shown}",
            hint="use OWNER/NAME: letters, digits, '.', '_' and '-', starting with a letter "
            "or digit",
        )
    return repo


class StorageError(BadState):
    """The storage under the server failed (disk, database)."""


class RefConflict(BadState):
    """A compare-and-swap found `name` at `current`, not at the expected value."""

    def __init__(self, name: str, current: bytes | None) -> None:
        shown = current.hex()[:12] if current else "nothing"
        super().__init__(f"ref {name} is at {shown}, not where this update expected")
        self.name = name
        self.current = current


class RefChange(msgspec.Struct, frozen=True):
    """Move `name` from `old` (None: must not exist) to `new` (None: delete it)."""

    name: str
    old: bytes | None
    new: bytes | None


class RefLogRecord(msgspec.Struct, frozen=True):
    """One ref move; a deletion is logged with `new` = ZERO_OID, as in a local ref log."""

    name: str
    old: bytes | None
    new: bytes
    time: int
    user: str
    reason: str


class RepoRecord(msgspec.Struct, frozen=True):
    name: str
    head: str | None
    created: int


class DatasetRecord(msgspec.Struct, frozen=True):
    """A dataset as the hosted-platform APIs name it: a stable id and where it lives now."""

    id: str
    repo: str
    path: str
    created: int


class DatasetMove(msgspec.Struct, frozen=True):
    """Dataset `dataset` now lives at `path`: commit `commit` moved it from `old_path`."""

    dataset: str
    path: str
    commit: bytes
    old_path: str


class VersionNote(msgspec.Struct, frozen=True):
    """What an API adds to one version of a dataset without touching its immutable commit."""

    dataset: str
    commit: bytes
    name: str | None = None
    description: str | None = None
    # Canonical JSON of the version's attributes object; empty for none.
    attributes: bytes = b""
    hidden: bool = False


class KeyRecord(msgspec.Struct, frozen=True):
    """An API key as stored: its public id, the SHA-256 of the key, never the key itself."""

    id: str
    digest: bytes
    scope: Scope
    repo: str | None
    created: int
    revoked: int | None = None
    note: str = ""


# -- the interfaces ------------------------------------------------------------------------------


class BlobStore(Protocol):
    """Write-once objects of every repository; packs arrive already verified."""

    def missing(self, repo: str, oids: Iterable[bytes]) -> set[bytes]:
        """Which of `oids` the repository lacks (all of them if it does not exist)."""
        ...

    def read(self, repo: str, kind: Kind, oids: Sequence[bytes]) -> list[bytes]:
        """Bodies of `oids`, in order, each re-hashed; CorruptObject if one is missing."""
        ...

    def put_pack(self, repo: str, pack: PreparedPack) -> None:
        """Make a complete pack and its index part of the repository, idx last; takes the files."""
        ...

    def close(self) -> None: ...


class MetaStore(Protocol):
    """Repositories, their refs and ref logs, and API keys."""

    def get_repo(self, repo: str) -> RepoRecord | None: ...

    def create_repo(self, repo: str) -> None:
        """Create `repo` unless it exists."""
        ...

    def list_repos(self) -> list[RepoRecord]: ...

    def list_refs(self, repo: str) -> dict[str, bytes]: ...

    def update_refs(
        self,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
        move: DatasetMove | None = None,
    ) -> None:
        """Apply every change or none: each ref must be at its `old`, else RefConflict.

        `head` becomes the repository's default branch if it has none yet. `move` is recorded
        in the same transaction, so a dataset's record never disagrees with the ref that
        moved its file. A stale record of another dataset at the new path is dropped.
        """
        ...

    def ref_log(self, repo: str, name: str) -> list[RefLogRecord]: ...

    def register_dataset(
        self, repo: str, path: str, candidates: Iterable[str], *, created: int
    ) -> DatasetRecord:
        """The record of `path` in `repo`; made with the first unused id of `candidates`."""
        ...

    def dataset_by_id(self, dataset_id: str) -> DatasetRecord | None: ...

    def dataset_moves(self, dataset_id: str) -> dict[bytes, str]:
        """Commit id -> the dataset's path before that commit moved it, oldest move first."""
        ...

    def version_notes(self, dataset_id: str) -> dict[bytes, VersionNote]: ...

    def put_version_note(self, note: VersionNote) -> None:
        """Create or replace the note of (`note.dataset`, `note.commit`)."""
        ...

    def add_key(self, record: KeyRecord) -> None: ...

    def key_by_digest(self, digest: bytes) -> KeyRecord | None: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def revoke_key(self, key_id: str) -> bool:
        """Revoke key `key_id`; False if there is no such key or it was revoked already."""
        ...

    def close(self) -> None: ...


# -- the embedded blob store: one dsv object store per repository --------------------------------


class LocalBlobStore:
    """Objects of `OWNER/NAME` in `ROOT/repos/OWNER/NAME/objects`, laid out as in format.md §4."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stores: dict[str, tuple[ObjectStore, threading.Lock]] = {}
        self._guard = threading.Lock()

    def _objects_dir(self, repo: str) -> Path:
        owner, name = check_repo_name(repo).split("/")
        return self.root / "repos" / owner / name / "objects"

    @contextlib.contextmanager
    def _store(self, repo: str) -> Iterator[ObjectStore]:
        # ObjectStore caches open packs and blocks; one thread at a time uses each.
        with self._guard:
            entry = self._stores.get(repo)
            if entry is None:
                entry = self._stores[repo] = (
                    ObjectStore(self._objects_dir(repo)),
                    threading.Lock(),
                )
        store, lock = entry
        with lock:
            try:
                yield store
            except OSError as exc:
                raise StorageError(f"object storage of {repo} failed: {exc}") from exc

    def missing(self, repo: str, oids: Iterable[bytes]) -> set[bytes]:
        wanted = set(oids)
        if not wanted or not self._objects_dir(repo).is_dir():
            return wanted
        with self._store(repo) as store:
            # missing() looks for packs it does not know yet before calling an object absent.
            return store.missing(wanted)

    def read(self, repo: str, kind: Kind, oids: Sequence[bytes]) -> list[bytes]:
        if not oids:
            return []
        with self._store(repo) as store:
            # read_bulk looks for packs it does not know yet before calling an object missing.
            return store.read_bulk(list(oids), kind)

    def put_pack(self, repo: str, pack: PreparedPack) -> None:
        pack_dir = self._objects_dir(repo) / "pack"
        try:
            pack_dir.mkdir(parents=True, exist_ok=True)
            # A pack counts only once its idx exists (format.md §4): pack first, then idx.
            os.replace(pack.pack_tmp, pack_dir / f"{pack.name}.pack")
            os.replace(pack.idx_tmp, pack_dir / f"{pack.name}.idx")
            fsync_dir(pack_dir)
        except OSError as exc:
            pack.discard()
            raise StorageError(f"cannot store a pack of {repo}: {exc.strerror}") from exc
        with self._store(repo) as store:
            store.reload()
            # Every push leaves a pack: merge the small ones as they pile up, or a busy
            # repository's reads would try hundreds of packs for each object.
            store.tidy()

    def close(self) -> None:
        with self._guard:
            for store, _ in self._stores.values():
                store.close()
            self._stores.clear()


# -- the embedded metadata store: SQLite ----------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    name TEXT PRIMARY KEY, head TEXT, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    repo TEXT NOT NULL, name TEXT NOT NULL, oid BLOB NOT NULL, PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS ref_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, name TEXT NOT NULL, old BLOB,
    new BLOB NOT NULL, time INTEGER NOT NULL, user TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ref_log_by_ref ON ref_log (repo, name, id);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, digest BLOB NOT NULL UNIQUE, scope TEXT NOT NULL, repo TEXT,
    created INTEGER NOT NULL, revoked INTEGER, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY, repo TEXT NOT NULL, path TEXT NOT NULL, created INTEGER NOT NULL,
    UNIQUE (repo, path));
CREATE TABLE IF NOT EXISTS dataset_moves (
    dataset TEXT NOT NULL, commit_oid BLOB NOT NULL, old_path TEXT NOT NULL,
    PRIMARY KEY (dataset, commit_oid));
CREATE TABLE IF NOT EXISTS version_notes (
    dataset TEXT NOT NULL, commit_oid BLOB NOT NULL, name TEXT, description TEXT,
    attributes BLOB NOT NULL, hidden INTEGER NOT NULL, PRIMARY KEY (dataset, commit_oid));
"""
# 2 added datasets, dataset_moves and version_notes (the Humanloop API); 3 marks a root whose
# packs may be of version 2 (format.md version 5), which a server of schema 2 cannot read.
# Older schemas upgrade in place.
_SCHEMA_VERSION = 3


class SqliteMetaStore:
    """Repositories, refs, ref logs and keys in one SQLite file, in WAL mode.

    Each thread has its own connection; ref updates run in one IMMEDIATE transaction, so
    concurrent pushes serialise on the database's write lock and compare-and-swap is exact.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        with self._errors("open"):
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StorageError(
                    f"{path} has schema version {version}; this dsv knows {_SCHEMA_VERSION}",
                    hint="use a newer dsv to serve this root",
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA busy_timeout = 30000")
            self._local.db = db
            with self._guard:
                self._connections.append(db)
        return db

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"metadata database {self.path}: cannot {what}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._errors(what):
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- repositories ----------------------------------------------------------------------

    def get_repo(self, repo: str) -> RepoRecord | None:
        with self._errors("read a repository"):
            row = (
                self._db()
                .execute("SELECT name, head, created FROM repos WHERE name = ?", (repo,))
                .fetchone()
            )
        return RepoRecord(*row) if row else None

    def create_repo(self, repo: str) -> None:
        check_repo_name(repo)
        with self._write("create a repository") as db:
            db.execute(
                "INSERT OR IGNORE INTO repos (name, head, created) VALUES (?, NULL, ?)",
                (repo, int(time.time())),
            )

    def list_repos(self) -> list[RepoRecord]:
        with self._errors("list repositories"):
            rows = self._db().execute("SELECT name, head, created FROM repos ORDER BY name")
            return [RepoRecord(*row) for row in rows]

    # -- refs ------------------------------------------------------------------------------

    def list_refs(self, repo: str) -> dict[str, bytes]:
        with self._errors("read refs"):
            rows = self._db().execute(
                "SELECT name, oid FROM refs WHERE repo = ? ORDER BY name", (repo,)
            )
            return {name: bytes(oid) for name, oid in rows}

    def update_refs(
        self,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
        move: DatasetMove | None = None,
    ) -> None:
        now = int(time.time())
        with self._write("update refs") as db:
            for change in changes:
                row = db.execute(
                    "SELECT oid FROM refs WHERE repo = ? AND name = ?", (repo, change.name)
                ).fetchone()
                current = bytes(row[0]) if row else None
                if current != change.old:
                    raise RefConflict(change.name, current)
            for change in changes:
                if change.new is None:
                    db.execute("DELETE FROM refs WHERE repo = ? AND name = ?", (repo, change.name))
                else:
                    db.execute(
                        "INSERT INTO refs (repo, name, oid) VALUES (?, ?, ?) "
                        "ON CONFLICT (repo, name) DO UPDATE SET oid = excluded.oid",
                        (repo, change.name, change.new),
                    )
                db.execute(
                    "INSERT INTO ref_log (repo, name, old, new, time, user, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (repo, change.name, change.old, change.new or ZERO_OID, now, user, reason),
                )
            if head is not None:
                db.execute(
                    "UPDATE repos SET head = ? WHERE name = ? AND head IS NULL", (head, repo)
                )
            if move is not None:
                self._move(db, repo, move)

    @staticmethod
    def _move(db: sqlite3.Connection, repo: str, move: DatasetMove) -> None:
        db.execute(
            "DELETE FROM datasets WHERE repo = ? AND path = ? AND id != ?",
            (repo, move.path, move.dataset),
        )
        db.execute("UPDATE datasets SET path = ? WHERE id = ?", (move.path, move.dataset))
        db.execute(
            "INSERT OR REPLACE INTO dataset_moves (dataset, commit_oid, old_path) VALUES (?, ?, ?)",
            (move.dataset, move.commit, move.old_path),
        )

    def ref_log(self, repo: str, name: str) -> list[RefLogRecord]:
        with self._errors("read a ref log"):
            rows = self._db().execute(
                "SELECT name, old, new, time, user, reason FROM ref_log "
                "WHERE repo = ? AND name = ? ORDER BY id",
                (repo, name),
            )
            return [
                RefLogRecord(n, bytes(o) if o is not None else None, bytes(w), t, u, r)
                for n, o, w, t, u, r in rows
            ]

    # -- datasets and version notes ----------------------------------------------------------

    _DATASET_COLUMNS = "id, repo, path, created"

    def register_dataset(
        self, repo: str, path: str, candidates: Iterable[str], *, created: int
    ) -> DatasetRecord:
        with self._errors("read a dataset"):
            row = (
                self._db()
                .execute(
                    f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE repo = ? AND path = ?",
                    (repo, path),
                )
                .fetchone()
            )
        if row:
            return DatasetRecord(*row)
        # Not there yet: look again under the write lock, where no one else can add it.
        with self._write("register a dataset") as db:
            row = db.execute(
                f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE repo = ? AND path = ?",
                (repo, path),
            ).fetchone()
            if row:
                return DatasetRecord(*row)
            for dataset_id in candidates:
                taken = db.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
                if not taken:
                    db.execute(
                        "INSERT INTO datasets (id, repo, path, created) VALUES (?, ?, ?, ?)",
                        (dataset_id, repo, path, created),
                    )
                    return DatasetRecord(dataset_id, repo, path, created)
        raise StorageError(f"no free dataset id for {repo}/{path}")

    def dataset_by_id(self, dataset_id: str) -> DatasetRecord | None:
        with self._errors("read a dataset"):
            row = (
                self._db()
                .execute(
                    f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)
                )
                .fetchone()
            )
        return DatasetRecord(*row) if row else None

    def dataset_moves(self, dataset_id: str) -> dict[bytes, str]:
        with self._errors("read dataset moves"):
            rows = self._db().execute(
                "SELECT commit_oid, old_path FROM dataset_moves WHERE dataset = ? ORDER BY rowid",
                (dataset_id,),
            )
            return {bytes(commit): old for commit, old in rows}

    def version_notes(self, dataset_id: str) -> dict[bytes, VersionNote]:
        with self._errors("read version notes"):
            rows = self._db().execute(
                "SELECT commit_oid, name, description, attributes, hidden FROM version_notes "
                "WHERE dataset = ?",
                (dataset_id,),
            )
            return {
                bytes(c): VersionNote(dataset_id, bytes(c), n, d, bytes(a), bool(h))
                for c, n, d, a, h in rows
            }

    def put_version_note(self, note: VersionNote) -> None:
        with self._write("write a version note") as db:
            db.execute(
                "INSERT OR REPLACE INTO version_notes "
                "(dataset, commit_oid, name, description, attributes, hidden) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    note.dataset,
                    note.commit,
                    note.name,
                    note.description,
                    note.attributes,
                    int(note.hidden),
                ),
            )

    # -- keys ------------------------------------------------------------------------------

    def add_key(self, record: KeyRecord) -> None:
        with self._write("add a key") as db:
            db.execute(
                "INSERT INTO keys (id, digest, scope, repo, created, revoked, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.digest,
                    record.scope,
                    record.repo,
                    record.created,
                    record.revoked,
                    record.note,
                ),
            )

    _KEY_COLUMNS = "id, digest, scope, repo, created, revoked, note"

    @staticmethod
    def _key(row: tuple[object, ...]) -> KeyRecord:
        key_id, digest, scope, repo, created, revoked, note = row
        assert isinstance(digest, bytes) and scope in ("read", "write")
        return KeyRecord(
            str(key_id),
            bytes(digest),
            "write" if scope == "write" else "read",
            None if repo is None else str(repo),
            int(str(created)),
            None if revoked is None else int(str(revoked)),
            str(note),
        )

    def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        with self._errors("look up a key"):
            row = (
                self._db()
                .execute(f"SELECT {self._KEY_COLUMNS} FROM keys WHERE digest = ?", (digest,))
                .fetchone()
            )
        return self._key(row) if row else None

    def list_keys(self) -> list[KeyRecord]:
        with self._errors("list keys"):
            rows = self._db().execute(
                f"SELECT {self._KEY_COLUMNS} FROM keys ORDER BY created, rowid"
            )
            return [self._key(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self._write("revoke a key") as db:
            cursor = db.execute(
                "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (int(time.time()), key_id),
            )
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._guard:
            for db in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._connections.clear()
        self._local = threading.local()


def open_storage(root: Path) -> tuple[LocalBlobStore, SqliteMetaStore]:
    """The embedded storage under a server root: objects in `repos/`, the rest in SQLite."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {root}: {exc.strerror}") from exc
    return LocalBlobStore(root), SqliteMetaStore(root / "meta.sqlite3")


T = TypeVar("T")


def publish_pack(
    blobs: BlobStore, meta: MetaStore, tmp_dir: Any, repo: str, fill: Callable[[PackWriter], T]
) -> T:
    """Let `fill` write a pack, then store it in `repo`, creating the repository: all or
    nothing, so a `fill` that raises leaves neither a pack nor a repository behind."""
    writer = PackWriter(tmp_dir)
    try:
        result = fill(writer)
        prepared = writer.prepare()
    except BaseException:
        writer.abort()
        raise
    meta.create_repo(repo)
    if prepared is not None:
        blobs.put_pack(repo, prepared)
    return result
