"""schemathesis over `/openapi.json` of a real `dsv serve --no-auth` on 127.0.0.1: no 5xx.

schemathesis is a test dependency (the `test` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from benchmarks.push import Server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("schemathesis") / "root"
    root.mkdir()
    with Server(root, "--no-auth", "--max-request-size", str(1 << 20)) as server:
        yield server


@pytest.fixture(scope="module")
def known(running: Server) -> dict[str, str]:
    """Path parameters that name what exists, so fuzzed requests get past the lookups: a
    dataset in the server's API repository, which Humanloop, orq.ai and TensorZero all reach."""
    body = {"path": "api/datasets/qa", "datapoints": [{"inputs": {"q": "x"}}]}
    reply = httpx.post(f"{running.url}/v5/datasets?include_datapoints=true", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    made = reply.json()
    return {
        "owner": "acme",
        "name": "evals",
        "dataset_id": made["id"],
        "dataset_name": "qa",
        "datapoint_id": made["datapoints"][0]["id"],
    }


@pytest.fixture(scope="module")
def overmind_id(running: Server) -> str:
    """An Overmind Lab dataset version that exists, for the same reason."""
    body = {"agent": "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e", "datapoints": [{"input": {"q": "x"}}]}
    reply = httpx.post(f"{running.url}/api/datasets/", json=body, timeout=30)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def api_schema(running: Server) -> Any:
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    schema.config.update(base_url=running.url)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any, known: dict[str, str], overmind_id: str) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=10)
    if case.path_parameters:
        # Again on a valid repository name and a real dataset, so the request gets past the
        # name and id checks.
        known = {**known, "id": overmind_id}
        case.path_parameters = {
            **case.path_parameters,
            **{k: v for k, v in known.items() if k in case.path_parameters},
        }
        case.call_and_validate(checks=[not_a_server_error], timeout=10)
