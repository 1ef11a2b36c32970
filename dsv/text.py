"""Text as people read it: plurals, a change's `+A -R ~M`, and a datapoint's key."""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = ["change_counts", "key_text", "key_value", "plural"]

_BARE = re.compile(r"[\w.:/@+-]+\Z")


def plural(count: int, noun: str, nouns: str | None = None, *, shown: str | None = None) -> str:
    """`1 datapoint`, `2 datapoints`: the count (or `shown`, e.g. `3/10`) and its noun for
    that count (`nouns`, else noun + 's')."""
    return f"{count if shown is None else shown} {noun if count == 1 else nouns or noun + 's'}"


def change_counts(added: int, removed: int, modified: int) -> str:
    """`+A -R ~M`: added, removed and modified datapoints, as every command shows a change."""
    return f"+{added} -{removed} ~{modified}"


def key_text(key: dict[str, Any]) -> str:
    """`id=q1, lang=en`: each key field and its value, as every command shows a key.

    A string is shown bare only when it cannot be read as another JSON value, so the string
    `"2"` and the number `2` never look alike: `id="2"` and `id=2`, `flag="true"`, `id="a b"`.
    """
    return ", ".join(f"{name}={key_value(value)}" for name, value in key.items())


def key_value(value: Any) -> str:
    """One key field's value as `key_text` shows it."""
    if isinstance(value, str) and _BARE.match(value) and not _reads_as_other(value):
        return value
    return msgspec.json.encode(value).decode()


def _reads_as_other(text: str) -> bool:
    """True for a string a reader could take for a number or a JSON literal (`1e5`, `nan`)."""
    if text in ("true", "false", "null"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
