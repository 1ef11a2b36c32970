"""Durable file primitives: atomic replace, directory fsync, the repository lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import blake3

from dsv.errors import BadState, LockedError
from dsv.libc import glibc_function

__all__ = [
    "READ_SIZE",
    "RepoLock",
    "WriteResult",
    "atomic_file",
    "digest_fd",
    "digest_fds",
    "digest_file",
    "fsync_dir",
    "is_temp_name",
    "note_temp",
    "publish",
    "start_writeback",
    "sweep_temps",
    "write_atomic",
]

# How much to read at a time from a large file. Small on purpose: a fresh 16 MiB buffer per
# read is page-faulted in every time, where 1 MiB ones reuse the memory the last one freed
# (at 100k, in fresh processes: a recommit's workers 12% faster by median, a fresh add 5%,
# a checkout's file hash faster in 13 of 14 runs).
READ_SIZE = 1 << 20
_HASH_READ_SIZE = 4 << 20  # reused, so larger than READ_SIZE: see digest_fds
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteResult:
    """What `atomic_file` learnt while putting a file in place: the BLAKE3 of its bytes, the
    clock just before the rename that published them, and the file's stat just after it
    (None if it no longer looked like the file written). `worktree.write_file` trusts a
    later stat of the path only if it equals that one and is old enough for the clock."""

    def __init__(
        self, digest: bytes = b"", published_ns: int = 0, stat: os.stat_result | None = None
    ) -> None:
        self.digest = digest
        self.published_ns = published_ns
        self.stat = stat


def publish(fd: int, tmp: Path, path: Path, result: WriteResult) -> None:
    """Rename the fsynced temp file open as `fd` over `path`, noting in `result` when, and
    its stat from `fd` after the rename when size, mtime and inode are still the written
    file's: the fd follows the inode dsv wrote, whatever the path names by then."""
    before = os.fstat(fd)
    result.published_ns = time.time_ns()
    os.replace(tmp, path)
    after = os.fstat(fd)
    same = (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    result.stat = after if same else None


def digest_fd(fd: int, *, end: int | None = None) -> bytes:
    """BLAKE3 of an open file's bytes (up to offset `end`), on every core (`digest_fds`)."""
    return digest_fds([(fd, end)])


def digest_fds(parts: Iterable[tuple[int, int | None]]) -> bytes:
    """BLAKE3 of open files' bytes one after another, each (fd, end) up to offset `end` or
    whole, on every core. Read in pieces into one buffer, not mapped: a large file does not
    count as resident memory, and a file cut short meanwhile is an end, not a SIGBUS."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    parts = list(parts)
    # One buffer, read into: a fresh piece per read, and 1 MiB pieces for the hash's threads,
    # cost an 87 MB file 31-37 ms against 19-24 (2026-12-08, minimum and median of 7). No
    # larger than the largest part: a small file's hash must not touch 4 MiB.
    largest = max((os.fstat(fd).st_size if end is None else end for fd, end in parts), default=0)
    size = max(1, min(_HASH_READ_SIZE, largest))
    buffer = memoryview(bytearray(size))
    for fd, end in parts:
        offset = 0
        while end is None or offset < end:
            want = size if end is None else min(size, end - offset)
            got = _pread_into(fd, buffer[:want], offset)
            if not got:
                break
            hasher.update(buffer[:got])
            offset += got
    return hasher.digest()


def _pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    """Bytes read into `buffer` from `offset` of `fd`: preadv, or pread where the system has
    none (macOS before 11)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], offset)
    data = os.pread(fd, len(buffer), offset)
    buffer[: len(data)] = data
    return len(data)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing `length` bytes of `fd` from `offset` to disk, without
    waiting for it: the fsync that follows waits for less (Linux; elsewhere nothing)."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: a failure is the fsync's


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    return glibc_function("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")


def digest_file(path: Path) -> bytes:
    """BLAKE3 of a file's bytes (`digest_fd`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_fd(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: Path, *, mode: int = 0o644, result: WriteResult | None = None
) -> Iterator[IO[bytes]]:
    """Yield a temp file beside `path`; on clean exit fsync it and rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    With `result`, the digest is taken from the temp file, which nothing else can touch.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    note_temp(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        raise BadState(f"cannot write {path}: {exc.strerror}") from exc
    ok = False
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            if result is None:
                os.replace(tmp, path)
            else:
                result.digest = digest_file(tmp)
                publish(handle.fileno(), tmp, path, result)
        ok = True
    except OSError as exc:
        raise BadState(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | Iterable[bytes], *, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably."""
    with atomic_file(path, mode=mode) as handle:
        if isinstance(data, bytes | bytearray | memoryview):
            handle.write(data)
        else:
            for chunk in data:
                handle.write(chunk)


class RepoLock:
    """The single-writer lock of a repository.

    It is an flock on a file, so the kernel frees it when its holder dies (even by kill -9);
    the holder writes its pid and purpose inside, so that a waiter can watch it work and name
    it. Beside it, the holder
    keeps a journal of the temporary files it makes (docs/format.md §6): a holder killed
    mid-write leaves the journal non-empty, and the next holder removes what it lists.
    """

    def __init__(self, path: Path, *, timeout: float | None = None) -> None:
        self.path = path
        self.journal = path.with_name("pending")
        self.root = Path(os.path.abspath(path.parent.parent))
        if timeout is None:
            timeout = float(os.environ.get("DSV_LOCK_TIMEOUT", "30"))
        # How long a holder may show no sign of work (CPU, I/O, its workers') before a waiter
        # calls it stuck; a holder that is working is waited for however long it takes.
        self.timeout = timeout
        # What the holder is doing, for waiters to name it (`dsv gc`); the CLI sets it.
        self.purpose = ""
        # Called once, with a line to show, when acquiring has to wait.
        self.on_wait: Callable[[str], None] | None = None
        self.recovered: list[Path] = []
        self._fd: int | None = None
        self._journal_fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._wait(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}".strip().encode() + b"\n", 0)
        self._fd = fd
        self._depth = 1
        _held.add(self)
        self.recovered = self._recover()

    def _wait(self, fd: int) -> None:
        """Take the flock on `fd`, waiting while its holder lives and works."""
        started = last_work = time.monotonic()
        seen: tuple[str, tuple[int, ...] | None] | None = None
        announced = False
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise BadState(f"cannot lock {self.path}: {exc.strerror}") from exc
            now = time.monotonic()
            pid, who = self._holder(fd)
            state = _activity(pid) if pid else None
            if state is not None and state[0] == "stopped":
                raise LockedError(
                    f"repository is locked by {who}, which is stopped",
                    hint=f"resume it (fg, or kill -CONT {pid}) or end it, then run the command "
                    "again",
                )
            if state is None or (who, state[1]) != seen:
                # Unobservable (no /proc, another user's process): only the timeout counts.
                if state is not None:
                    last_work = now
                seen = (who, state[1] if state else None)
            if now - (last_work if state is not None else started) >= self.timeout:
                if state is None:
                    raise LockedError(
                        f"repository is locked by {who}",
                        hint="wait for it to finish, then run the command again",
                    )
                raise LockedError(
                    f"repository is locked by {who}, which has done nothing for {self.timeout:g} s",
                    hint=f"if it is hung, end it (kill {pid}), then run the command again",
                )
            if not announced and now - started >= _ANNOUNCE_AFTER and self.on_wait is not None:
                self.on_wait(f"waiting for {who}…")
                announced = True
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @staticmethod
    def _holder(fd: int) -> tuple[int, str]:
        """The holder's pid (0 if unknown) and how to name it."""
        try:
            text = os.pread(fd, 256, 0).decode().strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        pid_text, _, purpose = text.partition(" ")
        if not pid_text.isdigit():
            return 0, "another process"
        purpose = "".join(ch if ch.isprintable() else "?" for ch in purpose)
        return int(pid_text), f"{purpose} (pid {pid_text})" if purpose else f"pid {pid_text}"

    def _recover(self) -> list[Path]:
        """Remove the temporary files a holder that died left behind (its journal says which)."""
        try:
            listed = self.journal.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BadState(f"cannot read {self.journal}: {exc.strerror}") from exc
        if not listed:
            return []
        removed = []
        for raw in listed.split(b"\0"):
            # A name the journal holds is only ever one of ours (a temp beside a file of
            # this repository); anything else means the journal is not ours to act on.
            path = Path(os.fsdecode(raw))
            if not raw or not path.is_relative_to(self.root) or not is_temp_name(path.name):
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
                removed.append(path)
        os.truncate(self.journal, 0)
        return removed

    def note(self, path: Path) -> None:
        """Journal a temp file about to be made under this lock (before it exists)."""
        if self._journal_fd is None:
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._journal_fd, os.fsencode(os.path.abspath(path)) + b"\0")

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        _held.discard(self)
        if self._journal_fd is not None:
            # Every temp it lists is renamed or removed by now (their writers clean up on
            # any exception): an empty journal tells the next holder there is nothing to do.
            journal_fd, self._journal_fd = self._journal_fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(journal_fd, 0)
            os.close(journal_fd)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RepoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# A wait shorter than this is not worth a line on the terminal.
_ANNOUNCE_AFTER = 0.3


def _activity(pid: int) -> tuple[str, tuple[int, ...]] | None:
    """Whether process `pid` is stopped, and counters that move while it or its workers work
    (CPU time, bytes read and written); None where that cannot be seen."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"T", b"t", b"Z"):
        return "stopped", ()
    counters = [int(fields[11]), int(fields[12])]  # utime, stime
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/io", "rb") as handle:
            io = dict(line.split(b":", 1) for line in handle.read().splitlines())
        counters += [int(io[b"rchar"]), int(io[b"wchar"])]
    with contextlib.suppress(OSError, ValueError):
        # The forked workers of a command do its work while it waits for them.
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as handle:
            children = handle.read().split()
        for child in children:
            with open(f"/proc/{int(child)}/stat", "rb") as handle:
                child_stat = handle.read()
            child_fields = child_stat[child_stat.rfind(b")") + 2 :].split()
            counters += [int(child_fields[11]), int(child_fields[12])]
    return "running", tuple(counters)


def note_temp(path: Path) -> None:
    """Before making temp file `path`: journal it with the lock of the repository holding it,
    if this process holds that lock, so a kill -9 cannot leave it behind for good."""
    full = os.path.abspath(path)
    for lock in list(_held):
        if full.startswith(str(lock.root) + os.sep):
            lock.note(Path(full))


# dsv's temporary names: `.NAME.PID.tmp` / `.NAME.PID.part` beside a file it replaces, and
# `.tmp-PID-HEX.pack` / `.idx` in a pack directory.
_TEMP_NAME = re.compile(r"\..+\.([0-9]+)\.(?:tmp|part)|\.tmp-([0-9]+)-[0-9a-f]+\.(?:pack|idx)")


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of the temporary names dsv writes under (never a dataset)."""
    return _TEMP_NAME.fullmatch(name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def sweep_temps(directories: Iterable[Path], *, remove: bool = True) -> list[Path]:
    """Remove dsv temp files in `directories` whose writing process is gone (with `remove`
    false, only list them).

    For files left by a dsv that kept no journal (before format version 7): the pid in the
    name decides, and a file whose pid is alive is kept, whoever that process is now.
    """
    removed = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise BadState(f"cannot list {directory}: {exc.strerror}") from exc
        for name in sorted(names):
            match = _TEMP_NAME.fullmatch(name)
            if match is None or _pid_alive(int(match.group(1) or match.group(2))):
                continue
            path = directory / name
            if not remove:
                removed.append(path)
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
                removed.append(path)
    return removed


_held: weakref.WeakSet[RepoLock] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    # An flock belongs to the open file, which a forked worker shares until it closes its
    # copy: without this, a worker outliving a killed parent would keep the repository
    # locked. The parent's lock is unaffected; the child just stops being a holder.
    # Its journal is the parent's too: the child must not truncate it.
    for lock in list(_held):
        fd, lock._fd, lock._depth = lock._fd, None, 0
        journal_fd, lock._journal_fd = lock._journal_fd, None
        for owned in (fd, journal_fd):
            if owned is not None:
                with contextlib.suppress(OSError):
                    os.close(owned)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)
