"""A page of 100 datapoints from a big dataset in each owner-less dialect's paging
(docs/performance.md, *Dialect pages*): orq.ai's cursors and TensorZero's offsets, deep ones
included, timed one request after another against a real `dsv serve` on 127.0.0.1.

The dataset (benchmarks.generate's records) is written straight into a server root through
the library (benchmarks.serve_reads.build_dataset_root), as a push of a generated JSONL would
leave it; a read key for its repository makes it the dialects' repository.

    python -m benchmarks.dialect_pages --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.push import Server, _workdir
from benchmarks.serve_reads import REPO, build_dataset_root
from dsv.server.dialects.tensorzero.service import datapoint_uuid

__all__ = ["measure"]

PAGE = 100


def _times(
    request: Callable[[int], httpx.Response], count: int, positions: list[int]
) -> list[float]:
    """Seconds of one request a position, one after another; each must be a page of 100."""
    times = []
    for at in positions:
        started = time.perf_counter()
        reply = request(at)
        times.append(time.perf_counter() - started)
        reply.raise_for_status()
        shown = reply.content.count(b'"dataset_') or reply.content.count(b'"id":"dp_')
        assert shown >= min(PAGE, count - at), reply.text[:200]
    return times


def _figures(name: str, times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        f"{name}_p50_ms": statistics.median(times) * 1000,
        f"{name}_p95_ms": ordered[int(len(ordered) * 0.95)] * 1000,
    }


def measure(count: int, workdir: Path | None = None, *, requests: int = 200) -> dict[str, float]:
    """Build the dataset, start a server, and time pages (see the module's docstring)."""
    from dsv.server.keys import create_key
    from dsv.server.storage.sqlite import SqliteMetaStore

    with _workdir(workdir) as work:
        root = work / "server"
        kept = work / f"oids-{count}.bin"
        started = time.perf_counter()
        if kept.exists():
            # A kept --workdir: the dataset is built once, measured as often as wanted.
            data = kept.read_bytes()
            oids = [data[i : i + 32] for i in range(0, len(data), 32)]
        else:
            oids = build_dataset_root(root, count)
            kept.write_bytes(b"".join(oids))
        built = time.perf_counter() - started
        meta = SqliteMetaStore(root / "meta.sqlite3")
        try:
            _, key = create_key(meta, "read", REPO)
        finally:
            meta.close()
        rng = random.Random(23)
        last = max(0, count - PAGE)
        deep = [rng.randrange(PAGE, last + 1) if last > PAGE else last for _ in range(requests)]
        out: dict[str, float] = {"datapoints": count, "build_seconds": built}
        with (
            Server(root) as server,
            httpx.Client(
                base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"}
            ) as client,
        ):
            (dataset,) = client.get("/v2/datasets").json()["data"]
            points = f"/v2/datasets/{dataset['_id']}/datapoints"

            def orq_after(at: int) -> httpx.Response:
                cursor = "dp_" + oids[at - 1].hex()
                return client.get(points, params={"limit": PAGE, "starting_after": cursor})

            def orq_before(at: int) -> httpx.Response:
                params: dict[str, str | int] = {"limit": PAGE}
                if at + PAGE < count:
                    params["ending_before"] = "dp_" + oids[at + PAGE].hex()
                return client.get(points, params=params)

            def tz_offset(at: int) -> httpx.Response:
                body = {"limit": PAGE, "offset": at}
                return client.post("/v1/datasets/evals/list_datapoints", json=body)

            def tz_old(at: int) -> httpx.Response:
                return client.get(
                    "/datasets/evals/datapoints", params={"limit": PAGE, "offset": at}
                )

            # The first deep cursor reads the dataset's id list (32 bytes an id) once.
            started = time.perf_counter()
            orq_after(deep[0]).raise_for_status()
            out["orq_first_cursor_ms"] = (time.perf_counter() - started) * 1000
            ids = [datapoint_uuid(oids[i]) for i in (0, count - 1)]
            started = time.perf_counter()
            got = client.post("/v1/datasets/evals/get_datapoints", json={"ids": ids})
            out["tz_get_2_ids_ms"] = (time.perf_counter() - started) * 1000
            assert len(got.json()["datapoints"]) == 2
            hl = client.get("/v5/datasets").json()["records"][0]["id"]

            def humanloop(at: int) -> httpx.Response:
                # The peer: the Humanloop dialect's page-numbered page at the same depth.
                params = {"page": at // PAGE + 1, "size": PAGE}
                return client.get(f"/v5/datasets/{hl}/datapoints", params=params)

            out["load_average"] = os.getloadavg()[0]
            modes: list[tuple[str, Callable[[int], httpx.Response]]] = [
                ("humanloop_page", humanloop),
                ("orq_first_page", lambda _: client.get(points, params={"limit": PAGE})),
                ("orq_starting_after", orq_after),
                ("orq_ending_before", orq_before),
                ("tz_first_page", lambda _: tz_offset(0)),
                ("tz_offset", tz_offset),
                ("tz_older_offset", tz_old),
            ]
            for _, request in modes:
                _times(request, count, deep[:10])  # warm
            # Interleaved, a position at a time: the machine's load falls on every mode alike.
            times: dict[str, list[float]] = {name: [] for name, _ in modes}
            for at in deep:
                for name, request in modes:
                    times[name] += _times(request, count, [at])
            for name, _ in modes:
                out |= _figures(name, times[name])
            out["load_average_after"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="Keep the server root here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    result = measure(args.count, args.workdir, requests=args.requests)
    for name, value in result.items():
        print(f"{name}: {value:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    main()
