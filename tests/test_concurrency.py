"""Eight dsv processes writing one repository at once: each succeeds or fails clearly, and the
final state is consistent and complete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dsv
from dsv import maintenance, ops


def test_eight_concurrent_committers(tmp_path: Path) -> None:
    dsv.Repository.init(tmp_path).close()
    for k in range(8):
        (tmp_path / f"set{k}.jsonl").write_text(
            "".join(json.dumps({"id": i, "writer": k}) + "\n" for i in range(2000))
        )
    env = {
        **os.environ,
        "DSV_LOCK_TIMEOUT": "20",
        "DSV_AUTHOR_NAME": "w",
        "DSV_AUTHOR_EMAIL": "w@x",
    }
    script = "dsv -C {root} add set{k}.jsonl && dsv -C {root} commit -m 'writer {k}'"
    procs = [
        subprocess.Popen(
            ["bash", "-c", script.format(root=tmp_path, k=k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, "PATH": str(Path(sys.executable).parent) + os.pathsep + env["PATH"]},
        )
        for k in range(8)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    for code, err in outcomes:
        # Each may have waited for another, and said so; nothing else but the outcome.
        said = [line for line in err.splitlines(keepends=True) if not line.startswith("waiting")]
        assert all(
            re.fullmatch(r"waiting for dsv (add|commit) \(pid \d+\)…\n", line)
            for line in err.splitlines(keepends=True)
            if line.startswith("waiting")
        )
        err = "".join(said)
        # Another writer may have committed this one's staged file first.
        assert code == 0 or err == (
            "error: nothing to commit: the index matches HEAD\n"
            "hint: stage changes with 'dsv add', or use -a for every tracked file\n"
        ), err
    repo = dsv.Repository.open(tmp_path)
    assert maintenance.fsck(repo).ok
    assert ops.status(repo) == []
    head = repo.tree_of(repo.head())
    assert sorted(head) == [f"set{k}.jsonl" for k in range(8)]
    assert sum(code == 0 for code, _ in outcomes) == len(list(repo.log()))
    for k in range(8):
        assert list(repo.records("HEAD", f"set{k}.jsonl"))[5] == {"id": 5, "writer": k}
