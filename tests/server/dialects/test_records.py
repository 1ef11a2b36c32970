"""How one dialect reads fields another wrote (docs/dialects.md "Records"); the same rules
over HTTP: tests/server/dialects/test_orq.py, a dataset written through orq.ai read through
TensorZero, Humanloop and `dsv clone`."""

from __future__ import annotations

from dsv.server.dialects.records import expected_output_of, output_blocks_of, text_of


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
