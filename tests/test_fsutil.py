"""Atomic writes and the single-writer lock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from dsv import fsutil
from dsv.errors import LockedError
from dsv.fsutil import RepoLock, digest_fd, digest_file, write_atomic
from dsv.index import hash_file


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


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_a_file_digest_covers_every_piece_it_is_read_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(fsutil, "READ_SIZE", 4096)
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    assert digest_file(path) == blake3.blake3(data).digest()


def test_a_digest_can_stop_at_an_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "READ_SIZE", 4096)
    data = os.urandom(3 * 4096 + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for end in (0, 1, 4096, 5000, len(data), len(data) + 100):
            assert digest_fd(fd, end=end) == blake3.blake3(data[:end]).digest()
    finally:
        os.close(fd)


def test_a_file_that_cannot_be_read_has_no_digest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        digest_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        digest_file(tmp_path)
    # The index's hash of a working file: b"" means "unknown", never an exception.
    assert hash_file(tmp_path / "missing") == b"" and hash_file(tmp_path) == b""


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


_WORKER_OUTLIVES_PARENT = """
import os, sys, time
from pathlib import Path
from dsv.fsutil import RepoLock
from dsv.parallel import fork_map

def work() -> None:
    print(os.getpid(), flush=True)
    time.sleep(60)

lock = RepoLock(Path(sys.argv[1]))
lock.acquire()
fork_map(work, [()])
"""


def test_a_forked_worker_does_not_hold_the_lock_once_its_parent_is_killed(
    tmp_path: Path,
) -> None:
    lock_path = tmp_path / "lock"
    parent = subprocess.Popen(
        [sys.executable, "-c", _WORKER_OUTLIVES_PARENT, str(lock_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    try:
        with pytest.raises(LockedError):
            RepoLock(lock_path, timeout=0.2).acquire()  # held while the parent lives
        parent.kill()
        parent.wait()
        lock = RepoLock(lock_path, timeout=2)
        lock.acquire()  # the worker still runs, but no longer holds it
        lock.release()
        os.kill(worker, 0)  # (it does still run)
    finally:
        parent.kill()
        parent.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
