"""The Overmind Lab dialect's own metadata: its dataset versions' ids and what a create
gives a version beyond its datapoints (name, source, generator model, metadata).

A version is a commit (docs/overmind.md); its UUID is derived from the dataset and the
commit, and kept here so that a request can name it. The SQLite implementation shares the
core store's file, as the Humanloop store does; the PostgreSQL one (`overmind.postgres`) is
migrated on its own in the shared database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = ["OvermindStore", "SqliteOvermindStore", "VersionRow"]


class VersionRow(msgspec.Struct, frozen=True):
    """An Overmind dataset version: its UUID, the dataset (its `ds_` id) and commit, and the
    fields its create gave (none for a version pushed with dsv)."""

    id: str
    dataset: str
    commit: bytes
    name: str | None = None
    source: str | None = None
    generator_model: str | None = None
    # Canonical JSON of the metadata object; empty for none.
    metadata: bytes = b""


class OvermindStore(Protocol):
    """Version rows beside a core metadata store."""

    def add_versions(self, rows: Iterable[VersionRow]) -> None:
        """Record versions not recorded yet; a recorded one keeps its fields."""
        ...

    def put_version(self, row: VersionRow) -> None:
        """Create or replace a version's row."""
        ...

    def version(self, version_id: str) -> VersionRow | None: ...

    def versions_of(self, dataset: str) -> dict[bytes, VersionRow]:
        """Commit -> row, for one dataset."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS overmind_versions (
    id TEXT PRIMARY KEY, dataset TEXT NOT NULL, commit_oid BLOB NOT NULL, name TEXT,
    source TEXT, generator_model TEXT, metadata BLOB NOT NULL, UNIQUE (dataset, commit_oid));
"""
_COLUMNS = "id, dataset, commit_oid, name, source, generator_model, metadata"


def _row(found: tuple[object, ...]) -> VersionRow:
    id_, dataset, commit, name, source, model, metadata = found
    return VersionRow(
        str(id_),
        str(dataset),
        bytes(commit),  # type: ignore[call-overload]
        name,  # type: ignore[arg-type]
        source,  # type: ignore[arg-type]
        model,  # type: ignore[arg-type]
        bytes(metadata),  # type: ignore[call-overload]
    )


def _values(row: VersionRow) -> tuple[object, ...]:
    return (
        row.id,
        row.dataset,
        row.commit,
        row.name,
        row.source,
        row.generator_model,
        row.metadata,
    )


class SqliteOvermindStore:
    """The Overmind table in the SQLite file of a `SqliteMetaStore`."""

    def __init__(self, meta: SqliteMetaStore) -> None:
        self.meta = meta
        with meta.reading("create the Overmind Lab table") as db:
            db.executescript(_SCHEMA)

    def add_versions(self, rows: Iterable[VersionRow]) -> None:
        values = [_values(r) for r in rows]
        if not values:
            return
        with self.meta.transaction("record Overmind Lab versions") as db:
            db.executemany(
                f"INSERT OR IGNORE INTO overmind_versions ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def put_version(self, row: VersionRow) -> None:
        with self.meta.transaction("write an Overmind Lab version") as db:
            db.execute(
                f"INSERT OR REPLACE INTO overmind_versions ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                _values(row),
            )

    def version(self, version_id: str) -> VersionRow | None:
        with self.meta.reading("read an Overmind Lab version") as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM overmind_versions WHERE id = ?", (version_id,)
            ).fetchone()
        return _row(found) if found else None

    def versions_of(self, dataset: str) -> dict[bytes, VersionRow]:
        with self.meta.reading("read Overmind Lab versions") as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM overmind_versions WHERE dataset = ?", (dataset,)
            ).fetchall()
        return {r.commit: r for r in map(_row, rows)}
