"""How one dialect reads fields another wrote (docs/dialects.md "Records"), and one dataset
written through orq.ai read through TensorZero, Humanloop and `dsv clone`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner
from orq_ai_sdk import Orq
from tensorzero import TensorZeroGateway
from tensorzero.generated_types import ListDatapointsRequest

from benchmarks.push import Server
from dsv.cli import main
from dsv.server.dialects.records import expected_output_of, output_blocks_of, text_of
from dsv.server.dialects.tensorzero.service import datapoint_uuid
from tests.conftest import datapoint_oid


def test_text_of_is_deterministic_for_every_shape() -> None:
    assert text_of("Paris") == "Paris"
    assert text_of([{"type": "text", "text": "Par"}, {"type": "text", "text": "is"}]) == "Paris"
    assert text_of({"raw": '{"a":1}', "parsed": {"a": 1}}) == '{"a":1}'
    assert text_of({"b": 2, "a": [1, "x"]}) == '{"a":[1,"x"],"b":2}'
    # A block that is not text is not flattened: the whole value is kept as JSON.
    blocks = [{"type": "tool_call", "name": "f"}]
    assert text_of(blocks) == '[{"name":"f","type":"tool_call"}]'


def test_expected_output_falls_back_to_output_then_target() -> None:
    assert expected_output_of({"expected_output": "a", "output": "b", "target": {"c": 1}}) == "a"
    assert expected_output_of({"output": [{"type": "text", "text": "b"}], "target": {}}) == [
        {"type": "text", "text": "b"}
    ]
    assert expected_output_of({"target": {"answer": "Paris"}}) == {"answer": "Paris"}
    assert expected_output_of({"inputs": {}}) is None


def test_tensorzero_output_falls_back_to_expected_output_then_target() -> None:
    own = [{"type": "text", "text": "x"}]
    assert output_blocks_of({"output": own, "expected_output": "y"}) is own
    assert output_blocks_of({"expected_output": "y"}) == [{"type": "text", "text": "y"}]
    assert output_blocks_of({"target": {"answer": "Paris"}}) == [
        {"type": "text", "text": '{"answer":"Paris"}'}
    ]
    assert output_blocks_of({"messages": []}) is None


def test_a_dataset_written_through_orq_reads_the_same_everywhere(
    server_root: Path, server_keys: Callable[..., str], tmp_path: Path
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
    with Server(server_root) as running:
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
