"""Functions of the C library that Python's `os` lacks, where dsv runs on Linux."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["glibc_function"]


def glibc_function(name: str, *argtypes: str) -> Callable[..., int] | None:
    """Function `name` of the process's C library on Linux (glibc's, or another's that has
    it), taking arguments of the ctypes types named `argtypes` (each as C's int where none
    are named); None elsewhere, or if the library has none, and the caller does without."""
    if sys.platform != "linux":
        return None
    import ctypes  # here: the clean `status` of dsv.quick never pays its 2 ms

    try:
        found = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    if argtypes:
        # 64-bit arguments must be declared: ctypes passes a Python int as a C int.
        found.argtypes = [getattr(ctypes, kind) for kind in argtypes]
    function: Callable[..., int] = found
    return function
