"""Dataset files: read a tracked file as canonical datapoints, write datapoints back as a file."""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import datetime as dt
import decimal
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from dsv.canonical import CanonicalError, canonicalize, decode_canonical, encode_canonical
from dsv.errors import BadInput, BadState
from dsv.fsutil import WriteResult, atomic_file
from dsv.objects import Format
from dsv.text import key_value

__all__ = ["KINDS", "Format", "check_keys", "format_kind", "read_dataset", "write_dataset"]

KINDS = ("jsonl", "json", "csv", "parquet")

# Bytes per read when streaming JSONL; a module constant so tests can force tiny chunks.
_CHUNK = 8 << 20
# Rows per Parquet record batch on read and per row group on write.
_PARQUET_ROWS = 65_536

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
_BOM = b"\xef\xbb\xbf"
_DEFAULT_LINETERMINATOR = "\n"
_compact = msgspec.json.Encoder(order="sorted").encode


def format_kind(path: str) -> str:
    """The kind of a dataset file, from its name."""
    ext = Path(path).suffix
    kind = _EXTENSIONS.get(ext.lower())
    if kind is None:
        raise BadInput(
            f"{path}: unsupported file type '{ext}' "
            "(expected .jsonl, .json, .csv, .tsv or .parquet)"
        )
    return kind


def read_dataset(path: Path, *, name: str) -> tuple[Format, Iterator[bytes]]:
    """Open a dataset file; return its Format and an iterator of canonical datapoint bytes."""
    kind = format_kind(name)
    if kind == "jsonl":
        _open(path, name).close()
        return Format("jsonl"), _read_jsonl(path, name)
    if kind == "json":
        _open(path, name).close()
        return Format("json"), _read_json(path, name)
    if kind == "csv":
        delimiter = "\t" if Path(name).suffix.lower() == ".tsv" else ","
        return _read_csv(path, name, delimiter)
    return _read_parquet(path, name)


def write_dataset(path: Path, fmt: Format, records: Iterable[bytes]) -> WriteResult:
    """Write canonical datapoints as a file of `fmt`, atomically and byte-stably.

    Returns the BLAKE3 of the bytes written and when they were published.
    """
    result = WriteResult()
    if fmt.kind == "jsonl":
        _write_jsonl(path, records, result)
    elif fmt.kind == "json":
        _write_json(path, records, result)
    elif fmt.kind == "csv":
        _write_csv(path, fmt, records, result)
    elif fmt.kind == "parquet":
        _write_parquet(path, fmt, records, result)
    else:
        raise BadState(f"cannot write {path.name}: unknown dataset format {fmt.kind!r}")
    return result


def _open(path: Path, name: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _read_error(name, exc) from exc


def _read_error(name: str, exc: OSError) -> BadInput:
    return BadInput(f"{name}: cannot read ({exc.strerror or type(exc).__name__})")


# --- JSONL ---------------------------------------------------------------------------------


def _read_jsonl(path: Path, name: str) -> Iterator[bytes]:
    line_no = 0
    pending: list[bytes] = []
    first = True
    with _open(path, name) as handle:
        while True:
            try:
                chunk = handle.read(_CHUNK)
            except OSError as exc:
                raise _read_error(name, exc) from exc
            if not chunk:
                break
            end = chunk.rfind(b"\n") + 1
            if not end:
                # A line longer than a chunk: keep the pieces, join once its end shows up.
                pending.append(chunk)
                continue
            if pending:
                pending.append(chunk[:end])
                block = b"".join(pending)
                pending = []
            else:
                block = chunk[:end]
            if end < len(chunk):
                pending.append(chunk[end:])
            if first:
                first = False
                block = block.removeprefix(_BOM)
            lines = block.split(b"\n")
            lines.pop()
            for line in lines:
                line_no += 1
                if not line or line.isspace():
                    continue
                try:
                    record = canonicalize(line)
                except CanonicalError as exc:
                    raise _jsonl_error(name, line_no, line, exc) from exc
                yield record
    tail = b"".join(pending)
    if first:
        tail = tail.removeprefix(_BOM)
    if tail and not tail.isspace():
        line_no += 1
        try:
            record = canonicalize(tail)
        except CanonicalError as exc:
            raise _jsonl_error(name, line_no, tail, exc) from exc
        yield record


def _jsonl_error(name: str, line_no: int, line: bytes, exc: CanonicalError) -> BadInput:
    column = 1
    if exc.offset is not None:
        # The parser never strips the CR of a CRLF line; a column past the text would mislead.
        text = line.removesuffix(b"\r")
        prefix = text[: min(exc.offset, len(text))]
        column = len(prefix.decode("utf-8", errors="replace")) + 1
    return BadInput(f"{name}:{line_no}:{column}: {exc.message}")


def _write_jsonl(path: Path, records: Iterable[bytes], result: WriteResult) -> None:
    with atomic_file(path, result=result) as handle:
        write = handle.write
        for record in records:
            write(record)
            write(b"\n")


# --- JSON ----------------------------------------------------------------------------------


class _Bad:
    """Stands in for a value the JSON parser must reject, so the element holding it is named."""

    __slots__ = ("kind", "message")

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message


def _pairs_hook(pairs: list[tuple[str, Any]]) -> Any:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Bad("object", f"duplicate key {key!r} in object")
        seen.add(key)
    return obj  # pragma: no cover - unequal lengths imply a repeated key


def _parse_constant(text: str) -> Any:
    return _Bad("number", f"{text} is not a JSON number")


def _parse_float(text: str) -> Any:
    value = float(text)
    # 1e999 parses to infinity, which has no canonical form.
    return value if math.isfinite(value) else _Bad("number", f"number out of range: {text}")


def _find_bad(value: Any) -> _Bad | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Bad):
            return item
        if isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


_JSON_KINDS = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_kind(value: Any) -> str:
    if isinstance(value, _Bad):
        return value.kind
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _read_json(path: Path, name: str) -> Iterator[bytes]:
    with _open(path, name) as handle:
        try:
            data = handle.read()
        except OSError as exc:
            raise _read_error(name, exc) from exc
    data = data.removeprefix(_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[start : exc.start].decode("utf-8", errors="replace")) + 1
        raise BadInput(f"{name}:{line}:{column}: invalid UTF-8") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
        )
    except json.JSONDecodeError as exc:
        message = exc.msg[:1].lower() + exc.msg[1:]
        raise BadInput(f"{name}:{exc.lineno}:{exc.colno}: malformed JSON: {message}") from None
    except RecursionError:
        raise BadInput(f"{name}: malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise BadInput(f"{name}: malformed JSON: {exc}") from None
    if not isinstance(value, list):
        raise BadInput(
            f"{name}: expected a JSON array of objects, found a JSON {_json_kind(value)}"
        )
    for i, element in enumerate(value):
        if isinstance(element, _Bad):
            raise BadInput(f"{name}: element {i}: {element.message}")
        if not isinstance(element, dict):
            raise BadInput(f"{name}: element {i} is a JSON {_json_kind(element)}, not an object")
        bad = _find_bad(element)
        if bad is not None:
            raise BadInput(f"{name}: element {i}: {bad.message}")
        try:
            record = encode_canonical(element)
        except CanonicalError as exc:
            raise BadInput(f"{name}: element {i}: {exc.message}") from exc
        except UnicodeEncodeError:
            # "\ud800" escapes decode to lone surrogates, which UTF-8 cannot hold.
            raise BadInput(f"{name}: element {i}: string holds an unpaired surrogate") from None
        yield record


def _write_json(path: Path, records: Iterable[bytes], result: WriteResult) -> None:
    with atomic_file(path, result=result) as handle:
        write = handle.write
        separator = b"[\n"
        for record in records:
            write(separator)
            write(record)
            separator = b",\n"
        write(b"[]\n" if separator == b"[\n" else b"\n]\n")


# --- CSV -----------------------------------------------------------------------------------


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
            raise _read_error(self._name, exc) from exc
        self.line += 1
        if self.line == 1:
            raw = raw.removeprefix(_BOM)
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


def _read_csv(path: Path, name: str, delimiter: str) -> tuple[Format, Iterator[bytes]]:
    with _open(path, name) as handle:
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
    with _open(path, name) as handle:
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


def _write_csv(path: Path, fmt: Format, records: Iterable[bytes], result: WriteResult) -> None:
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
    return value if isinstance(value, str) else _compact(value).decode()


# --- Parquet -------------------------------------------------------------------------------


class _CellError(ValueError):
    """A value that cannot cross between Arrow and JSON; the caller adds row and column."""


_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_DAY_MS = 86_400_000
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", re.ASCII)
_PARQUET_OPTIONS: dict[str, Any] = {
    # Every option is pinned so the same rows always give the same bytes, whatever the
    # pyarrow defaults of the day.
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "store_schema": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "use_compliant_nested_type": True,
}


def _short_reason(exc: BaseException, path: Path, name: str) -> str:
    text = str(exc).replace(str(path), name).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason.split(". ")[0].rstrip(".")


def _read_parquet(path: Path, name: str) -> tuple[Format, Iterator[bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _open(path, name).close()
    try:
        with pq.ParquetFile(str(path)) as pf:
            schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{name}: not a Parquet file ({_short_reason(exc, path, name)})") from None
    names = tuple(schema.names)
    seen: set[str] = set()
    for column in names:
        if column in seen:
            raise BadInput(f"{name}: duplicate column name {column!r}")
        seen.add(column)
    plan = [_column_reader(field, name) for field in schema]
    fmt = Format("parquet", columns=names, schema=schema.serialize().to_pybytes())
    return fmt, _parquet_records(path, name, names, plan)


_Prepare = Callable[[Any], Any]
_Convert = Callable[[Any], Any] | None


def _parquet_records(
    path: Path, name: str, names: tuple[str, ...], plan: list[tuple[_Prepare, _Convert]]
) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    converted = [(column, conv) for column, (_, conv) in zip(names, plan, strict=True) if conv]
    row = 0
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{name}: not a Parquet file ({_short_reason(exc, path, name)})") from None
    with pf:
        batches = pf.iter_batches(batch_size=_PARQUET_ROWS)
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    return
                columns = [
                    prepare(array).to_pylist()
                    for (prepare, _), array in zip(plan, batch.columns, strict=True)
                ]
            except (pa.ArrowException, OSError) as exc:
                reason = _short_reason(exc, path, name)
                raise BadInput(f"{name}: not a Parquet file ({reason})") from None
            except UnicodeDecodeError:
                raise BadInput(f"{name}: a string column holds invalid UTF-8") from None
            for values in zip(*columns, strict=True):
                obj = dict(zip(names, values, strict=True))
                for column, conv in converted:
                    value = obj[column]
                    if value is not None:
                        try:
                            obj[column] = conv(value)
                        except _CellError as exc:
                            raise BadInput(f"{name}: row {row}, column {column!r}: {exc}") from None
                try:
                    record = encode_canonical(obj)
                except CanonicalError as exc:
                    raise BadInput(f"{name}: row {row}: {exc.message}") from exc
                yield record
                row += 1


def _column_reader(field: Any, name: str) -> tuple[_Prepare, _Convert]:
    """How to turn one column's Arrow arrays into JSON values: an array step, a value step."""
    import pyarrow as pa

    storage = field.type
    unwrap_extension = isinstance(storage, pa.ExtensionType)
    if unwrap_extension:
        storage = storage.storage_type
    try:
        decoded = _decoded_type(storage)
        view = _view_type(decoded)
        conv = _reader_conv(decoded)
    except _CellError as exc:
        raise BadInput(f"{name}: column {field.name!r} has type {field.type}, {exc}") from None

    def prepare(array: Any) -> Any:
        if unwrap_extension:
            array = array.storage
        if decoded != storage:
            array = array.cast(decoded)
        # Temporal values leave Arrow as plain integers: Python's datetime cannot hold
        # nanoseconds, and the text form is made exactly by _instant_text and friends.
        return array.view(view) if view != decoded else array

    return prepare, conv


def _children(t: Any) -> list[Any]:
    return [t.field(i) for i in range(t.num_fields)]


def _decoded_type(t: Any) -> Any:
    """`t` with dictionary encoding removed at every depth."""
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(t):
        return _decoded_type(t.value_type)
    if isinstance(t, pa.ExtensionType):
        raise _CellError("nested extension types are not supported")
    return _map_children(t, _decoded_type)


def _view_type(t: Any) -> Any:
    """`t` with every temporal type replaced by the integer type of the same width."""
    import pyarrow as pa

    types = pa.types
    if types.is_timestamp(t) or types.is_time64(t) or types.is_duration(t) or types.is_date64(t):
        return pa.int64()
    if types.is_date32(t) or types.is_time32(t):
        return pa.int32()
    return _map_children(t, _view_type)


def _map_children(t: Any, fn: Callable[[Any], Any]) -> Any:
    import pyarrow as pa

    types = pa.types
    if types.is_list(t):
        return pa.list_(t.value_field.with_type(fn(t.value_type)))
    if types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(fn(t.value_type)))
    if types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(fn(t.value_type)), t.list_size)
    if types.is_map(t):
        return pa.map_(
            t.key_field.with_type(fn(t.key_type)),
            t.item_field.with_type(fn(t.item_type)),
            t.keys_sorted,
        )
    if types.is_struct(t):
        return pa.struct([f.with_type(fn(f.type)) for f in _children(t)])
    return t


def _is_json_as_is(t: Any) -> bool:
    """Arrow types whose Python values are already JSON (floats aside: NaN must be refused)."""
    import pyarrow as pa

    types = pa.types
    return bool(
        types.is_null(t)
        or types.is_boolean(t)
        or types.is_integer(t)
        or types.is_duration(t)
        or types.is_string(t)
        or types.is_large_string(t)
        or types.is_string_view(t)
    )


def _is_binary(t: Any) -> bool:
    import pyarrow as pa

    types = pa.types
    return bool(
        types.is_binary(t)
        or types.is_large_binary(t)
        or types.is_fixed_size_binary(t)
        or types.is_binary_view(t)
    )


def _reader_conv(t: Any) -> _Convert:
    """The function turning a non-null Python value of Arrow type `t` into JSON, or None."""
    import pyarrow as pa

    types = pa.types
    if _is_json_as_is(t):
        return None
    if types.is_floating(t):
        return _finite
    if _is_binary(t):
        return _base64_text
    if types.is_timestamp(t):
        unit, zulu = t.unit, t.tz is not None
        return lambda v: _instant_text(v, unit, zulu)
    if types.is_date32(t):
        return _date_text
    if types.is_date64(t):
        return lambda v: _date_text(v // _DAY_MS)
    if types.is_time32(t) or types.is_time64(t):
        unit = t.unit
        return lambda v: _time_text(v, unit)
    if types.is_decimal(t):
        return _decimal_text
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        item = _reader_conv(t.value_type)
        if item is None:
            return None
        return lambda v: [None if x is None else item(x) for x in v]
    if types.is_struct(t):
        fields = [(f.name, _reader_conv(f.type)) for f in _children(t)]
        active = [(key, conv) for key, conv in fields if conv is not None]
        if not active:
            return None
        return lambda v: _convert_struct(v, active)
    if types.is_map(t):
        # Pairs, not an object: a map keeps its order and may repeat or use non-string keys.
        key_conv = _reader_conv(t.key_type)
        item_conv = _reader_conv(t.item_type)
        return lambda v: [[_convert(key, key_conv), _convert(item, item_conv)] for key, item in v]
    raise _CellError("which dsv cannot store as JSON")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _CellError("NaN/Infinity is not allowed in a datapoint")
    return value


def _base64_text(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _instant_text(value: int, unit: str, zulu: bool) -> str:
    seconds, fraction = divmod(value, _UNITS[unit])
    days, seconds = divmod(seconds, 86_400)
    text = f"{_date_text(days)}T{_clock(seconds, fraction, unit)}"
    return text + "Z" if zulu else text


def _date_text(days: int) -> str:
    try:
        return dt.date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    except (ValueError, OverflowError):
        raise _CellError("date is outside years 1..9999") from None


def _time_text(value: int, unit: str) -> str:
    seconds, fraction = divmod(value, _UNITS[unit])
    return _clock(seconds, fraction, unit)


def _clock(seconds: int, fraction: int, unit: str) -> str:
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    digits = _DIGITS[unit]
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{fraction:0{digits}d}" if digits else text


def _decimal_text(value: decimal.Decimal) -> str:
    return format(value, "f")


def _convert_struct(value: dict[str, Any], active: list[tuple[str, Callable[[Any], Any]]]) -> Any:
    out = dict(value)
    for key, conv in active:
        item = out.get(key)
        if item is not None:
            out[key] = conv(item)
    return out


def _convert(value: Any, conv: _Convert) -> Any:
    return value if value is None or conv is None else conv(value)


def _writer_conv(t: Any) -> _Convert:
    """The inverse of _reader_conv: a JSON value back into what pyarrow builds type `t` from."""
    import pyarrow as pa

    types = pa.types
    if isinstance(t, pa.ExtensionType):
        return _writer_conv(t.storage_type)
    if types.is_dictionary(t):
        return _writer_conv(t.value_type)
    if _is_json_as_is(t) or types.is_floating(t):
        return None
    if _is_binary(t):
        return _base64_bytes
    if types.is_timestamp(t):
        unit = t.unit
        return lambda v: _instant_value(v, unit)
    if types.is_date32(t):
        return _date_value
    if types.is_date64(t):
        return lambda v: _date_value(v) * _DAY_MS
    if types.is_time32(t) or types.is_time64(t):
        unit = t.unit
        return lambda v: _time_value(v, unit)
    if types.is_decimal(t):
        return _decimal_value
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        item = _writer_conv(t.value_type)
        if item is None:
            # pyarrow would take a string as a list of its characters.
            return lambda v: _expect(v, list)
        return lambda v: [None if x is None else item(x) for x in _expect(v, list)]
    if types.is_struct(t):
        fields = [(f.name, _writer_conv(f.type)) for f in _children(t)]
        known = frozenset(key for key, _ in fields)
        active = [(key, conv) for key, conv in fields if conv is not None]
        return lambda v: _struct_value(v, known, active)
    if types.is_map(t):
        key_conv = _writer_conv(t.key_type)
        item_conv = _writer_conv(t.item_type)
        return lambda v: [_map_pair(pair, key_conv, item_conv) for pair in _expect(v, list)]
    raise _CellError(f"type {t} cannot be written")


def _struct_value(
    value: Any, known: frozenset[str], active: list[tuple[str, Callable[[Any], Any]]]
) -> Any:
    extra = _expect(value, dict).keys() - known
    if extra:
        # pyarrow would drop the key without a word.
        raise _CellError(f"key {min(extra)!r} is not a field of the struct")
    return _convert_struct(value, active) if active else value


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise _CellError(f"expected a JSON {_json_kind(kind())}, found a JSON {_json_kind(value)}")
    return value


def _base64_bytes(value: Any) -> bytes:
    try:
        return base64.b64decode(_expect(value, str), validate=True)
    except binascii.Error:
        raise _CellError(f"{value!r} is not base64") from None


def _fraction(digits: str | None, unit: str) -> int:
    if not digits:
        return 0
    nanos = int(digits.ljust(9, "0"))
    step = 1_000_000_000 // _UNITS[unit]
    if nanos % step:
        raise _CellError(f"more precision than the column's unit ({unit})")
    return nanos // step


def _instant_value(value: Any, unit: str) -> int:
    match = _INSTANT.fullmatch(_expect(value, str))
    if match is None:
        raise _CellError(f"{value!r} is not an ISO-8601 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        days = dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise _CellError(f"{value!r} is not an ISO-8601 timestamp") from None
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second
    zone = match.group(8)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * _UNITS[unit] + _fraction(match.group(7), unit)


def _date_value(value: Any) -> int:
    try:
        return dt.date.fromisoformat(_expect(value, str)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise _CellError(f"{value!r} is not an ISO-8601 date") from None


def _time_value(value: Any, unit: str) -> int:
    match = _TIME.fullmatch(_expect(value, str))
    if match is None:
        raise _CellError(f"{value!r} is not an ISO-8601 time")
    hour, minute, second = (int(g) for g in match.groups()[:3])
    seconds = hour * 3600 + minute * 60 + second
    return seconds * _UNITS[unit] + _fraction(match.group(4), unit)


def _decimal_value(value: Any) -> decimal.Decimal:
    if isinstance(value, int) and not isinstance(value, bool):
        return decimal.Decimal(value)
    try:
        return decimal.Decimal(_expect(value, str))
    except decimal.InvalidOperation:
        raise _CellError(f"{value!r} is not a decimal number") from None


def _map_pair(pair: Any, key_conv: _Convert, item_conv: _Convert) -> tuple[Any, Any]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise _CellError("expected a map as a list of [key, value] pairs")
    return _convert(pair[0], key_conv), _convert(pair[1], item_conv)


def _load_schema(path: Path, fmt: Format) -> Any:
    import pyarrow as pa

    if not fmt.schema:
        raise BadState(f"cannot write {path.name}: the Parquet format has no schema")
    try:
        return pa.ipc.read_schema(pa.py_buffer(fmt.schema))
    except pa.ArrowException as exc:
        raise BadState(f"cannot write {path.name}: unreadable Parquet schema ({exc})") from None


def _build_array(values: list[Any], t: Any) -> Any:
    import pyarrow as pa

    if isinstance(t, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(t, _build_array(values, t.storage_type))
    return pa.array(values, type=t)


def _write_parquet(path: Path, fmt: Format, records: Iterable[bytes], result: WriteResult) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _load_schema(path, fmt)
    names = schema.names
    known = set(names)
    try:
        convs = [_writer_conv(field.type) for field in schema]
    except _CellError as exc:
        raise BadState(f"cannot write {path.name}: {exc}") from None
    records = iter(records)
    with atomic_file(path, result=result) as handle:
        writer = pq.ParquetWriter(handle, schema, **_PARQUET_OPTIONS)
        try:
            index = 0
            while batch := list(itertools.islice(records, _PARQUET_ROWS)):
                columns: list[list[Any]] = [[] for _ in names]
                for record in batch:
                    obj = decode_canonical(record)
                    for key in obj:
                        if key not in known:
                            raise BadInput(
                                f"cannot write {path.name}: datapoint {index} has key {key!r}, "
                                "which is not a column of the Parquet file"
                            )
                    for column, conv, values in zip(names, convs, columns, strict=True):
                        value = obj.get(column)
                        if value is not None and conv is not None:
                            try:
                                value = conv(value)
                            except _CellError as exc:
                                raise BadInput(
                                    f"cannot write {path.name}: datapoint {index}, "
                                    f"column {column!r}: {exc}"
                                ) from None
                        values.append(value)
                    index += 1
                arrays = []
                for field, values in zip(schema, columns, strict=True):
                    try:
                        arrays.append(_build_array(values, field.type))
                    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                        raise BadInput(
                            f"cannot write {path.name}: column {field.name!r}: {exc}"
                        ) from None
                try:
                    table = pa.Table.from_arrays(arrays, schema=schema)
                    writer.write_table(table, row_group_size=_PARQUET_ROWS)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    # E.g. a missing value in a column declared non-nullable.
                    raise BadInput(f"cannot write {path.name}: {exc}") from None
        except BaseException:
            # The temp file is discarded anyway; a failing close must not mask the cause.
            with contextlib.suppress(pa.ArrowException, OSError):
                writer.close()
            raise
        writer.close()


# --- keys ----------------------------------------------------------------------------------

_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])


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
        located = _jsonl_keys(path, name, key)
    elif kind == "csv":
        delimiter = "\t" if Path(name).suffix.lower() == ".tsv" else ","
        located = _csv_keys(path, name, key, delimiter)
    else:
        _, records = read_dataset(path, name=name)
        where = "element" if kind == "json" else "row"
        located = ((f"{where} {i}", _body_key(body, key)) for i, body in enumerate(records))
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


def _body_key(body: bytes, key: tuple[str, ...]) -> tuple[bytes, ...] | str:
    """The canonical key values of a canonical body, or the first missing field's name."""
    fields = _top_level.decode(body)
    out = []
    for field in key:
        raw = fields.get(field)
        if raw is None:
            return field
        out.append(bytes(raw))
    return tuple(out)


def _jsonl_keys(
    path: Path, name: str, key: tuple[str, ...]
) -> Iterator[tuple[str, tuple[bytes, ...] | str]]:
    with _open(path, name) as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            fields = _top_level.decode(raw)
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


def _csv_keys(
    path: Path, name: str, key: tuple[str, ...], delimiter: str
) -> Iterator[tuple[str, tuple[bytes, ...] | str]]:
    with _open(path, name) as handle:
        _, rows = _csv_rows(handle, name, delimiter)
        header = _csv_header(name, rows)
        missing = [field for field in key if field not in header]
        columns = [header.index(field) for field in key if field in header]
        for line, row in rows:
            if missing:
                yield str(line), missing[0]
                return
            yield str(line), tuple(_compact(row[c]) for c in columns)
