"""A page of 100 datapoints from a 1M-datapoint dataset, in each API dialect's own paging
(docs/performance.md, *Dialect pages*).

The dataset is written once into a server root (benchmarks.serve_reads.build_dataset_root:
the repository `bench/evals` with `evals.jsonl`) and kept in `--root` for later runs; a real
`dsv serve --no-auth --api-repo bench/evals` is started on 127.0.0.1, so the dialects without
owners in their paths find the dataset too. Then each registered paging fetches pages at
datapoint positions from the first page to the last, one request after another, and the
median (p50) and p95 are reported per paging and per depth.

A paging is a function of a `Target` (the server, a client, the dataset's datapoint ids) that
returns `fetch(position) -> the page's items`; add one with `register`:

    register("orq", lambda t: lambda at: t.client.get(...).json()["data"])

    python -m benchmarks.dialect_pages --count 1000000 --root /tmp/bench-1m
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks.push import Server
from benchmarks.serve_reads import REPO, build_dataset_root

__all__ = ["PAGINGS", "Target", "measure", "register"]

PAGE = 100


class Target(NamedTuple):
    """What a paging needs: the server's URL, a client on it, and the dataset's datapoint ids
    in order (a cursor paging names the item before a page by its id)."""

    url: str
    client: httpx.Client
    oids: list[bytes]


# fetch(position) -> the items of the page of PAGE datapoints that starts at `position`.
Fetch = Callable[[int], list[Any]]
PAGINGS: dict[str, Callable[[Target], Fetch]] = {}


def register(name: str, paging: Callable[[Target], Fetch]) -> None:
    """Add a dialect's paging to the benchmark, under `name`."""
    PAGINGS[name] = paging


def _humanloop(target: Target) -> Fetch:
    listed = target.client.get("/v5/datasets").json()["records"]
    (dataset,) = [d["id"] for d in listed if d["path"] == f"{REPO}/evals"]

    def fetch(at: int) -> list[Any]:
        params = {"page": at // PAGE + 1, "size": PAGE}
        reply = target.client.get(f"/v5/datasets/{dataset}/datapoints", params=params)
        reply.raise_for_status()
        records: list[Any] = reply.json()["records"]
        return records

    return fetch


def _overmind(target: Target, ordering: str = "order") -> Fetch:
    (version,) = target.client.get("/api/datasets/").json()["results"]

    def fetch(at: int) -> list[Any]:
        params: dict[str, str | int] = {"page": at // PAGE + 1, "ordering": ordering}
        reply = target.client.get(f"/api/datasets/{version['id']}/datapoints/", params=params)
        reply.raise_for_status()
        results: list[Any] = reply.json()["results"]
        return results

    return fetch


register("humanloop (page, size)", _humanloop)
register("overmind (page)", _overmind)
register("overmind (page, ordering=-order)", lambda target: _overmind(target, "-order"))


def _depths(count: int) -> dict[str, list[int]]:
    """Page starts by depth: the first pages, the middle, the last pages."""
    last = max(0, (count - 1) // PAGE * PAGE)
    rng = random.Random(2026)

    def near(center: int) -> list[int]:
        low = max(0, center - 50 * PAGE)
        high = min(last, center + 50 * PAGE)
        return [rng.randrange(low, high + 1, PAGE) // PAGE * PAGE for _ in range(50)]

    return {"first pages": near(0), "middle": near(count // 2), "last pages": near(last)}


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]


def measure(count: int, root: Path) -> dict[str, dict[str, float]]:
    """Per paging and depth, p50 and p95 in ms of page requests; builds the root if empty."""
    if not (root / "meta.sqlite3").exists():
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build_dataset_root(root, count)
        print(f"built {count:,} datapoints in {time.perf_counter() - started:.1f} s")
    oids = _oids(root)
    out: dict[str, dict[str, float]] = {}
    with (
        Server(root, "--no-auth", "--api-repo", REPO) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        target = Target(server.url, client, oids)
        for name, paging in PAGINGS.items():
            fetch = paging(target)
            for at in range(0, min(20 * PAGE, len(oids)), PAGE):  # warm the caches
                fetch(at)
            every: list[float] = []
            for depth, starts in _depths(len(oids)).items():
                times = []
                for at in starts:
                    begun = time.perf_counter()
                    items = fetch(at)
                    times.append(time.perf_counter() - begun)
                    if len(items) != min(PAGE, len(oids) - at):
                        raise RuntimeError(f"{name}: {len(items)} items at {at}")
                every.extend(times)
                out.setdefault(name, {})[f"{depth} p50 ms"] = statistics.median(times) * 1000
            out[name]["p50 ms"] = statistics.median(every) * 1000
            out[name]["p95 ms"] = _p95(every) * 1000
    return out


def _oids(root: Path) -> list[bytes]:
    """The dataset's datapoint ids, in order, read back from the root."""
    from dsv.server.storage import open_storage
    from dsv.server.storage.stored import StoredObjects

    blobs, meta = open_storage(root)
    try:
        head = meta.list_refs(REPO)["refs/heads/main"]
        stored = StoredObjects(blobs)
        dataset = stored.tree(REPO, head)["evals.jsonl"]
        joined = stored.oids(REPO, dataset)
        return [joined[i : i + 32] for i in range(0, len(joined), 32)]
    finally:
        blobs.close()
        meta.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--root", type=Path, required=True, help="kept between runs")
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.root), indent=2))


if __name__ == "__main__":
    main()
