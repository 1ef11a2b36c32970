"""Atomic writes and the single-writer lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv.errors import LockedError
from dsv.fsutil import RepoLock, write_atomic


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, [b"t", b"wo"])
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old")

    def chunks() -> object:
        yield b"partial"
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_atomic(target, chunks())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_second_writer_fails_naming_the_holder(tmp_path: Path) -> None:
    lock_path = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from dsv.fsutil import RepoLock; from pathlib import Path\n"
            f"l=RepoLock(Path({str(lock_path)!r})); l.acquire(); print('ok', flush=True);"
            " time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        started = time.monotonic()
        with pytest.raises(LockedError, match=f"repository is locked by pid {holder.pid}"):
            RepoLock(lock_path, timeout=0.3).acquire()
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock to clean up by hand.
    with RepoLock(lock_path, timeout=1):
        pass
