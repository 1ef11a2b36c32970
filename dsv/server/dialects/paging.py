"""Paging shared by the dialects: the `page`/`size` query parameters and the window they give."""

from __future__ import annotations

from dsv.server.dialects import FieldError

__all__ = ["MAX_PAGE_SIZE", "page_window", "parse_page"]

MAX_PAGE_SIZE = 10_000


def parse_page(page: str | None, size: str | None, *, default_size: int) -> tuple[int, int]:
    """`page` (>= 1) and `size` (0 to 10,000) query parameters; a 422 naming the bad one."""
    return (
        _int_param("page", page, 1, 1, None),
        _int_param("size", size, default_size, 0, MAX_PAGE_SIZE),
    )


def _int_param(name: str, text: str | None, default: int, low: int, high: int | None) -> int:
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
