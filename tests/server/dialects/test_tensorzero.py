"""TensorZero's dataset endpoints in `dsv serve` (issue 23), driven by the official
`tensorzero` client in HTTP mode against a real server on 127.0.0.1, the older endpoints over
raw HTTP, and the data checked through dsv itself."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from tensorzero import TensorZeroError, TensorZeroGateway
from tensorzero.generated_types import (
    AndDatapointFilter,
    ContentBlockChatOutputText,
    CreateDatapointRequestChat,
    CreateDatapointRequestJson,
    DatapointOrderByTimestamp,
    Input,
    InputMessage,
    InputMessageContentText,
    JsonDatapointOutputUpdate,
    ListDatapointsRequest,
    NotDatapointFilter,
    TagDatapointFilter,
    UpdateChatDatapointRequest,
    UpdateDatapointMetadataRequest,
)

from benchmarks.push import Server
from dsv.cli import main
from dsv.server.dialects.tensorzero.service import datapoint_uuid
from tests.conftest import datapoint_oid

KeyMaker = Callable[..., str]


@pytest.fixture(scope="module")
def server(server_root: Path) -> Iterator[Server]:
    with Server(server_root) as running:
        yield running


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    return "tz/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:80].strip("-")


@pytest.fixture
def key(server_keys: KeyMaker, repo: str) -> str:
    return server_keys("write", repo)


@pytest.fixture
def tz(server: Server, key: str) -> Iterator[TensorZeroGateway]:
    with TensorZeroGateway.build_http(gateway_url=server.url, api_key=key) as client:
        yield client


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


def user(text: str) -> InputMessage:
    return InputMessage(role="user", content=[InputMessageContentText(text=text)])


def chat(i: int, **given: Any) -> CreateDatapointRequestChat:
    return CreateDatapointRequestChat(
        function_name="answer",
        input=Input(system="Be brief.", messages=[user(f"What is {i} squared?")]),
        output=[ContentBlockChatOutputText(text=str(i * i))],
        tags={"split": "train" if i % 2 else "test"},
        **given,
    )


def chat_record(i: int) -> dict[str, Any]:
    return {
        "function_name": "answer",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"What is {i} squared?"}]}
        ],
        "output": [{"type": "text", "text": str(i * i)}],
        "tags": {"split": "train" if i % 2 else "test"},
    }


def test_the_client_flow_is_versioned_in_dsv(
    tz: TensorZeroGateway, server: Server, repo: str, key: str, tmp_path: Path
) -> None:
    extract = CreateDatapointRequestJson(
        function_name="extract",
        input=Input(messages=[user("Paris is in France.")]),
        output=JsonDatapointOutputUpdate(raw='{"city": "Paris"}'),
        output_schema={"type": "object", "properties": {"city": {"type": "string"}}},
        name="paris",
    )
    made = tz.create_datapoints(
        dataset_name="qa", requests=[chat(i) for i in range(24)] + [extract]
    )
    assert len(made.ids) == 25 and all(uuid.UUID(i).version == 8 for i in made.ids)
    assert made.ids[0] == datapoint_uuid(bytes.fromhex(datapoint_oid(chat_record(0))))
    local = clone(tmp_path, server, repo, key)
    stored = records(local / "qa.jsonl")
    assert stored[:24] == [chat_record(i) for i in range(24)]
    assert stored[24] == {
        "function_name": "extract",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Paris is in France."}]}
        ],
        "output": {"raw": '{"city": "Paris"}', "parsed": {"city": "Paris"}},
        "output_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        "name": "paris",
    }

    # Page through everything with limit and offset.
    seen: list[Any] = []
    while True:
        page = tz.list_datapoints(
            dataset_name="qa", request=ListDatapointsRequest(limit=10, offset=len(seen))
        ).datapoints
        seen += page
        if len(page) < 10:
            break
    assert [d.id for d in seen] == made.ids
    first, last = seen[0], seen[-1]
    assert first.type == "chat" and first.function_name == "answer" and not first.is_deleted
    assert first.input.system == "Be brief." and first.input.messages[0].role == "user"
    assert first.output[0].text == "0" and first.tags == {"split": "test"}
    assert last.type == "json" and last.output.parsed == {"city": "Paris"}
    assert last.output_schema["type"] == "object" and last.name == "paris"
    # Filters: function, tags (and, not), newest first.
    train = tz.list_datapoints(
        dataset_name="qa",
        request=ListDatapointsRequest(
            function_name="answer",
            filter=AndDatapointFilter(
                children=[
                    TagDatapointFilter(key="split", value="train", comparison_operator="="),
                    NotDatapointFilter(
                        child=TagDatapointFilter(key="split", value="x", comparison_operator="=")
                    ),
                ]
            ),
            order_by=[DatapointOrderByTimestamp(direction="descending")],
            limit=100,
        ),
    ).datapoints
    assert [d.id for d in train] == [made.ids[i] for i in range(23, 0, -2)]

    # Get; update (a new id; the old one is then deleted); metadata; delete (soft).
    got = tz.get_datapoints(dataset_name="qa", ids=[made.ids[1], made.ids[24]]).datapoints
    assert [d.id for d in got] == [made.ids[1], made.ids[24]]
    updated = tz.update_datapoints(
        dataset_name="qa",
        requests=[
            UpdateChatDatapointRequest(
                id=made.ids[0], output=[ContentBlockChatOutputText(text="zero")]
            )
        ],
    ).ids
    assert updated[0] != made.ids[0]
    both = tz.get_datapoints(dataset_name="qa", ids=[made.ids[0], updated[0]]).datapoints
    assert [(d.id, d.is_deleted) for d in both] == [(made.ids[0], True), (updated[0], False)]
    assert both[0].staled_at is not None and both[1].output[0].text == "zero"
    renamed = tz.update_datapoints_metadata(
        dataset_name="qa", requests=[UpdateDatapointMetadataRequest(id=updated[0], name="zero")]
    ).ids
    deleted = tz.delete_datapoints(dataset_name="qa", ids=[renamed[0], made.ids[2]])
    assert deleted.num_deleted_datapoints == 2
    stored = records(clone(tmp_path, server, repo, key) / "qa.jsonl")
    assert len(stored) == 23 and stored[0] == chat_record(1)
    # An unchanged datapoint kept its id through every write.
    assert tz.get_datapoints(dataset_name="qa", ids=[made.ids[5]]).datapoints[0].id == made.ids[5]
    gone = tz.get_datapoints(dataset_name="qa", ids=[made.ids[2]]).datapoints
    assert gone[0].is_deleted

    # The gateway's dataset list; delete the dataset -> 404.
    listed = raw(server, "GET", "/internal/datasets", key).json()["datasets"]
    assert [(d["dataset_name"], d["datapoint_count"]) for d in listed] == [("qa", 23)]
    assert tz.delete_dataset(dataset_name="qa").num_deleted_datapoints == 23
    with pytest.raises(TensorZeroError) as missing:
        tz.list_datapoints(dataset_name="qa", request=ListDatapointsRequest(limit=10))
    assert missing.value.status_code == 404
    assert json.loads(missing.value.text)["error"] == "dataset 'qa' not found"
    assert raw(server, "GET", "/internal/datasets", key).json() == {"datasets": []}

    log = dsv(clone(tmp_path, server, repo, key), "log", key=key).output
    for message in (
        "add 25 datapoints in qa.jsonl (TensorZero API)",
        "update 1 datapoint in qa.jsonl (TensorZero API)",
        "rename 1 datapoint in qa.jsonl (TensorZero API)",
        "delete datapoints in qa.jsonl (TensorZero API)",
        "delete dataset qa.jsonl (TensorZero API)",
    ):
        assert message in log


def test_the_older_endpoints(server: Server, key: str, repo: str, tmp_path: Path) -> None:
    points = [
        {
            "function_name": "answer",
            "input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "1+1"}]}]},
            "output": [{"type": "text", "text": "2"}],
            "tags": {"source": "seed"},
        },
        {
            "function_name": "extract",
            "input": {"messages": []},
            "output": {"city": "Paris"},
            "output_schema": {"type": "object"},
        },
    ]
    for prefix in ("/datasets/old", "/v1/datasets/old2"):
        ids = raw(server, "POST", f"{prefix}/datapoints/bulk", key, json={"datapoints": points})
        assert ids.status_code == 200 and len(ids.json()) == 2
        listed = raw(server, "GET", f"{prefix}/datapoints?limit=1&offset=1", key).json()
        assert [d["id"] for d in listed] == [ids.json()[1]]
        assert listed[0]["type"] == "json"
        assert listed[0]["output"] == {"raw": '{"city":"Paris"}', "parsed": {"city": "Paris"}}
        only = raw(server, "GET", f"{prefix}/datapoints?function=answer", key).json()
        assert [d["id"] for d in only] == [ids.json()[0]]
        one = raw(server, "GET", f"{prefix}/datapoints/{ids.json()[0]}", key).json()
        assert one["tags"] == {"source": "seed"} and one["output"][0]["text"] == "2"
        assert raw(server, "DELETE", f"{prefix}/datapoints/{ids.json()[0]}", key).status_code == 204
        again = raw(server, "DELETE", f"{prefix}/datapoints/{ids.json()[0]}", key)
        assert again.status_code == 404
        # A soft delete: still readable, marked deleted.
        assert raw(server, "GET", f"{prefix}/datapoints/{ids.json()[0]}", key).json()["is_deleted"]
        raw(server, "POST", f"{prefix}/datapoints/bulk", key, json={"datapoints": points[:1]})
    local = clone(tmp_path, server, repo, key)
    assert records(local / "old.jsonl") == records(local / "old2.jsonl")
    assert len(records(local / "old.jsonl")) == 2


def _routes(point: str) -> list[tuple[str, str, Any]]:
    base = "/v1/datasets/qa"
    one = {
        "function_name": "f",
        "input": {"messages": []},
        "output": [{"type": "text", "text": "x"}],
    }
    return [
        ("POST", f"{base}/datapoints", {"datapoints": [one]}),
        ("PATCH", f"{base}/datapoints", {"datapoints": [{"id": point, "tags": {"a": "b"}}]}),
        ("PATCH", f"{base}/datapoints/metadata", {"datapoints": [{"id": point, "name": "n"}]}),
        ("DELETE", f"{base}/datapoints", {"ids": [point]}),
        ("POST", f"{base}/list_datapoints", {}),
        ("POST", f"{base}/get_datapoints", {"ids": [point]}),
        ("POST", "/v1/datasets/get_datapoints", {"ids": [point]}),
        ("GET", "/internal/datasets", None),
        ("GET", "/datasets/qa/datapoints", None),
        ("GET", f"{base}/datapoints/{point}", None),
        ("POST", "/datasets/qa/datapoints/bulk", {"datapoints": [one]}),
        ("DELETE", f"/datasets/qa/datapoints/{point}", None),
        ("POST", f"{base}/from_inferences", {"type": "inference_ids", "inference_ids": []}),
        ("DELETE", base, None),
    ]


def test_keys_and_scopes_hold_on_every_route(
    tz: TensorZeroGateway, server: Server, server_keys: KeyMaker, repo: str
) -> None:
    (point,) = tz.create_datapoints(dataset_name="qa", requests=[chat(1)]).ids
    read = server_keys("read", repo)
    other = server_keys("write", "someone/else-tz")
    reads = ("list_datapoints", "get_datapoints", "/internal/datasets")
    for method, path, body in _routes(point):
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        reply = raw(server, method, path, None, **kwargs)
        assert reply.status_code == 401, (method, path)
        assert reply.json()["error"] == "this server requires an API key"
        if method != "GET" and not path.endswith(reads):
            reply = raw(server, method, path, read, **kwargs)
            assert reply.status_code == 403, (method, path, reply.text)
            assert "may only read" in reply.json()["error"]
    # Another repository's key sees its own repository, where `qa` does not exist.
    creates = ("/datapoints/bulk", "qa/datapoints", "/from_inferences")
    for method, path, body in _routes(point):
        if method == "POST" and path.endswith(creates):
            continue
        kwargs = {"json": body} if body is not None else {}
        reply = raw(server, method, path, other, **kwargs)
        if path == "/internal/datasets":
            assert reply.json() == {"datasets": []}
        elif path == "/v1/datasets/get_datapoints":
            assert reply.json() == {"datapoints": []}
        else:
            assert reply.status_code == 404, (method, path, reply.text)
            assert reply.json()["error"] == "dataset 'qa' not found"
    listed = tz.list_datapoints(dataset_name="qa", request=ListDatapointsRequest()).datapoints
    assert [d.id for d in listed] == [point]


def test_bad_requests_get_tensorzero_errors(
    tz: TensorZeroGateway, server: Server, key: str
) -> None:
    tz.create_datapoints(dataset_name="qa", requests=[chat(1)])
    base = "/v1/datasets/qa"
    cases = [
        ("POST", f"{base}/get_datapoints", {"ids": ["nope"]}, 422, "not a UUID"),
        ("POST", f"{base}/list_datapoints", {"limit": -1}, 422, "greater than or equal to 0"),
        ("POST", f"{base}/list_datapoints", {"limit": 10_001}, 422, "less than or equal to 10000"),
        ("POST", f"{base}/list_datapoints", {"filter": {"type": "time"}}, 422, "no time"),
        ("POST", f"{base}/list_datapoints", {"filter": {"type": "x"}}, 422, "'tag', 'and'"),
        ("POST", f"{base}/list_datapoints", {"nope": 1}, 422, "unknown field"),
        (
            "POST",
            f"{base}/datapoints",
            {"datapoints": [{"function_name": "f", "input": {}, "tags": {"a": 1}}]},
            422,
            "body.datapoints.0.tags.a: Input should be a valid string",
        ),
        (
            "POST",
            f"{base}/datapoints",
            {"datapoints": [{"function_name": "f", "input": {"messages": [{"role": "x"}]}}]},
            422,
            "'user' or 'assistant'",
        ),
        (
            "PATCH",
            f"{base}/datapoints",
            {"datapoints": [{"id": str(uuid.UUID(int=1)), "name": "x"}]},
            404,
            "not found in dataset 'qa'",
        ),
        ("POST", f"/v1/datasets/{'x' * 300}/list_datapoints", {}, 422, "invalid dataset name"),
        ("POST", "/v1/datasets/nope/list_datapoints", {}, 404, "dataset 'nope' not found"),
        ("POST", f"{base}/from_inferences", {}, 422, "dsv keeps no inferences"),
        ("POST", f"{base}/nope", {}, 404, "no such endpoint: POST /v1/datasets/qa/nope"),
    ]
    for method, path, body, status, said in cases:
        reply = raw(server, method, path, key, json=body)
        assert reply.status_code == status, (method, path, reply.text)
        assert said in reply.json()["error"], reply.json()
    with pytest.raises(TensorZeroError) as refused:
        tz.get_datapoints(dataset_name="nope", ids=[str(uuid.UUID(int=1))])
    assert refused.value.status_code == 404
