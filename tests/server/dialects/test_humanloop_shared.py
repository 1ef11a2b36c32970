"""The Humanloop suite (tests/server/dialects/test_humanloop.py) against three `dsv serve`
processes on SeaweedFS and PostgreSQL: each request of a test goes to the next server, so
every read after a write is served by another process than the write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.services import Deployment
from tests.server.dialects.shared_suite import shared_suite

_suite, _taken = shared_suite("test_humanloop.py", fixtures=("hl", "repo", "local"))
globals().update(_taken)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[tuple[Any, Any]]:
    yield deployment, _suite.Keys(deployment.key)
