"""The orq.ai v2 Datasets API of `dsv serve` (issue 23), driven by the official `orq-ai-sdk`
against a real server on 127.0.0.1, and checked through dsv itself (clone, log, push)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from orq_ai_sdk import Orq
from orq_ai_sdk.models import APIDefaultError, ErrorResponse
from tensorzero import TensorZeroGateway
from tensorzero.generated_types import ListDatapointsRequest

from benchmarks.push import Server
from dsv.cli import main
from dsv.server.dialects.tensorzero.service import datapoint_uuid
from tests.conftest import datapoint_oid

KeyMaker = Callable[..., str]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(server_root: Path) -> Iterator[Server]:
    with Server(server_root) as running:
        yield running


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test, named after it."""
    return "orq/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:80].strip("-")


@pytest.fixture
def key(server_keys: KeyMaker, repo: str) -> str:
    return server_keys("write", repo)


@pytest.fixture
def orq(server: Server, key: str) -> Orq:
    return Orq(api_key=key, server_url=server.url)


def dsv(root: Path, *args: str, key: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args], env={"DSV_API_KEY": key})
    assert result.exit_code == code, f"dsv {args}: {result.output}{result.exception!r}"
    return result


def clone(tmp_path: Path, server: Server, repo: str, key: str) -> Path:
    target = tmp_path / f"clone{len(list(tmp_path.iterdir()))}"
    dsv(tmp_path, "clone", f"{server.url}/{repo}", str(target), key=key)
    return target


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def raw(server: Server, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


QA = [
    {"inputs": {"question": "What is the capital of France?"}, "expected_output": "Paris"},
    {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Who wrote Hamlet?"},
        ],
        "expected_output": "William Shakespeare",
    },
]


def test_the_sdk_flow_is_versioned_in_dsv(
    orq: Orq, server: Server, repo: str, key: str, tmp_path: Path
) -> None:
    made = orq.datasets.create(display_name="qa")
    assert re.fullmatch(r"ds_[0-9a-f]{24}", made.id)
    assert (made.display_name, made.project_id, made.workspace_id) == ("qa", repo, "orq")
    assert made.metadata.datapoints_count == 0 and made.metadata.total_versions == 1

    # Create (a bare array) and bulk create (`{items}`): each a commit.
    first = orq.datasets.create_datapoint(dataset_id=made.id, request_body=QA)
    assert [p.expected_output for p in first] == ["Paris", "William Shakespeare"]
    assert first[0].inputs == QA[0]["inputs"] and first[1].messages == QA[1]["messages"]
    assert [p.id for p in first] == [f"dp_{datapoint_oid(r)}" for r in QA]
    more = [{"inputs": {"n": i}, "expected_output": str(i * i)} for i in range(23)]
    bulk = orq.datasets.create_datapoints(dataset_id=made.id, items=more)
    assert len(bulk) == 23 and all(p.dataset_id == made.id for p in bulk)
    assert records(clone(tmp_path, server, repo, key) / "qa.jsonl") == QA + more

    # Page through everything with cursors, forwards and back.
    seen, after = [], None
    while True:
        page = orq.datasets.list_datapoints(dataset_id=made.id, limit=10, starting_after=after)
        seen += page.data
        if not page.has_more:
            break
        after = page.data[-1].id
    assert [p.id for p in seen] == [p.id for p in first + bulk]
    back = orq.datasets.list_datapoints(dataset_id=made.id, limit=10, ending_before=seen[15].id)
    assert [p.id for p in back.data] == [p.id for p in seen[5:15]] and back.has_more
    start = orq.datasets.list_datapoints(dataset_id=made.id, limit=10, ending_before=seen[3].id)
    assert [p.id for p in start.data] == [p.id for p in seen[:3]] and not start.has_more
    default = orq.datasets.list_datapoints(dataset_id=made.id)
    assert len(default.data) == 10 and default.has_more

    # Get; update (only the fields sent change; the id is the new content's); delete.
    got = orq.datasets.retrieve_datapoint(dataset_id=made.id, datapoint_id=first[0].id)
    assert got.inputs == QA[0]["inputs"] and got.expected_output == "Paris"
    updated = orq.datasets.update_datapoint(
        dataset_id=made.id, datapoint_id=first[0].id, expected_output="Paris, France"
    )
    changed = {**QA[0], "expected_output": "Paris, France"}
    assert updated.inputs == QA[0]["inputs"] and updated.expected_output == "Paris, France"
    assert updated.id == f"dp_{datapoint_oid(changed)}" != first[0].id
    # An unchanged datapoint keeps its id in the new version.
    assert orq.datasets.retrieve_datapoint(dataset_id=made.id, datapoint_id=first[1].id).id == (
        first[1].id
    )
    with pytest.raises(ErrorResponse) as gone:
        orq.datasets.retrieve_datapoint(dataset_id=made.id, datapoint_id=first[0].id)
    assert gone.value.raw_response.status_code == 404
    assert gone.value.data.message == f"Datapoint {first[0].id} not found in dataset {made.id}"
    orq.datasets.delete_datapoint(dataset_id=made.id, datapoint_id=first[1].id)
    orq.datasets.delete_datapoints(dataset_id=made.id, item_ids=[bulk[0].id, bulk[1].id])
    assert records(clone(tmp_path, server, repo, key) / "qa.jsonl") == [changed, *more[2:]]

    # List, rename (the id stays), clear, delete -> 404.
    listed = orq.datasets.list()
    assert [d.id for d in listed.data] == [made.id] and not listed.has_more
    assert orq.datasets.list(updated_by=listed.data[0].updated_by_id).data == listed.data
    assert orq.datasets.list(updated_by="nobody").data == []
    assert orq.datasets.list(search="Q").data == listed.data
    assert orq.datasets.list(search="x").data == []
    assert listed.data[0].metadata.datapoints_count == 22
    renamed = orq.datasets.update(dataset_id=made.id, display_name="capitals")
    assert renamed.id == made.id and renamed.display_name == "capitals"
    # Six writes changed the content; a rename is not a version (docs/humanloop.md).
    assert orq.datasets.retrieve(dataset_id=made.id).metadata.total_versions == 6
    orq.datasets.clear(dataset_id=made.id)
    assert orq.datasets.retrieve(dataset_id=made.id).metadata.datapoints_count == 0
    local = clone(tmp_path, server, repo, key)
    assert (local / "capitals.jsonl").read_text() == "" and not (local / "qa.jsonl").exists()
    orq.datasets.delete(dataset_id=made.id)
    with pytest.raises(ErrorResponse) as deleted:
        orq.datasets.retrieve(dataset_id=made.id)
    assert deleted.value.raw_response.status_code == 404
    assert deleted.value.data.message == f"Dataset {made.id} not found"
    assert orq.datasets.list().data == []

    # Every write was a commit on the default branch, authored by the key.
    local = clone(tmp_path, server, repo, key)
    log = dsv(local, "log", key=key).output
    for message in (
        "create dataset qa.jsonl (orq.ai API)",
        "add 2 datapoints in qa.jsonl (orq.ai API)",
        "add 23 datapoints in qa.jsonl (orq.ai API)",
        "delete every datapoint in capitals.jsonl (orq.ai API)",
        "delete dataset capitals.jsonl (orq.ai API)",
    ):
        assert message in log
    assert "orq.ai API <key-" in log
    assert list(local.glob("*.jsonl")) == []


def test_a_pushed_dataset_is_listed_and_read(
    orq: Orq, server: Server, repo: str, key: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    dsv(tmp_path, "init", str(work), key=key)
    rows = [{"inputs": {"q": str(i)}, "target": {"a": i}} for i in range(5)]
    (work / "evals").mkdir()
    (work / "evals" / "rag.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dsv(work, "add", "evals/rag.jsonl", key=key)
    dsv(work, "commit", "-m", "rag", key=key)
    dsv(work, "remote", "add", "origin", f"{server.url}/{repo}", key=key)
    dsv(work, "push", key=key)
    (found,) = orq.datasets.list().data
    assert found.display_name == "rag" and found.metadata.datapoints_count == 5
    page = orq.datasets.list_datapoints(dataset_id=found.id, limit=50)
    # Humanloop's target is read as orq.ai's expected output (docs/dialects.md).
    assert [p.expected_output for p in page.data] == [f'{{"a":{i}}}' for i in range(5)]
    raw_page = raw(server, "GET", f"/v2/datasets/{found.id}/datapoints", key).json()
    assert raw_page["data"][0]["target"] == {"a": 0}
    # A dataset in a folder is created in that folder.
    made = orq.datasets.create(display_name="more", path="/evals/")
    assert made.display_name == "more"
    dsv(work, "pull", key=key)
    assert (work / "evals" / "more.jsonl").read_text() == ""


def _routes(dataset_id: str, point: str) -> list[tuple[str, str, Any]]:
    base = f"/v2/datasets/{dataset_id}"
    return [
        ("GET", "/v2/datasets", None),
        ("POST", "/v2/datasets", {"display_name": "new"}),
        ("GET", base, None),
        ("PATCH", base, {"display_name": "renamed"}),
        ("DELETE", f"{base}/clear", None),
        ("GET", f"{base}/datapoints", None),
        ("POST", f"{base}/datapoints", [{"inputs": {"a": 1}}]),
        ("POST", f"{base}/datapoints/bulk", {"items": [{"inputs": {"a": 2}}]}),
        ("POST", f"{base}/datapoints-bulk-delete", {"item_ids": [point]}),
        ("GET", f"{base}/datapoints/{point}", None),
        ("PATCH", f"{base}/datapoints/{point}", {"expected_output": "x"}),
        ("DELETE", f"{base}/datapoints/{point}", None),
        ("DELETE", base, None),
    ]


def test_keys_and_scopes_hold_on_every_route(
    orq: Orq, server: Server, server_keys: KeyMaker, repo: str
) -> None:
    made = orq.datasets.create(display_name="qa")
    (point,) = orq.datasets.create_datapoint(dataset_id=made.id, request_body=QA[:1])
    read = server_keys("read", repo)
    other = server_keys("write", "someone/else")
    for method, path, body in _routes(made.id, point.id):
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        reply = raw(server, method, path, None, **kwargs)
        assert reply.status_code == 401, (method, path)
        assert reply.json()["message"] == "this server requires an API key"
        reply = raw(server, method, path, "dsv_bad_key", **kwargs)
        assert reply.status_code == 401 and "not valid" in reply.json()["message"]
        if method != "GET":
            reply = raw(server, method, path, read, **kwargs)
            assert reply.status_code == 403, (method, path, reply.text)
            assert "may only read" in reply.json()["message"]
        if path != "/v2/datasets":
            reply = raw(server, method, path, other, **kwargs)
            assert reply.status_code == 404, (method, path, reply.text)
            assert reply.json()["message"] == f"Dataset {made.id} not found"
    # The other repository's key sees its own (empty) repository, not this one's.
    assert raw(server, "GET", "/v2/datasets", other).json()["data"] == []
    # Nothing moved: the dataset still holds its one datapoint.
    assert orq.datasets.retrieve(dataset_id=made.id).metadata.datapoints_count == 1


def test_a_key_for_every_repository_uses_the_api_repo(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Server(root, "--no-auth", "--api-repo", "team/shared") as running:
        client = Orq(api_key="unused", server_url=running.url)
        made = client.datasets.create(display_name="qa")
        client.datasets.create_datapoint(dataset_id=made.id, request_body=QA)
        assert made.project_id == "team/shared"
        local = tmp_path / "clone"
        dsv(tmp_path, "clone", f"{running.url}/team/shared", str(local), key="")
        assert records(local / "qa.jsonl") == QA


def test_bad_requests_get_orq_errors(orq: Orq, server: Server, key: str) -> None:
    made = orq.datasets.create(display_name="qa")
    base = f"/v2/datasets/{made.id}"
    cases = [
        ("GET", f"{base}/datapoints?limit=0", None, 422, "query.limit: Input should be greater"),
        ("GET", f"{base}/datapoints?limit=x", None, 422, "query.limit: Input should be a valid"),
        ("GET", f"{base}/datapoints?starting_after=dp_nope", None, 422, "no datapoint of this"),
        ("POST", f"{base}/datapoints", [{"inputs": {}, "label": 1}], 422, "unknown field"),
        ("POST", f"{base}/datapoints", [{"messages": [{"content": "x"}]}], 422, "role"),
        ("POST", f"{base}/datapoints", {"items": []}, 422, "Expected `array`"),
        ("POST", "/v2/datasets", {"display_name": "qa"}, 409, "already has a dataset at qa"),
        ("POST", "/v2/datasets", {"display_name": "a/b"}, 422, "may not contain '/'"),
        ("PATCH", base, {"project_id": "x/y"}, 422, "a dataset stays in its repository"),
        ("GET", f"{base}/datapoints/dp_00", None, 404, "Datapoint dp_00 not found"),
        ("GET", f"{base}/datapoints/dp_{' ' * 64}", None, 404, "not found in dataset"),
        ("GET", "/v2/datasets/ds_000000000000000000000000", None, 404, "not found"),
    ]
    for method, path, body, status, said in cases:
        reply = raw(server, method, path, key, **({"json": body} if body is not None else {}))
        assert reply.status_code == status, (method, path, reply.text)
        assert reply.headers["content-type"] == "application/json"
        assert said in reply.json()["message"], reply.json()
    reply = raw(
        server, "POST", "/v2/datasets", key, content=b"{}", headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 415 and "application/json" in reply.json()["message"]
    with pytest.raises(APIDefaultError) as refused:
        orq.datasets.create_datapoint(dataset_id=made.id, request_body=[{"messages": [{}]}])
    assert refused.value.raw_response.status_code == 422


def test_other_v2_paths_are_404s_in_orq_shape(server: Server, key: str) -> None:
    for method, path, status in (
        ("GET", "/v2/deployments", 404),
        ("GET", "/v2/acme/evals/nothing", 404),
        ("PUT", "/v2/datasets", 405),
    ):
        reply = raw(server, method, path, key)
        assert reply.status_code == status
        assert reply.json()["message"] == f"no such endpoint: {method} {path}"
    # /v2/OWNER/NAME/info and the rest are version 2 of dsv's own protocol, in its shape.
    reply = raw(server, "POST", "/v2/acme/evals/missing", key, json={"kind": "x", "ids": []})
    assert reply.status_code in (400, 403) and set(reply.json()) == {"error"}, reply.text


def test_a_dataset_written_through_orq_reads_the_same_everywhere(
    server: Server, server_keys: KeyMaker, tmp_path: Path
) -> None:
    repo = "across/dialects"
    key = server_keys("write", repo)
    written = [
        {"inputs": {"city": "Paris", "n": 2}, "expected_output": "France"},
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Who wrote Hamlet?"},
            ],
            "expected_output": "Shakespeare",
        },
    ]
    running = server
    orq = Orq(api_key=key, server_url=running.url)
    made = orq.datasets.create(display_name="qa")
    points = orq.datasets.create_datapoint(dataset_id=made.id, request_body=written)
    oids = [bytes.fromhex(datapoint_oid(r)) for r in written]
    assert [p.id for p in points] == [f"dp_{o.hex()}" for o in oids]

    # dsv: the file holds exactly what was written.
    result = CliRunner().invoke(
        main,
        ["-C", str(tmp_path), "clone", f"{running.url}/{repo}", "local"],
        env={"DSV_API_KEY": key},
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "local" / "qa.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == written

    # Humanloop: the same dataset id, the same datapoint ids, every field as stored.
    headers = {"X-API-KEY": key}
    page = httpx.get(
        f"{running.url}/v5/datasets/{made.id}/datapoints", headers=headers, timeout=30
    ).json()
    assert page["records"] == [
        {"id": f"dp_{o.hex()}", **r} for o, r in zip(oids, written, strict=True)
    ]

    # TensorZero: ids from the same object ids; messages as content blocks, the leading
    # system message as the system, the expected output as a text output block.
    with TensorZeroGateway.build_http(gateway_url=running.url, api_key=key) as tz:
        seen = tz.list_datapoints(
            dataset_name="qa", request=ListDatapointsRequest(limit=10)
        ).datapoints
    assert [d.id for d in seen] == [datapoint_uuid(o) for o in oids]
    assert [d.type for d in seen] == ["chat", "chat"]
    assert seen[0].input.messages == [] and seen[0].input.system is None
    assert seen[0].output[0].text == "France" and seen[0].function_name == ""
    assert seen[1].input.system == "Answer briefly."
    (message,) = seen[1].input.messages
    assert message.role == "user" and message.content[0].text == "Who wrote Hamlet?"
    assert seen[1].output[0].text == "Shakespeare"
    raw_tz = httpx.post(
        f"{running.url}/v1/datasets/qa/list_datapoints",
        headers=headers,
        json={},
        timeout=30,
    ).json()["datapoints"]
    # Fields TensorZero has no place for keep their names.
    assert raw_tz[0]["inputs"] == written[0]["inputs"]
    assert raw_tz[1]["expected_output"] == "Shakespeare"
