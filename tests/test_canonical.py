"""Numbers in canonical JSON: dsv writes them exactly as docs/format.md §2 states.

The expected text comes from a formatter written here from the spec's words and Python's
shortest round-trip digits (`repr`), never from msgspec, which dsv's encoder is.
"""

from __future__ import annotations

import math
from decimal import Decimal

import blake3
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dsv.canonical import (
    CanonicalError,
    canonicalize,
    canonicalize_many,
    encode_canonical,
    find_duplicate_key,
)
from dsv.objects import Kind, hash_object


def spec_float(value: float) -> str:
    """docs/format.md §2's text of a binary64 value, from its shortest round-trip digits."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    n = len(digits)
    e = n + exponent - 1  # value = d1.d2...dn * 10**e
    if -5 <= e <= 15:
        if e < 0:
            text = "0." + "0" * (-e - 1) + digits
        elif e + 1 < n:
            text = digits[: e + 1] + "." + digits[e + 1 :]
        else:
            text = digits + "0" * (e + 1 - n) + ".0"
    else:
        text = digits[0] + ("." + digits[1:] if n > 1 else "") + "e" + str(e)
    return ("-" if sign else "") + text


def spec_number(source: str) -> str:
    """The canonical text of the JSON number `source`: an integer kept exactly, else a float."""
    if any(c in source for c in ".eE"):
        return spec_float(float(source))
    return str(int(source))


# Every decimal exponent from -7 to 21, a one-digit and a three-digit value each; each end of
# the positional range; zeros, subnormals, the extremes; integers against floats.
NUMBERS: list[str] = [
    *(f"1e{e}" for e in range(-7, 22)),
    *(f"1.25e{e}" for e in range(-7, 22)),
    "0.0",
    "-0.0",
    "-0e0",
    "1e-400",
    "-1e-400",
    "5e-324",
    "2.225073858507201e-308",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "1.5e-6",
    "9.999999999999999e-6",
    "0.00001",
    "-1e-5",
    "2.5e-5",
    "9.99e-5",
    "0.0001",
    "0.30000000000000004",
    "123456789.123",
    "9999999999999998.0",
    "9007199254740993.0",
    "1.0e16",
    "-1E+16",
    "1e100",
    "1",
    "1.0",
    "1e0",
    "1E+2",
    "-0",
    "9007199254740993",
    "12345678901234567890123",
    "-12345678901234567890123",
]


def test_the_reference_formatter_states_the_spec_examples() -> None:
    # The formatter above is itself checked on the examples docs/format.md §2 spells out.
    examples = {
        "1.0": "1.0",
        "0.0001": "0.0001",
        "0.00001": "0.00001",
        "0.000025": "0.000025",
        "123456789.123": "123456789.123",
        "1000000000000000.0": "1000000000000000.0",
        "1e16": "1e16",
        "1.5e-7": "1.5e-7",
        "1e-6": "1e-6",
        "5e-324": "5e-324",
        "9007199254740993.0": "9007199254740992.0",
    }
    assert {k: spec_number(k) for k in examples} == examples
    assert spec_number("9007199254740993") == "9007199254740993"


@pytest.mark.parametrize("source", NUMBERS)
def test_numbers_are_written_as_format_md_states(source: str) -> None:
    raw = b'{"x": ' + source.encode() + b', "a": 0}'
    spec_text = b'{"a":0,"x":' + spec_number(source).encode() + b"}"
    assert canonicalize(raw) == spec_text
    assert canonicalize_many([raw, raw]) == [spec_text, spec_text]
    # The id is defined on the spec's text, not on what any encoder writes.
    assert hash_object(Kind.DATAPOINT, canonicalize(raw)).hex() == (
        blake3.blake3(b"datapoint\x00" + spec_text).hexdigest()
    )
    # Records built in memory (CSV, JSON arrays, Parquet, the Humanloop API) write alike.
    value: int | float = float(source) if any(c in source for c in ".eE") else int(source)
    assert encode_canonical({"x": value, "a": 0}) == spec_text


def test_an_integer_and_a_float_of_one_value_are_two_datapoints() -> None:
    assert canonicalize(b'{"x":1}') == b'{"x":1}'
    assert canonicalize(b'{"x":1.0}') == canonicalize(b'{"x":1e0}') == b'{"x":1.0}'
    # Integers keep every digit; floats round to the nearest binary64, ties to even.
    assert canonicalize(b'{"x":9007199254740993}') == b'{"x":9007199254740993}'
    assert canonicalize(b'{"x":9007199254740993.0}') == b'{"x":9007199254740992.0}'


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e-5)
@example(9.999999999999999e-6)
@example(9999999999999998.0)
@example(1e16)
@example(5e-324)
@example(-0.0)
def test_every_float_is_written_as_format_md_states(value: float) -> None:
    expected = b'{"x":' + spec_float(value).encode() + b"}"
    assert encode_canonical({"x": value}) == expected
    assert canonicalize(b'{"x":' + repr(value).encode() + b"}") == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":"\\u003a"}',  # the escaped ':' the repeat hides comes back decoded
        b'{"a":"\\\\","a":"\\u003a"}',  # a backslash before the \u escape, too
    ],
)
def test_a_repeated_key_hidden_by_an_escaped_colon_is_found(raw: bytes) -> None:
    """Equal ':' counts prove no repeat only without a \\u escape."""
    for canonicalized in (canonicalize, lambda raw: canonicalize_many([raw])):
        with pytest.raises(CanonicalError, match=r"^duplicate key 'a' in object$"):
            canonicalized(raw)
    assert find_duplicate_key(raw) == ((), "a")
