"""Canonical JSON: the one byte form of a datapoint that dsv hashes (docs/format.md §2)."""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import msgspec

from dsv.errors import BadInput

__all__ = [
    "CanonicalError",
    "canonicalize",
    "canonicalize_many",
    "decode_canonical",
    "encode_canonical",
    "find_duplicate_key",
]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder(order="sorted")
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines
_BYTE_POS = re.compile(r"\(byte (\d+)\)")
_AT_PATH = re.compile(r" - at `\$[^`]*`")


class CanonicalError(BadInput):
    """A record that has no canonical form; `offset` is the byte offset in the record, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalError(f"duplicate key {key!r} in object")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not a JSON number")


def _strict_load(raw: bytes) -> Any:
    """Slow path: the stdlib parser, which sees every key pair and so every duplicate."""
    import json  # here: only a record with a repeated key comes this way

    try:
        return json.loads(
            raw, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"malformed JSON: {exc.msg}", exc.pos) from exc


def _decode(raw: bytes | memoryview) -> Any:
    try:
        return _decoder.decode(raw)
    except RecursionError as exc:
        raise CanonicalError("malformed JSON: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise _invalid_utf8(raw) from exc
    except msgspec.ValidationError as exc:
        # msgspec names no position for a number out of range; errors must name a column.
        raise CanonicalError(f"invalid JSON: {_plain(str(exc))}", _overflow_at(raw)) from exc
    except msgspec.DecodeError as exc:
        text = str(exc)
        # Older msgspec raised UnicodeDecodeError; 0.23 raises a DecodeError that says so.
        if text.startswith("Invalid UTF-8"):
            raise _invalid_utf8(raw) from exc
        match = _BYTE_POS.search(text)
        offset = int(match.group(1)) if match else None
        if text == "Input data was truncated":
            text = "malformed JSON: unexpected end of input or an invalid \\u escape"
            offset = len(raw)
        elif offset is not None:
            if offset and raw[offset - 1 : offset] == b"-":
                offset -= 1
            rest = bytes(raw[offset : offset + 9])
            for word in (b"NaN", b"Infinity", b"-Infinity"):
                if rest.startswith(word):
                    raise CanonicalError(f"{word.decode()} is not a JSON number", offset) from exc
        text = text.replace("JSON is malformed: ", "malformed JSON: ")
        raise CanonicalError(_plain(text), offset) from exc


_NUMBER_OR_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')


def _overflow_at(raw: bytes | memoryview) -> int | None:
    """Byte offset of the first number in `raw` too large for a float (outside strings)."""
    for match in _NUMBER_OR_STRING.finditer(bytes(raw)):
        token = match.group()
        if not token.startswith(b'"') and math.isinf(float(token)):
            return match.start()
    return None


def _invalid_utf8(raw: bytes | memoryview) -> CanonicalError:
    # msgspec reports the position inside the string value, if at all; find it in the record.
    try:
        bytes(raw).decode("utf-8")
        offset = None
    except UnicodeDecodeError as whole:
        offset = whole.start
    return CanonicalError("invalid UTF-8", offset)


def _plain(text: str) -> str:
    text = _AT_PATH.sub("", _BYTE_POS.sub("", text)).strip()
    return text[:1].lower() + text[1:]


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as the stdlib parser saw it: every pair, repeated keys too."""


def find_duplicate_key(raw: bytes) -> tuple[tuple[str | int, ...], str] | None:
    """The first object in the JSON text `raw` that repeats a key, as (its path, the key).

    None when no object does, and when `raw` is not JSON at all: its decoder says why.
    """
    try:
        value = _decoder.decode(raw)
        # The ':' count proves the absence of duplicates, as in `canonicalize`.
        if not _escapes_unicode(raw) and raw.count(b":") == _encode(value).count(b":"):
            return None
    except (msgspec.DecodeError, msgspec.EncodeError, UnicodeDecodeError, RecursionError):
        return None
    import json  # here: only a body with a repeated key or a \u escape comes this way

    try:
        tree = json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return None
    # Depth first in document order, so the first repeat in the text is the one named.
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), tree)]
    while stack:
        path, node = stack.pop()
        children: list[tuple[tuple[str | int, ...], Any]] = []
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for key, item in node:
                if key in seen:
                    return path, key
                seen.add(key)
                children.append(((*path, key), item))
        elif isinstance(node, list):
            children = [((*path, i), item) for i, item in enumerate(node)]
        stack.extend(reversed(children))
    return None


def _escapes_unicode(text: bytes) -> bool:
    """Whether JSON text `text` holds a \\u escape (where a ':' may hide)."""
    # A one-byte search is memchr: 4 against 80 ms for 87 MB without a backslash, where the
    # two-byte one alone would be a tenth of an add's parsing (2026-12-08).
    return b"\\" in text and b"\\u" in text


def canonicalize(raw: bytes | memoryview) -> bytes:
    """Return the canonical bytes of one JSON object given as `raw` UTF-8 text."""
    value = _decode(raw)
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        kind = {"str": "string", "int": "number", "float": "number", "NoneType": "null"}.get(
            kind, kind
        )
        raise CanonicalError(f"record is a JSON {kind}, not an object")
    out = _encode(value)
    raw_bytes = bytes(raw)
    # msgspec keeps the last of duplicate keys silently. Dropping a pair always drops at least
    # one ':' (its own), and re-encoding preserves every ':' inside strings unless the input
    # spelled one as a \u escape; so equal ':' counts and no \u escape prove no duplicates.
    if _escapes_unicode(raw_bytes) or raw_bytes.count(b":") != out.count(b":"):
        _strict_load(raw_bytes)
    return out


def canonicalize_many(raws: list[bytes]) -> list[bytes]:
    """`canonicalize` of each record, with one encoder call for the whole batch.

    On any problem it falls back to one record at a time, so the error names the record.
    """
    try:
        values = [_decoder.decode(raw) for raw in raws]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return [canonicalize(raw) for raw in raws]
    for value in values:
        if type(value) is not dict:
            return [canonicalize(raw) for raw in raws]
    # Canonical JSON has no raw newline, so one encode_lines call splits back per record.
    out = _encode_lines(values)
    joined = b"".join(raws)
    if _escapes_unicode(joined) or joined.count(b":") != out.count(b":"):
        return [canonicalize(raw) for raw in raws]
    parts = out.split(b"\n")
    parts.pop()
    return parts


def encode_canonical(value: dict[str, Any]) -> bytes:
    """Canonical bytes of an in-memory JSON object (rejects non-finite floats)."""
    if not isinstance(value, dict):
        raise CanonicalError("record is not a JSON object")
    try:
        out = _encode(value)
    except UnicodeEncodeError as exc:
        raise CanonicalError("string holds an unpaired surrogate") from exc
    except (TypeError, msgspec.EncodeError) as exc:
        raise CanonicalError(f"value is not JSON: {exc}") from exc
    except ValueError as exc:  # an integer past Python's limit for int-to-text conversion
        limit = sys.get_int_max_str_digits()
        raise CanonicalError(f"number has too many digits (at most {limit})") from exc
    # msgspec writes NaN and infinities as null; only then is the slow walk needed.
    if b"null" in out:
        _reject_non_finite(value)
    return out


def _reject_non_finite(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise CanonicalError(f"{item} is not a JSON number (NaN and Infinity are not allowed)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def decode_canonical(data: bytes) -> dict[str, Any]:
    """Decode canonical bytes back into a JSON object."""
    value = _decode(data)
    assert isinstance(value, dict)
    return value
