"""Build a repository with a long history quickly, for the `dsv log` benchmark.

python -m benchmarks.history ROOT 10000
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dsv.manifest import build_dataset
from dsv.notebook import Repository
from dsv.objects import Commit, Format, Kind, Tree, TreeEntry, encode_object
from dsv.refs import MISSING

__all__ = ["build_history"]


def build_history(root: str | Path, commits: int) -> bytes:
    """`commits` versions, each changing one datapoint of a small dataset; returns HEAD."""
    repo = Repository.init(root)
    parent: bytes | None = None
    now = int(time.time()) - commits
    with repo.store.writer() as writer:
        for i in range(commits):
            body = b'{"id":"q","version":%d}' % i
            dp = writer.write(Kind.DATAPOINT, body, check_store=False)
            ds_oid, _ = build_dataset(writer, dp, Format("jsonl"), ("id",))
            tree = writer.write(Kind.TREE, encode_object(Tree((TreeEntry("qa.jsonl", ds_oid),))))
            commit = Commit(
                tree,
                (parent,) if parent else (),
                "bench <b@example.com>",
                now + i,
                0,
                f"version {i}\n",
            )
            parent = writer.write(Kind.COMMIT, encode_object(commit), check_store=False)
    assert parent is not None
    repo.refs.update("HEAD", parent, expected=MISSING, user="bench", reason="history")
    return parent


if __name__ == "__main__":
    build_history(sys.argv[1], int(sys.argv[2]))
