"""The Humanloop dialect's tables in the PostgreSQL metadata store, migrated on their own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from dsv.server.dialects.humanloop.store import DatasetMove, DatasetRecord, VersionNote
from dsv.server.storage import RefChange, StorageError
from dsv.server.storage.postgres import PostgresMetaStore, lock_key

__all__ = ["HUMANLOOP_MIGRATIONS", "PostgresHumanloopStore"]

HUMANLOOP_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE datasets (
        id TEXT PRIMARY KEY, repo TEXT NOT NULL, path TEXT NOT NULL, created BIGINT NOT NULL,
        UNIQUE (repo, path));
    CREATE TABLE dataset_moves (
        seq BIGSERIAL, dataset TEXT NOT NULL, commit_oid BYTEA NOT NULL,
        old_path TEXT NOT NULL, PRIMARY KEY (dataset, commit_oid));
    CREATE TABLE version_notes (
        dataset TEXT NOT NULL, commit_oid BYTEA NOT NULL, name TEXT, description TEXT,
        attributes BYTEA NOT NULL, hidden BOOLEAN NOT NULL, PRIMARY KEY (dataset, commit_oid));
    """,
)
_DATASETS_LOCK = "dsv:humanloop:datasets"


class PostgresHumanloopStore:
    """Dataset records, moves and version notes beside a `PostgresMetaStore`, in its
    transactions: a dataset's move commits with the ref that moved its file."""

    def __init__(self, meta: PostgresMetaStore) -> None:
        self.meta = meta
        meta.migrate("humanloop", HUMANLOOP_MIGRATIONS)

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
    def _move(db: psycopg.Connection[Any], repo: str, move: DatasetMove) -> None:
        db.execute(
            "DELETE FROM datasets WHERE repo = %s AND path = %s AND id != %s",
            (repo, move.path, move.dataset),
        )
        db.execute("UPDATE datasets SET path = %s WHERE id = %s", (move.path, move.dataset))
        db.execute(
            "INSERT INTO dataset_moves (dataset, commit_oid, old_path) VALUES (%s, %s, %s) "
            "ON CONFLICT (dataset, commit_oid) DO UPDATE SET old_path = excluded.old_path",
            (move.dataset, move.commit, move.old_path),
        )

    _DATASET_COLUMNS = "id, repo, path, created"

    def register_dataset(
        self, repo: str, path: str, candidates: Iterable[str], *, created: int
    ) -> DatasetRecord:
        query = f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE repo = %s AND path = %s"
        with self.meta.reading("read a dataset") as db:
            row = db.execute(query, (repo, path)).fetchone()
        if row:
            return DatasetRecord(*row)
        with self.meta.transaction("register a dataset") as db:
            # Ids are global: every server registering a dataset queues here, then looks again.
            db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(_DATASETS_LOCK),))
            row = db.execute(query, (repo, path)).fetchone()
            if row:
                return DatasetRecord(*row)
            for dataset_id in candidates:
                taken = db.execute("SELECT 1 FROM datasets WHERE id = %s", (dataset_id,))
                if taken.fetchone() is None:
                    db.execute(
                        "INSERT INTO datasets (id, repo, path, created) VALUES (%s, %s, %s, %s)",
                        (dataset_id, repo, path, created),
                    )
                    return DatasetRecord(dataset_id, repo, path, created)
        raise StorageError(f"no free dataset id for {repo}/{path}")

    def dataset_by_id(self, dataset_id: str) -> DatasetRecord | None:
        with self.meta.reading("read a dataset") as db:
            row = db.execute(
                f"SELECT {self._DATASET_COLUMNS} FROM datasets WHERE id = %s", (dataset_id,)
            ).fetchone()
        return DatasetRecord(*row) if row else None

    def dataset_moves(self, dataset_id: str) -> dict[bytes, str]:
        with self.meta.reading("read dataset moves") as db:
            rows = db.execute(
                "SELECT commit_oid, old_path FROM dataset_moves WHERE dataset = %s ORDER BY seq",
                (dataset_id,),
            ).fetchall()
        return {bytes(commit): old for commit, old in rows}

    def version_notes(self, dataset_id: str) -> dict[bytes, VersionNote]:
        with self.meta.reading("read version notes") as db:
            rows = db.execute(
                "SELECT commit_oid, name, description, attributes, hidden FROM version_notes "
                "WHERE dataset = %s",
                (dataset_id,),
            ).fetchall()
        return {
            bytes(c): VersionNote(dataset_id, bytes(c), n, d, bytes(a), bool(h))
            for c, n, d, a, h in rows
        }

    def put_version_note(self, note: VersionNote) -> None:
        with self.meta.reading("write a version note") as db:
            db.execute(
                "INSERT INTO version_notes "
                "(dataset, commit_oid, name, description, attributes, hidden) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dataset, commit_oid) DO UPDATE "
                "SET name = excluded.name, description = excluded.description, "
                "attributes = excluded.attributes, hidden = excluded.hidden",
                (
                    note.dataset,
                    note.commit,
                    note.name,
                    note.description,
                    note.attributes,
                    note.hidden,
                ),
            )
