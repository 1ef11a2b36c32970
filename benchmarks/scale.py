"""Sharing costs nothing: push, clone and page latency of `dsv serve` on local disk (1 server)
against 1 and 3 servers on SeaweedFS + PostgreSQL (docs/performance.md, *Scaled out*).

For each setup: one `dsv push` of `--count` datapoints (benchmarks.generate's v1), then three
`dsv clone`s at once (each from the next server), twice (cold caches, then warm), then
Humanloop page requests
(`GET /v5/datasets/{id}/datapoints?page=N&size=100`) from 6 threads, each to the next server.
The CPU seconds of every process (dsv servers, SeaweedFS, PostgreSQL, clients) are read from
/proc, which shows where the time goes.

    python -m benchmarks.scale --count 100000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.generate import generate
from benchmarks.push import Server, _workdir, dsv_command
from benchmarks.services import Deployment, Postgres, SeaweedFS

__all__ = ["measure"]

_PAGES = 150
# Page readers at once: enough that one server process (one GIL) is the bottleneck, so that
# what several processes add shows on a machine with more than one core.
_READERS = 6


def _cpu(pid: int) -> float:
    """CPU seconds of process `pid` and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and every live descendant (PostgreSQL forks a backend a client)."""
    total = _cpu(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(_tree_cpu(int(c)) for c in children)


def _run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(args, check=True, env=env, capture_output=True, stdin=subprocess.DEVNULL)


def _setup_run(
    label: str,
    servers: list[Server],
    key: str,
    work: Path,
    source: Path,
    env: dict[str, str],
    others: dict[str, int],
) -> dict[str, Any]:
    env = {**env, "DSV_API_KEY": key}
    pids = {f"dsv serve {n}": s.proc.pid for n, s in enumerate(servers) if s.proc}
    pids |= others
    before = {name: _tree_cpu(pid) for name, pid in pids.items()}
    repo = f"bench/{label}"
    local = work / f"{label}-src"
    _run([*dsv_command(), "init", str(local)], env)
    os.link(source, local / "qa.jsonl")
    _run([*dsv_command(), "-C", str(local), "add", "qa.jsonl"], env)
    _run([*dsv_command(), "-C", str(local), "commit", "-m", "v1"], env)
    _run(
        [*dsv_command(), "-C", str(local), "remote", "add", "origin", f"{servers[0].url}/{repo}"],
        env,
    )
    start = time.perf_counter()
    _run([*dsv_command(), "-C", str(local), "push", "origin", "main"], env)
    push = time.perf_counter() - start

    def clone(n: int, tag: str) -> None:
        url = f"{servers[n % len(servers)].url}/{repo}"
        _run([*dsv_command(), "-C", str(work), "clone", url, f"{label}-{tag}{n}"], env)

    clones: dict[str, float] = {}
    # Cold: each server reads the repository for the first time (from S3 into its cache);
    # warm: again, every server's cache holds it.
    for tag in ("cold", "warm"):
        start = time.perf_counter()
        threads = [threading.Thread(target=clone, args=(n, tag)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        clones[tag] = time.perf_counter() - start

    headers = {"X-API-KEY": key}
    listed = httpx.get(f"{servers[0].url}/v5/datasets", headers=headers, timeout=60).json()
    dataset = next(r for r in listed["records"] if r["path"].startswith(repo))["id"]
    times: list[float] = []
    guard = threading.Lock()

    def pages(n: int) -> None:
        with httpx.Client(headers=headers, timeout=60) as client:
            for i in range(_PAGES):
                url = f"{servers[(n + i) % len(servers)].url}/v5/datasets/{dataset}/datapoints"
                t0 = time.perf_counter()
                reply = client.get(url, params={"page": 1 + (i * 37) % 500, "size": 100})
                reply.raise_for_status()
                with guard:
                    times.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=pages, args=(n,)) for n in range(_READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paging = time.perf_counter() - start
    times.sort()
    cpu = {name: round(_tree_cpu(pid) - before[name], 2) for name, pid in pids.items()}
    return {
        "setup": label,
        "push_s": round(push, 2),
        "three_clones_cold_s": round(clones["cold"], 2),
        "three_clones_warm_s": round(clones["warm"], 2),
        "pages_per_s": round(_READERS * _PAGES / paging, 1),
        "page_p50_ms": round(1000 * statistics.median(times), 1),
        "page_p95_ms": round(1000 * times[int(0.95 * len(times))], 1),
        "cpu_s": cpu,
    }


def measure(count: int, work: Path) -> list[dict[str, Any]]:
    """The three setups' figures, in order: local 1, shared 1, shared 3."""
    v1, _ = generate(count, work / "data")
    env = dict(os.environ)
    results = []
    root = work / "local-root"
    root.mkdir()
    from dsv.server.keys import create_key
    from dsv.server.storage.sqlite import SqliteMetaStore

    meta = SqliteMetaStore(root / "meta.sqlite3")
    key = create_key(meta, "write")[1]
    meta.close()
    with Server(root) as local:
        results.append(_setup_run("local-1", [local], key, work, v1, env, {}))
    with SeaweedFS() as weed, Postgres() as pg:
        assert weed.proc and pg.proc
        others = {"seaweedfs": weed.proc.pid, "postgresql": pg.proc.pid}
        for count_servers in (1, 3):
            label = f"shared-{count_servers}"
            with Deployment(weed, pg, work / label, count=count_servers) as deployed:
                results.append(
                    _setup_run(
                        label,
                        deployed.servers,
                        deployed.key("write"),
                        work,
                        v1,
                        deployed.env,
                        others,
                    )
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    with _workdir(args.workdir) as work:
        results = measure(args.count, work)
    for row in results:
        print(json.dumps(row))
    one, three = results[1], results[2]
    # The goal: sharing costs nothing, 3 servers' aggregate >= 1 server's (issue 25).
    print(
        "3 shared servers against 1: pages/s x"
        f"{three['pages_per_s'] / one['pages_per_s']:.2f}, 3 cold clones x"
        f"{one['three_clones_cold_s'] / three['three_clones_cold_s']:.2f}, 3 warm clones x"
        f"{one['three_clones_warm_s'] / three['three_clones_warm_s']:.2f} (above 1: faster)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
