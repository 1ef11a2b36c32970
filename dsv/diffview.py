"""Text and JSON views of a DiffResult. Pure functions: they return lines, never print."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

import click
import msgspec

from dsv.diff import ADDED, MODIFIED, REMOVED, Change, DatasetDiff, DiffResult, FieldChange
from dsv.text import change_counts, key_text, plural

__all__ = [
    "dataset_json",
    "render_human",
    "render_jsonl",
    "render_name_status",
    "render_stat",
    "stat_json",
    "word_diff",
]

# Strings longer than this are shown as an inline word diff instead of old → new, unless
# together they exceed the second bound (word matching is quadratic at worst).
LONG_STRING = 60
_WORD_DIFF_MAX = 100_000
# Values and record previews are cut here so one datapoint stays a few lines.
_VALUE_WIDTH = 200
_PREVIEW_WIDTH = 120
_SIGNS = {ADDED: "+", REMOVED: "-", MODIFIED: "~"}
_COLORS = {ADDED: "green", REMOVED: "red", MODIFIED: "yellow"}
_LETTERS = {ADDED: "A", REMOVED: "D", MODIFIED: "M"}
_TOKENS = re.compile(r"\s+|\S+")
_encode = msgspec.json.encode


def _hex(oid: bytes | None) -> str | None:
    return oid.hex() if oid is not None else None


def _json(value: Any, width: int = _VALUE_WIDTH) -> str:
    text = _encode(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def _key_text(change: Change) -> str:
    if change.key is None:
        oid = change.new if change.status == ADDED else change.old
        return (oid or b"").hex()[:12]
    text = key_text(change.key)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def word_diff(old: str, new: str, *, color: bool) -> str:
    """One line showing `new` against `old` word by word: `[-gone-]{+came+}` or colours."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    out: list[str] = []

    def piece(tokens: list[str], kind: str) -> str:
        # JSON escapes keep newlines and tabs of the value on one output line.
        text = _encode("".join(tokens)).decode()[1:-1]
        if kind == "equal" or not text:
            return text
        if color:
            return click.style(text, fg="red" if kind == "delete" else "green")
        return f"[-{text}-]" if kind == "delete" else f"{{+{text}+}}"

    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.append(piece(a[i1:i2], "equal"))
        if tag in ("delete", "replace"):
            out.append(piece(a[i1:i2], "delete"))
        if tag in ("insert", "replace"):
            out.append(piece(b[j1:j2], "insert"))
    return '"' + "".join(out) + '"'


def _field_line(field: FieldChange, *, color: bool) -> str:
    old, new = field.old, field.new
    if (
        isinstance(old, str)
        and isinstance(new, str)
        and max(len(old), len(new)) > LONG_STRING
        and len(old) + len(new) <= _WORD_DIFF_MAX
    ):
        return f"    {field.path}: {word_diff(old, new, color=color)}"
    before = "(absent)" if old is msgspec.UNSET else _json(old)
    after = "(absent)" if new is msgspec.UNSET else _json(new)
    if color:
        before, after = click.style(before, fg="red"), click.style(after, fg="green")
    return f"    {field.path}: {before} → {after}"


def _header(d: DatasetDiff) -> str:
    if d.status == ADDED:
        how = f"new dataset, {plural(d.new_count, 'datapoint')}"
    elif d.status == REMOVED:
        how = f"removed dataset, {plural(d.old_count, 'datapoint')}"
    else:
        how = f"keyed by {','.join(d.key)}" if d.key else "matched by content"
    return f"diff {d.path} ({how})"


def _notes(d: DatasetDiff, *, color: bool) -> Iterator[str]:
    for line in d.schema:
        yield f"schema: {line}"
    if d.reordered:
        yield f"order changed: {d.moved} moved"
    if d.duplicate_keys:
        count = plural(d.duplicate_keys, "duplicate key")
        warning = f"warning: {count} among the changed datapoints (paired in order)"
        yield click.style(warning, fg="yellow") if color else warning


def _change_lines(change: Change, *, color: bool) -> Iterator[str]:
    head = f"{_SIGNS[change.status]} {_key_text(change)}"
    yield click.style(head, fg=_COLORS[change.status]) if color else head
    for field in change.fields:
        yield _field_line(field, color=color)
    if change.record is not None:
        preview = "    " + _json(change.record, _PREVIEW_WIDTH)
        yield click.style(preview, dim=True) if color else preview


def render_human(result: DiffResult, *, color: bool, limit: int | None = None) -> Iterator[str]:
    """A git-like view: per dataset a header, then `+`/`-`/`~` per datapoint."""
    changes = result.changes(limit=limit, records=True)
    pending = next(changes, None)
    for n, d in enumerate(result.datasets):
        if n:
            yield ""
        header = _header(d)
        yield click.style(header, bold=True) if color else header
        yield from _notes(d, color=color)
        shown = 0
        while pending is not None and pending.path == d.path:
            yield from _change_lines(pending, color=color)
            shown += 1
            pending = next(changes, None)
        rest = d.added + d.removed + d.modified - shown
        if rest > 0 and limit is not None:
            yield f"… and {rest} more"


def render_stat(result: DiffResult) -> Iterator[str]:
    """` path | +a -r ~m` per dataset and a total line; nothing when nothing changed."""
    if not result.datasets:
        return
    width = max((len(d.path) for d in result.datasets), default=0)
    totals = [0, 0, 0]
    for d in result.datasets:
        notes = "".join(
            note
            for note, present in (
                (f" (order changed: {d.moved} moved)", d.reordered),
                (" (schema changed)", bool(d.schema)),
                (f" ({plural(d.duplicate_keys, 'duplicate key')})", bool(d.duplicate_keys)),
            )
            if present
        )
        yield f" {d.path:<{width}} | {change_counts(d.added, d.removed, d.modified)}{notes}"
        totals[0] += d.added
        totals[1] += d.removed
        totals[2] += d.modified
    changed = plural(len(result.datasets), "dataset")
    yield f" {changed} changed, {totals[0]} added, {totals[1]} removed, {totals[2]} modified"


def render_name_status(result: DiffResult) -> Iterator[str]:
    """`A`, `D` or `M`, a tab, and the path, per changed dataset."""
    for d in result.datasets:
        yield f"{_LETTERS[d.status]}\t{d.path}"


def dataset_json(d: DatasetDiff) -> dict[str, Any]:
    """One dataset of the `--stat --json` contract."""
    return {
        "path": d.path,
        "status": d.status,
        "added": d.added,
        "removed": d.removed,
        "modified": d.modified,
        "unchanged": d.unchanged,
        "reordered": d.reordered,
    }


def stat_json(result: DiffResult) -> bytes:
    """The `--stat --json` object; `from`/`to` are null for the working tree or index."""
    return _encode(
        {
            "from": _hex(result.from_oid),
            "to": _hex(result.to_oid),
            "datasets": [dataset_json(d) for d in result.datasets],
        }
    )


def _field_json(field: FieldChange) -> dict[str, Any]:
    """`{"path", "old", "new"}` as the contract has it; a side where the field does not exist
    is null there, and `"absent": "old"|"new"` tells it from a JSON null value."""
    old = None if field.old is msgspec.UNSET else field.old
    new = None if field.new is msgspec.UNSET else field.new
    out: dict[str, Any] = {"path": field.path, "old": old, "new": new}
    if field.old is msgspec.UNSET:
        out["absent"] = "old"
    elif field.new is msgspec.UNSET:
        out["absent"] = "new"
    return out


def render_jsonl(result: DiffResult) -> Iterator[bytes]:
    """One JSON line per changed datapoint, streamed; each ends in a newline."""
    for change in result.changes():
        yield (
            _encode(
                {
                    "path": change.path,
                    "status": change.status,
                    "key": change.key,
                    "old": _hex(change.old),
                    "new": _hex(change.new),
                    "fields": [_field_json(f) for f in change.fields],
                }
            )
            + b"\n"
        )
