"""dsv.load of a version already in the user cache against pyarrow.json.read_json of the same
JSONL, and the peak RSS of dsv.iter_records over a large version (docs/performance.md).

    python -m benchmarks.load --count 100000 --stream-count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate
from benchmarks.push import dsv_command

__all__ = ["main", "measure_load", "measure_stream"]

# VmHWM, not ru_maxrss: that one keeps the peak of the process exec replaced (the harness).
_STREAM = """
import sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
import dsv, dsv.notebook
base = peak()
n = 0
for record in dsv.iter_records(sys.argv[1], cwd=sys.argv[2]):
    n += 1
print(n, base, peak())
"""


def _repo(work: Path, count: int, env: dict[str, str]) -> Path:
    """A repository at `work`/repo whose HEAD holds `count` generated records as data.jsonl."""
    v1, _ = generate(count, work / "gen")
    root = work / "repo"
    root.mkdir()
    (root / "data.jsonl").write_bytes(v1.read_bytes())
    for args in (["init"], ["add", "data.jsonl"], ["commit", "-m", "v1"]):
        subprocess.run([*dsv_command(), "-q", *args], cwd=root, env=env, check=True)
    return root


def measure_load(work: Path, count: int, runs: int) -> dict[str, float]:
    """Medians of dsv.load (cached) and pyarrow.json.read_json, and their ratio."""
    import pyarrow.json

    import dsv

    root = _repo(work, count, dict(os.environ))
    dsv.load("data.jsonl", cwd=root)  # the first load fills the cache
    loads, reads = [], []
    for _ in range(runs):
        start = time.perf_counter()
        table = dsv.load("data.jsonl", cwd=root)
        loads.append(time.perf_counter() - start)
        start = time.perf_counter()
        peer = pyarrow.json.read_json(root / "data.jsonl")
        reads.append(time.perf_counter() - start)
    assert table.num_rows == peer.num_rows == count
    load, read = statistics.median(loads), statistics.median(reads)
    return {"count": count, "load_s": load, "read_json_s": read, "ratio": load / read}


def measure_stream(work: Path, count: int) -> dict[str, float]:
    """Peak RSS (MiB) of a process that streams every record of a `count` version."""
    root = _repo(work, count, dict(os.environ))
    out = subprocess.run(
        [sys.executable, "-c", _STREAM, "data.jsonl", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert int(out[0]) == count
    return {"count": count, "after_imports_mib": int(out[1]), "peak_rss_mib": int(out[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--stream-count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsv-load-") as scratch:
        work = args.work or Path(scratch)
        os.environ.setdefault("DSV_CACHE_DIR", str(work / "user-cache"))
        result = {
            "load": measure_load(work / "load", args.count, args.runs),
            "stream": measure_stream(work / "stream", args.stream_count),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
