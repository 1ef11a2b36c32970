"""The Humanloop dialect's own metadata: stable dataset ids, their moves, and version notes.

The core metadata store knows repositories, refs and keys; what the Humanloop API adds lives
behind `HumanloopStore`. The SQLite implementation shares the core store's file and its
transactions, so a dataset's move is recorded in the same transaction as the ref that moved
its file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from dsv.server.storage import RefChange, StorageError
from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = [
    "DatasetMove",
    "DatasetRecord",
    "HumanloopStore",
    "SqliteHumanloopStore",
    "VersionNote",
]


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


class HumanloopStore(Protocol):
    """Dataset records, their moves and version notes, beside a core metadata store."""

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
        """The core store's `update_refs`, with `move` recorded in the same
        transaction: a dataset's record never disagrees with the ref that moved its file. A
        stale record of another dataset at the new path is dropped."""
        ...


_SCHEMA = """
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


class SqliteHumanloopStore:
    """The Humanloop tables in the SQLite file of a `SqliteMetaStore` (schema 2 added them)."""

    def __init__(self, meta: SqliteMetaStore) -> None:
        self.meta = meta
        with meta.reading("create the Humanloop tables") as db:
            db.executescript(_SCHEMA)

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
        with self.meta.transaction("update refs") as db:
            self.meta.apply_ref_changes(db, repo, changes, user=user, reason=reason, head=head)
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

    _DATASET_COLUMNS = "id, repo, path, created"

    def register_dataset(
        self, repo: str, path: str, candidates: Iterable[str], *, created: int
    ) -> DatasetRecord:
        with self.meta.reading("read a dataset") as db:
            row = db.execute(
                f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE repo = ? AND path = ?",
                (repo, path),
            ).fetchone()
        if row:
            return DatasetRecord(*row)
        # Not there yet: look again under the write lock, where no one else can add it.
        with self.meta.transaction("register a dataset") as db:
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
        with self.meta.reading("read a dataset") as db:
            row = db.execute(
                f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)
            ).fetchone()
        return DatasetRecord(*row) if row else None

    def dataset_moves(self, dataset_id: str) -> dict[bytes, str]:
        with self.meta.reading("read dataset moves") as db:
            rows = db.execute(
                "SELECT commit_oid, old_path FROM dataset_moves WHERE dataset = ? ORDER BY rowid",
                (dataset_id,),
            )
            return {bytes(commit): old for commit, old in rows}

    def version_notes(self, dataset_id: str) -> dict[bytes, VersionNote]:
        with self.meta.reading("read version notes") as db:
            rows = db.execute(
                "SELECT commit_oid, name, description, attributes, hidden FROM version_notes "
                "WHERE dataset = ?",
                (dataset_id,),
            )
            return {
                bytes(c): VersionNote(dataset_id, bytes(c), n, d, bytes(a), bool(h))
                for c, n, d, a, h in rows
            }

    def put_version_note(self, note: VersionNote) -> None:
        with self.meta.transaction("write a version note") as db:
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
