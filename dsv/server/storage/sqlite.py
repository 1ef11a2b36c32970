"""The embedded metadata store: repositories, refs, ref logs and keys in one SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dsv.objects import ZERO_OID
from dsv.server.storage import (
    KeyRecord,
    RefChange,
    RefConflict,
    RefLogRecord,
    RepoRecord,
    StorageError,
    check_repo_name,
)

__all__ = ["SqliteMetaStore"]

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
        self._locks: dict[str, threading.RLock] = {}
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
    def reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection, any SQLite error raised as a StorageError on `what`."""
        with self._errors(what):
            yield self._db()

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed if the block returns, rolled back if it raises."""
        with self._write(what) as db:
            yield db

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

    @contextlib.contextmanager
    def locked(self, repo: str) -> Iterator[None]:
        """`repo`'s write lock: of this process, as one process serves an embedded root."""
        with self._guard:
            lock = self._locks.setdefault(repo, threading.RLock())
        with lock:
            yield

    def health(self) -> None:
        with self._errors("answer a health check"):
            self._db().execute("SELECT 1").fetchone()

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
    ) -> None:
        with self.transaction("update refs") as db:
            self.apply_ref_changes(db, repo, changes, user=user, reason=reason, head=head)

    @staticmethod
    def apply_ref_changes(
        db: sqlite3.Connection,
        repo: str,
        changes: Sequence[RefChange],
        *,
        user: str,
        reason: str,
        head: str | None = None,
    ) -> None:
        """`update_refs` inside a transaction of `transaction()`, so another store sharing the
        file (a dialect's) can record its own rows in the same one."""
        now = int(time.time())
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
            db.execute("UPDATE repos SET head = ? WHERE name = ? AND head IS NULL", (head, repo))

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
