"""Reads a read key can make of a big dataset: `include_datapoints` and `/missing`
(docs/performance.md, *Streamed reads*).

A dataset of `--count` datapoints (benchmarks.generate's records) is written straight into a
server root through the library, a real `dsv serve` is started on 127.0.0.1, and then:

- four `GET /v5/datasets/{id}?include_datapoints=true` run at once while page requests
  (`GET /v5/datasets/{id}/datapoints?page=N&size=100`) are timed one after another, and the
  server's resident memory is sampled from /proc;
- `POST /v1/OWNER/NAME/missing` is timed for 4,096, 4,097 and 100,000 ids of the dataset;
- `POST /v1/OWNER/NAME/objects` for 100 and 10,000 of its datapoints, each response read to
  its end (its cost should follow the ids asked, not the repository's size).

    python -m benchmarks.serve_reads --count 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks.generate import make_record
from benchmarks.push import Server, _workdir
from dsv.objects import Kind, hash_object
from dsv.pack import PackWriter

__all__ = ["build_dataset_root", "measure"]

REPO = "bench/evals"
_STREAMS = 4
_BATCH = 10_000
# The ids of the `/objects` requests timed: a few, and the most a request may ask.
_OBJECTS_IDS = (100, 10_000)


class _PackSink:
    """What build_dataset writes to: objects added to a pack being written."""

    def __init__(self, writer: PackWriter) -> None:
        self.writer = writer

    def write(self, kind: Kind, body: bytes) -> bytes:
        oid = hash_object(kind, body)
        self.writer.add(kind, oid, body)
        return oid


def build_dataset_root(root: Path, count: int) -> list[bytes]:
    """`REPO` on a server root with one commit of `evals.jsonl`, `count` datapoints; returns
    their ids. Written through the library: a push of a million datapoints would take minutes."""
    import msgspec

    from dsv.canonical import canonicalize_many
    from dsv.manifest import build_dataset
    from dsv.objects import Commit, Format, Tree, TreeEntry, encode_object
    from dsv.refs import BRANCHES
    from dsv.server.storage import RefChange, open_storage, publish_pack

    blobs, meta = open_storage(root)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    rng = random.Random(2026)
    oids: list[bytes] = []
    try:
        for start in range(0, count, _BATCH):
            raws = [
                msgspec.json.encode(make_record(i, rng))
                for i in range(start, min(count, start + _BATCH))
            ]
            bodies = canonicalize_many(raws)
            ids = [hash_object(Kind.DATAPOINT, body) for body in bodies]
            oids.extend(ids)

            def fill(
                writer: PackWriter, ids: list[bytes] = ids, bodies: list[bytes] = bodies
            ) -> None:
                writer.add_many(Kind.DATAPOINT, ids, bodies)

            publish_pack(blobs, meta, tmp, REPO, fill)

        def manifest(writer: PackWriter) -> bytes:
            sink = _PackSink(writer)
            dataset, _ = build_dataset(sink, b"".join(oids), Format("jsonl"), ("id",))
            tree = sink.write(Kind.TREE, encode_object(Tree((TreeEntry("evals.jsonl", dataset),))))
            commit = Commit(tree, (), "bench <b@example.com>", int(time.time()), 0, "v1\n")
            return sink.write(Kind.COMMIT, encode_object(commit))

        commit = publish_pack(blobs, meta, tmp, REPO, manifest)
        branch = BRANCHES + "main"
        meta.update_refs(
            REPO, [RefChange(branch, None, commit)], user="bench", reason="bench", head=branch
        )
    finally:
        blobs.close()
        meta.close()
    return oids


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _sampling(pid: int) -> Iterator[list[int]]:
    """The server's VmRSS every 20 ms while the block runs, in KiB."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                samples.append(_rss_kib(pid))
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def _page_times(
    client: httpx.Client, path: str, pages: int, until: threading.Event | None
) -> list[float]:
    """Seconds of page requests, one after another: `pages` of them, or until `until` is set."""
    rng = random.Random(7)
    times: list[float] = []
    while (until is None and len(times) < pages) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        reply = client.get(path, params={"page": rng.randint(1, pages), "size": 100})
        reply.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]


def _stream(url: str) -> int:
    """Read one include_datapoints response to its end; its size in bytes."""
    size, tail = 0, b""
    with httpx.stream("GET", url, timeout=None) as reply:
        reply.raise_for_status()
        for chunk in reply.iter_bytes():
            size += len(chunk)
            tail = (tail + chunk)[-2:]
    if tail != b"]}":
        raise RuntimeError(f"the response ended with {tail!r}")
    return size


def _missing_seconds(client: httpx.Client, ids: list[bytes], runs: int = 3) -> float:
    body = {"kind": "datapoint", "ids": [oid.hex() for oid in ids]}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        reply = client.post(f"/v1/{REPO}/missing", json=body)
        reply.raise_for_status()
        times.append(time.perf_counter() - started)
        assert reply.json()["missing"] == [], reply.text[:200]
    return statistics.median(times)


def _objects_seconds(client: httpx.Client, ids: list[bytes], runs: int = 3) -> float:
    body = {"kind": "datapoint", "ids": [oid.hex() for oid in ids]}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with client.stream("POST", f"/v1/{REPO}/objects", json=body) as reply:
            reply.raise_for_status()
            size = sum(len(chunk) for chunk in reply.iter_bytes())
        times.append(time.perf_counter() - started)
        assert size > 0
    return statistics.median(times)


def measure(
    count: int, workdir: Path | None = None, *, missing_ids: int = 100_000
) -> dict[str, float]:
    """Build the dataset, start a server, and time the reads (see the module's docstring)."""
    with _workdir(workdir) as work:
        root = work / "server"
        started = time.perf_counter()
        oids = build_dataset_root(root, count)
        built = time.perf_counter() - started
        most = max(missing_ids, 4097)
        with Server(root, "--no-auth", "--max-ids", str(most)) as server:
            assert server.proc is not None
            pid = server.proc.pid
            with httpx.Client(base_url=server.url, timeout=120) as client:
                listed = client.get("/v5/datasets").json()["records"]
                (dataset,) = [d["id"] for d in listed if d["path"] == f"{REPO}/evals"]
                page_path = f"/v5/datasets/{dataset}/datapoints"
                pages = max(1, count // 100)
                _page_times(client, page_path, min(pages, 20), None)  # warm
                idle = _page_times(client, page_path, 200, None)
                rss_idle = _rss_kib(pid)
                url = f"{server.url}/v5/datasets/{dataset}?include_datapoints=true"
                # The readers are processes of their own: in this one, they would hold up the
                # timed page requests on this side.
                with (
                    multiprocessing.get_context("fork").Pool(_STREAMS) as pool,
                    _sampling(pid) as samples,
                ):
                    started = time.perf_counter()
                    done = threading.Event()
                    reading = pool.map_async(
                        _stream,
                        [url] * _STREAMS,
                        callback=lambda _: done.set(),
                        error_callback=lambda _: done.set(),
                    )
                    busy = _page_times(client, page_path, pages, done)
                    streamed = time.perf_counter() - started
                    sizes = reading.get()
                hwm = _rss_kib(pid, "VmHWM")
                rng = random.Random(3)
                sample = rng.sample(oids, min(len(oids), missing_ids))
                missing = {
                    n: _missing_seconds(client, sample[:n]) for n in (4096, 4097, len(sample))
                }
                fetched = {n: _objects_seconds(client, sample[:n]) for n in _OBJECTS_IDS}
    assert all(size > 0 for size in sizes)
    return {
        "datapoints": count,
        "build_seconds": built,
        "stream_bytes": float(sizes[0]),
        "stream_seconds": streamed,
        "rss_idle_mib": rss_idle / 1024,
        "rss_max_mib": max(samples) / 1024,
        "hwm_mib": hwm / 1024,
        "page_idle_p50_ms": statistics.median(idle) * 1000,
        "page_idle_p95_ms": _p95(idle) * 1000,
        "page_busy_p50_ms": statistics.median(busy) * 1000,
        "page_busy_p95_ms": _p95(busy) * 1000,
        "page_busy_max_ms": max(busy) * 1000,
        "page_busy_requests": len(busy),
        "missing_ids": float(len(sample)),
        "missing_4096_ms": missing[4096] * 1000,
        "missing_4097_ms": missing[4097] * 1000,
        "missing_most_ms": missing[len(sample)] * 1000,
        **{f"objects_{n}_ms": fetched[n] * 1000 for n in _OBJECTS_IDS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--missing-ids", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, help="Keep the server root here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    result = measure(args.count, args.workdir, missing_ids=args.missing_ids)
    for name, value in result.items():
        print(f"{name}: {value:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    main()
