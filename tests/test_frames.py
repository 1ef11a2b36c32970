"""A block's zstd frames: decompressed together or one by one, checked against their sizes."""

from __future__ import annotations

import struct

import pytest
import zstandard

from dsv.frames import decompress_all, frames_checksummed, inflate

_PARTS = [b"a" * 5000, b"bc" * 3000, b"d"]


def _frames(*, checksum: bool) -> tuple[bytes, list[tuple[int, int]]]:
    compressor = zstandard.ZstdCompressor(write_checksum=checksum)
    pieces = [compressor.compress(p) for p in _PARTS]
    return b"".join(pieces), [(len(c), len(p)) for c, p in zip(pieces, _PARTS, strict=True)]


def test_frames_are_inflated_together_or_one_by_one_to_the_same_bytes() -> None:
    data, sizes = _frames(checksum=True)
    decompressor = zstandard.ZstdDecompressor()
    assert inflate(decompressor, data, sum(r for _, r in sizes), sizes) == b"".join(_PARTS)
    pieces, at = [], 0
    for clen, _ in sizes:
        pieces.append(data[at : at + clen])
        at += clen
    found = decompress_all(decompressor, pieces, [r for _, r in sizes], 0)
    assert [bytes(found[k]) for k in range(len(_PARTS))] == _PARTS


@pytest.mark.parametrize("lie", ["raw length", "a frame's size"])
def test_frames_that_do_not_add_up_are_refused(lie: str) -> None:
    data, sizes = _frames(checksum=True)
    rlen = sum(r for _, r in sizes)
    if lie == "raw length":
        with pytest.raises(ValueError, match="do not add up"):
            inflate(zstandard.ZstdDecompressor(), data, rlen + 1, sizes)
    else:
        # Sizes that add up but put a frame's bytes in the wrong place.
        (c0, r0), (c1, r1), rest = sizes[0], sizes[1], sizes[2]
        wrong = [(c0, r0 - 1), (c1, r1 + 1), rest]
        with pytest.raises((ValueError, zstandard.ZstdError)):
            inflate(zstandard.ZstdDecompressor(), data, rlen, wrong)


def test_a_block_is_checksummed_only_if_every_frame_is() -> None:
    with_sums, sizes = _frames(checksum=True)
    without, sizes_without = _frames(checksum=False)

    def ends(of: list[tuple[int, int]]) -> memoryview:
        out, c, r = [], 0, 0
        for clen, rlen in of:
            c, r = c + clen, r + rlen
            out += [c, r]
        return memoryview(struct.pack(f"{len(out)}I", *out)).cast("I")

    assert frames_checksummed(with_sums, ends(sizes), 0, len(sizes))
    assert not frames_checksummed(without, ends(sizes_without), 0, len(sizes_without))
    assert not frames_checksummed(b"not zstd at all", ends(sizes), 0, 1)
