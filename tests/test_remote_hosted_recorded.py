"""Where a hosted platform may answer otherwise than `dsv serve` (issue 24): recorded
exchanges built from the seed pages' documented examples and the official SDKs' types
(tests/recorded/), replayed with httpx.MockTransport: pagination ends, error bodies,
rate-limit answers. The round trips themselves are tested against a real `dsv serve`
(tests/test_remote_hosted_humanloop.py)."""

from __future__ import annotations

import email.utils
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsv.errors import BadInput, NotFound, RemoteError
from dsv.notebook import Repository
from dsv.remote.hosted import Change, PlatformDataset
from dsv.remote.hosted.engine import clone
from dsv.remote.hosted.http import retry_delay
from dsv.remote.hosted.humanloop import Humanloop
from dsv.remote.hosted.orq import Orq
from dsv.remote.hosted.overmind import Overmind
from dsv.remote.hosted.tensorzero import TensorZero
from tests.conftest import Dsv

RECORDED = Path(__file__).resolve().parent / "recorded"
DATASET = PlatformDataset("ds_b0baF1ca7652", "evals/qa")


class Replay:
    """Answers each request with the next recorded exchange, checking it is the one recorded
    (method, path, the query's recorded parameters, `absent` ones, and the `json` body)."""

    def __init__(self, name: str) -> None:
        self.exchanges: list[dict[str, Any]] = json.loads((RECORDED / name).read_text())[
            "exchanges"
        ]
        self.at = 0
        self.slept: list[float] = []
        self.key_header = ("X-API-KEY", "k")

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert self.at < len(self.exchanges), f"unrecorded request {request.method} {request.url}"
        want = self.exchanges[self.at]
        self.at += 1
        asked = want["request"]
        assert (request.method, request.url.path) == (asked["method"], asked["path"]), self.at
        for k, v in asked.get("query", {}).items():
            assert request.url.params.get(k) == v, (k, request.url)
        for k in asked.get("absent", []):
            assert k not in request.url.params, (k, request.url)
        if "json" in asked:
            assert json.loads(request.content) == asked["json"], self.at
        name, value = self.key_header
        assert request.headers[name] == value
        answer = want["response"]
        if answer.get("drop"):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(
            answer["status"], headers=answer.get("headers", {}), json=answer.get("body")
        )

    def platform(self) -> Humanloop:
        return Humanloop(
            "https://api.humanloop.com/v5",
            name="hl",
            key="k",
            key_source="HUMANLOOP_API_KEY",
            transport=httpx.MockTransport(self.handle),
            sleep=self.slept.append,
        )

    def orq(self) -> Orq:
        self.key_header = ("Authorization", "Bearer k")
        return Orq(
            "https://api.orq.ai",
            name="orq",
            key="k",
            key_source="ORQ_API_KEY",
            transport=httpx.MockTransport(self.handle),
            sleep=self.slept.append,
        )

    def tensorzero(self) -> TensorZero:
        self.key_header = ("Accept", "*/*")  # no key: the gateway is open
        return TensorZero(
            "http://gateway:3000",
            name="tz",
            key=None,
            key_source="DSV_API_KEY",
            transport=httpx.MockTransport(self.handle),
            sleep=self.slept.append,
        )

    def overmind(self) -> Overmind:
        self.key_header = ("Authorization", "Bearer k")
        return Overmind(
            "https://api.overmind.example",
            name="om",
            key="k",
            key_source="OVERMIND_API_KEY",
            transport=httpx.MockTransport(self.handle),
            sleep=self.slept.append,
        )

    def done(self) -> bool:
        return self.at == len(self.exchanges)


def test_the_documented_page_ends_at_total_not_at_a_short_page() -> None:
    replay = Replay("humanloop/list_datapoints_seed.json")
    points = list(replay.platform().datapoints(DATASET, "dsv_v1"))
    assert [p["id"] for p in points] == ["dp_901stu", "dp_234vwx"]
    assert replay.done()  # one request: total (2) reached, no page 2 asked


def test_429_waits_as_retry_after_says_and_5xx_backs_off() -> None:
    replay = Replay("humanloop/rate_limited.json")
    versions = replay.platform().versions(DATASET)
    assert replay.done()
    assert replay.slept[0] == 7.0
    assert 0.5 <= replay.slept[1] <= 1.0  # the second attempt's backoff (1 s, with jitter)
    # Oldest first, whatever order the platform lists them in; author and message kept.
    assert [v.id for v in versions] == ["dsv_v1", "dsv_v2"]
    assert versions[0].message == "first set" and versions[0].author == ""
    assert versions[1].author == "Ada Lovelace <ada@example.com>"
    assert versions[1].message == "second" and versions[1].time == 1714642200


def test_a_422_names_the_field_and_is_not_retried() -> None:
    replay = Replay("humanloop/validation_error.json")
    with pytest.raises(RemoteError) as caught:
        replay.platform().write(DATASET, "evals/qa", Change("set", [], ""))
    assert caught.value.message == (
        "remote 'hl' (https://api.humanloop.com/v5) answered HTTP 422: "
        "datapoints.1.inputs.question: Input should be a valid string"
    )
    assert replay.slept == []


def test_a_401_says_which_variable_holds_the_key() -> None:
    replay = Replay("humanloop/unauthorized.json")
    with pytest.raises(RemoteError) as caught:
        replay.platform().find_dataset("evals/qa")
    assert caught.value.message.endswith("answered HTTP 401: Invalid API key")
    assert caught.value.hint == "set HUMANLOOP_API_KEY to an API key of the platform"


def test_retries_end_with_a_clear_error() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "Service Unavailable"})

    slept: list[float] = []
    platform = Humanloop(
        "https://api.humanloop.com/v5",
        name="hl",
        key="k",
        key_source="K",
        transport=httpx.MockTransport(busy),
        sleep=slept.append,
    )
    with pytest.raises(RemoteError) as caught:
        platform.versions(DATASET)
    assert caught.value.message.endswith("answered HTTP 503: Service Unavailable")
    assert caught.value.hint is not None and "it resumes" in caught.value.hint
    assert len(slept) == 5 and slept == sorted(slept)  # 6 attempts, growing waits


def test_a_retry_after_longer_than_a_command_should_wait_fails_at_once() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"}, json={"detail": "slow down"})

    platform = Humanloop(
        "https://h/v5", name="hl", key="k", key_source="K", transport=httpx.MockTransport(limited)
    )
    with pytest.raises(RemoteError) as caught:
        platform.versions(DATASET)
    assert caught.value.message == (
        "remote 'hl' (https://h/v5) answered HTTP 429: slow down (it asks to wait 3600 s)"
    )


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_delay(1, email.utils.formatdate(now + 12, usegmt=True), now=now) == 12.0
    assert retry_delay(1, email.utils.formatdate(now - 50, usegmt=True), now=now) == 0.0


def test_a_dataset_missing_on_the_platform_is_none_and_404_elsewhere_is_not_found() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Dataset ds_x not found"})

    platform = Humanloop(
        "https://h/v5", name="hl", key="k", key_source="K", transport=httpx.MockTransport(gone)
    )
    assert platform.find_dataset("ds_x") is None
    with pytest.raises(NotFound, match="answered HTTP 404: Dataset ds_x not found"):
        platform.versions(PlatformDataset("ds_x", "a/b"))


def test_clone_of_a_recorded_history(tmp_path: Path) -> None:
    replay = Replay("humanloop/clone_history.json")
    result = clone(
        "humanloop+https://api.humanloop.com/v5",
        tmp_path / "qa",
        paths=["evals/qa"],
        platform=replay.platform(),
    )
    assert replay.done() and result.branch == "main" and result.fetch.objects == 2
    assert replay.slept == [0.0]  # a Retry-After date in the past: retried at once
    with Repository.open(tmp_path / "qa") as repo:
        log = [entry.commit for entry in repo.log()]
        assert [c.message for c in log] == ["second", "first set"]
        assert [c.time for c in log] == [1714642200, 1714557600]
        assert log[0].author == "Ada Lovelace <ada@example.com>"
        assert log[1].author == "Humanloop <origin@dsv>"
        # The platform's nulls are not the records' fields.
        first = [
            {
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "target": {"answer": "Paris"},
            },
            {"inputs": {"question": "2+2?"}},
        ]
        assert list(repo.records("HEAD~1", "qa.jsonl")) == first
        assert list(repo.records("HEAD", "qa.jsonl")) == first[:1]


def test_a_dropped_connection_is_retried() -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"records": []})

    slept: list[float] = []
    platform = Humanloop(
        "https://h/v5",
        name="hl",
        key="k",
        key_source="K",
        transport=httpx.MockTransport(flaky),
        sleep=slept.append,
    )
    assert platform.versions(DATASET) == []
    assert len(calls) == 3 and len(slept) == 2


# -- orq.ai ------------------------------------------------------------------------------------


def test_orq_pages_by_cursor_until_has_more_is_false() -> None:
    replay = Replay("orq/list_datapoints_cursor.json")
    orq = replay.orq()
    dataset = PlatformDataset("01JJ1HDHN79XAS7A01WB3HYSDB", "evals/qa")
    [version] = orq.versions(dataset)
    records = [orq.from_platform(p) for p in orq.datapoints(dataset, version.id)]
    assert replay.done()
    # Only what a datapoint carries: evaluations, ids and times are the platform's own.
    assert records == [
        {
            "inputs": {"city": "Paris"},
            "messages": [{"role": "user", "content": "Capital of France?"}],
            "expected_output": "Paris",
        },
        {"inputs": {"city": "Rome"}, "expected_output": "Rome"},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    # The version is the content: the same datapoints in another order are the same version.
    assert version.id.startswith("snap_")


def test_orq_push_after_a_dropped_insert_inserts_nothing_twice(
    dsv: Dsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsv.remote.hosted import engine

    replay = Replay("orq/push_dropped_insert.json")
    orq = replay.orq()
    dsv("remote", "add", "orq", "orq+https://api.orq.ai", "--prefix", "evals")
    paris = {"inputs": {"city": "Paris"}, "expected_output": "Paris"}
    rome = {"inputs": {"city": "Rome"}, "expected_output": "Rome"}
    dsv.write("qa.jsonl", [paris, rome])
    dsv("add", "qa.jsonl")
    dsv("commit", "-m", "two cities")
    with Repository.open(dsv.root) as repo:
        first = engine.push(repo, "orq", platform=orq)
        assert [(d.action, d.path) for d in first.datasets] == [("create", "evals/qa")]
        assert replay.at == 5  # the insert was not sent again after the drop
    dsv("env", "deploy", "production")
    with Repository.open(dsv.root) as repo:
        again = engine.push(repo, "orq", envs=True, platform=orq)
        assert [d.action for d in again.datasets] == ["up-to-date"]
        # orq.ai has no environments: said, not an error.
        assert [(e.environment, e.status, e.reason) for e in again.envs] == [
            ("production", "skipped", "orq.ai has no environments")
        ]
    dsv.write("qa.jsonl", [paris])
    dsv("commit", "-a", "-m", "no Rome")
    with Repository.open(dsv.root) as repo:
        third = engine.push(repo, "orq", platform=orq)
        assert [(d.action, d.removed) for d in third.datasets] == [("remove", 1)]
        with pytest.raises(RemoteError) as caught:
            engine.push(repo, "orq", platform=orq)
    assert replay.done()
    assert caught.value.message == (
        "remote 'orq' (https://api.orq.ai) answered HTTP 401: Invalid API key"
    )
    assert caught.value.hint == "set ORQ_API_KEY to an API key of the platform"


def test_orq_refuses_what_it_cannot_hold() -> None:
    orq = Replay("orq/list_datapoints_cursor.json").orq()
    with pytest.raises(BadInput) as caught:
        orq.to_platform({"expected_output": {"answer": 4}}, "qa.jsonl line 2", frozenset())
    assert caught.value.message == (
        "qa.jsonl line 2: field 'expected_output' is an object: orq.ai's expected_output is a "
        "string"
    )
    with pytest.raises(BadInput, match=r"field 'target' has no place in an orq\.ai datapoint"):
        orq.to_platform({"target": {}}, "qa.jsonl line 1", frozenset())
    assert orq.to_platform({"target": {}, "inputs": {}}, "x", frozenset({"target"})) == {
        "inputs": {}
    }


# -- TensorZero ----------------------------------------------------------------------------------


def test_tensorzero_pages_to_an_empty_page_and_skips_stale_datapoints() -> None:
    replay = Replay("tensorzero/list_capped_pages.json")
    tz = replay.tensorzero()
    dataset = PlatformDataset("qa", "qa")
    [version] = tz.versions(dataset)
    records = [tz.from_platform(p) for p in tz.datapoints(dataset, version.id)]
    assert replay.done()
    assert records == [
        {
            "function_name": "answer",
            "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}],
            "output": [{"type": "text", "text": "4"}],
            "tags": {"source": "seed"},
        },
        # The function's defaults (empty tags, parallel_tool_calls false) are not carried.
        {
            "function_name": "extract",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Ada, 36"}]}],
            "output": {"raw": '{"name": "Ada", "age": 36}', "parsed": {"name": "Ada", "age": 36}},
            "output_schema": {"type": "object"},
        },
    ]


def test_tensorzero_error_body_and_refusals() -> None:
    replay = Replay("tensorzero/gateway_error.json")
    tz = replay.tensorzero()
    with pytest.raises(RemoteError) as caught:
        tz.create_points(
            PlatformDataset("qa", "qa"), [{"type": "chat", "function_name": "answr", "input": {}}]
        )
    assert caught.value.message == (
        "remote 'tz' (http://gateway:3000) answered HTTP 400: Unknown function: `answr`"
    )
    assert replay.done() and replay.slept == []
    with pytest.raises(BadInput) as refused:
        tz.to_platform({"messages": []}, "qa.jsonl line 7", frozenset())
    assert refused.value.message == (
        "qa.jsonl line 7: no field 'function_name' (a non-empty string): a TensorZero datapoint "
        "belongs to a function"
    )
    with pytest.raises(BadInput, match=r"qa.jsonl line 1: field 'tags\.n' is a number"):
        tz.to_platform({"function_name": "f", "tags": {"n": 1}}, "qa.jsonl line 1", frozenset())
    with pytest.raises(BadInput, match=r"field 'messages\[0\]\.role' must be user or assistant"):
        tz.to_platform(
            {"function_name": "f", "messages": [{"role": "system", "content": "x"}]},
            "x",
            frozenset(),
        )
    with pytest.raises(BadInput, match="field 'inputs' has no place in a TensorZero datapoint"):
        tz.to_platform({"function_name": "f", "inputs": {}}, "x", frozenset())
    # A record is sent as the client sends it: type, input, output as {"raw"} for json.
    assert tz.to_platform(
        {"function_name": "f", "system": "s", "output": {"raw": "1", "parsed": 1}}, "x", frozenset()
    ) == {
        "type": "json",
        "function_name": "f",
        "input": {"system": "s", "messages": []},
        "output": {"raw": "1"},
    }


def test_orq_a_creation_cut_short_is_completed_by_the_next_push(dsv: Dsv) -> None:
    from dsv.remote.hosted import engine

    replay = Replay("orq/push_create_resumed.json")
    orq = replay.orq()
    dsv("remote", "add", "orq", "orq+https://api.orq.ai", "--prefix", "evals")
    dsv.write(
        "qa.jsonl",
        [
            {"inputs": {"city": "Paris"}, "expected_output": "Paris"},
            {"inputs": {"city": "Rome"}, "expected_output": "Rome"},
        ],
    )
    dsv("add", "qa.jsonl")
    dsv("commit", "-m", "two cities")
    with Repository.open(dsv.root) as repo:
        with pytest.raises(RemoteError, match="answered HTTP 400: Workspace datapoint quota"):
            engine.push(repo, "orq", platform=orq)
        resumed = engine.push(repo, "orq", platform=orq)
    assert replay.done()
    assert [(d.action, d.path, d.records) for d in resumed.datasets] == [("create", "evals/qa", 2)]
    state = json.loads((dsv.root / ".dsv" / "hosted" / "orq.json").read_text())
    assert state["creating"] == {}
    assert state["datasets"]["qa.jsonl"]["id"] == "01JJ1HDHN79XAS7A01WB3HYSDB"


# -- Overmind Lab ----------------------------------------------------------------------------------


def test_overmind_follows_next_whatever_host_it_names() -> None:
    replay = Replay("overmind/list_datapoints_seed.json")
    om = replay.overmind()
    agent = PlatformDataset("182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e", "a")
    points = list(om.datapoints(agent, "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e"))
    assert replay.done()
    # The seed's example datapoint holds empty objects: an empty input is an input, empty
    # tags are none.
    assert [om.from_platform(p) for p in points] == [
        {"inputs": {}, "expected_output": {}, "persona": "persona"},
        {"inputs": {"q": "x"}, "tags": {"k": "v"}},
    ]


def test_overmind_validation_error_names_the_field() -> None:
    replay = Replay("overmind/validation_error.json")
    with pytest.raises(RemoteError) as caught:
        replay.overmind().write(
            PlatformDataset("182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e", "a"),
            "a",
            Change("set", [], "", []),
        )
    assert caught.value.message == (
        "remote 'om' (https://api.overmind.example) answered HTTP 400: "
        "datapoints: This field is required."
    )


def test_overmind_a_dropped_create_is_not_posted_twice() -> None:
    replay = Replay("overmind/create_dropped.json")
    om = replay.overmind()
    point = {"input": {"q": "x"}, "expected_output": "y"}
    made, version = om.write(
        None, "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e", Change("set", [point], "first", [point])
    )
    assert replay.done()
    assert (made.id, version) == (
        "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e",
        "9f0c8a1e-0000-8000-8000-000000000001",
    )
