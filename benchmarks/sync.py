"""Push, clone and fetch of a large dataset against a real `dsv serve` on 127.0.0.1, beside
the floor measured in the same run (docs/performance.md, *Sync at a million datapoints*).

Steps, each a whole `dsv` process from an installed copy (benchmarks.run.install_dsv):
`dsv push` of `--count` datapoints (benchmarks.generate's v1) to an empty server; `dsv clone`
of it; then the 1% change (v2) committed and pushed, and `dsv fetch` of it into the clone.
Each step's wall time and peak RSS (wait4), the server's peak RSS (VmHWM), and the bytes the
server stores.

The floor is what any tool moving the same data must do: send the stored (compressed) bytes
over a loopback socket, decompress them, and hash each datapoint once (blake3, one call per
record, as the receiver checks every id).

    python -m benchmarks.sync --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import blake3
import zstandard

from benchmarks.generate import generate
from benchmarks.push import Server, _workdir
from benchmarks.run import _environment, _run, install_dsv

__all__ = ["floor", "generate_small", "measure"]

_CHUNK = 1 << 20


def _loopback_seconds(size: int) -> float:
    """Seconds to send `size` bytes through a TCP socket on 127.0.0.1."""
    piece = os.urandom(_CHUNK)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def drain() -> None:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(_CHUNK):
                    pass

        reader = threading.Thread(target=drain)
        reader.start()
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as out:
            for at in range(0, size, _CHUNK):
                out.sendall(piece[: min(_CHUNK, size - at)])
        reader.join()
        return time.perf_counter() - started


def floor(jsonl: Path, moved: int) -> dict[str, float]:
    """The floor's parts for the records of `jsonl`, of which `moved` bytes are stored."""
    lines = jsonl.read_bytes().splitlines()
    started = time.perf_counter()
    for line in lines:
        blake3.blake3(line).digest()
    hashing = time.perf_counter() - started
    # Blocks of 1 MiB at zstd's default level, as stored; only their decompression is timed.
    raw = b"\n".join(lines)
    compressor = zstandard.ZstdCompressor(level=3)
    blocks = [compressor.compress(raw[at : at + _CHUNK]) for at in range(0, len(raw), _CHUNK)]
    decompressor = zstandard.ZstdDecompressor()
    started = time.perf_counter()
    for block in blocks:
        decompressor.decompress(block)
    unzstd = time.perf_counter() - started
    send = _loopback_seconds(moved)
    return {
        "floor_blake3_s": hashing,
        "floor_zstd_s": unzstd,
        "floor_send_s": send,
        "floor_s": hashing + unzstd + send,
    }


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def generate_small(count: int, out: Path) -> tuple[Path, Path]:
    """Small chat datapoints (about 75 bytes of JSON each), and a second version with 1%
    edited, 0.5% deleted and 0.5% added: the records issue 29 measured."""
    out.mkdir(parents=True, exist_ok=True)
    v1, v2 = out / "small-v1.jsonl", out / "small-v2.jsonl"

    def line(i: int, tag: str = "") -> str:
        return json.dumps(
            {"id": i, "messages": [{"role": "user", "content": f"question {i}{tag}"}]}
        )

    with open(v1, "w") as a, open(v2, "w") as b:
        for i in range(count):
            a.write(line(i) + "\n")
            if i % 200 == 1:
                continue  # deleted
            b.write(line(i, " (edited)" if i % 100 == 0 else "") + "\n")
        for i in range(count, count + count // 200):
            b.write(line(i) + "\n")
    return v1, v2


def measure(count: int, workdir: Path | None = None, *, small: bool = False) -> dict[str, float]:
    """Time push, clone, 1% push and fetch of `count` datapoints; with the floor."""
    with _workdir(workdir) as work:
        v1, v2 = (generate_small if small else generate)(count, work / "data")
        python = install_dsv(work)
        dsv = str(python.parent / "dsv")
        home = work / "home"
        home.mkdir(exist_ok=True)
        env = _environment(home)
        repo, clone = work / "repo", work / "clone"
        _run([dsv, "init", str(repo)], work, env)
        shutil.copyfile(v1, repo / "evals.jsonl")
        _run([dsv, "add", "evals.jsonl", "--key", "id"], repo, env)
        _run([dsv, "commit", "-m", "v1"], repo, env)
        figures: dict[str, float] = {"datapoints": count}
        with Server(work / "server", "--no-auth") as server:
            assert server.proc is not None
            url = f"{server.url}/bench/evals"
            _run([dsv, "remote", "add", "origin", url], repo, env)
            figures["push_s"], figures["push_rss_kib"] = _run(
                [dsv, "push", "origin", "main"], repo, env
            )
            figures["stored_bytes"] = _size(work / "server" / "repos")
            figures["clone_s"], figures["clone_rss_kib"] = _run(
                [dsv, "clone", url, str(clone)], work, env
            )
            shutil.copyfile(v2, repo / "evals.jsonl")
            _run([dsv, "commit", "-a", "-m", "v2"], repo, env)
            figures["push_1pct_s"], figures["push_1pct_rss_kib"] = _run(
                [dsv, "push", "origin", "main"], repo, env
            )
            figures["fetch_1pct_s"], figures["fetch_1pct_rss_kib"] = _run(
                [dsv, "fetch", "origin"], clone, env
            )
            figures["server_rss_kib"] = _vm_hwm_kib(server.proc.pid)
        figures.update(floor(v1, int(figures["stored_bytes"])))
    for step in ("push", "clone"):
        figures[f"{step}_over_floor"] = figures[f"{step}_s"] / figures["floor_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, help="Keep the data and repositories here.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument(
        "--small", action="store_true", help="Small chat datapoints (~75 bytes) instead."
    )
    args = parser.parse_args()
    figures = measure(args.count, args.workdir, small=args.small)
    for name, value in figures.items():
        shown = f"{value / 1024:.0f} MiB" if name.endswith("_kib") else f"{value:.3f}"
        print(f"{name}: {shown}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
