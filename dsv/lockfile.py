"""`dsv.lock`: the dataset versions a code project runs against (docs/lockfile.md).

The file is a small TOML document a code repository commits: a version line, then one
`[[dataset]]` table a pinned dataset, sorted by path. This module reads and writes it and
finds it; resolving and syncing pins needs a remote and lives in `dsv.remote.pins`.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from dsv.errors import BadInput
from dsv.fsutil import write_atomic
from dsv.objects import Kind, content_id, hash_object
from dsv.paths import check_dataset_path

__all__ = [
    "LOCK_NAME",
    "LOCK_VERSION",
    "LockFile",
    "Pin",
    "decode_lock",
    "encode_lock",
    "find_lock",
    "read_lock",
    "working_content",
    "write_lock",
]

LOCK_NAME = "dsv.lock"
LOCK_VERSION = 1

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = ("path", "remote", "rev", "commit", "dataset", "content")
_HEADER = (
    "# dsv.lock: the dataset versions this project runs against (docs/lockfile.md).\n"
    "# Written by 'dsv lock'; 'dsv lock --update' moves a pin, 'dsv sync' fetches, "
    "'dsv verify' checks.\n"
)


class Pin(msgspec.Struct, frozen=True):
    """One pinned dataset: where it lives, what was asked for and what that resolved to."""

    path: str
    remote: str
    rev: str
    commit: bytes
    dataset: bytes
    content: bytes
    key_env: str | None = None


class LockFile(msgspec.Struct, frozen=True):
    """A lock file's pins, by dataset path."""

    pins: dict[str, Pin]


def check_remote_url(url: str, *, where: str) -> str:
    """A remote URL fit for a committed file: http(s), no user name, password or query."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"{where}: remote {url!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise BadInput(
            f"{where}: remote URL holds credentials; a lock file is committed",
            hint="give the key in an environment variable instead (key_env)",
        )
    if parts.query or parts.fragment:
        raise BadInput(f"{where}: remote {url!r} has a query or fragment")
    return url.rstrip("/")


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string (the escapes JSON writes are TOML's too).
    return json.dumps(value, ensure_ascii=False)


def encode_lock(lock: LockFile) -> bytes:
    """The lock file's bytes: the same pins always give the same bytes."""
    lines = [_HEADER, f"version = {LOCK_VERSION}\n"]
    for path in sorted(lock.pins, key=lambda p: p.encode()):
        pin = lock.pins[path]
        lines.append("\n[[dataset]]\n")
        lines.append(f"path = {_string(pin.path)}\n")
        lines.append(f"remote = {_string(pin.remote)}\n")
        if pin.key_env is not None:
            lines.append(f"key_env = {_string(pin.key_env)}\n")
        lines.append(f"rev = {_string(pin.rev)}\n")
        lines.append(f'commit = "{pin.commit.hex()}"\n')
        lines.append(f'dataset = "{pin.dataset.hex()}"\n')
        lines.append(f'content = "{pin.content.hex()}"\n')
    return "".join(lines).encode()


def _field(table: dict[str, object], name: str, where: str) -> str:
    value = table.get(name)
    if value is None:
        raise BadInput(f"{where}: missing field {name!r}")
    if not isinstance(value, str):
        raise BadInput(f"{where}: field {name!r} must be a string")
    return value


def _oid(table: dict[str, object], name: str, where: str) -> bytes:
    value = _field(table, name, where)
    if not _HEX64.fullmatch(value):
        raise BadInput(f"{where}: field {name!r} must be 64 lowercase hex digits, not {value!r}")
    return bytes.fromhex(value)


def decode_lock(data: bytes, *, name: str = LOCK_NAME) -> LockFile:
    """Parse a lock file; BadInput naming the file, the entry and the field on any fault."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{name}: not a valid lock file ({exc})") from exc
    version = doc.get("version")
    if version != LOCK_VERSION:
        raise BadInput(
            f"{name}: lock file version {version!r} is not one this dsv reads ({LOCK_VERSION})",
            hint="upgrade dsv" if isinstance(version, int) and version > LOCK_VERSION else None,
        )
    unknown = set(doc) - {"version", "dataset"}
    if unknown:
        raise BadInput(f"{name}: unknown key {sorted(unknown)[0]!r}")
    entries = doc.get("dataset", [])
    if not isinstance(entries, list):
        raise BadInput(f"{name}: 'dataset' must be an array of tables ([[dataset]])")
    pins: dict[str, Pin] = {}
    for number, table in enumerate(entries, 1):
        where = f"{name}: dataset {number}"
        if not isinstance(table, dict):
            raise BadInput(f"{where}: not a table")
        extra = set(table) - {*_FIELDS, "key_env"}
        if extra:
            raise BadInput(f"{where}: unknown field {sorted(extra)[0]!r}")
        path = _field(table, "path", where)
        where = f"{name}: dataset {path!r}"
        try:
            check_dataset_path(path)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc.message}") from exc
        if path in pins:
            raise BadInput(f"{where}: pinned twice")
        key_env = table.get("key_env")
        if key_env is not None and not (isinstance(key_env, str) and _ENV_NAME.fullmatch(key_env)):
            raise BadInput(f"{where}: field 'key_env' must name an environment variable")
        rev = _field(table, "rev", where)
        if not rev.strip():
            raise BadInput(f"{where}: field 'rev' is empty")
        pins[path] = Pin(
            path=path,
            remote=check_remote_url(_field(table, "remote", where), where=where),
            rev=rev,
            commit=_oid(table, "commit", where),
            dataset=_oid(table, "dataset", where),
            content=_oid(table, "content", where),
            key_env=key_env,
        )
    return LockFile(pins)


def read_lock(path: Path) -> LockFile:
    """The lock file at `path` (an absent file is an empty lock)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LockFile({})
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc}") from exc
    return decode_lock(data, name=str(path))


def write_lock(path: Path, lock: LockFile) -> bool:
    """Write the lock atomically; False (and no write) when the file holds these bytes."""
    data = encode_lock(lock)
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc}") from exc
    write_atomic(path, data)
    return True


def find_lock(start: Path) -> Path | None:
    """The `dsv.lock` in `start` or the nearest directory above it, stopping at a git
    work tree's top; None when there is none."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / LOCK_NAME).is_file():
            return candidate / LOCK_NAME
        if (candidate / ".git").exists():
            return None
    return None


def working_content(root: Path, name: str) -> bytes | None:
    """The content id of working file `name` under `root` (None when there is no file):
    what its records are, however the file spells them."""
    from dsv.formats import read_dataset

    full = root / name
    if not full.is_file():
        return None
    _, records = read_dataset(full, name=name)
    ids = bytearray()
    for body in records:
        ids += hash_object(Kind.DATAPOINT, body)
    return content_id(bytes(ids))
