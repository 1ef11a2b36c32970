"""The Overmind Lab dialect's table in the PostgreSQL metadata store, migrated on its own."""

from __future__ import annotations

from collections.abc import Iterable

from dsv.server.dialects.overmind.store import VersionRow
from dsv.server.storage.postgres import PostgresMetaStore

__all__ = ["OVERMIND_MIGRATIONS", "PostgresOvermindStore"]

OVERMIND_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE overmind_versions (
        id TEXT PRIMARY KEY, dataset TEXT NOT NULL, commit_oid BYTEA NOT NULL, name TEXT,
        source TEXT, generator_model TEXT, metadata BYTEA NOT NULL, UNIQUE (dataset, commit_oid));
    """,
)
_COLUMNS = "id, dataset, commit_oid, name, source, generator_model, metadata"
_INSERT = f"INSERT INTO overmind_versions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"


def _values(row: VersionRow) -> tuple[object, ...]:
    return (row.id, row.dataset, row.commit, row.name, row.source, row.generator_model,
            row.metadata)  # fmt: skip


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


class PostgresOvermindStore:
    """Overmind Lab's version rows beside a `PostgresMetaStore`, shared by every server."""

    def __init__(self, meta: PostgresMetaStore) -> None:
        self.meta = meta
        meta.migrate("overmind", OVERMIND_MIGRATIONS)

    def add_versions(self, rows: Iterable[VersionRow]) -> None:
        values = [_values(r) for r in rows]
        if not values:
            return
        with (
            self.meta.transaction("record Overmind Lab versions") as db,
            db.cursor() as cursor,
        ):
            cursor.executemany(_INSERT + " ON CONFLICT DO NOTHING", values)

    def put_version(self, row: VersionRow) -> None:
        with self.meta.transaction("write an Overmind Lab version") as db:
            # The UUID and the (dataset, commit) pair name one version: either may be there.
            db.execute(
                "DELETE FROM overmind_versions WHERE id = %s OR (dataset = %s AND commit_oid = %s)",
                (row.id, row.dataset, row.commit),
            )
            db.execute(_INSERT, _values(row))

    def version(self, version_id: str) -> VersionRow | None:
        with self.meta.reading("read an Overmind Lab version") as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM overmind_versions WHERE id = %s", (version_id,)
            ).fetchone()
        return _row(found) if found else None

    def versions_of(self, dataset: str) -> dict[bytes, VersionRow]:
        with self.meta.reading("read Overmind Lab versions") as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM overmind_versions WHERE dataset = %s", (dataset,)
            ).fetchall()
        return {r.commit: r for r in map(_row, rows)}
