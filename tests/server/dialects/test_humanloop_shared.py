"""The Humanloop suite (tests/server/dialects/test_humanloop.py) against three `dsv serve`
processes on SeaweedFS and PostgreSQL: each request of a test goes to the next server, so
every read after a write is served by another process than the write."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.services import Deployment

_spec = importlib.util.spec_from_file_location(
    "_humanloop_suite", Path(__file__).with_name("test_humanloop.py")
)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

# Tests that open the embedded root's SQLite file or start servers of their own: they are
# about one process's storage, not the shared deployment.
_EMBEDDED_ONLY = {
    name
    for name, value in vars(_suite).items()
    if name.startswith("test_")
    and any(
        word in inspect.getsource(value)
        for word in ("server_root", ".root", "SqliteMetaStore", "open_storage", "Server(")
    )
}
globals().update(
    {
        name: value
        for name, value in vars(_suite).items()
        if (name.startswith("test_") and name not in _EMBEDDED_ONLY)
        or name in ("hl", "repo", "local")
    }
)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[tuple[Any, Any]]:
    yield deployment, _suite.Keys(deployment.key)
