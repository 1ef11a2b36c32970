"""Parquet: every row, typed values as canonical JSON, written back with the stored schema."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import decimal
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dsv.canonical import CanonicalError, decode_canonical, encode_canonical
from dsv.errors import BadInput, BadState
from dsv.formats.base import open_file
from dsv.formats.jsonarray import json_kind
from dsv.fsutil import WriteResult, atomic_file
from dsv.objects import Format

__all__ = ["read_parquet", "write_parquet"]

# Rows per Parquet record batch on read and per row group on write.
_PARQUET_ROWS = 65_536


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


def read_parquet(path: Path, name: str) -> tuple[Format, Iterator[bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    open_file(path, name).close()
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
        raise _CellError(f"expected a JSON {json_kind(kind())}, found a JSON {json_kind(value)}")
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


def write_parquet(path: Path, fmt: Format, records: Iterable[bytes], result: WriteResult) -> None:
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
