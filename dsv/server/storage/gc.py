"""`dsv gc --root`: compact every repository of an embedded server root.

A server's gc writes each repository's packs anew, into one pack of datapoints and one of
the rest (as a push stores them), and removes no object. An object no
ref reaches may belong to a push in flight: the client uploads its packs (each verified and
stored as it arrives) and moves the ref only after, possibly minutes later on a slow link,
and an API write stores its pack before it moves its ref. Only an age could tell those from
leftovers, and what an abandoned push leaves is never served (no ref reaches it), so the
space it takes is not worth the risk of deleting what a push still needs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from dsv.errors import BadInput
from dsv.server.storage import META_FILE, open_meta
from dsv.server.storage.local import LocalBlobStore

__all__ = ["RepoGc", "gc_root"]


class RepoGc(msgspec.Struct, frozen=True):
    """One repository's packs and their bytes before and after; `after` None for a dry run."""

    name: str
    packs_before: int
    bytes_before: int
    packs_after: int | None
    bytes_after: int | None


def _packs(pack_dir: Path) -> tuple[int, int]:
    """(packs, bytes of packs and indexes) in `pack_dir`."""
    count = size = 0
    try:
        names = os.listdir(pack_dir)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        if name.startswith("."):
            continue  # a pack being written
        count += name.endswith(".idx")
        with contextlib.suppress(FileNotFoundError):  # merged away meanwhile by the server
            size += os.stat(pack_dir / name).st_size
    return count, size


def gc_root(root: Path, *, dry_run: bool = False) -> list[RepoGc]:
    """Write the packs of every repository under server root `root` anew, into a pack of
    datapoints and one of the rest each.

    Safe while `dsv serve` runs on `root`: the merged pack is published before any pack it
    replaces is removed, and the server's reads list the packs again when one vanishes.
    """
    if not (root / META_FILE).is_file():
        raise BadInput(
            f"{root} is not the root of a dsv server (it has no {META_FILE})",
            hint="give the --root of 'dsv serve'; a server on S3 compacts its packs itself",
        )
    meta = open_meta(root)
    try:
        names = sorted(record.name for record in meta.list_repos())
    finally:
        meta.close()
    blobs = LocalBlobStore(root)
    reports = []
    try:
        for name in names:
            owner, repo = name.split("/")
            pack_dir = root / "repos" / owner / repo / "objects" / "pack"
            packs, size = _packs(pack_dir)
            if dry_run:
                reports.append(RepoGc(name, packs, size, None, None))
                continue
            blobs.repack(name)
            reports.append(RepoGc(name, packs, size, *_packs(pack_dir)))
    finally:
        blobs.close()
    return reports
