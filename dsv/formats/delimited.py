"""CSV and TSV: a header row, one datapoint a row of string values."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from dsv.canonical import decode_canonical, encode_canonical
from dsv.errors import BadInput
from dsv.formats.base import BOM, compact, open_file, read_error
from dsv.fsutil import WriteResult, atomic_file
from dsv.objects import Format

__all__ = ["csv_keys", "read_csv", "write_csv"]

_DEFAULT_LINETERMINATOR = "\n"


class _Lines:
    """Physical lines of a CSV file as text, counting them so errors can name a line."""

    def __init__(self, handle: IO[bytes], name: str) -> None:
        self._handle = handle
        self._name = name
        self.line = 0
        self.first_ending = b""

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        try:
            raw = next(self._handle)
        except OSError as exc:
            raise read_error(self._name, exc) from exc
        self.line += 1
        if self.line == 1:
            raw = raw.removeprefix(BOM)
            self.first_ending = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{self._name}:{self.line}: invalid UTF-8") from None


def _csv_rows(
    handle: IO[bytes], name: str, delimiter: str
) -> tuple[_Lines, Iterator[tuple[int, list[str]]]]:
    """(line source, iterator of (start line, row)), skipping blank lines."""
    lines = _Lines(handle, name)
    # Long cells (RAG contexts, transcripts) exceed the csv module's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(lines, delimiter=delimiter)

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            # csv's line_num tells where a row ends; errors must point where it starts.
            start = lines.line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise BadInput(f"{name}:{lines.line}: {exc}") from None
            if row:
                yield start, row

    return lines, rows()


def _csv_header(name: str, rows: Iterator[tuple[int, list[str]]]) -> tuple[str, ...]:
    first = next(rows, None)
    if first is None:
        raise BadInput(f"{name}: empty CSV file, expected a header row")
    line, header = first
    seen: set[str] = set()
    for i, column in enumerate(header):
        if not column:
            raise BadInput(f"{name}:{line}: empty column name (column {i + 1})")
        if column in seen:
            raise BadInput(f"{name}:{line}: duplicate column name {column!r}")
        seen.add(column)
    return tuple(header)


def read_csv(path: Path, name: str, delimiter: str) -> tuple[Format, Iterator[bytes]]:
    with open_file(path, name) as handle:
        lines, rows = _csv_rows(handle, name, delimiter)
        header = _csv_header(name, rows)
        ending = lines.first_ending.decode() if lines.first_ending else _DEFAULT_LINETERMINATOR
    fmt = Format(
        "csv",
        columns=header,
        options=(("delimiter", delimiter), ("lineterminator", ending)),
    )
    return fmt, _csv_records(path, name, delimiter, header)


def _csv_records(path: Path, name: str, delimiter: str, header: tuple[str, ...]) -> Iterator[bytes]:
    # The header was parsed once to build the Format; reopening keeps no handle alive
    # for an iterator that may never be consumed.
    with open_file(path, name) as handle:
        _, rows = _csv_rows(handle, name, delimiter)
        if _csv_header(name, rows) != header:
            raise BadInput(f"{name}: file changed while being read")
        width = len(header)
        for line, row in rows:
            if len(row) != width:
                raise BadInput(f"{name}:{line}: row has {len(row)} fields, the header has {width}")
            yield encode_canonical(dict(zip(header, row, strict=True)))


class _CsvSink:
    """Encodes the csv writer's output and fixes up its line ending (see _write_csv)."""

    def __init__(self, handle: IO[bytes], ending: str) -> None:
        self._write = handle.write
        self._ending = ending.encode()

    def write(self, text: str) -> None:
        # csv.writer hands over exactly one whole row, ending in "\r\n", per call.
        self._write(text[:-2].encode() + self._ending)


def write_csv(path: Path, fmt: Format, records: Iterable[bytes], result: WriteResult) -> None:
    options = dict(fmt.options)
    delimiter = options.get("delimiter", ",")
    ending = options.get("lineterminator", _DEFAULT_LINETERMINATOR)
    columns = fmt.columns
    known = set(columns)
    with atomic_file(path, result=result) as handle:
        # The writer always terminates rows with "\r\n" because QUOTE_MINIMAL only quotes the
        # characters of its own lineterminator: with "\n" a cell holding a lone "\r" would be
        # written bare and could not be read back. The sink rewrites the ending.
        writer = csv.writer(_CsvSink(handle, ending), delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(columns)
        for i, record in enumerate(records):
            obj = decode_canonical(record)
            for key in obj:
                if key not in known:
                    raise BadInput(
                        f"cannot write {path.name}: datapoint {i} has key {key!r}, "
                        "which is not a column of the CSV file"
                    )
            writer.writerow([_csv_cell(obj.get(column, "")) for column in columns])


def _csv_cell(value: Any) -> str:
    return value if isinstance(value, str) else compact(value).decode()


def csv_keys(
    path: Path, name: str, key: tuple[str, ...], delimiter: str
) -> Iterator[tuple[str, tuple[bytes, ...] | str]]:
    with open_file(path, name) as handle:
        _, rows = _csv_rows(handle, name, delimiter)
        header = _csv_header(name, rows)
        missing = [field for field in key if field not in header]
        columns = [header.index(field) for field in key if field in header]
        for line, row in rows:
            if missing:
                yield str(line), missing[0]
                return
            yield str(line), tuple(compact(row[c]) for c in columns)
