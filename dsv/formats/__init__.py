"""Dataset files: read a tracked file as canonical datapoints, write datapoints back as a file.

One module a format (`jsonl`, `jsonarray`, `delimited`, `parquet`), each a reader, a writer
and, where it can name a record's line, a key reader; this module picks one by file kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from dsv.errors import BadInput, BadState
from dsv.formats.base import body_key, open_file
from dsv.formats.delimited import csv_keys, read_csv, write_csv
from dsv.formats.jsonarray import read_json, write_json
from dsv.formats.jsonl import jsonl_keys, read_jsonl, write_jsonl
from dsv.formats.parquet import read_parquet, write_parquet
from dsv.fsutil import WriteResult
from dsv.objects import Format
from dsv.text import key_value

__all__ = ["KINDS", "Format", "check_keys", "format_kind", "read_dataset", "write_dataset"]

KINDS = ("jsonl", "json", "csv", "parquet")


_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}


def format_kind(path: str) -> str:
    """The kind of a dataset file, from its name."""
    ext = Path(path).suffix
    kind = _EXTENSIONS.get(ext.lower())
    if kind is None:
        raise BadInput(
            f"{path}: unsupported file type '{ext}' "
            "(expected .jsonl, .ndjson, .json, .csv, .tsv or .parquet)"
        )
    return kind


def read_dataset(path: Path, *, name: str) -> tuple[Format, Iterator[bytes]]:
    """Open a dataset file; return its Format and an iterator of canonical datapoint bytes."""
    kind = format_kind(name)
    if kind == "jsonl":
        open_file(path, name).close()
        return Format("jsonl"), read_jsonl(path, name)
    if kind == "json":
        open_file(path, name).close()
        return Format("json"), read_json(path, name)
    if kind == "csv":
        delimiter = "\t" if Path(name).suffix.lower() == ".tsv" else ","
        return read_csv(path, name, delimiter)
    return read_parquet(path, name)


def write_dataset(path: Path, fmt: Format, records: Iterable[bytes]) -> WriteResult:
    """Write canonical datapoints as a file of `fmt`, atomically and byte-stably.

    Returns the BLAKE3 of the bytes written and when they were published.
    """
    result = WriteResult()
    if fmt.kind == "jsonl":
        write_jsonl(path, records, result)
    elif fmt.kind == "json":
        write_json(path, records, result)
    elif fmt.kind == "csv":
        write_csv(path, fmt, records, result)
    elif fmt.kind == "parquet":
        write_parquet(path, fmt, records, result)
    else:
        raise BadState(f"cannot write {path.name}: unknown dataset format {fmt.kind!r}")
    return result


def check_keys(path: Path, name: str, key: tuple[str, ...]) -> list[tuple[bytes, ...]]:
    """Refuse a file where a record lacks a key field or two records share a key; else
    return every record's key values, in order (canonical JSON for JSON records).

    Called on a file already read once, so its records are known to be valid. Errors name
    the record as the format's other errors do: `FILE:LINE` (JSONL, CSV), `FILE: element I`
    (JSON arrays), `FILE: row I` (Parquet).
    """
    if not key:
        return []
    kind = format_kind(name)
    if kind == "jsonl":
        located = jsonl_keys(path, name, key)
    elif kind == "csv":
        delimiter = "\t" if Path(name).suffix.lower() == ".tsv" else ","
        located = csv_keys(path, name, key, delimiter)
    else:
        _, records = read_dataset(path, name=name)
        where = "element" if kind == "json" else "row"
        located = ((f"{where} {i}", body_key(body, key)) for i, body in enumerate(records))
    first: dict[tuple[bytes, ...], str] = {}
    for at, found in located:
        if isinstance(found, str):
            raise BadInput(
                f"{_at(name, at)}: record has no key field {found!r}",
                hint="every record needs the key fields; dsv add --key chooses them",
            )
        earlier = first.get(found)
        if earlier is None:
            first[found] = at
        else:
            shown = ", ".join(f"{f}={_key_value(v)}" for f, v in zip(key, found, strict=True))
            raise BadInput(
                f"{_at(name, at)}: duplicate key {shown} (first at {_where(earlier)})",
                hint="a key identifies one record; make it unique or choose another --key",
            )
    return list(first)


def _at(name: str, at: str) -> str:
    return f"{name}:{at}" if at.isdigit() else f"{name}: {at}"


def _where(at: str) -> str:
    return f"line {at}" if at.isdigit() else at


def _key_value(raw: bytes) -> str:
    return key_value(msgspec.json.decode(raw))
