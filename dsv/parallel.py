"""Forked workers that share the parent's memory copy-on-write and return one pickled result.

A bare fork and a pipe per worker: `multiprocessing.Pool` costs ~30 ms more to start and stop,
which is a tenth of a recommit at 100k datapoints.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

__all__ = ["can_fork", "fork_map"]

T = TypeVar("T")
WAIT_EVERY = 0.1  # seconds between fork_map's `waiting` calls


def can_fork() -> bool:
    return hasattr(os, "fork")


@overload
def fork_map(
    function: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    return_exceptions: Literal[False] = False,
    waiting: Callable[[], None] | None = None,
) -> list[T]: ...


@overload
def fork_map(
    function: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    return_exceptions: Literal[True],
    waiting: Callable[[], None] | None = None,
) -> list[T | BaseException]: ...


def fork_map(
    function: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    return_exceptions: bool = False,
    waiting: Callable[[], None] | None = None,
) -> list[T] | list[T | BaseException]:
    """`[function(*args) for args in calls]`, each call in a forked child, all at once.

    Every child is waited for. Then the first child's exception is raised, or, with
    `return_exceptions`, each child's exception takes its result's place (so that the caller
    can clean up after the others). A child that dies before it has answered is an OSError.
    `waiting` is called every WAIT_EVERY seconds until all have answered (to report progress).
    """
    children: list[tuple[int, int]] = []  # pid, read end
    statuses: dict[int, int] = {}
    try:
        for args in calls:
            read, write = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                raise
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                os.close(read)
                _child(write, function, args)
            os.close(write)
            children.append((pid, read))
        if waiting is None:
            answers = [_read_all(read) for _, read in children]
        else:
            answers = _read_waiting([read for _, read in children], waiting)
    except BaseException:
        for pid, _ in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        for pid, read in children:
            with contextlib.suppress(OSError):
                os.close(read)
            with contextlib.suppress(ChildProcessError):
                statuses[pid] = os.waitpid(pid, 0)[1]
    outcomes: list[T | BaseException] = []
    for (pid, _), answer in zip(children, answers, strict=True):
        outcomes.append(_outcome(answer, statuses.get(pid, 0)))
    if not return_exceptions:
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return outcomes


def _outcome(answer: bytes, status: int) -> Any:
    """A child's result or exception, from what it wrote and how it ended."""
    died = OSError("a worker process died before it had answered")
    if not answer or os.waitstatus_to_exitcode(status) != 0:
        return died
    try:
        _, value = pickle.loads(answer)
    except Exception:  # a truncated answer: the child was killed while writing it
        return died
    return value  # the result, or the exception the child raised


def _child(
    write: int, function: Callable[..., Any], args: tuple[Any, ...]
) -> None:  # pragma: no cover
    code = 0
    try:
        try:
            answer = pickle.dumps((True, function(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # every failure goes back to the parent
            try:
                answer = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
                pickle.loads(answer)
            except Exception:  # one that cannot travel goes as text
                failure = RuntimeError(f"{type(exc).__name__}: {exc}")
                answer = pickle.dumps((False, failure), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write, "wb") as pipe:
            pipe.write(answer)
    except BaseException:  # a child never returns into the parent's code
        code = 1
    finally:
        os._exit(code)


def _read_waiting(fds: list[int], waiting: Callable[[], None]) -> list[bytes]:
    """Every fd's bytes up to its end, calling `waiting` every WAIT_EVERY seconds meanwhile."""
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    open_fds = set(fds)
    last = time.monotonic()
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], WAIT_EVERY)
        if time.monotonic() - last >= WAIT_EVERY:
            waiting()
            last = time.monotonic()
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            if chunk:
                chunks[fd].append(chunk)
            else:
                open_fds.discard(fd)
    return [b"".join(chunks[fd]) for fd in fds]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
