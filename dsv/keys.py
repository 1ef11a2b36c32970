"""Checking a JSONL dataset's key at the cost of what changed.

The ingest workers read the key values of the records they canonicalise; a cache (docs/format.md
§6) keeps those of the file's last staged version, aligned with its datapoint ids. A recommit
takes the unchanged datapoints' keys from that cache and the parsed ones' from the workers,
and checks the whole ordered list with a set. Only a problem found sends the caller back to
`formats.check_keys`, which re-reads the file to name the lines.

A key here is its fields' canonical JSON values joined by NUL, and b"" when a field is
missing: canonical JSON holds no raw NUL or newline, and no field's value is empty.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from pathlib import Path

import msgspec
import zstandard

from dsv.fsutil import write_atomic
from dsv.manifest import Runs
from dsv.objects import OID_SIZE, split_oids

__all__ = [
    "KeyCache",
    "key_reader",
    "keys_in_order",
    "keys_ok",
    "read_key_cache",
    "write_key_cache",
]


class KeyCache(msgspec.Struct):
    """For one JSONL dataset file: the keys of the version it last staged, in dataset order."""

    content: bytes  # content id of that version
    fields: list[str]
    keys: bytes  # one key per datapoint, joined by b"\n", as one zstd frame


_cache_decoder = msgspec.msgpack.Decoder(KeyCache)


def _cache_path(dsv_dir: Path, name: str) -> Path:
    return dsv_dir / "cache" / hashlib.sha256(b"keys-1\0" + name.encode()).hexdigest()[:32]


def read_key_cache(
    dsv_dir: Path, name: str, *, content: bytes, key: tuple[str, ...], count: int
) -> list[bytes] | None:
    """The cached keys of the version whose content id is `content`, or None (a missing,
    unreadable or stale cache is absent)."""
    try:
        cache = _cache_decoder.decode(_cache_path(dsv_dir, name).read_bytes())
        if cache.content != content or tuple(cache.fields) != key:
            return None
        joined = zstandard.ZstdDecompressor().decompress(cache.keys)
    except (OSError, msgspec.DecodeError, zstandard.ZstdError):
        return None
    keys = joined.split(b"\n") if count else []
    # An entry that names no key would only send keys_ok to the slow path: no need to look.
    return keys if len(keys) == count else None


def write_key_cache(
    dsv_dir: Path, name: str, *, content: bytes, key: tuple[str, ...], keys: list[bytes]
) -> None:
    path = _cache_path(dsv_dir, name)
    path.parent.mkdir(exist_ok=True)
    # Compressed: keys repeat a pattern (ids numbered in order), and the cache counts in the
    # repository's size (100k ids of 12 bytes: 1.3 MB raw, 51 KB in 2.5 ms).
    packed = zstandard.ZstdCompressor(level=3).compress(b"\n".join(keys))
    write_atomic(path, msgspec.msgpack.encode(KeyCache(content, list(key), packed)))


def key_reader(key: tuple[str, ...]) -> Callable[[list[bytes]], bytes]:
    """A function from canonical bodies to their keys, joined by b"\\n"."""
    names = list(dict.fromkeys(key))
    slots = [f"f{i}" for i in range(len(names))]
    slot_of = dict(zip(names, slots, strict=True))
    try:
        # A struct of the key fields alone skips the other fields without building them.
        struct = msgspec.defstruct(
            "Key",
            [(s, msgspec.Raw, msgspec.Raw()) for s in slots],
            rename=dict(zip(slots, names, strict=True)),
        )
    except ValueError:  # a name msgspec cannot rename to (a quote, backslash or control)
        decode_dict = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
        empty = msgspec.Raw()

        def values(body: bytes) -> list[msgspec.Raw]:
            found = decode_dict(body)
            return [found.get(field, empty) for field in key]

    else:
        decode = msgspec.json.Decoder(struct).decode
        if len(key) == 1:
            # A missing field decodes as an empty Raw: already the missing key's b"".
            return lambda bodies: b"\n".join([decode(body).f0 for body in bodies])  # type: ignore[attr-defined]
        get = operator.attrgetter(*(slot_of[field] for field in key))

        def values(body: bytes) -> list[msgspec.Raw]:
            return list(get(decode(body)))

    def read(bodies: list[bytes]) -> bytes:
        keys = []
        for body in bodies:
            found = values(body)
            keys.append(b"\0".join(found) if all(found) else b"")
        return b"\n".join(keys)

    return read


def keys_in_order(
    oids: bytes,
    parsed: tuple[bytes, bytes],
    *,
    base_oids: bytes | None,
    cached: list[bytes] | None,
    runs: tuple[Runs, bytes] | None,
) -> list[bytes] | None:
    """The key of every datapoint of `oids`, in order; None when one is not known.

    `parsed` is the ids the workers canonicalised and their keys (joined by b"\\n");
    `cached` the keys of the base's datapoints, aligned with `base_oids`; `runs` how `oids`
    reuse the base's (see build_dataset).
    """
    parsed_oids, parsed_keys = parsed
    found = parsed_keys.split(b"\n") if parsed_oids else []
    if len(found) * OID_SIZE != len(parsed_oids):
        return None
    if parsed_oids == oids:
        return found  # a first reading: every record was parsed, in order
    fresh = dict(zip(split_oids(parsed_oids), found, strict=True))
    if cached is None or base_oids is None:
        return _by_id(oids, [fresh])
    maps = [fresh]
    if runs is not None:
        # Unchanged runs copy the base's keys a slice at a time; only the ids the runs call
        # fresh are looked up. The runs are trusted only when they rebuild `oids` exactly.
        out: list[bytes] = []
        parts: list[bytes] = []
        spans, extra = runs
        for from_base, start, length in spans:
            if from_base:
                out += cached[start : start + length]
                parts.append(base_oids[start * OID_SIZE : (start + length) * OID_SIZE])
            else:
                ids = extra[start * OID_SIZE : (start + length) * OID_SIZE]
                parts.append(ids)
                looked_up = _by_id(ids, maps, base_oids, cached)
                if looked_up is None:
                    return None
                out += looked_up
        if len(out) * OID_SIZE == len(oids) and b"".join(parts) == oids:
            return out
    return _by_id(oids, maps, base_oids, cached)


def _by_id(
    oids: bytes,
    maps: list[dict[bytes, bytes]],
    base_oids: bytes | None = None,
    cached: list[bytes] | None = None,
) -> list[bytes] | None:
    """Keys of `oids` from `maps`; the base's map (from `base_oids` and `cached`) is added to
    them the first time an id is in none."""
    out: list[bytes] = []
    for oid in split_oids(oids):
        for mapping in maps:
            value = mapping.get(oid)
            if value is not None:
                break
        else:
            if base_oids is None or cached is None or len(maps) > 1:
                return None
            maps.append(dict(zip(split_oids(base_oids), cached, strict=True)))
            value = maps[-1].get(oid)
            if value is None:
                return None
        out.append(value)
    return out


def keys_ok(keys: list[bytes]) -> bool:
    """Does every datapoint have its key, and no two the same?"""
    unique = set(keys)
    return len(unique) == len(keys) and b"" not in unique
