"""A pack block's zstd frames: decompressed together, checked for content checksums, or
inflated one by one against the sizes the block states (docs/format.md §4)."""

from __future__ import annotations

import struct

import zstandard

__all__ = ["decompress_all", "frames_checksummed", "inflate"]


def decompress_all(
    decompressor: zstandard.ZstdDecompressor,
    pieces: list[bytes | bytearray | memoryview],
    sizes: list[int],
    threads: int,
) -> list[bytes] | zstandard.BufferWithSegmentsCollection:
    """Each frame of `pieces` decompressed to its size in `sizes`."""
    try:
        return decompressor.multi_decompress_to_buffer(
            pieces, decompressed_sizes=struct.pack(f"={len(sizes)}Q", *sizes), threads=threads
        )
    except NotImplementedError:  # zstandard's cffi backend (PyPy) has no such call
        return [
            decompressor.decompress(p, max_output_size=n)
            for p, n in zip(pieces, sizes, strict=True)
        ]


def frames_checksummed(data: bytes, ends: memoryview, first: int, stop: int) -> bool:
    """Whether each of a block's frames `first`..`stop` declares a content checksum."""
    view = memoryview(data)
    try:
        for f in range(first, stop):
            start = ends[2 * f - 2] if f > first else 0
            if not zstandard.get_frame_parameters(view[start : start + 18]).has_checksum:
                return False
    except zstandard.ZstdError:
        return False  # damaged: reading it re-hashes, which names the damage
    finally:
        view.release()
    return True


def inflate(
    decompressor: zstandard.ZstdDecompressor, data: bytes, rlen: int, sizes: list[tuple[int, int]]
) -> bytes:
    """A block's raw bytes from its `data`, frame by frame, each checked against its size."""
    if (sum(c for c, _ in sizes), sum(r for _, r in sizes)) != (len(data), rlen):
        raise ValueError("its frames do not add up to its size")
    parts = []
    at = 0
    for clen, size in sizes:
        part = decompressor.decompress(data[at : at + clen], max_output_size=size)
        if len(part) != size:
            raise ValueError("a frame has the wrong size")
        parts.append(part)
        at += clen
    return b"".join(parts)
