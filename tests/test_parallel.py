"""Forked workers: results in order, failures raised in the parent, no child left behind."""

from __future__ import annotations

import os
import pickle
import signal

import pytest

from dsv.errors import BadInput
from dsv.parallel import _outcome, fork_map

_parent = os.getpid()


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_results_come_back_in_call_order_from_other_processes() -> None:
    results = fork_map(_square_and_pid, [(n,) for n in range(5)])
    assert [r for r, _ in results] == [0, 1, 4, 9, 16]
    pids = {pid for _, pid in results}
    assert _parent not in pids and len(pids) == 5


def _fail(kind: str) -> None:
    if kind == "dsv":
        raise BadInput("data.jsonl:3:1: malformed JSON")
    if kind == "exit":
        os._exit(3)
    if kind == "unpicklable":

        class Local(Exception):
            pass

        raise Local("cannot travel")


def test_a_worker_error_is_raised_in_the_parent_as_itself() -> None:
    with pytest.raises(BadInput, match=r"^data.jsonl:3:1: malformed JSON$"):
        fork_map(_fail, [("ok",), ("dsv",)])


def test_an_error_that_cannot_be_pickled_arrives_as_text() -> None:
    with pytest.raises(RuntimeError, match="Local: cannot travel"):
        fork_map(_fail, [("unpicklable",)])


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(OSError, match="died before it had answered"):
        fork_map(_fail, [("exit",), ("ok",)])


def test_every_outcome_comes_back_when_asked_for() -> None:
    outcomes = fork_map(_fail, [("ok",), ("dsv",), ("exit",)], return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], BadInput)
    assert isinstance(outcomes[2], OSError)


def test_a_truncated_answer_or_a_killed_child_is_a_death() -> None:
    whole = pickle.dumps((True, b"x" * 1000))
    assert _outcome(whole, 0) == b"x" * 1000
    assert isinstance(_outcome(whole[:100], 0), OSError)
    assert isinstance(_outcome(whole, signal.SIGKILL), OSError)  # a wait status: killed


def test_a_failed_fork_leaves_no_pipe_or_child(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fork
    forks: list[int] = []

    def fork() -> int:
        if forks:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = real()
        forks.append(pid)
        return pid

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", fork)
    with pytest.raises(BlockingIOError):
        fork_map(_square_and_pid, [(1,), (2,)])
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ChildProcessError):  # the first child was killed and reaped
        os.waitpid(forks[0], os.WNOHANG)
