"""The remote suite of push, fetch, pull and clone (tests/test_remote_sync.py) against three
`dsv serve` processes on SeaweedFS and PostgreSQL; each test's remote is the next server."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.services import Deployment

_spec = importlib.util.spec_from_file_location(
    "_remote_sync_suite", Path(__file__).with_name("test_remote_sync.py")
)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

# Tests that open an embedded root or start servers of their own are about one process.
globals().update(
    {
        name: value
        for name, value in vars(_suite).items()
        if (
            name.startswith("test_")
            and not any(
                word in inspect.getsource(value)
                for word in ("server_root", ".root", "SqliteMetaStore", "Server(")
            )
        )
        or name == "url"
    }
)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[tuple[Deployment, str]]:
    yield deployment, deployment.key("write")
