"""The Humanloop Datasets API's shapes: its requests, responses and validation errors, and how
its names map onto dsv's (docs/humanloop.md). The rules are in its `service` module.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import blake3
import msgspec

from dsv.canonical import CanonicalError, encode_canonical
from dsv.errors import BadInput, NotFound
from dsv.paths import BadPath, check_dataset_path, shown_path
from dsv.server.dialects import FieldError
from dsv.server.storage import check_repo_name

__all__ = [
    "DATASET_SUFFIX",
    "MAX_DEPTH",
    "CreateDatapoint",
    "DatasetResponse",
    "EnvironmentResponse",
    "FileEnvironmentResponse",
    "MoveRequest",
    "Page",
    "UpsertRequest",
    "V4Datapoint",
    "VersionUpdate",
    "check_name",
    "datapoint_id",
    "dataset_ids",
    "decode_body",
    "encode_record",
    "env_id",
    "iso_time",
    "not_found",
    "parse_bool",
    "read_csv",
    "record_of",
    "split_path",
    "version_id",
]

DATASET_SUFFIX = ".jsonl"
# Well below the JSON decoder's own limit, so that every response holding a datapoint written
# through the API encodes and decodes.
MAX_DEPTH = 200


# -- errors ---------------------------------------------------------------------------------------


def not_found(message: str) -> NotFound:
    return NotFound(message)


# -- requests -------------------------------------------------------------------------------------


class CreateDatapoint(msgspec.Struct, forbid_unknown_fields=True):
    # Values are checked by record_of, which can name the offending key.
    inputs: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None


class UpsertRequest(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[CreateDatapoint]
    path: str | None = None
    id: str | None = None
    action: Literal["set", "add", "remove"] | None = None
    attributes: dict[str, Any] | None = None
    version_name: str | None = None
    version_description: str | None = None


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: str | None = None
    name: str | None = None


class VersionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    description: str | None = None


class V4Datapoint(msgspec.Struct, forbid_unknown_fields=True):
    inputs: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None
    log_ids: list[str] | None = None


_ERROR_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
# msgspec names fields (`.name`) and indices (`[3]`), but not dict keys (`[...]`).
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_ERROR_TYPES = (
    ("Expected `str`", "string_type"),
    ("Expected `object`", "dict_type"),
    ("Expected `array`", "list_type"),
    ("missing required field", "missing"),
    ("unknown field", "extra_forbidden"),
    ("Invalid enum value", "literal_error"),
)


def decode_body(data: bytes, kind: type[Any]) -> Any:
    """`data` as a `kind`; a 422 naming the field (`loc`) otherwise."""
    if not data.strip():
        raise FieldError(["body"], "Field required: the request has no JSON body", "missing")
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        found = _ERROR_AT.match(str(exc))
        assert found is not None
        loc: list[str | int] = ["body"]
        for name, index in _PATH_PART.findall((found["path"] or "").replace("[...]", "")):
            loc.append(int(index) if index else name)
        message = found["msg"]
        missing = re.search(r"missing required field `([^`]+)`", message)
        if missing:
            loc.append(missing[1])
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:
            loc.append(unknown[1])
        code = next((c for text, c in _ERROR_TYPES if text in message), "value_error")
        raise FieldError(loc, message, code) from exc
    except msgspec.DecodeError as exc:
        raise FieldError(["body"], f"JSON decode error: {exc}", "json_invalid") from exc
    except RecursionError as exc:
        raise FieldError(["body"], "JSON nested too deeply", "json_invalid") from exc


# -- responses ------------------------------------------------------------------------------------


class EnvironmentResponse(msgspec.Struct, frozen=True):
    id: str
    created_at: str
    name: str
    tag: str


class DatasetResponse(msgspec.Struct, frozen=True):
    path: str
    id: str
    name: str
    version_id: str
    created_at: str
    updated_at: str
    last_used_at: str
    datapoints_count: int
    environments: list[EnvironmentResponse]
    version_name: str | None = None
    version_description: str | None = None
    created_by: dict[str, str] | None = None
    # UNSET leaves a field out: `datapoints` of a response whose datapoints are streamed after
    # it, `version_created` of every response but an upsert's.
    datapoints: list[dict[str, Any]] | msgspec.UnsetType | None = None
    attributes: dict[str, Any] | None = None
    directory_id: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    readme: str | None = None
    tags: list[str] | None = None
    type: str = "dataset"
    # dsv's own: did this upsert make a version (False: it changed nothing, docs/humanloop.md)?
    version_created: bool | msgspec.UnsetType = msgspec.UNSET


class FileEnvironmentResponse(msgspec.Struct, frozen=True):
    id: str
    created_at: str
    name: str
    tag: str
    file: DatasetResponse | None


class Page(msgspec.Struct, frozen=True):
    records: list[Any]
    page: int
    size: int
    total: int


# -- the mapping ----------------------------------------------------------------------------------


def env_id(name: str) -> str:
    return "env_" + blake3.blake3(b"environment\x00" + name.encode()).hexdigest()[:24]


def dataset_ids(repo: str, path: str) -> Iterable[str]:
    """Candidate ids of a dataset: derived from where it was first seen, so they are stable."""
    seed = blake3.blake3(f"dataset\x00{repo}\x00{path}".encode()).hexdigest()
    yield "ds_" + seed[:24]
    for n in range(1, 1000):
        yield "ds_" + blake3.blake3(f"{seed}\x00{n}".encode()).hexdigest()[:24]


def version_id(commit: bytes) -> str:
    return "dsv_" + commit.hex()


def datapoint_id(oid: bytes) -> str:
    return "dp_" + oid.hex()


def iso_time(seconds: int, tz_minutes: int = 0) -> str:
    """ISO 8601 with the zone; a time or zone Python cannot show (a pushed commit may carry
    any) is shown in UTC, clamped to years 1 to 9999."""
    try:
        zone = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
        return datetime.datetime.fromtimestamp(seconds, zone).isoformat()
    except (ValueError, OverflowError, OSError):
        pass
    utc = datetime.UTC
    low = datetime.datetime(1, 1, 2, tzinfo=utc).timestamp()
    high = datetime.datetime(9999, 12, 30, tzinfo=utc).timestamp()
    return datetime.datetime.fromtimestamp(min(max(seconds, low), high), utc).isoformat()


def check_name(name: str, loc: Sequence[str | int]) -> str:
    """A Humanloop dataset name inside a repository: the file is NAME.jsonl, and both obey
    the one path rule (format.md §3), so the API writes only trees a clone can check out."""
    try:
        # The name itself too: `a/` would pass as the file `a/.jsonl`.
        check_dataset_path(name)
        check_dataset_path(name + DATASET_SUFFIX)
    except BadPath as exc:
        raise FieldError(loc, f"invalid dataset name {shown_path(name)}: {exc.reason}") from exc
    return name


def split_path(path: str, loc: Sequence[str | int] = ("body", "path")) -> tuple[str, str]:
    """`OWNER/REPO/NAME` -> (`OWNER/REPO`, the file `NAME.jsonl`)."""
    parts = path.strip("/").split("/")
    if len(parts) < 3:
        raise FieldError(
            loc,
            f"dataset path {path!r} must be OWNER/REPO/NAME: the repository, then the dataset",
        )
    repo = "/".join(parts[:2])
    try:
        check_repo_name(repo)
    except BadInput as exc:
        raise FieldError(loc, exc.message) from exc
    return repo, check_name("/".join(parts[2:]), loc) + DATASET_SUFFIX


def record_of(point: CreateDatapoint | V4Datapoint, loc: list[str | int]) -> dict[str, Any]:
    """The datapoint as stored: `inputs`, `messages`, `target`, the absent ones omitted."""
    record: dict[str, Any] = {}
    if point.inputs is not None:
        for name, value in point.inputs.items():
            if not isinstance(value, str):
                raise FieldError(
                    [*loc, "inputs", name], "Input should be a valid string", "string_type"
                )
        record["inputs"] = point.inputs
    if point.messages is not None:
        for j, message in enumerate(point.messages):
            if not isinstance(message.get("role"), str):
                raise FieldError([*loc, "messages", j, "role"], "Field required", "missing")
        record["messages"] = point.messages
    if point.target is not None:
        record["target"] = point.target
    if _depth(record) > MAX_DEPTH:
        raise FieldError(loc, f"the datapoint is nested more than {MAX_DEPTH} levels deep")
    return record


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iteratively: it may be very deep)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def encode_record(record: dict[str, Any], loc: list[str | int]) -> bytes:
    try:
        return encode_canonical(record)
    except CanonicalError as exc:
        raise FieldError(loc, exc.message) from exc


def read_csv(data: bytes) -> list[dict[str, Any]]:
    """Humanloop's CSV: a header; `messages` and `target` cells hold JSON, other columns inputs."""
    loc: list[str | int] = ["body", "file"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FieldError(loc, f"the CSV file is not UTF-8 (byte {exc.start})") from exc
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
        if not header or not any(h.strip() for h in header):
            raise FieldError(loc, "the CSV file has no header row")
        if len(set(header)) != len(header):
            raise FieldError(loc, "line 1: a column is named twice")
        records = []
        for row in rows:
            line = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise FieldError(
                    loc, f"line {line}: {len(row)} cells where the header has {len(header)}"
                )
            record: dict[str, Any] = {}
            inputs = {}
            for name, cell in zip(header, row, strict=True):
                if name in ("messages", "target"):
                    if cell.strip():
                        record[name] = _json_cell(cell, name, line, loc)
                else:
                    inputs[name] = cell
            if inputs:
                record["inputs"] = inputs
            point = msgspec.convert(record, CreateDatapoint)
            records.append(record_of(point, [*loc, line]))
        return records
    except csv.Error as exc:
        raise FieldError(loc, f"line {rows.line_num}: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise FieldError(loc, f"line {rows.line_num}: {exc}") from exc


def _json_cell(cell: str, column: str, line: int, loc: list[str | int]) -> Any:
    try:
        value = msgspec.json.decode(cell)
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise FieldError(loc, f"line {line}: column {column} is not JSON ({reason})") from exc
    wanted = list if column == "messages" else dict
    if not isinstance(value, wanted):
        shown = "an array" if wanted is list else "an object"
        raise FieldError(loc, f"line {line}: column {column} must hold {shown}")
    return value


def parse_bool(name: str, text: str | None) -> bool:
    if text is None or text == "":
        return False
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise FieldError(["query", name], "Input should be a valid boolean", "bool_parsing")
