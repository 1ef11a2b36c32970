"""The record vocabulary every dialect maps onto (docs/dialects.md "Records"), and how a
dialect reads a field another dialect wrote under another name.

A dsv record's fields: `messages`, `system`, `inputs`, `target`, `expected_output`,
`output`, `tags`, `metadata`; a dialect keeps what has no place here under its own name.
"""

from __future__ import annotations

from typing import Any

from dsv.canonical import encode_canonical

__all__ = ["VOCABULARY", "expected_output_of", "output_blocks_of", "text_of"]

VOCABULARY = (
    "messages",
    "system",
    "inputs",
    "target",
    "expected_output",
    "output",
    "tags",
    "metadata",
)


def text_of(value: Any) -> str:
    """A field's value as text: a string as it is; a TensorZero chat output (content blocks,
    all of them text) as their texts joined; a json output as its `raw`; anything else as its
    canonical JSON (sorted keys, no spaces), so the same value always reads the same."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            for b in value
        )
    ):
        return "".join(b["text"] for b in value)
    if isinstance(value, dict) and isinstance(value.get("raw"), str):
        return str(value["raw"])
    # Canonical bytes are defined for objects: wrap, then cut the wrapper off.
    return encode_canonical({"v": value})[5:-1].decode()


def expected_output_of(record: dict[str, Any]) -> Any:
    """What a dialect with an `expected_output` reads: the record's own, else its `output`
    (TensorZero), else its `target` (Humanloop), else None; as written, not converted."""
    for name in ("expected_output", "output", "target"):
        if record.get(name) is not None:
            return record[name]
    return None


def output_blocks_of(record: dict[str, Any]) -> Any:
    """What TensorZero reads as a chat datapoint's output: the record's own `output`, else
    its `expected_output`, else its `target`, as one text content block (`text_of`); None
    when it has none of them."""
    if record.get("output") is not None:
        return record["output"]
    for name in ("expected_output", "target"):
        if record.get(name) is not None:
            return [{"type": "text", "text": text_of(record[name])}]
    return None
