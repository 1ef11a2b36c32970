"""Paging shared by the dialects, in the three styles the hosted platforms use.

- page numbers: `page` (from 1) and `size` (Humanloop, Overmind Lab);
- `limit` and `offset` (TensorZero);
- cursors: `limit` with `starting_after` or `ending_before`, an item's id (orq.ai).

Each turns query text into a window over an ordered list, refusing bad values with a 422 that
names the parameter; none reads the list itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsv.server.dialects import FieldError

__all__ = [
    "MAX_PAGE_SIZE",
    "cursor_window",
    "int_param",
    "limit_window",
    "page_window",
    "parse_limit_offset",
    "parse_page",
]

MAX_PAGE_SIZE = 10_000


def parse_page(page: str | None, size: str | None, *, default_size: int) -> tuple[int, int]:
    """`page` (>= 1) and `size` (0 to 10,000) query parameters; a 422 naming the bad one."""
    return (
        int_param("page", page, 1, 1, None),
        int_param("size", size, default_size, 0, MAX_PAGE_SIZE),
    )


def int_param(name: str, text: str | None, default: int, low: int, high: int | None) -> int:
    """An integer query parameter from `low` to `high` (None: no bound); a 422 naming it."""
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise FieldError(
            ["query", name], "Input should be a valid integer", "int_parsing"
        ) from None
    if value < low:
        raise FieldError(
            ["query", name], f"Input should be greater than or equal to {low}", "greater_than_equal"
        )
    if high is not None and value > high:
        raise FieldError(
            ["query", name], f"Input should be less than or equal to {high}", "less_than_equal"
        )
    return value


def page_window(page: int, size: int) -> slice:
    """The items of page `page` (from 1) of `size` items."""
    start = (page - 1) * size
    return slice(start, start + size)


def parse_limit_offset(
    limit: str | None, offset: str | None, *, default_limit: int
) -> tuple[int, int]:
    """`limit` (0 to 10,000) and `offset` (>= 0) query parameters; a 422 naming the bad one."""
    return (
        int_param("limit", limit, default_limit, 0, MAX_PAGE_SIZE),
        int_param("offset", offset, 0, 0, None),
    )


def limit_window(limit: int, offset: int) -> slice:
    """The `limit` items from position `offset` on."""
    return slice(offset, offset + limit)


def cursor_window(
    ids: Sequence[str],
    *,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[slice, bool]:
    """The window of `ids` a cursor asks for, and whether more items lie beyond it.

    `starting_after`: the `limit` items after that id (more: any after the window);
    `ending_before`: the `limit` items just before it (more: any before the window); neither:
    the first `limit`. A cursor that names no item is a 422, as is naming both.
    """
    if starting_after is not None and ending_before is not None:
        raise FieldError(
            ["query", "ending_before"], "give starting_after or ending_before, not both"
        )
    if ending_before is not None:
        end = _position(ids, "ending_before", ending_before)
        start = max(0, end - limit)
        return slice(start, end), start > 0
    start = 0 if starting_after is None else _position(ids, "starting_after", starting_after) + 1
    end = min(len(ids), start + limit)
    return slice(start, end), end < len(ids)


def _position(ids: Sequence[str], name: str, cursor: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise FieldError(["query", name], f"no item has the id {cursor[:80]!r}") from None
