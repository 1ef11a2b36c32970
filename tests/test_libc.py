"""The C library's functions that Python's `os` lacks."""

from __future__ import annotations

import os
import sys

import pytest

from dsv.libc import glibc_function


@pytest.mark.skipif(sys.platform != "linux", reason="glibc is Linux's")
def test_a_function_of_the_c_library_is_called_with_its_declared_types() -> None:
    getpid = glibc_function("getpid")
    assert getpid is not None and getpid() == os.getpid()
    # A 64-bit argument goes through whole only when its type is declared.
    ffsll = glibc_function("ffsll", "c_longlong")  # the lowest bit set, counted from 1
    assert ffsll is not None and ffsll(1 << 40) == 41
    undeclared = glibc_function("ffsll")
    assert undeclared is not None
    assert undeclared(1 << 40) != 41  # ctypes cut it to a C int


def test_a_function_the_library_lacks_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    assert glibc_function("dsv_no_such_function") is None
    monkeypatch.setattr("sys.platform", "darwin")
    assert glibc_function("getpid") is None
