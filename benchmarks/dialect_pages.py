"""A page of 100 datapoints from a 1M-datapoint dataset, in each API dialect's own paging
(docs/performance.md, *Dialect pages*).

The dataset is built once and kept in `--root` for later runs: a generated JSONL
(benchmarks.generate's records) added, committed and pushed with dsv to a real `dsv serve`,
as the repository `bench/evals` with `evals.jsonl`. Then `dsv serve --no-auth --api-repo
bench/evals` is started on 127.0.0.1, so the dialects without owners in their paths find the
dataset too. Then each registered paging fetches pages at
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
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks.generate import make_record
from benchmarks.push import Server

__all__ = ["PAGINGS", "REPO", "Target", "build_by_push", "measure", "register"]

REPO = "bench/evals"
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
        started = time.perf_counter()
        build_by_push(root, count)
        print(f"built {count:,} datapoints in {time.perf_counter() - started:.1f} s")
    oids = _oids(root)
    out: dict[str, dict[str, float]] = {}
    with (
        Server(root, "--no-auth", "--api-repo", REPO) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        target = Target(server.url, client, oids)
        fetches = {name: paging(target) for name, paging in PAGINGS.items()}
        for fetch in fetches.values():
            for at in range(0, min(20 * PAGE, len(oids)), PAGE):  # warm the caches
                fetch(at)
        # The pagings take turns at each page, so a machine busy with others' work weighs on
        # each alike (this one is shared): their ratios hold where the milliseconds do not.
        times: dict[str, dict[str, list[float]]] = {name: {} for name in fetches}
        for depth, starts in _depths(len(oids)).items():
            for at in starts:
                for name, fetch in fetches.items():
                    begun = time.perf_counter()
                    items = fetch(at)
                    times[name].setdefault(depth, []).append(time.perf_counter() - begun)
                    if len(items) != min(PAGE, len(oids) - at):
                        raise RuntimeError(f"{name}: {len(items)} items at {at}")
        for name, by_depth in times.items():
            every = [t for depth_times in by_depth.values() for t in depth_times]
            out[name] = {f"{d} p50 ms": statistics.median(t) * 1000 for d, t in by_depth.items()}
            out[name]["p50 ms"] = statistics.median(every) * 1000
            out[name]["p95 ms"] = _p95(every) * 1000
    return out


def build_by_push(root: Path, count: int) -> None:
    """`REPO` on a new server root: `count` generated records pushed with dsv as
    `evals.jsonl`, keyed by `id`. The scratch repository and JSONL are removed after."""
    from dsv import ops
    from dsv.remote import add_remote
    from dsv.remote.client import push
    from dsv.repo import Repository

    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    os.environ.setdefault("DSV_AUTHOR_EMAIL", "bench@example.com")
    root.mkdir(parents=True)
    scratch = Path(tempfile.mkdtemp(prefix="dsv-dialect-pages-"))
    try:
        repo = Repository.init(scratch / "repo")
        with repo:
            target = repo.root / "evals.jsonl"
            rng = random.Random(2026)
            with open(target, "w") as out:
                for i in range(count):
                    out.write(json.dumps(make_record(i, rng)) + "\n")
            ops.add(repo, [str(target)], key=("id",))
            ops.commit(repo, "generated")
            with Server(root, "--no-auth") as server:
                add_remote(repo, "origin", f"{server.url}/{REPO}")
                push(repo, "origin")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
