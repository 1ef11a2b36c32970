"""Crash safety: dsv killed with SIGKILL at random moments never loses or tears anything.

The trials live in benchmarks/stress.py, which runs 200 of them; CI runs 21 here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from conftest import Dsv, head_of

from benchmarks.stress import crash_trials
from dsv.repo import Repository


def test_kill_9_at_random_moments(tmp_path: Path) -> None:
    report = crash_trials(tmp_path, 21, seed=int(os.environ.get("DSV_CRASH_SEED", "7")))
    assert report.problems == []
    assert report.trials == 21
    # The delays must actually land inside runs, or the test proves nothing.
    assert report.killed_mid_run >= 7, report


def test_kill_9_during_push_and_fetch(tmp_path: Path) -> None:
    from benchmarks.push import Server

    (tmp_path / "server").mkdir()
    (tmp_path / "repo").mkdir()
    with Server(tmp_path / "server", "--no-auth") as server:
        report = crash_trials(tmp_path / "repo", 10, seed=3, server_url=f"{server.url}/crash/data")
    assert report.problems == []
    assert report.trials == 10
    assert report.killed_mid_run >= 3, report


def test_kill_9_during_a_merge_leaves_before_or_after(tmp_path: Path) -> None:
    """Killed at any moment, a merge leaves HEAD and the file as before or as after, or its
    record, from which --abort gives back exactly before."""
    rng = random.Random(5)
    rows_n = 20_000
    base = [{"id": i, "q": f"q{i}", "t": "x" * (i % 40)} for i in range(rows_n)]
    ours = [dict(r, q="o") if r["id"] % 50 == 0 else r for r in base]
    theirs = [dict(r, t="t") if r["id"] % 70 == 1 else r for r in base]
    dsv = Dsv(tmp_path)
    dsv("init")
    dsv.write("qa.jsonl", base)
    dsv("add", "qa.jsonl", "--key", "id")
    dsv("commit", "-m", "base")
    dsv("branch", "other")
    dsv.write("qa.jsonl", ours)
    dsv("commit", "-a", "-m", "ours")
    dsv("switch", "other")
    dsv.write("qa.jsonl", theirs)
    dsv("commit", "-a", "-m", "theirs")
    dsv("switch", "main")
    before_head = head_of(dsv)
    before_file = (tmp_path / "qa.jsonl").read_bytes()
    # The result, from a merge run to its end in a copy.
    dsv("merge", "other")
    after_head_tree = json.loads(dsv("show", "--json").stdout)["datasets"]
    after_file = (tmp_path / "qa.jsonl").read_bytes()
    repo = Repository.open(tmp_path)
    repo.refs.update("refs/heads/main", bytes.fromhex(before_head), user="t", reason="test")
    repo.close()
    dsv("checkout", "--force", "main")
    killed = 0
    for trial in range(8):
        assert head_of(dsv) == before_head
        proc = subprocess.Popen(
            [sys.executable, "-m", "dsv", "-C", str(tmp_path), "merge", "other"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait()
        data = (tmp_path / "qa.jsonl").read_bytes()
        assert data in (before_file, after_file)
        head = head_of(dsv)
        recorded = (tmp_path / ".dsv/MERGE").exists()
        if head != before_head:
            assert not recorded or data == after_file
            assert json.loads(dsv("show", "--json").stdout)["datasets"] == after_head_tree
        if recorded and trial % 2:
            dsv("merge", "--continue")
            assert (tmp_path / "qa.jsonl").read_bytes() == after_file
            assert json.loads(dsv("show", "--json").stdout)["datasets"] == after_head_tree
        elif recorded:
            dsv("merge", "--abort")
            assert (tmp_path / "qa.jsonl").read_bytes() == before_file
        elif head != before_head:
            assert data == after_file
        # Back to before for the next trial.
        repo = Repository.open(tmp_path)
        repo.refs.update("refs/heads/main", bytes.fromhex(before_head), user="t", reason="test")
        repo.close()
        dsv("checkout", "--force", "main")
        assert dsv("fsck").exit_code == 0
    assert killed >= 2
