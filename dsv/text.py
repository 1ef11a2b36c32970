"""Counts as people read them: one helper for plurals, one for a change's `+A -R ~M`."""

from __future__ import annotations

__all__ = ["change_counts", "plural"]


def plural(count: int, noun: str, nouns: str | None = None, *, shown: str | None = None) -> str:
    """`1 datapoint`, `2 datapoints`: the count (or `shown`, e.g. `3/10`) and its noun for
    that count (`nouns`, else noun + 's')."""
    return f"{count if shown is None else shown} {noun if count == 1 else nouns or noun + 's'}"


def change_counts(added: int, removed: int, modified: int) -> str:
    """`+A -R ~M`: added, removed and modified datapoints, as every command shows a change."""
    return f"+{added} -{removed} ~{modified}"
