"""Memory: the C library's allocator tuned for dsv's threads, and the cycle collector paused
for bulk work. A module of its own, so that a command sets them without importing what forks
workers (`dsv.parallel`) or reads files (`dsv.ingest`)."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

from dsv.libc import glibc_function

__all__ = ["gc_paused", "limit_malloc_arenas", "return_free_memory"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Let glibc's malloc keep at most `arenas` arenas, unless MALLOC_ARENA_MAX says.

    glibc makes up to eight arenas a core, one for each thread that finds the others busy,
    and memory a thread frees stays in its arena for that arena's next use: a server whose
    requests ran on many threads, and a clone's download thread, held far more than they
    used (a 1M clone's server: 465 against 353 MiB). Python's own allocator serves small
    objects, so the threads hardly meet in malloc.
    """
    mallopt = None if "MALLOC_ARENA_MAX" in os.environ else glibc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, arenas)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector: bulk work makes millions of acyclic objects, which it
    would otherwise scan again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def return_free_memory() -> None:
    """Give the memory malloc holds free back to the system (glibc's malloc_trim), after work
    that used much of it for a while: freed blocks between live ones stay counted otherwise."""
    trim = glibc_function("malloc_trim")
    if trim is not None:
        trim(0)
