"""The checking workers of a server: they check beside the receiving thread, and they leave
with their server, however it ends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_SERVER = """
import time
from dsv.canonical import canonicalize
from dsv.objects import Kind, hash_object
from dsv.server.checking import DatapointChecker

checker = DatapointChecker(1)
bodies = [canonicalize(b'{"i": %d}' % i) for i in range(300)]
batch = checker.start()
batch.add([hash_object(Kind.DATAPOINT, b) for b in bodies], bodies)
batch.finish()
print(" ".join(str(pid) for pid in checker._pool._processes), flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, waiting to be reaped, has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_checking_worker_leaves_when_its_server_is_killed() -> None:
    """A server killed outright (SIGKILL, the OOM killer) never shuts its pool down: its
    workers must not wait for work forever."""
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        workers = [int(pid) for pid in server.stdout.readline().split()]
        assert workers and all(_running(pid) for pid in workers)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their server"
        time.sleep(0.1)
