"""What the dataset file formats share: opening a file, its errors, key values of a record."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import msgspec

from dsv.errors import BadInput

__all__ = ["BOM", "body_key", "compact", "open_file", "read_error", "top_level"]

BOM = b"\xef\xbb\xbf"
compact = msgspec.json.Encoder(order="sorted").encode
top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])


def open_file(path: Path, name: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise read_error(name, exc) from exc


def read_error(name: str, exc: OSError) -> BadInput:
    return BadInput(f"{name}: cannot read ({exc.strerror or type(exc).__name__})")


def body_key(body: bytes, key: tuple[str, ...]) -> tuple[bytes, ...] | str:
    """The canonical key values of a canonical body, or the first missing field's name."""
    fields = top_level.decode(body)
    out = []
    for field in key:
        raw = fields.get(field)
        if raw is None:
            return field
        out.append(bytes(raw))
    return tuple(out)
