"""Smoke run of benchmarks/push.py: a second push after the 1% change moves a small share of
the bytes of the first. The figure for 20,000 datapoints is in docs/protocol.md §8."""

from __future__ import annotations

from pathlib import Path

from benchmarks.push import measure


def test_second_push_moves_a_small_share_of_the_bytes(tmp_path: Path) -> None:
    result = measure(2000, tmp_path)
    assert result["first_objects"] > 2000
    # 20 edited + 10 added datapoints, their pages, the dataset, tree and commit.
    assert 30 < result["second_objects"] < 60
    # Fixed costs (headers, negotiation) weigh more at this size than at 20,000 datapoints.
    assert result["ratio"] < 0.06
