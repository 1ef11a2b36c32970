"""Bytes on the wire of a second push after a 1% change (docs/protocol.md §8).

A 20,000-datapoint dataset is pushed to a real `dsv serve` on 127.0.0.1; then the standard
second version (benchmarks.generate: 1% edited, 0.5% deleted, 0.5% added) is committed and
pushed again. Every byte of both directions is counted (start lines, headers and bodies).

    python -m benchmarks.push --count 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from benchmarks.generate import generate

__all__ = ["Server", "dsv_command", "measure"]

_LISTENING = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")


def dsv_command() -> list[str]:
    """How to start dsv as its own process: this interpreter, `-m dsv`."""
    return [sys.executable, "-m", "dsv"]


class Server:
    """A real `dsv serve` process on 127.0.0.1 (a port the kernel picks), stopped on exit."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.args = args
        self.env = env
        self.url = ""
        self.log_path = root.with_name(root.name + ".log")
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        command = [*dsv_command(), "serve", "--root", str(self.root), "--host", "127.0.0.1"]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*command, "--port", "0", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.stop()
                raise RuntimeError(f"dsv serve did not start; see {self.log_path}")
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"dsv serve said {line!r}; see {self.log_path}")
        self.url = match.group(1).decode()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"dsv serve is not healthy; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    scratch = Path(tempfile.mkdtemp(prefix="dsv-push-bench-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(count: int, workdir: Path | None = None) -> dict[str, float]:
    """Push `count` datapoints, then the 1% change; bytes of each push and their ratio."""
    from dsv import ops
    from dsv.remote import add_remote
    from dsv.remote.client import push
    from dsv.repo import Repository

    os.environ.setdefault("DSV_AUTHOR_NAME", "Bench")
    os.environ.setdefault("DSV_AUTHOR_EMAIL", "bench@example.com")
    with _workdir(workdir) as work:
        v1, v2 = generate(count, work / "data")
        with Server(work / "server", "--no-auth") as server:
            repo = Repository.init(work / "repo")
            with repo:
                target = repo.root / "evals.jsonl"
                shutil.copyfile(v1, target)
                ops.add(repo, [str(target)], key=("id",))
                ops.commit(repo, "first version")
                add_remote(repo, "origin", f"{server.url}/bench/evals")
                started = time.perf_counter()
                first = push(repo, "origin")
                first_seconds = time.perf_counter() - started
                shutil.copyfile(v2, target)
                ops.commit(repo, "1% changed", all=True)
                started = time.perf_counter()
                second = push(repo, "origin")
                second_seconds = time.perf_counter() - started
    first_bytes = first.bytes_sent + first.bytes_received
    second_bytes = second.bytes_sent + second.bytes_received
    return {
        "datapoints": count,
        "first_objects": first.objects,
        "first_bytes": first_bytes,
        "first_seconds": first_seconds,
        "second_objects": second.objects,
        "second_bytes": second_bytes,
        "second_seconds": second_seconds,
        "ratio": second_bytes / first_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, help="Keep the data and server root here.")
    args = parser.parse_args()
    result = measure(args.count, args.workdir)
    print(
        f"first push:  {result['first_objects']:.0f} objects, {result['first_bytes']:.0f} bytes "
        f"on the wire, {result['first_seconds']:.2f} s"
    )
    print(
        f"second push: {result['second_objects']:.0f} objects, {result['second_bytes']:.0f} "
        f"bytes on the wire, {result['second_seconds']:.2f} s"
    )
    print(f"ratio: {result['ratio']:.2%} (limit 3%)")
    if result["ratio"] > 0.03:
        sys.exit(1)


if __name__ == "__main__":
    main()
