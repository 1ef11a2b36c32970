"""JSONL: one JSON object a line, written back one canonical object a line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from dsv.canonical import canonicalize
from dsv.formats.base import BOM, open_file, top_level
from dsv.fsutil import WriteResult, atomic_file
from dsv.objects import split_oids

__all__ = ["jsonl_keys", "read_jsonl", "write_jsonl"]

# dsv reads JSONL through dsv.ingest, in parallel and with its line cache; this is that
# reader for one file, records in order.


def read_jsonl(path: Path, name: str) -> Iterator[bytes]:
    """The canonical records of a JSONL file, in order."""
    from dsv.ingest import ingest_jsonl

    result = ingest_jsonl(path, name, None, collect=True)
    bodies = result.bodies or {}
    return (bodies[oid] for oid in split_oids(result.oids))


def write_jsonl(path: Path, records: Iterable[bytes], result: WriteResult) -> None:
    with atomic_file(path, result=result) as handle:
        write = handle.write
        for record in records:
            write(record)
            write(b"\n")


def jsonl_keys(
    path: Path, name: str, key: tuple[str, ...]
) -> Iterator[tuple[str, tuple[bytes, ...] | str]]:
    with open_file(path, name) as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            if not raw.strip():
                continue
            fields = top_level.decode(raw)
            found: list[bytes] = []
            for field in key:
                value = fields.get(field)
                if value is None:
                    yield str(line_no), field
                    return
                # Only the key values are canonicalised: `1.0` and `1`, or `"\u0041"` and `"A"`,
                # are one key, as they are one datapoint.
                found.append(canonicalize(b'{"v":' + bytes(value) + b"}")[5:-1])
            yield str(line_no), tuple(found)
