"""Crash-safety trials: kill dsv with SIGKILL at random moments of commit, checkout, gc,
push and fetch.

Each trial starts a real `dsv` process, kills it after a random delay inside its run, and
checks: the next command that takes the lock leaves no temporary file of dsv's behind, fsck
is clean, every ref points at a complete commit, the working file is exactly its old or its
new version, and every version committed before the kill is still readable.

    python -m benchmarks.stress --trials 200
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dsv
from dsv import maintenance
from dsv.canonical import canonicalize
from dsv.fsutil import is_temp_name

__all__ = ["CrashReport", "crash_trials"]


def _dsv(root: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DSV_AUTHOR_NAME": "crash", "DSV_AUTHOR_EMAIL": "c@example.com"}
    return subprocess.Popen(
        [sys.executable, "-m", "dsv", "-C", str(root), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _run(root: Path, *args: str) -> None:
    proc = _dsv(root, *args)
    assert proc.wait(timeout=120) == 0, args


def _records(version: int, n: int) -> bytes:
    return "".join(
        json.dumps({"id": i, "v": version, "text": "x" * (i % 50)}) + "\n" for i in range(n)
    ).encode()


@dataclass
class CrashReport:
    trials: int = 0
    killed_mid_run: int = 0
    finished_first: int = 0
    problems: list[str] = field(default_factory=list)


def _temp_files(root: Path) -> list[str]:
    """dsv's temporary files anywhere in the work tree or `.dsv`."""
    return [
        str(Path(dirpath, name).relative_to(root))
        for dirpath, _, names in os.walk(root)
        for name in names
        if is_temp_name(name)
    ]


def _check(root: Path, committed: list[bytes], allowed: set[bytes], report: CrashReport) -> None:
    repo = dsv.Repository.open(root)
    try:
        fsck = maintenance.fsck(repo)
        if not fsck.ok:
            report.problems.append(f"fsck: {fsck.missing + fsck.corrupt}")
        for _, oid in repo.refs.list_refs("refs/"):
            repo.read_commit(oid)  # raises if the ref points at anything incomplete
        for oid in committed:
            repo.read_commit(oid)
        data = (root / "data.jsonl").read_bytes()
        if data not in allowed:
            report.problems.append(f"working file torn ({len(data)} bytes)")
    finally:
        repo.close()


def crash_trials(
    root: Path,
    trials: int,
    *,
    seed: int = 0,
    size: int = 20_000,
    server_url: str | None = None,
) -> CrashReport:
    """Kill commit, checkout and gc (and with a server, push and fetch) at random moments.

    With `server_url`, the repository pushes there and a second clone fetches from it; after
    each such trial both pass fsck, and so does a full fetch, which proves the server holds
    only complete data.
    """
    rng = random.Random(seed)
    report = CrashReport()
    dsv.Repository.init(root).close()
    versions = [_records(v, size) for v in range(3)]
    # What a checkout writes: the same records in canonical form.
    written = {b"".join(canonicalize(line) + b"\n" for line in v.splitlines()) for v in versions}
    (root / "data.jsonl").write_bytes(versions[0])
    _run(root, "add", "data.jsonl")
    _run(root, "commit", "-m", "v0")
    committed = [dsv.Repository.open(root).head() or b""]
    steps: tuple[str, ...] = ("commit", "checkout", "gc")
    other = root.parent / f"{root.name}-clone"
    if server_url is not None:
        steps += ("push", "fetch")
        _run(root, "remote", "add", "origin", server_url)
        _run(root, "push")
        _run(root.parent, "clone", server_url, str(other))
    for trial in range(trials):
        step = steps[trial % len(steps)]
        current = (root / "data.jsonl").read_bytes()
        if step == "commit":
            new = versions[1 + trial % 2]
            (root / "data.jsonl").write_bytes(new)
            args: tuple[str, ...] = ("commit", "-a", "-m", f"trial {trial}")
            allowed = {new}
        elif step == "checkout":
            args = ("checkout", "--force", "HEAD~1" if len(committed) > 1 else "HEAD")
            allowed = {current, *written}
        elif step in ("gc", "push"):
            args = (step,)
            allowed = {current}
        else:
            args = ("fetch",)
            allowed = {current}
        proc = _dsv(other if step == "fetch" else root, *args)
        time.sleep(rng.uniform(0.0, 0.35))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            report.killed_mid_run += 1
        else:
            report.finished_first += 1
        proc.wait(timeout=60)
        report.trials += 1
        # The next command that takes the lock must clear whatever the kill left half-written.
        killed_in = other if step == "fetch" else root
        _run(killed_in, "tag", f"after-{trial}")
        report.problems += [f"left behind: {p}" for p in _temp_files(killed_in)]
        _check(root, committed, allowed, report)
        if step in ("push", "fetch"):
            _check(other, [], {(other / "data.jsonl").read_bytes()}, report)
            _run(other, "fetch")
            _check(other, [], {(other / "data.jsonl").read_bytes()}, report)
        head = dsv.Repository.open(root).head()
        if head is not None and head not in committed:
            committed.append(head)
        if step == "checkout":
            _run(root, "checkout", "--force", "main")
    return report


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="kill -9 dsv at random moments, many times")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from benchmarks.push import Server

    with tempfile.TemporaryDirectory(prefix="dsv-stress-") as work:
        started = time.monotonic()
        (Path(work) / "server").mkdir()
        (Path(work) / "repo").mkdir()
        with Server(Path(work) / "server", "--no-auth") as server:
            url = f"{server.url}/stress/data"
            report = crash_trials(Path(work) / "repo", args.trials, seed=args.seed, server_url=url)
    print(
        f"trials: {report.trials}, killed mid-run: {report.killed_mid_run}, "
        f"finished before the kill: {report.finished_first}, problems: {len(report.problems)} "
        f"({time.monotonic() - started:.0f} s)"
    )
    for problem in report.problems:
        print("problem:", problem)
    raise SystemExit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
