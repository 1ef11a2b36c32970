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

from dsv.errors import NotFound, RemoteError
from dsv.notebook import Repository
from dsv.remote.hosted import PlatformDataset
from dsv.remote.hosted.engine import clone
from dsv.remote.hosted.http import retry_delay
from dsv.remote.hosted.humanloop import Humanloop

RECORDED = Path(__file__).resolve().parent / "recorded"
DATASET = PlatformDataset("ds_b0baF1ca7652", "evals/qa")


class Replay:
    """Answers each request with the next recorded exchange, checking it is the one recorded."""

    def __init__(self, name: str) -> None:
        self.exchanges: list[dict[str, Any]] = json.loads((RECORDED / name).read_text())[
            "exchanges"
        ]
        self.at = 0
        self.slept: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert self.at < len(self.exchanges), f"unrecorded request {request.method} {request.url}"
        want = self.exchanges[self.at]
        self.at += 1
        asked = want["request"]
        assert (request.method, request.url.path) == (asked["method"], asked["path"])
        for k, v in asked.get("query", {}).items():
            assert request.url.params.get(k) == v, (k, request.url)
        assert request.headers["X-API-KEY"] == "k"
        answer = want["response"]
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
    from dsv.remote.hosted import Change

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
