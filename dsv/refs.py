"""Refs: HEAD, branches, tags, environments and remote-tracking refs, each with a log."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import msgspec

from dsv.errors import BadInput, BadState
from dsv.fsutil import fsync_dir, write_atomic
from dsv.objects import OID_SIZE, ZERO_OID

__all__ = [
    "BRANCHES",
    "ENVS",
    "REMOTES",
    "TAGS",
    "RefLogEntry",
    "Refs",
    "check_ref_name",
]

BRANCHES = "refs/heads/"
TAGS = "refs/tags/"
ENVS = "refs/envs/"
REMOTES = "refs/remotes/"
_SYMREF = "ref: "
_BAD_NAME = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|\Z)|^[-./]|[/.]\Z")

# Names a revision would read as HEAD itself, so a ref so named could never be used.
_RESERVED = frozenset({"HEAD", "@"})

# Any value other than None for `expected` is checked; MISSING means "must not exist yet".
MISSING = ZERO_OID


class RefLogEntry(msgspec.Struct, frozen=True):
    """One move of a ref: from `old` to `new` (ZERO_OID for none), when, by whom, why."""

    old: bytes
    new: bytes
    time: int
    tz: int
    user: str
    reason: str


def check_ref_name(name: str, *, what: str = "name") -> str:
    """Reject names git would reject; return the name."""
    if name in _RESERVED:
        raise BadInput(
            f"invalid {what} {name!r}: it is reserved", hint="'HEAD' and '@' name HEAD itself"
        )
    if not name or _BAD_NAME.search(name):
        raise BadInput(
            f"invalid {what} {name!r}",
            hint="names may not contain spaces, control characters, '..', '~^:?*[\\' "
            "or start with '-' or '.'",
        )
    return name


def _local_tz() -> int:
    return round(time.localtime().tm_gmtoff / 60)


class Refs:
    """The refs of one repository. Moves are compare-and-swap; the caller holds the repo lock."""

    def __init__(self, dsv_dir: Path) -> None:
        self.dir = dsv_dir

    def _path(self, name: str) -> Path:
        return self.dir / name

    def _log_path(self, name: str) -> Path:
        return self.dir / "logs" / name

    # -- reading -----------------------------------------------------------------------

    def read_raw(self, name: str) -> str | None:
        # A revision typed by a user reaches here as a name: one that could leave `.dsv`
        # (`../../x`, `/abs`) or read a temp file names no ref.
        if "\0" in name or any(not part or part[0] == "." for part in name.split("/")):
            return None
        try:
            return self._path(name).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def symbolic_target(self, name: str = "HEAD") -> str | None:
        """The ref that `name` points to, if it is symbolic."""
        raw = self.read_raw(name)
        if raw is not None and raw.startswith(_SYMREF):
            return raw[len(_SYMREF) :]
        return None

    def read(self, name: str) -> bytes | None:
        """The oid `name` points to (following HEAD's symbolic link), or None."""
        for _ in range(5):
            raw = self.read_raw(name)
            if raw is None:
                return None
            if raw.startswith(_SYMREF):
                name = raw[len(_SYMREF) :]
                continue
            try:
                oid = bytes.fromhex(raw)
            except ValueError:
                raise BadState(f"ref {name} is corrupt: {raw[:80]!r}") from None
            if len(oid) != OID_SIZE:
                raise BadState(f"ref {name} is corrupt: {raw[:80]!r}")
            return oid
        raise BadState(f"ref {name}: too many levels of symbolic refs")

    def list_refs(self, prefix: str) -> list[tuple[str, bytes]]:
        """(full name, oid) of every ref under `prefix` (e.g. 'refs/heads/'), sorted."""
        base = self._path(prefix)
        found = []
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for file in sorted(files):
                if file.startswith("."):
                    continue
                full = Path(root, file).relative_to(self.dir).as_posix()
                oid = self.read(full)
                if oid is not None:
                    found.append((full, oid))
        found.sort()
        return found

    def read_log(self, name: str) -> list[RefLogEntry]:
        """The ref's moves, oldest first; a torn last line (from a crash) is ignored."""
        try:
            data = self._log_path(name).read_bytes()
        except FileNotFoundError:
            return []
        entries = []
        for line in data.split(b"\n")[:-1]:
            with contextlib.suppress(ValueError, UnicodeDecodeError, IndexError):
                head, reason = line.decode("utf-8").split("\t", 1)
                old, new, when, tz, user = head.split(" ", 4)
                entries.append(
                    RefLogEntry(
                        bytes.fromhex(old), bytes.fromhex(new), int(when), int(tz), user, reason
                    )
                )
        return entries

    # -- writing (under the repository lock) -------------------------------------------

    def set_symbolic(self, name: str, target: str) -> None:
        path = self._path(name)
        write_atomic(path, f"{_SYMREF}{target}\n".encode())

    def update(
        self,
        name: str,
        new: bytes,
        *,
        expected: bytes | None = None,
        user: str,
        reason: str,
        deref: bool = True,
    ) -> bytes:
        """Move `name` to `new` if it still points at `expected`; log the move; return old.

        `expected=None` skips the check, `MISSING` requires that the ref does not exist.
        Writing HEAD moves the branch it names unless `deref` is false.
        """
        target = name
        if deref:
            target = self.symbolic_target(name) or name
        old = self.read(target)
        if expected is not None and (old or MISSING) != expected:
            raise BadState(
                f"ref {_short(target)} moved: expected {_oid_or_none(expected)}, "
                f"found {_oid_or_none(old or MISSING)}",
                hint="another process changed it; look at the new state and try again",
            )
        path = self._path(target)
        if old is None:
            self._check_room(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, new.hex().encode() + b"\n")
        self.append_log(target, old or ZERO_OID, new, user=user, reason=reason)
        if target != name and name == "HEAD":
            self.append_log("HEAD", old or ZERO_OID, new, user=user, reason=reason)
        return old or ZERO_OID

    def delete(self, name: str, *, expected: bytes | None = None, user: str, reason: str) -> bytes:
        """Remove `name` if it points at `expected`; the log keeps the removal."""
        old = self.read(name)
        if old is None:
            raise BadInput(f"no such ref: {_short(name)}")
        if expected is not None and old != expected:
            raise BadState(f"ref {_short(name)} moved since it was read")
        path = self._path(name)
        path.unlink()
        fsync_dir(path.parent)
        self._prune_dirs(path.parent)
        self.append_log(name, old, ZERO_OID, user=user, reason=reason)
        return old

    def _check_room(self, name: str) -> None:
        """Refuse a new ref whose file, or log, would clash with another's (`a` and `a/b`).

        Logs outlive their refs, so a deleted ref's name still blocks `name/...` and its
        prefixes: its history stays readable under the name it had.
        """
        if not name.startswith("refs/"):
            return
        for base, kept in ((self.dir, False), (self.dir / "logs", True)):
            path = base / name
            root = base / "refs"
            for parent in path.parents:
                if parent == root or root not in parent.parents:
                    break
                if parent.is_file():
                    raise self._clash(name, parent.relative_to(base).as_posix(), kept)
            if path.is_dir():
                # Empty directories left behind by deleted refs are no clash: drop them.
                for dirpath, _, _ in sorted(os.walk(path), reverse=True):
                    with contextlib.suppress(OSError):
                        Path(dirpath).rmdir()
                if path.is_dir():
                    inside = sorted(
                        p.relative_to(base).as_posix() for p in path.rglob("*") if p.is_file()
                    )
                    raise self._clash(name, inside[0] if inside else name, kept)

    def _clash(self, name: str, other: str, kept: bool) -> BadInput:
        if kept and self.read(other) is None:
            return BadInput(
                f"cannot create {_short(name)!r}: the history of the deleted {_short(other)!r} "
                "is kept under that name",
                hint="a name cannot extend another with '/', or be extended; choose another",
            )
        return BadInput(
            f"cannot create {_short(name)!r}: {_short(other)!r} exists",
            hint="a name cannot extend another with '/', or be extended; "
            f"delete {_short(other)!r} first or choose another name",
        )

    def _prune_dirs(self, directory: Path) -> None:
        refs_root = self.dir / "refs"
        while directory != refs_root and refs_root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def append_log(self, name: str, old: bytes, new: bytes, *, user: str, reason: str) -> None:
        path = self._log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        user = " ".join(user.split()) or "unknown"
        reason = " ".join(reason.split())
        line = f"{old.hex()} {new.hex()} {int(time.time())} {_local_tz()} {user}\t{reason}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def _short(name: str) -> str:
    for prefix in (BRANCHES, TAGS, ENVS):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _oid_or_none(oid: bytes) -> str:
    return "nothing" if oid == ZERO_OID else oid.hex()[:12]
