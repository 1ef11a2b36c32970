"""The Overmind Lab suite (tests/server/dialects/test_overmind.py) against three `dsv serve`
processes on SeaweedFS and PostgreSQL: its version table lives in the shared database, so a
version created through one server is read through the others."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.services import Deployment
from tests.server.dialects.shared_suite import shared_suite

_suite, _taken = shared_suite("test_overmind.py", fixtures=("repo", "api_for", "api"))
globals().update(_taken)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Iterator[tuple[Any, Any]]:
    yield deployment, _suite.Keys(deployment.key)
