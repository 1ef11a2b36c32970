"""Writing a whole dataset version out as a JSONL file, on every core.

Each worker verifies its share of the datapoints and writes it to a part file; the parts are
joined in the kernel (copy_file_range) into one temporary file, which then replaces the working
file atomically.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dsv.errors import BadState, CorruptObject
from dsv.fsutil import fsync_dir
from dsv.objects import OID_SIZE, Kind, split_oids
from dsv.pack import Pack
from dsv.parallel import can_fork, fork_map
from dsv.store import ObjectStore

__all__ = ["PARALLEL_MIN", "write_jsonl"]

# Below this many datapoints, starting workers costs more than it saves.
PARALLEL_MIN = 20_000
_CHUNK = 8 << 20
_TAG = Kind.DATAPOINT.tag

_shared: dict[str, object] = {}


def _digest(fd: int) -> bytes:
    import blake3

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    offset = 0
    while chunk := os.pread(fd, 16 << 20, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.digest()


def _write_range(first: int, stop: int, part: str) -> str | None:
    """Worker: verify datapoints [first, stop) and write them to `part`; an error or None."""
    import blake3

    oids: bytes = _shared["oids"]  # type: ignore[assignment]
    packs: list[Pack] = _shared["packs"]  # type: ignore[assignment]
    # Built here, in both workers at once, rather than once before they fork: the parent
    # would otherwise spend that time alone.
    maps = [(pack, pack.positions()) for pack in packs]
    b3 = blake3.blake3
    pack, positions = maps[0]
    with open(part, "wb") as out:
        for start in range(first, stop, 8192):
            end = min(start + 8192, stop)
            wanted = split_oids(oids[start * OID_SIZE : end * OID_SIZE])
            bodies = []
            for oid in wanted:
                at = positions.get(oid)
                if at is None:
                    found = _find(maps, oid)
                    if found is None:
                        return f"missing object {oid.hex()}"
                    # Neighbouring datapoints mostly share a pack: try this one first next time.
                    pack, positions = found
                    at = positions[oid]
                bodies.append(pack.body_at(at))
            got = [b3(_TAG + body).digest() for body in bodies]
            if got != wanted:
                bad = next(w for w, g in zip(wanted, got, strict=True) if w != g)
                return f"corrupt object {bad.hex()}: content does not match its id"
            bodies.append(b"")
            out.write(b"\n".join(bodies))
        out.flush()
    return None


def _find(
    maps: list[tuple[Pack, dict[bytes, int]]], oid: bytes
) -> tuple[Pack, dict[bytes, int]] | None:
    for pack, positions in maps:
        if oid in positions:
            return pack, positions
    return None


def write_jsonl(store: ObjectStore, oids: bytes, path: Path) -> bytes | None:
    """Write the datapoints `oids` as a JSONL file; the BLAKE3 of its bytes.

    None when the fast path does not apply (few datapoints, loose objects, no fork): the
    caller then writes the file the ordinary way.
    """
    n = len(oids) // OID_SIZE
    if n < PARALLEL_MIN or not can_fork():
        return None
    packs = store.packs
    if not packs:
        return None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    ok = False
    try:
        _shared.update(oids=oids, packs=packs)
        half = n // 2
        errors = fork_map(_write_range, [(0, half, str(tmp)), (half, n, str(part))])
        for error in errors:
            if error:
                raise CorruptObject(error)
        with open(tmp, "r+b") as out, open(part, "rb") as extra:
            out.seek(0, os.SEEK_END)
            remaining = os.fstat(extra.fileno()).st_size
            while remaining > 0:
                copied = os.copy_file_range(extra.fileno(), out.fileno(), remaining)
                if copied <= 0:
                    raise OSError("copy_file_range made no progress")
                remaining -= copied
            out.flush()
            os.fsync(out.fileno())
            digest = _digest(out.fileno())
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise BadState(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        _shared.clear()
        for leftover in (part,) if ok else (part, tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    fsync_dir(path.parent)
    return digest
