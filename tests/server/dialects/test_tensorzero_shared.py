"""The TensorZero suite (tests/server/dialects/test_tensorzero.py) against three `dsv serve`
processes on SeaweedFS and PostgreSQL: its writes go through the shared database's lock, and
each client talks to one of the servers while `dsv clone` may read through another."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks.services import Deployment
from tests.server.dialects.shared_suite import shared_suite

_suite, _taken = shared_suite("test_tensorzero.py", fixtures=("repo", "key", "tz"))
globals().update(_taken)


@pytest.fixture(scope="module")
def server(deployment: Deployment) -> Deployment:
    return deployment


@pytest.fixture
def server_keys(deployment: Deployment) -> Callable[..., str]:
    """Keys in the shared database, where every server looks them up."""
    return deployment.key
