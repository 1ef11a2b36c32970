"""The dialects' shared paging: page numbers, limit/offset and cursors over an ordered list."""

from __future__ import annotations

import pytest

from dsv.server.dialects import FieldError
from dsv.server.dialects.paging import (
    cursor_window,
    limit_window,
    page_window,
    parse_limit_offset,
    parse_page,
)

IDS = [f"dp_{i}" for i in range(10)]


def test_page_numbers_count_from_one() -> None:
    assert parse_page(None, None, default_size=4) == (1, 4)
    assert IDS[page_window(*parse_page("3", "4", default_size=10))] == ["dp_8", "dp_9"]


def test_limit_and_offset_window_the_list() -> None:
    assert parse_limit_offset(None, None, default_limit=5) == (5, 0)
    assert IDS[limit_window(*parse_limit_offset("3", "8", default_limit=5))] == ["dp_8", "dp_9"]


@pytest.mark.parametrize(
    ("limit", "offset", "loc", "msg"),
    [
        ("-1", "0", ["query", "limit"], "query.limit: Input should be greater than or equal to 0"),
        (
            "10001",
            "0",
            ["query", "limit"],
            "query.limit: Input should be less than or equal to 10000",
        ),
        ("2", "x", ["query", "offset"], "query.offset: Input should be a valid integer"),
        (
            "2",
            "-3",
            ["query", "offset"],
            "query.offset: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_bad_limit_or_offset_is_a_422_naming_it(
    limit: str, offset: str, loc: list[str], msg: str
) -> None:
    with pytest.raises(FieldError) as caught:
        parse_limit_offset(limit, offset, default_limit=5)
    assert caught.value.detail[0]["loc"] == loc
    assert str(caught.value) == msg


def test_cursors_page_forward_and_back_with_has_more() -> None:
    window, more = cursor_window(IDS, limit=4)
    assert (IDS[window], more) == (["dp_0", "dp_1", "dp_2", "dp_3"], True)
    window, more = cursor_window(IDS, limit=4, starting_after="dp_3")
    assert (IDS[window], more) == (["dp_4", "dp_5", "dp_6", "dp_7"], True)
    window, more = cursor_window(IDS, limit=4, starting_after="dp_7")
    assert (IDS[window], more) == (["dp_8", "dp_9"], False)
    window, more = cursor_window(IDS, limit=4, ending_before="dp_8")
    assert (IDS[window], more) == (["dp_4", "dp_5", "dp_6", "dp_7"], True)
    window, more = cursor_window(IDS, limit=4, ending_before="dp_2")
    assert (IDS[window], more) == (["dp_0", "dp_1"], False)
    window, more = cursor_window([], limit=4)
    assert (window, more) == (slice(0, 0), False)


def test_a_cursor_naming_no_item_or_both_cursors_is_a_422() -> None:
    with pytest.raises(FieldError, match=r"query\.starting_after: no item has the id 'nope'"):
        cursor_window(IDS, limit=2, starting_after="nope")
    with pytest.raises(FieldError, match="not both"):
        cursor_window(IDS, limit=2, starting_after="dp_1", ending_before="dp_5")
