"""The web view's dataset page deep into a big dataset (docs/performance.md, *Web view*).

A dataset of `--count` datapoints (benchmarks.generate's records) is written straight into a
server root through the library, a real `dsv serve --no-auth` is started on 127.0.0.1, and
`GET /ui/r/bench/evals/data/main/evals.jsonl?page=N&size=25` is timed for the first page, the
last, and random pages in between: the server's time from its access log (the time from the
request's arrival to its last byte), and the client's.

    python -m benchmarks.web --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.push import Server, _workdir
from benchmarks.serve_reads import REPO, build_dataset_root

__all__ = ["measure"]

_SIZE = 25
_LOGGED = re.compile(r'"GET (\S+)" 200 \d+B ([\d.]+)ms')


def _server_ms(log: Path, paths: list[str]) -> list[float]:
    """The access log's time of each of `paths`, in the order they were requested."""
    found: dict[str, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _LOGGED.search(line)
        if match:
            found.setdefault(match[1], []).append(float(match[2]))
    return [found[path].pop(0) for path in paths]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def measure(count: int, workdir: Path | None = None, *, samples: int = 50) -> dict[str, float]:
    """Build the dataset, start a server, and time its pages (see the module's docstring)."""
    with _workdir(workdir) as work:
        root = work / "server"
        started = time.perf_counter()
        build_dataset_root(root, count)
        built = time.perf_counter() - started
        last = max(1, -(-count // _SIZE))
        rng = random.Random(28)
        pages = [rng.randint(1, last) for _ in range(samples)]
        base = f"/ui/r/{REPO}/data/main/evals.jsonl"
        with Server(root, "--no-auth") as server, httpx.Client(base_url=server.url) as client:
            warm = [1, 2, last]  # the manifest decoded, the pack indexes open
            asked: list[str] = []
            client_ms: list[float] = []
            for page in [*warm, 1, last, *pages]:
                path = f"{base}?page={page}&size={_SIZE}"
                started = time.perf_counter()
                reply = client.get(path)
                client_ms.append((time.perf_counter() - started) * 1000)
                reply.raise_for_status()
                assert reply.text.count('class="point"') == min(_SIZE, count - (page - 1) * _SIZE)
                asked.append(path)
            time.sleep(0.2)  # the access log line is written after the response
            server_ms = _server_ms(server.log_path, asked)[len(warm) :]
            client_ms = client_ms[len(warm) :]
    deep = server_ms[1:]
    return {
        "datapoints": count,
        "build_seconds": built,
        "first_page_ms": server_ms[0],
        "last_page_ms": server_ms[1],
        "deep_p50_ms": statistics.median(deep),
        "deep_p95_ms": _p95(deep),
        "deep_max_ms": max(deep),
        "deep_over_first": statistics.median(deep) / server_ms[0],
        "client_deep_p50_ms": statistics.median(client_ms[1:]),
        "requests": len(deep),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--workdir", type=Path, help="Keep the server root here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    result = measure(args.count, args.workdir, samples=args.samples)
    for name, value in result.items():
        print(f"{name}: {value:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    os.environ.setdefault("DSV_AUTHOR_EMAIL", "bench@example.com")
    main()
