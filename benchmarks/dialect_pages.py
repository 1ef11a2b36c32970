"""A page of 100 datapoints from a big dataset in each API dialect's own paging
(docs/performance.md, *Dialect pages*): Humanloop's and Overmind Lab's page numbers, orq.ai's
cursors, TensorZero's offsets; deep pages included.

The dataset is built once and kept in `--workdir` for later runs: a generated JSONL
(benchmarks.generate's records) added, committed and pushed with dsv to a real `dsv serve`,
as the repository `bench/evals` with `evals.jsonl`. Then `dsv serve` runs on 127.0.0.1 and
a read key for that repository makes it the repository of the dialects without owners in
their paths. The registered pagings take turns, one request at a time, at the same
positions: a third near the start, a third in the middle, a third near the end; every reply's
item count is checked. p50 and p95 are reported per paging, with the p50 of each depth.

A paging is a function of a `Target` (the server, a keyed client, the dataset's datapoint
ids in order) that returns `fetch(position) -> the items of the page of 100 there`; a dialect
adds its own with `register(name, paging)`.

    python -m benchmarks.dialect_pages --count 1000000 --workdir /tmp/bench-1m
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
from benchmarks.push import Server, _workdir

__all__ = ["PAGINGS", "REPO", "Target", "build_by_push", "measure", "register"]

REPO = "bench/evals"
PAGE = 100
_DEPTHS = ("first", "middle", "last")


class Target(NamedTuple):
    """What a paging needs: the server's URL, a client on it with a read key for `REPO`,
    and the dataset's datapoint ids in order (a cursor names an item by its id)."""

    url: str
    client: httpx.Client
    oids: list[bytes]


# fetch(position) -> the items of the page of PAGE datapoints that starts at `position`.
Fetch = Callable[[int], list[Any]]
PAGINGS: dict[str, Callable[[Target], Fetch]] = {}


def register(name: str, paging: Callable[[Target], Fetch]) -> None:
    """Add a dialect's paging to the benchmark, under `name` (its figures' prefix)."""
    PAGINGS[name] = paging


def _items(reply: httpx.Response, field: str | None) -> list[Any]:
    reply.raise_for_status()
    body = reply.json()
    found: list[Any] = body[field] if field else body
    return found


def _humanloop(target: Target) -> Fetch:
    listed = target.client.get("/v5/datasets").json()["records"]
    (dataset,) = [d["id"] for d in listed if d["path"] == f"{REPO}/evals"]
    path = f"/v5/datasets/{dataset}/datapoints"
    return lambda at: _items(
        target.client.get(path, params={"page": at // PAGE + 1, "size": PAGE}), "records"
    )


def _overmind(ordering: str) -> Callable[[Target], Fetch]:
    def paging(target: Target) -> Fetch:
        (version,) = target.client.get("/api/datasets/").json()["results"]
        path = f"/api/datasets/{version['id']}/datapoints/"

        def fetch(at: int) -> list[Any]:
            # Descending, the same page number counts from the dataset's end.
            params: dict[str, str | int] = {"page": at // PAGE + 1, "ordering": ordering}
            return _items(target.client.get(path, params=params), "results")

        return fetch

    return paging


def _orq_points(target: Target) -> str:
    (dataset,) = target.client.get("/v2/datasets").json()["data"]
    return f"/v2/datasets/{dataset['_id']}/datapoints"


def _orq_after(target: Target) -> Fetch:
    path = _orq_points(target)

    def fetch(at: int) -> list[Any]:
        params: dict[str, str | int] = {"limit": PAGE}
        if at:
            params["starting_after"] = "dp_" + target.oids[at - 1].hex()
        return _items(target.client.get(path, params=params), "data")

    return fetch


def _orq_before(target: Target) -> Fetch:
    path = _orq_points(target)

    def fetch(at: int) -> list[Any]:
        params: dict[str, str | int] = {"limit": PAGE}
        if at + PAGE < len(target.oids):
            params["ending_before"] = "dp_" + target.oids[at + PAGE].hex()
        elif at:
            # No item follows the last page to end before: reach it from the one before it.
            params["starting_after"] = "dp_" + target.oids[at - 1].hex()
        return _items(target.client.get(path, params=params), "data")

    return fetch


def _tz_offset(target: Target) -> Fetch:
    path = "/v1/datasets/evals/list_datapoints"
    return lambda at: _items(
        target.client.post(path, json={"limit": PAGE, "offset": at}), "datapoints"
    )


def _tz_older_offset(target: Target) -> Fetch:
    path = "/datasets/evals/datapoints"
    return lambda at: _items(target.client.get(path, params={"limit": PAGE, "offset": at}), None)


register("humanloop_page", _humanloop)
register("overmind_page", _overmind("order"))
register("overmind_page_descending", _overmind("-order"))
register("orq_starting_after", _orq_after)
register("orq_ending_before", _orq_before)
register("tz_offset", _tz_offset)
register("tz_older_offset", _tz_older_offset)


def _positions(count: int, requests: int) -> list[tuple[str, int]]:
    """(depth, page start): `requests` of them, a third at each depth."""
    last = max(0, (count - 1) // PAGE * PAGE)
    rng = random.Random(23)
    out = []
    for i in range(max(requests, len(_DEPTHS))):
        depth = _DEPTHS[i % len(_DEPTHS)]
        center = {"first": 0, "middle": count // 2, "last": last}[depth]
        low, high = max(0, center - 50 * PAGE), min(last, center + 50 * PAGE)
        out.append((depth, rng.randrange(low, high + 1, PAGE) // PAGE * PAGE))
    return out


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]


def measure(count: int, workdir: Path | None = None, *, requests: int = 150) -> dict[str, float]:
    """Build the dataset unless `workdir` holds it, start a server, and time each paging's
    pages (see the module's docstring): `NAME_p50_ms`, `NAME_p95_ms`, `NAME_DEPTH_p50_ms`."""
    from dsv.server.dialects.tensorzero.service import datapoint_uuid
    from dsv.server.keys import create_key
    from dsv.server.storage.sqlite import SqliteMetaStore

    with _workdir(workdir) as work:
        root = work / "server"
        out: dict[str, float] = {"datapoints": count}
        if not (root / "meta.sqlite3").exists():
            started = time.perf_counter()
            build_by_push(root, count)
            out["build_seconds"] = time.perf_counter() - started
        oids = _oids(root)
        meta = SqliteMetaStore(root / "meta.sqlite3")
        try:
            _, key = create_key(meta, "read", REPO)
        finally:
            meta.close()
        with (
            Server(root) as server,
            httpx.Client(
                base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"}
            ) as client,
        ):
            target = Target(server.url, client, oids)
            fetches = {name: paging(target) for name, paging in PAGINGS.items()}
            deep = len(oids) // 2
            # The first deep cursor reads the dataset's id index once.
            started = time.perf_counter()
            fetches["orq_starting_after"](deep)
            out["orq_first_cursor_ms"] = (time.perf_counter() - started) * 1000
            ids = [datapoint_uuid(oids[i]) for i in (0, len(oids) - 1)]
            started = time.perf_counter()
            got = client.post("/v1/datasets/evals/get_datapoints", json={"ids": ids})
            out["tz_get_2_ids_ms"] = (time.perf_counter() - started) * 1000
            assert len(got.json()["datapoints"]) == 2, got.text[:200]
            for fetch in fetches.values():
                for at in range(0, min(10 * PAGE, len(oids)), PAGE):  # warm the caches
                    fetch(at)
            out["load_average"] = os.getloadavg()[0]
            # The pagings take turns at each position, so a machine busy with others' work
            # weighs on each alike (this one is shared): their ratios hold where ms do not.
            times: dict[str, dict[str, list[float]]] = {name: {} for name in fetches}
            for depth, at in _positions(len(oids), requests):
                for name, fetch in fetches.items():
                    begun = time.perf_counter()
                    items = fetch(at)
                    times[name].setdefault(depth, []).append(time.perf_counter() - begun)
                    if len(items) != min(PAGE, len(oids) - at):
                        raise RuntimeError(f"{name}: {len(items)} items at {at}")
            out["load_average_after"] = os.getloadavg()[0]
    for name, by_depth in times.items():
        every = [t for depth_times in by_depth.values() for t in depth_times]
        out[f"{name}_p50_ms"] = statistics.median(every) * 1000
        out[f"{name}_p95_ms"] = _p95(every) * 1000
        for depth, depth_times in by_depth.items():
            out[f"{name}_{depth}_p50_ms"] = statistics.median(depth_times) * 1000
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=150, help="pages a paging")
    parser.add_argument("--workdir", type=Path, help="Keep the server root here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    result = measure(args.count, args.workdir, requests=args.requests)
    for name, value in result.items():
        print(f"{name}: {value:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
