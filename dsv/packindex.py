"""Whole pack files: those that arrive (protocol version 2), checked and indexed where they
lie as git's index-pack does; a pack file scanned object by object; packs streamed out of
files.

A received pack is kept as it came, so it is checked as completely as a reader of a stored
pack trusts it to be (format.md §4) before its index exists.
"""

from __future__ import annotations

import itertools
import os
import struct
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import zstandard

from dsv.errors import CorruptObject
from dsv.frames import inflate
from dsv.fsutil import note_temp
from dsv.objects import OID_SIZE, Kind, hash_object, hash_objects
from dsv.pack import (
    _BLOCK,
    _BLOCK_V1,
    _COUNT,
    _FRAME,
    _HEADER,
    _IDX_BLOCK,
    _KINDS,
    _U32,
    DICTIONARY_BLOCK,
    MAX_RAW,
    PACK_MAGIC,
    PACK_VERSION,
    PreparedPack,
    encode_index,
)

__all__ = ["BlockCheck", "empty_pack", "index_pack", "read_chunks", "scan_pack"]


# The receiver's checks of one block: its kinds, the ids it computed, and the bodies.
BlockCheck = Callable[[bytes, list[bytes], list[bytes]], None]


def index_pack(path: Path, *, check: BlockCheck | None = None) -> PreparedPack | None:
    """Verify a whole pack file received from elsewhere and write its index beside it: the
    pack, ready to publish under its name, or None if it holds no object.

    Everything is checked as a reader of the pack would trust it (format.md §4): the header,
    every block's framing and sizes, each frame decompressing to its size and ending where a
    body ends, dictionaries named before use, every kind, and the trailer. Each object's id is
    computed here from its kind and body; `check` sees every data block's objects before the
    index is written. Blocks are kept as they are: nothing is recompressed.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CorruptObject(f"cannot read the pack: {exc.strerror}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        end = size - OID_SIZE
        hasher = blake3.blake3()

        def take(n: int) -> bytes:
            data = handle.read(n)
            if len(data) != n:
                raise CorruptObject("pack is truncated")
            hasher.update(data)
            return data

        if end < _HEADER.size:
            raise CorruptObject("pack is truncated")
        magic, version, _ = _HEADER.unpack(take(_HEADER.size))
        if magic != PACK_MAGIC or version != PACK_VERSION:
            raise CorruptObject(f"not a dsv pack of version {PACK_VERSION}")
        pos = _HEADER.size
        blocks: list[bytes] = []
        frames = array(_U32)
        oids = bytearray()  # packed, 32 bytes an id
        block_of, offset_of, length_of = array(_U32), array(_U32), array(_U32)
        kind_of = bytearray()
        decompressors: dict[int, zstandard.ZstdDecompressor] = {0: zstandard.ZstdDecompressor()}
        while pos < end:
            if end - pos < _BLOCK.size:
                raise CorruptObject("pack block header runs past the trailer")
            clen, rlen, dictionary, nframes = _BLOCK.unpack(take(_BLOCK.size))
            if nframes > clen or _FRAME.size * nframes + clen > end - pos - _BLOCK.size:
                raise CorruptObject("pack block runs past the trailer")
            sizes = list(_FRAME.iter_unpack(take(_FRAME.size * nframes)))
            data = take(clen)
            number = len(blocks)
            blocks.append(_IDX_BLOCK.pack(pos, clen, rlen, dictionary, len(frames) // 2))
            pos += _BLOCK.size + _FRAME.size * nframes + clen
            try:
                if dictionary == DICTIONARY_BLOCK:
                    if nframes or rlen != clen:
                        raise ValueError("a dictionary block has frames or two sizes")
                    words = zstandard.ZstdCompressionDict(
                        data, dict_type=zstandard.DICT_TYPE_FULLDICT
                    )
                    decompressors[number + 1] = zstandard.ZstdDecompressor(dict_data=words)
                    continue
                if not nframes:
                    raise ValueError("a data block has no frame")
                if rlen > MAX_RAW:
                    raise ValueError(f"it holds {rlen} raw bytes, over the {MAX_RAW} limit")
                decompressor = decompressors.get(dictionary)
                if decompressor is None:
                    raise ValueError("it names no dictionary before it")
                raw = inflate(decompressor, data, rlen, sizes)
                (count,) = _COUNT.unpack_from(raw, 0)
                head = 4 + 5 * count
                if not count or head > rlen:
                    raise ValueError("its header is empty or longer than the block")
                kinds = raw[4 : 4 + count]
                lengths = array(_U32, raw[4 + count : head])
                starts = array(_U32, itertools.accumulate(lengths, initial=head))
                if starts[-1] != rlen:
                    raise ValueError("its entries do not add up to its size")
                ends = set(starts[1:])
                raw_end = 0
                for _, frame_raw in sizes:
                    raw_end += frame_raw
                    if raw_end not in ends:
                        raise ValueError("a frame ends inside a body")
                if any(k not in _KINDS for k in kinds):
                    raise ValueError("it holds an unknown kind of object")
            except (zstandard.ZstdError, ValueError, struct.error) as exc:
                raise CorruptObject(f"corrupt pack block: {exc}") from exc
            view = memoryview(raw)
            bodies = [bytes(view[a:b]) for a, b in itertools.pairwise(starts)]
            if kinds.count(kinds[:1]) == count:
                ids = hash_objects(_KINDS[kinds[0]], bodies)
            else:
                ids = [hash_object(_KINDS[k], b) for k, b in zip(kinds, bodies, strict=True)]
            if check is not None:
                check(kinds, ids, bodies)
            oids += b"".join(ids)
            block_of.extend(itertools.repeat(number, count))
            offset_of.extend(starts[:count])
            length_of.extend(lengths)
            kind_of += kinds
            raw_end = 0
            compressed_end = 0
            for frame_clen, frame_raw in sizes:
                compressed_end += frame_clen
                raw_end += frame_raw
                frames.extend((compressed_end, raw_end))
        checksum = hasher.digest()
        if pos != end or handle.read(OID_SIZE) != checksum:
            raise CorruptObject("pack checksum mismatch: the pack was damaged in transit")
    if not oids:
        return None
    idx = encode_index(oids, block_of, offset_of, length_of, kind_of, blocks, frames, checksum)
    idx_tmp = path.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}.idx")
    note_temp(idx_tmp)
    try:
        with open(path, "rb+") as pack_file:
            os.fsync(pack_file.fileno())
        with open(idx_tmp, "wb") as out:
            out.writelines(idx)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        idx_tmp.unlink(missing_ok=True)
        raise
    return PreparedPack(path.parent, f"pack-{checksum.hex()}", path, idx_tmp)


def empty_pack() -> bytes:
    """A pack of no objects: its header and trailer."""
    header = _HEADER.pack(PACK_MAGIC, PACK_VERSION, 0)
    return header + blake3.blake3(header).digest()


def read_chunks(path: Path, *, remove: bool = False) -> Iterator[bytes]:
    """The bytes of `path` in pieces of 1 MiB; with `remove`, the file goes when done."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk
    finally:
        if remove:
            path.unlink(missing_ok=True)


def _block_entries(raw: bytes) -> Iterator[tuple[int, bytes]]:
    (count,) = _COUNT.unpack_from(raw, 0)
    kinds = raw[4 : 4 + count]
    lengths = memoryview(raw)[4 + count : 4 + 5 * count].cast("I")
    at = 4 + 5 * count
    for kind, length in zip(kinds, lengths, strict=True):
        yield kind, raw[at : at + length]
        at += length
    if at != len(raw):
        raise ValueError("block length does not match its entries")


def scan_pack(path: Path) -> Iterator[tuple[Kind, bytes]]:
    """Every (kind, body) of a pack file in order, checking framing and the trailer checksum."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < _HEADER.size + OID_SIZE:
        raise CorruptObject(f"{path.name}: truncated pack")
    magic, version, _ = _HEADER.unpack_from(data, 0)
    if magic != PACK_MAGIC or version not in (1, PACK_VERSION):
        raise CorruptObject(f"{path.name}: not a dsv pack of version 1 or {PACK_VERSION}")
    end = len(data) - OID_SIZE
    if blake3.blake3(memoryview(data)[:end]).digest() != data[end:]:
        raise CorruptObject(f"{path.name}: pack checksum mismatch")
    pos = _HEADER.size
    dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
    block = 0
    while pos < end:
        try:
            if version == 1:
                clen, rlen = _BLOCK_V1.unpack_from(data, pos)
                pos += _BLOCK_V1.size
                dictionary, sizes = 0, [(clen, rlen)]
            else:
                clen, rlen, dictionary, nframes = _BLOCK.unpack_from(data, pos)
                pos += _BLOCK.size
                sizes = list(_FRAME.iter_unpack(data[pos : pos + _FRAME.size * nframes]))
                pos += _FRAME.size * nframes
            frames = data[pos : pos + clen]
            pos += clen
            if pos > end:
                raise ValueError("it runs past the trailer")
            block += 1
            if dictionary == DICTIONARY_BLOCK:
                dictionaries[block] = zstandard.ZstdCompressionDict(
                    frames, dict_type=zstandard.DICT_TYPE_FULLDICT
                )
                continue
            if dictionary and dictionary not in dictionaries:
                raise ValueError("it names no dictionary before it")
            decompressor = zstandard.ZstdDecompressor(dict_data=dictionaries.get(dictionary))
            raw = inflate(decompressor, frames, rlen, sizes)
            entries = list(_block_entries(raw))
        except (zstandard.ZstdError, ValueError, TypeError, struct.error) as exc:
            raise CorruptObject(f"{path.name}: corrupt block ({exc})") from exc
        for kind, body in entries:
            try:
                yield Kind(kind), body
            except ValueError as exc:
                raise CorruptObject(f"{path.name}: unknown object kind {kind}") from exc
