"""A repository written by 10,000 API writes reads as fast as one written by one push
(docs/performance.md, *Packs of API writes*).

A real `dsv serve --no-auth` runs on 127.0.0.1. `--writes` Humanloop upserts
(`POST /v5/datasets`, `action: add`, a `version_name` each, `--per-write` generated
datapoints each) go to `bench/upserts`, from `--threads` threads, round-robin over
`--datasets` datasets (an upsert's cost grows with its dataset's size: spread over 40, ten
thousand writes take minutes, not an hour); every write is a commit and stores a pack, and
the server merges the small packs in the background. Then `bench/upserts` is cloned and its
clone pushed, in one push, as `bench/pushed`: the same objects, history and all. On both,
alternately:

- a page of a dataset, `GET /v5/datasets/{id}/datapoints?page=N&size=100` at random N;
- `POST /v1/OWNER/NAME/missing` for 10,000 datapoint ids the repository holds;
- `POST /v1/OWNER/NAME/objects` for 1,000 of them, each response read to its end;

and each repository's packs are counted.

    python -m benchmarks.upserts --writes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.generate import make_record
from benchmarks.push import Server, _workdir, dsv_command

__all__ = ["measure"]

UPSERTED = "bench/upserts"
PUSHED = "bench/pushed"
_MISSING_IDS = 10_000
_OBJECTS_IDS = 1_000


def _write(url: str, thread: int, writes: range, per_write: int, datasets: int) -> None:
    rng = random.Random(thread)
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in writes:
            records = [make_record(n * per_write + i, rng) for i in range(per_write)]
            body = {
                "path": f"{UPSERTED}/evals-{n % datasets}",
                "action": "add",
                "version_name": f"write {n}",
                "datapoints": [
                    {"inputs": r["inputs"], "messages": r["messages"], "target": r["target"]}
                    for r in records
                ],
            }
            reply = client.post("/v5/datasets", json=body)
            reply.raise_for_status()
            assert reply.json()["version_created"], reply.text[:200]


def _upsert_all(url: str, writes: int, threads: int, per_write: int, datasets: int) -> float:
    """Seconds `writes` upserts took from `threads` threads."""
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            _write(url, thread, range(thread, writes, threads), per_write, datasets)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def _pack_count(root: Path, repo: str) -> int:
    return len(list((root / "repos" / repo / "objects" / "pack").glob("*.idx")))


def _settle(root: Path, repo: str, quiet: float = 2.0, timeout: float = 600.0) -> float:
    """Seconds until the pack count of `repo` has not changed for `quiet` seconds (the
    server's background compaction is done), not counting those `quiet` seconds."""
    started = time.monotonic()
    last, since = _pack_count(root, repo), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - started < timeout:
        time.sleep(0.1)
        now = _pack_count(root, repo)
        if now != last:
            last, since = now, time.monotonic()
    return since - started


def _run(*args: str) -> None:
    subprocess.run([*dsv_command(), *args], check=True, stdout=subprocess.DEVNULL)


def _datapoint_ids(clone: Path) -> list[bytes]:
    """The datapoint ids of every dataset at the clone's HEAD."""
    from dsv import ops
    from dsv.manifest import iter_oids
    from dsv.repo import Repository

    ids: list[bytes] = []
    with Repository.open(clone) as repo:
        for name in sorted(p.name for p in clone.glob("*.jsonl")):
            ids.extend(iter_oids(repo.read_oid_list(ops.dataset_at(repo, "HEAD", name))))
    return ids


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _reads(client: httpx.Client, repo: str, ids: list[bytes], pages: int) -> dict[str, Any]:
    """One round of the timed reads of `repo`; each a function to time."""
    listed = client.get("/v5/datasets", params={"size": 100}).json()["records"]
    dataset = next(d["id"] for d in listed if d["path"] == f"{repo}/evals-0")
    rng = random.Random(11)

    def page() -> None:
        reply = client.get(
            f"/v5/datasets/{dataset}/datapoints",
            params={"page": rng.randint(1, pages), "size": 100},
        )
        reply.raise_for_status()
        assert reply.json()["records"]

    missing_body = {"kind": "datapoint", "ids": [oid.hex() for oid in ids[:_MISSING_IDS]]}

    def missing() -> None:
        reply = client.post(f"/v1/{repo}/missing", json=missing_body)
        reply.raise_for_status()
        assert reply.json()["missing"] == []

    objects_body = {"kind": "datapoint", "ids": [oid.hex() for oid in ids[:_OBJECTS_IDS]]}

    def objects() -> None:
        with client.stream("POST", f"/v1/{repo}/objects", json=objects_body) as reply:
            reply.raise_for_status()
            assert sum(len(chunk) for chunk in reply.iter_bytes()) > 0

    return {"page": page, "missing": missing, "objects": objects}


def measure(
    writes: int,
    workdir: Path | None = None,
    *,
    threads: int = 4,
    per_write: int = 10,
    datasets: int = 40,
    rounds: int = 5,
) -> dict[str, float]:
    """Write, copy by one push, and time the reads (see the module's docstring)."""
    with _workdir(workdir) as work:
        root = work / "server"
        root.mkdir()
        with Server(root, "--no-auth") as server:
            wrote = _upsert_all(server.url, writes, threads, per_write, datasets)
            print(f"{writes} upserts in {wrote:.1f} s", flush=True)
            packs_at_end = _pack_count(root, UPSERTED)
            settled = _settle(root, UPSERTED)
            clone = work / "clone"
            started = time.perf_counter()
            _run("clone", f"{server.url}/{UPSERTED}", str(clone))
            cloned = time.perf_counter() - started
            _run("-C", str(clone), "remote", "add", "copy", f"{server.url}/{PUSHED}")
            started = time.perf_counter()
            _run("-C", str(clone), "push", "copy", "main")
            pushed = time.perf_counter() - started
            _settle(root, PUSHED)
            held = _datapoint_ids(clone)
            ids = random.Random(5).sample(held, min(len(held), _MISSING_IDS))
            pages = max(1, writes // datasets * per_write // 100)
            times: dict[str, dict[str, list[float]]] = {UPSERTED: {}, PUSHED: {}}
            with httpx.Client(base_url=server.url, timeout=120) as client:
                reads = {repo: _reads(client, repo, ids, pages) for repo in times}
                for repo in times:  # warm each repository's packs and caches
                    for fn in reads[repo].values():
                        fn()
                # Alternately, so that the load of the shared machine falls on both alike.
                for _ in range(rounds):
                    for repo in times:
                        for name, fn in reads[repo].items():
                            runs = 20 if name == "page" else 1
                            times[repo].setdefault(name, []).append(_median_ms(fn, runs))
            packs = {repo: _pack_count(root, repo) for repo in times}
    result: dict[str, float] = {
        "writes": writes,
        "threads": threads,
        "datapoints_per_write": per_write,
        "datasets": datasets,
        "write_seconds": wrote,
        "writes_per_second": writes / wrote,
        "packs_after_last_write": packs_at_end,
        "compaction_tail_seconds": settled,
        "packs_upserted": packs[UPSERTED],
        "packs_pushed": packs[PUSHED],
        "clone_seconds": cloned,
        "push_seconds": pushed,
    }
    for name in ("page", "missing", "objects"):
        upserted = statistics.median(times[UPSERTED][name])
        copied = statistics.median(times[PUSHED][name])
        result[f"{name}_upserted_ms"] = upserted
        result[f"{name}_pushed_ms"] = copied
        result[f"{name}_ratio"] = upserted / copied
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--per-write", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=40)
    parser.add_argument("--workdir", type=Path, help="Keep the server root here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    result = measure(
        args.writes,
        args.workdir,
        threads=args.threads,
        per_write=args.per_write,
        datasets=args.datasets,
    )
    for name, value in result.items():
        print(f"{name}: {value:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    os.environ.setdefault("DSV_AUTHOR_EMAIL", "bench@example.com")
    main()
