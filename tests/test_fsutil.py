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
from dsv.fsutil import RepoLock, digest_fd, digest_fds, digest_file, start_writeback, write_atomic
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
    monkeypatch.setattr(fsutil, "_HASH_READ_SIZE", 4096)
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    assert digest_file(path) == blake3.blake3(data).digest()


def test_a_digest_can_stop_at_an_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "_HASH_READ_SIZE", 4096)
    data = os.urandom(3 * 4096 + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for end in (0, 1, 4096, 5000, len(data), len(data) + 100):
            assert digest_fd(fd, end=end) == blake3.blake3(data[:end]).digest()
    finally:
        os.close(fd)


def test_a_digest_of_files_one_after_another_is_that_of_their_bytes_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout hashes its file from the workers' two parts, the first up to where the
    copy of the second begins."""
    monkeypatch.setattr(fsutil, "_HASH_READ_SIZE", 4096)
    first, second = os.urandom(2 * 4096 + 5), os.urandom(4096 + 3)
    (tmp_path / "a").write_bytes(first + b"copied later")
    (tmp_path / "b").write_bytes(second)
    a, b = (os.open(tmp_path / name, os.O_RDONLY) for name in "ab")
    try:
        assert digest_fds([(a, len(first)), (b, None)]) == blake3.blake3(first + second).digest()
        assert digest_fds([]) == blake3.blake3(b"").digest()
    finally:
        os.close(a)
        os.close(b)


def test_a_digest_reads_with_pread_where_the_system_has_no_preadv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsutil, "_HASH_READ_SIZE", 4096)
    monkeypatch.delattr(os, "preadv")
    data = os.urandom(2 * 4096 + 7)
    (tmp_path / "f").write_bytes(data)
    assert digest_file(tmp_path / "f") == blake3.blake3(data).digest()


def test_a_writeback_hint_changes_no_byte_and_never_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * 4096)
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        start_writeback(out.fileno(), 4096, 1 << 20)  # past the end
        os.fsync(out.fileno())
    assert path.read_bytes() == data
    start_writeback(-1, 0, 1)  # a bad descriptor: the hint is dropped, the fsync would fail


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


_KILLED_MID_WRITE = """
import sys
from pathlib import Path
from dsv.fsutil import RepoLock, atomic_file

root = Path(sys.argv[1])
lock = RepoLock(root / ".dsv" / "lock")
lock.acquire()
with atomic_file(root / "data" / "qa.jsonl") as handle:
    handle.write(b"partial")
    handle.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # killed here
"""


def _dsv_dir(tmp_path: Path) -> Path:
    (tmp_path / ".dsv").mkdir()
    (tmp_path / "data").mkdir()
    return tmp_path / ".dsv"


def test_the_next_lock_holder_removes_the_temp_file_of_a_killed_writer(tmp_path: Path) -> None:
    dsv_dir = _dsv_dir(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "writing\n"
    temp = tmp_path / "data" / f".qa.jsonl.{writer.pid}.tmp"
    assert temp.read_bytes() == b"partial"
    writer.kill()
    writer.wait()
    assert temp.exists()  # the kill left it
    with RepoLock(dsv_dir / "lock") as lock:
        assert lock.recovered == [temp]
    assert not temp.exists()
    assert os.listdir(tmp_path / "data") == []
    assert (dsv_dir / "pending").read_bytes() == b""


def test_a_clean_release_leaves_nothing_to_recover(tmp_path: Path) -> None:
    dsv_dir = _dsv_dir(tmp_path)
    with RepoLock(dsv_dir / "lock"):
        write_atomic(tmp_path / "data" / "qa.jsonl", b"{}\n")
        assert (dsv_dir / "pending").read_bytes() != b""  # journaled while held
    assert (dsv_dir / "pending").read_bytes() == b""
    with RepoLock(dsv_dir / "lock") as lock:
        assert lock.recovered == []
    assert os.listdir(tmp_path / "data") == ["qa.jsonl"]


def test_recovery_touches_only_temp_names_inside_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    dsv_dir = _dsv_dir(repo)
    outside = tmp_path / ".x.jsonl.1.tmp"
    dataset = repo / "data" / "qa.jsonl"
    for path in (outside, dataset):
        path.write_text("keep")
    (dsv_dir / "pending").write_bytes(b"\0".join(os.fsencode(p) for p in (outside, dataset)))
    with RepoLock(dsv_dir / "lock") as lock:
        assert lock.recovered == []
    assert outside.read_text() == dataset.read_text() == "keep"


def test_sweep_removes_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [
            f".qa.jsonl.{dead.pid}.tmp",
            f".qa.jsonl.{dead.pid}.part",
            f".tmp-{dead.pid}-0a1b.pack",
            f".qa.jsonl.{alive.pid}.tmp",
            f".tmp-{alive.pid}-0a1b.idx",
            "qa.jsonl",
            ".qa.jsonl.tmp",
        ]
        for name in names:
            (tmp_path / name).write_text("x")
        expected = sorted(tmp_path / n for n in names[:3])
        assert sorted(fsutil.sweep_temps([tmp_path], remove=False)) == expected
        assert len(os.listdir(tmp_path)) == len(names)  # listed, not removed
        assert sorted(fsutil.sweep_temps([tmp_path])) == expected
        assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize(
    ("name", "temp"),
    [
        (".qa.jsonl.123.tmp", True),
        (".qa.jsonl.123.part", True),
        (".tmp-123-00ff.pack", True),
        (".tmp-123-00ff.idx", True),
        ("qa.jsonl", False),
        ("qa.123.tmp", False),
        (".qa.jsonl.tmp", False),
        (".qa.jsonl.12a.tmp", False),
    ],
)
def test_temp_names(name: str, temp: bool) -> None:
    assert fsutil.is_temp_name(name) is temp
