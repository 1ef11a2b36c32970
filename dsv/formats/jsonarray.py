"""JSON arrays of objects, written back as `[`, one canonical object a line, `]`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dsv.canonical import CanonicalError, encode_canonical
from dsv.errors import BadInput
from dsv.formats.base import BOM, open_file, read_error
from dsv.fsutil import WriteResult, atomic_file

__all__ = ["read_json", "write_json"]


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


def json_kind(value: Any) -> str:
    if isinstance(value, _Bad):
        return value.kind
    return _JSON_KINDS.get(type(value), type(value).__name__)


def read_json(path: Path, name: str) -> Iterator[bytes]:
    with open_file(path, name) as handle:
        try:
            data = handle.read()
        except OSError as exc:
            raise read_error(name, exc) from exc
    data = data.removeprefix(BOM)
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
        raise BadInput(f"{name}: expected a JSON array of objects, found a JSON {json_kind(value)}")
    for i, element in enumerate(value):
        if isinstance(element, _Bad):
            raise BadInput(f"{name}: element {i}: {element.message}")
        if not isinstance(element, dict):
            raise BadInput(f"{name}: element {i} is a JSON {json_kind(element)}, not an object")
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


def write_json(path: Path, records: Iterable[bytes], result: WriteResult) -> None:
    with atomic_file(path, result=result) as handle:
        write = handle.write
        separator = b"[\n"
        for record in records:
            write(separator)
            write(record)
            separator = b",\n"
        write(b"[]\n" if separator == b"[\n" else b"\n]\n")
