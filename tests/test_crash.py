"""Crash safety: dsv killed with SIGKILL at random moments never loses or tears anything.

The trials live in benchmarks/stress.py, which runs 200 of them; CI runs 21 here.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.stress import crash_trials


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
