"""The object model: ids, kinds and the canonical bytes of every object (docs/format.md §2-3)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, overload

import blake3
import msgspec

from dsv.errors import CorruptObject

__all__ = [
    "OID_SIZE",
    "ZERO_OID",
    "Commit",
    "Dataset",
    "Format",
    "Kind",
    "PackedOids",
    "Slice",
    "Tree",
    "TreeEntry",
    "content_hasher",
    "content_id",
    "decode_commit",
    "decode_dataset",
    "decode_tree",
    "encode_object",
    "hash_object",
    "hash_objects",
    "split_oids",
]

OID_SIZE = 32
ZERO_OID = bytes(OID_SIZE)
_EVERY_OID = re.compile(b".{%d}" % OID_SIZE, re.DOTALL)


def split_oids(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The ids of a packed id list, in order: one C-level pass instead of a slice per id."""
    return _EVERY_OID.findall(data)


class PackedOids(Sequence[bytes]):
    """A packed id list (32 bytes an id) as a sequence of ids: a million take 32 MB, where as
    a list of `bytes` they take 72 MB and more; a slice is a list of its ids."""

    def __init__(self, packed: bytes) -> None:
        self.packed = packed
        self._view = memoryview(packed)

    def __len__(self) -> int:
        return len(self.packed) // OID_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        count = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(count)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return split_oids(self._view[start * OID_SIZE : max(start, stop) * OID_SIZE])
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("id index out of range")
        return self.packed[index * OID_SIZE : (index + 1) * OID_SIZE]


class Kind(IntEnum):
    """Object kinds; the value is the kind's code inside packs and loose objects."""

    DATAPOINT = 1
    PAGE = 2
    DATASET = 3
    TREE = 4
    COMMIT = 5

    @property
    def tag(self) -> bytes:
        return _TAGS[self]


_TAGS = {kind: kind.name.lower().encode() + b"\x00" for kind in Kind}
_CONTENT_TAG = b"content\x00"


def hash_object(kind: Kind, body: bytes | memoryview) -> bytes:
    """The object id: blake3 of the kind's tag, a NUL, and the canonical body."""
    hasher = blake3.blake3(_TAGS[kind])
    hasher.update(body)
    return hasher.digest()


def hash_objects(kind: Kind, bodies: list[bytes]) -> list[bytes]:
    """`hash_object` of each body, for bulk work: a copy of one tagged hasher per body costs
    less than building each hasher anew."""
    tagged = blake3.blake3(_TAGS[kind])
    return [tagged.copy().update(body).digest() for body in bodies]


def content_id(oids: bytes | memoryview) -> bytes:
    """Identity of a dataset's ordered datapoint list, independent of how it is paged."""
    hasher = content_hasher()
    hasher.update(oids)
    return hasher.digest()


def content_hasher() -> blake3.blake3:
    """A hasher that gives `content_id` of the ids fed to it, in as many pieces as wanted."""
    return blake3.blake3(_CONTENT_TAG)


class Format(msgspec.Struct, frozen=True, array_like=True):
    """How to write a dataset back as a file; part of its manifest (docs/format.md §3)."""

    kind: str
    columns: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    schema: bytes = b""


class Slice(msgspec.Struct, frozen=True, array_like=True):
    """Datapoint ids `start` to `stop` (exclusive) of page `page`."""

    page: bytes
    start: int
    stop: int


class Dataset(msgspec.Struct, frozen=True, array_like=True):
    """One dataset version: its file format, key fields, and its ordered datapoint ids.

    The ids live in pages; `slices` concatenated give the list, so a new version can
    reuse runs of old pages and write only the ids that changed.
    """

    format: Format
    key: tuple[str, ...]
    count: int
    content: bytes
    slices: tuple[Slice, ...]

    def same_as(self, other: Dataset) -> bool:
        """Equal records, order and format, however the ids are paged."""
        return (
            self.content == other.content and self.format == other.format and self.key == other.key
        )


class TreeEntry(msgspec.Struct, frozen=True, array_like=True):
    path: str
    dataset: bytes


class Tree(msgspec.Struct, frozen=True, array_like=True):
    """All datasets of a version, sorted by path (UTF-8 bytewise)."""

    entries: tuple[TreeEntry, ...]


class Commit(msgspec.Struct, frozen=True, array_like=True):
    """A version: its tree, parents, author, time (unix seconds, zone in minutes), message."""

    tree: bytes
    parents: tuple[bytes, ...]
    author: str
    time: int
    tz: int
    message: str


_encoder = msgspec.msgpack.Encoder()
_dataset_decoder = msgspec.msgpack.Decoder(Dataset)
_tree_decoder = msgspec.msgpack.Decoder(Tree)
_commit_decoder = msgspec.msgpack.Decoder(Commit)


def encode_object(obj: Dataset | Tree | Commit) -> bytes:
    return _encoder.encode(obj)


def _decode(decoder: msgspec.msgpack.Decoder[Any], body: bytes, oid: bytes, what: str) -> object:
    try:
        obj = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptObject(f"corrupt object {oid.hex()}: not a valid {what} ({exc})") from exc
    # Ids must be a function of meaning: an object in any other byte form is refused.
    if _encoder.encode(obj) != body:
        raise CorruptObject(f"corrupt object {oid.hex()}: {what} is not in canonical form")
    return obj


def decode_dataset(body: bytes, oid: bytes = ZERO_OID) -> Dataset:
    obj = _decode(_dataset_decoder, body, oid, "dataset")
    assert isinstance(obj, Dataset)
    return obj


def decode_tree(body: bytes, oid: bytes = ZERO_OID) -> Tree:
    obj = _decode(_tree_decoder, body, oid, "tree")
    assert isinstance(obj, Tree)
    return obj


def decode_commit(body: bytes, oid: bytes = ZERO_OID) -> Commit:
    obj = _decode(_commit_decoder, body, oid, "commit")
    assert isinstance(obj, Commit)
    return obj
