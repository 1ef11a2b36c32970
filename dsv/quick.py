"""The `dsv` command's entry: a clean `status` answered from the index alone, the rest by dsv.cli.

Most `status` runs find nothing changed, and there importing msgspec and click took most of
the time (docs/performance.md). When the index names the commit HEAD resolves to
(docs/format.md §6) and every tracked file's stat equals its recorded one, the answer follows
from a few small reads and a stat per file. This module answers exactly that case with the
standard library; for anything else, or anything it does not fully understand, it returns
None and the full CLI runs, which gives the answer or the error.
"""

from __future__ import annotations

import os
import sys

from dsv.listing import ONLY_UNTRACKED, UNTRACKED_HEADER, quote_path, untracked_files

# Not `from typing import TYPE_CHECKING`: importing typing alone costs ~10 ms (mypy knows the
# name either way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn

__all__ = ["decode_msgpack", "exit_without_teardown", "main", "quick_status"]

_DSV_DIR = ".dsv"
_BRANCHES = "refs/heads/"
_SYMREF = "ref: "
_SHORT = 12
_READABLE_FORMATS = (1, 2, 3)
_INDEX_VERSION = 1
_OID_SIZE = 32
_CLEAN = "nothing to commit, working tree clean\n"
_OUTPUTS = {
    ("status",): "text",
    ("status", "--porcelain"): "porcelain",
    ("status", "--json"): "json",
}


class _Unsure(Exception):
    """Not a case this module answers: the full CLI decides."""


def main() -> None:
    """Run `dsv` with the process's arguments."""
    text = quick_status(sys.argv[1:], os.environ)
    if text is None:
        from dsv.cli import main as cli_main
        from dsv.memory import limit_malloc_arenas

        limit_malloc_arenas()
        try:
            cli_main()
        except SystemExit as done:
            exit_without_teardown(done)
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # As in the CLI: the reader (e.g. `head`) went away; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def exit_without_teardown(done: SystemExit) -> NoReturn:
    """End the process as `done` would, without tearing the interpreter down.

    A command's work is durable once it returns (every write was fsynced), so freeing each
    object and module one by one only delays the shell: 10-25 ms of a checkout, a tenth of a
    keyed diff. atexit's functions still run and the output is flushed; while a thread other
    than this one runs, or when the status is a message, Python exits as usual instead.
    """
    import atexit
    import threading

    code = done.code
    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        raise done
    status = code or 0
    atexit._run_exitfuncs()
    # A stream is None where its descriptor was closed (`dsv ... >&-`): nothing to flush.
    out, err = sys.stdout, sys.stderr
    try:
        if out is not None:
            out.flush()
    except BrokenPipeError:
        pass  # as in the CLI: the reader (e.g. `head`) went away; not an error of ours
    except OSError as exc:  # e.g. a full disk under `> file`: the output is incomplete
        if err is not None:
            err.write(f"error: cannot write the output: {exc.strerror or exc}\n")
        status = status or 1
    try:
        if err is not None:
            err.flush()
    except OSError:
        pass  # nowhere left to say so
    os._exit(status)


def quick_status(args: list[str], environ: Mapping[str, str]) -> str | None:
    """What `dsv ARGS` prints when ARGS is a `status` of a clean tree; None when not sure."""
    output = _OUTPUTS.get(tuple(args))
    if output is None:
        return None
    try:
        _check_lock_timeout(environ.get("DSV_LOCK_TIMEOUT", ""))
        root = _find_root(os.getcwd())
        branch, head, tracked = _clean_head(root)
        untracked = untracked_files(root, tracked)
    except (_Unsure, OSError, ValueError):
        return None
    if output == "porcelain":
        return "".join(f"?? {quote_path(name)}\n" for name in untracked)
    if output == "json":
        if not all(name.isascii() and name.isprintable() for name in untracked):
            return None  # the full CLI's encoder spells such names its own way
        return _json_untracked(untracked)
    where = f"On branch {branch}" if branch else f"HEAD detached at {head.hex()[:_SHORT]}"
    if not untracked:
        return f"{where}\n{_CLEAN}"
    listed = "".join(f"  {quote_path(name)}\n" for name in untracked)
    return f"{where}\n{UNTRACKED_HEADER}{listed}{ONLY_UNTRACKED}"


def _json_untracked(names: list[str]) -> str:
    """The full CLI's `status --json` for a tree whose only news is untracked files."""
    import json

    items = [{"path": name, "staged": None, "unstaged": "untracked"} for name in names]
    return json.dumps(items, separators=(",", ":")) + "\n"


def _check_lock_timeout(text: str) -> None:
    """The CLI refuses a DSV_LOCK_TIMEOUT that is not a number of seconds, even to a reader."""
    if text.strip():
        value = float(text)
        if value != value or value < 0:
            raise _Unsure


def _find_root(cwd: str) -> str:
    """The nearest directory at or above `cwd` holding `.dsv`, as Repository.open finds it."""
    candidate = os.path.realpath(cwd)
    while not os.path.isdir(os.path.join(candidate, _DSV_DIR)):
        parent = os.path.dirname(candidate)
        if parent == candidate:
            raise _Unsure
        candidate = parent
    return candidate


def _clean_head(root: str) -> tuple[str | None, bytes, set[str]]:
    """(branch or None, HEAD's commit, the tracked paths) when the index equals HEAD's tree
    and every file its entry; raises _Unsure otherwise."""
    dsv_dir = os.path.join(root, _DSV_DIR)
    _check_config(_read(os.path.join(dsv_dir, "config")))
    if os.path.exists(os.path.join(dsv_dir, "MERGE")):
        raise _Unsure  # a merge in progress: status says so
    raw = _read(os.path.join(dsv_dir, "HEAD")).decode("utf-8").strip()
    branch = None
    if raw.startswith(_SYMREF):
        target = raw[len(_SYMREF) :]
        if not target.startswith(_BRANCHES) or not target.isascii():
            raise _Unsure
        branch = target[len(_BRANCHES) :]
        raw = _read(os.path.join(dsv_dir, target)).decode("utf-8").strip()
    head = bytes.fromhex(raw)
    if len(head) != _OID_SIZE:
        raise _Unsure
    index = decode_msgpack(_read(os.path.join(dsv_dir, "index")))
    if not isinstance(index, list) or len(index) != 3:
        raise _Unsure
    version, entries, index_head = index
    if version != _INDEX_VERSION or index_head != head or not isinstance(entries, list):
        raise _Unsure
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 4:
            raise _Unsure
        path, dataset, stat, file_hash = entry
        if not (isinstance(path, str) and isinstance(dataset, bytes) and isinstance(stat, list)):
            raise _Unsure
        if not isinstance(file_hash, bytes) or len(stat) != 4:
            raise _Unsure
        st = os.stat(os.path.join(root, path))
        if [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] != stat:
            raise _Unsure
    return branch, head, {entry[0] for entry in entries}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _check_config(data: bytes) -> None:
    """Raise _Unsure unless `data` is a config that dsv.config would read without an error."""
    import json

    def refuse(constant: str) -> None:
        raise _Unsure

    config = json.loads(data.decode("utf-8"), parse_constant=refuse)
    if not isinstance(config, dict):
        raise _Unsure
    version = config.get("format")
    if type(version) is not int or version not in _READABLE_FORMATS:
        raise _Unsure
    for field in ("user_name", "user_email"):
        if not isinstance(config.get(field), str | None):
            raise _Unsure
    environments = config.get("environments", [])
    if not isinstance(environments, list) or not all(isinstance(e, str) for e in environments):
        raise _Unsure
    remotes = config.get("remotes", {})
    if not isinstance(remotes, dict):
        raise _Unsure
    for remote in remotes.values():
        if not isinstance(remote, dict) or not isinstance(remote.get("url"), str):
            raise _Unsure
        if not isinstance(remote.get("key_env"), str | None):
            raise _Unsure


def decode_msgpack(data: bytes) -> object:
    """The one MessagePack value in `data`, of the types the index uses (nil, int, str, bin,
    array); raises ValueError for anything else, or for bytes after it."""
    try:
        value, end = _decode_at(data, 0)
    except (KeyError, IndexError, RecursionError) as exc:
        raise ValueError(f"not an index's MessagePack ({exc!r})") from exc
    if end != len(data):
        raise ValueError("bytes after the value")
    return value


# First byte -> (kind, width of the length or value that follows it).
_SIZED = {
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
    0xD9: ("str", 1),
    0xDA: ("str", 2),
    0xDB: ("str", 4),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xCC: ("uint", 1),
    0xCD: ("uint", 2),
    0xCE: ("uint", 4),
    0xCF: ("uint", 8),
    0xD0: ("int", 1),
    0xD1: ("int", 2),
    0xD2: ("int", 4),
    0xD3: ("int", 8),
}


def _decode_at(data: bytes, at: int) -> tuple[object, int]:
    lead = data[at]
    at += 1
    if lead <= 0x7F:
        return lead, at
    if lead >= 0xE0:
        return lead - 0x100, at
    if 0xA0 <= lead <= 0xBF:
        return _text(data, at, lead & 0x1F)
    if 0x90 <= lead <= 0x9F:
        return _array(data, at, lead & 0x0F)
    if lead == 0xC0:
        return None, at
    kind, width = _SIZED[lead]  # KeyError: a type the index does not use
    if at + width > len(data):
        raise ValueError("truncated")
    number = int.from_bytes(data[at : at + width], "big", signed=kind == "int")
    at += width
    if kind in ("uint", "int"):
        return number, at
    if kind == "array":
        return _array(data, at, number)
    if kind == "str":
        return _text(data, at, number)
    return _bytes(data, at, number)


def _bytes(data: bytes, at: int, size: int) -> tuple[bytes, int]:
    if at + size > len(data):
        raise ValueError("truncated")
    return data[at : at + size], at + size


def _text(data: bytes, at: int, size: int) -> tuple[str, int]:
    raw, at = _bytes(data, at, size)
    return raw.decode("utf-8"), at


def _array(data: bytes, at: int, count: int) -> tuple[list[object], int]:
    items = []
    for _ in range(count):
        item, at = _decode_at(data, at)
        items.append(item)
    return items, at
