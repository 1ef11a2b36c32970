"""Merging two branches that each changed 1% of a keyed dataset, against a diff of one such
change, in one process (docs/performance.md).

    python -m benchmarks.merge --count 100000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate
from benchmarks.push import dsv_command

__all__ = ["main", "measure", "prepare"]


def _run(root: Path, *args: str, codes: tuple[int, ...] = (0,)) -> None:
    env = {**os.environ, "DSV_AUTHOR_NAME": "bench", "DSV_AUTHOR_EMAIL": "b@example.com"}
    done = subprocess.run(
        [*dsv_command(), "-q", *args], cwd=root, env=env, stdout=subprocess.DEVNULL, check=False
    )
    if done.returncode not in codes:
        raise SystemExit(f"dsv {' '.join(args)} exited {done.returncode}")


def _side(v1: Path, out: Path, count: int, *, seed: int, edit: str, churn: bool) -> None:
    """v1 with 1% of its datapoints changed: all edited (field `edit`), or with `churn`
    0.6% edited, 0.2% deleted and 0.2% added (new ids)."""
    rng = random.Random(seed)
    picked = rng.sample(range(count), count // 100)
    cut = len(picked) * 6 // 10 if churn else len(picked)
    edited = set(picked[:cut])
    deleted = set(picked[cut : cut + (len(picked) - cut) // 2]) if churn else set()
    added = set(picked[cut + len(deleted) :]) if churn else set()
    with v1.open() as src, out.open("w") as dst:
        for i, line in enumerate(src):
            if i in edited:
                record = json.loads(line)
                record["target"][edit] = f"edited {seed} {i}"
                line = json.dumps(record) + "\n"
            if i not in deleted:
                dst.write(line)
            if i in added:
                record = json.loads(line)
                record["id"] = f"new-{seed}-{i}"
                dst.write(json.dumps(record) + "\n")


def prepare(work: Path, count: int) -> Path:
    """A repository whose main and `other` each changed 1% of `count` datapoints since their
    base: main edited answers, other edited scores, deleted and added some."""
    v1, _ = generate(count, work / "gen")
    ours, theirs = work / "gen" / "ours.jsonl", work / "gen" / "theirs.jsonl"
    _side(v1, ours, count, seed=7, edit="answer", churn=False)
    _side(v1, theirs, count, seed=8, edit="score", churn=True)
    root = work / "repo"
    root.mkdir()
    data = root / "data.jsonl"
    data.write_bytes(v1.read_bytes())
    _run(root, "init")
    _run(root, "add", "data.jsonl", "--key", "id")
    _run(root, "commit", "-m", "base")
    _run(root, "branch", "other")
    data.write_bytes(ours.read_bytes())
    _run(root, "commit", "-a", "-m", "ours")
    _run(root, "switch", "other")
    data.write_bytes(theirs.read_bytes())
    _run(root, "commit", "-a", "-m", "theirs")
    _run(root, "switch", "main")
    return root


def measure(root: Path, runs: int) -> dict[str, float]:
    """Medians of the merge (base, both sides, the merged dataset stored) and of the diff of
    ours' change with every changed datapoint read (as `dsv diff --format jsonl` reads them)."""
    import dsv
    from dsv.diff import diff
    from dsv.merge import merge_commits

    repo = dsv.Repository.open(root)
    ours, theirs = repo.resolve("main"), repo.resolve("other")
    diffs, merges = [], []
    conflicts = -1
    for _ in range(runs):
        started = time.perf_counter()
        changes = sum(1 for _ in diff(repo, "main~1", "main").changes())
        diffs.append(time.perf_counter() - started)
        started = time.perf_counter()
        with repo.store.writer() as writer:
            result = merge_commits(repo, writer, ours, theirs)
        merges.append(time.perf_counter() - started)
        conflicts = len(result.conflicts)
    repo.close()
    diff_s, merge_s = statistics.median(diffs), statistics.median(merges)
    return {
        "diff_s": diff_s,
        "merge_s": merge_s,
        "ratio": merge_s / diff_s,
        "changes": changes,
        "conflicts": conflicts,
    }


def measure_command(root: Path) -> float:
    """One `dsv merge other` end to end: the merge, the file written (and a commit, or the
    conflicts recorded: the random edits of the two sides may meet)."""
    started = time.perf_counter()
    _run(root, "merge", "other", codes=(0, 1))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--reuse", action="store_true", help="--work holds a prepared repo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsv-merge-") as tmp:
        work = args.work or Path(tmp)
        started = time.perf_counter()
        root = work / "repo" if args.reuse else prepare(work, args.count)
        setup = time.perf_counter() - started
        found = measure(root, args.runs)
        command = measure_command(root)
    print(
        f"{args.count} datapoints (setup {setup:.0f} s): diff {found['diff_s']:.3f} s "
        f"({found['changes']} changes), merge {found['merge_s']:.3f} s "
        f"({found['conflicts']} conflicts), ratio {found['ratio']:.2f}x; "
        f"dsv merge command {command:.2f} s"
    )


if __name__ == "__main__":
    main()
