"""The server under hostile and concurrent use (issue 7): every test talks to a real `dsv serve`
on 127.0.0.1 started here.

- the auth matrix for every route `/openapi.json` lists;
- bad HTTP input: each refusal has its status, stable code and a one-line message, never 5xx
  and never a traceback;
- 8 clients pushing to one branch at once: one wins, the others are told non-fast-forward,
  and the server holds exactly the winner's work.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server, dsv_command
from dsv.cli import main
from dsv.objects import Kind, hash_object
from dsv.pack import PackWriter
from dsv.protocol import PACK_MEDIA_TYPE, encode_pack, iter_pack
from dsv.server.app import DIALECTS
from dsv.server.keys import create_key
from dsv.server.storage.sqlite import SqliteMetaStore

PACK = {"content-type": PACK_MEDIA_TYPE}
LIMIT = 1 << 20  # the server's --max-request-size
REPO = "acme/evals"
OTHER = "acme/other"
ZERO = "0" * 64

# A valid body for each route, so that only the key decides the answer. A route missing here
# fails test_auth_matrix_covers_every_route until it is added.
BODIES: dict[str, dict[str, Any]] = {
    "info": {},
    "missing": {"json": {"kind": "page", "ids": [ZERO]}},
    "objects": {"json": {"kind": "page", "ids": []}},
    "commits": {"json": {"wants": [], "haves": [], "limit": 1}},
    "packs": {"content": b"".join(encode_pack([(Kind.DATAPOINT, b'{"id":1}')]))},
    "refs": {"json": {"updates": [{"name": "refs/heads/main", "old": None, "new": ZERO}]}},
}
WRITE_ROUTES = {"packs", "refs"}
PUBLIC = ("/healthz", "/openapi", "/schema")


KeyMaker = Callable[..., str]


class Keys:
    def __init__(self, make: KeyMaker) -> None:
        self.write = make("write", REPO)
        self.read = make("read", REPO)
        self.other = make("write", OTHER)
        self.other_read = make("read", OTHER)
        self.admin = make("write")


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: KeyMaker) -> Iterator[tuple[Server, Keys]]:
    keys = Keys(server_keys)
    with Server(server_root, "--max-request-size", str(LIMIT), "--max-ids", "500") as running:
        yield running, keys


def error_of(reply: httpx.Response, status: int, code: str | tuple[str, ...]) -> str:
    """The one-line message of a JSON error answer with this status and code."""
    assert reply.status_code == status, f"{reply.request.method} {reply.request.url}: {reply.text}"
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert "Traceback" not in reply.text and 'File "' not in reply.text, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"code", "message", "request_id"}, error
    assert error["code"] in ((code,) if isinstance(code, str) else code), error
    assert error["request_id"] == reply.headers["x-request-id"]
    message: str = error["message"]
    assert message and "\n" not in message, error
    return message


# -- 1. the auth matrix ----------------------------------------------------------------------


def routes(url: str) -> list[tuple[str, str, str]]:
    """(method, path template, last segment) of every dsv-protocol operation in /openapi.json.

    The dialects' routes (/v5 and /v4 Humanloop, /v2 orq.ai, …) have their own matrices in
    tests/server/dialects/.
    """
    dialects = tuple(prefix for dialect in DIALECTS for prefix in dialect.prefixes)
    spec = httpx.get(f"{url}/openapi.json").json()
    found = []
    for path, operations in spec["paths"].items():
        if path.startswith(PUBLIC) or path.startswith(dialects):
            continue
        for method in operations:
            if method.lower() in {"get", "post", "put", "patch", "delete"}:
                found.append((method.upper(), path, path.rstrip("/").rsplit("/", 1)[-1]))
    return found


def call(url: str, method: str, path: str, repo: str, key: str | None) -> httpx.Response:
    owner, name = repo.split("/")
    target = url + path.replace("{owner}", owner).replace("{name}", name)
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    segment = path.rsplit("/", 1)[-1]
    if segment == "packs":
        headers.update(PACK)
    return httpx.request(method, target, headers=headers, timeout=10, **BODIES[segment])


def test_auth_matrix_covers_every_route(server: tuple[Server, Keys]) -> None:
    running, keys = server
    found = routes(running.url)
    assert {segment for _, _, segment in found} == set(BODIES), found
    for method, path, segment in found:
        where = f"{method} {path}"
        no_key = call(running.url, method, path, REPO, None)
        assert "requires an API key" in error_of(no_key, 401, "unauthenticated"), where
        for bad in ("nope", "dsv_" + "0" * 40, keys.write + "x"):
            reply = call(running.url, method, path, REPO, bad)
            assert "not valid" in error_of(reply, 401, "bad_key"), where
        # A key of another repository, read or write, is refused whatever the route.
        for foreign in (keys.other, keys.other_read):
            reply = call(running.url, method, path, REPO, foreign)
            assert f"not {REPO}" in error_of(reply, 403, "forbidden"), where
        # A read key: refused on write routes only.
        reply = call(running.url, method, path, REPO, keys.read)
        if segment in WRITE_ROUTES:
            assert "write key" in error_of(reply, 403, "forbidden"), where
        else:
            assert reply.status_code < 400 or reply.status_code == 404, (where, reply.text)
        # The right keys get past the gate (what follows is the route's own business).
        for good in (keys.write, keys.admin):
            reply = call(running.url, method, path, REPO, good)
            assert reply.status_code not in (401, 403) and reply.status_code < 500, (
                where,
                reply.text,
            )


def test_public_routes_need_no_key(server: tuple[Server, Keys]) -> None:
    running, _ = server
    assert httpx.get(f"{running.url}/healthz").json()["status"] == "ok"
    assert "paths" in httpx.get(f"{running.url}/openapi.json").json()


def test_the_key_is_checked_before_the_body(server: tuple[Server, Keys]) -> None:
    """protocol.md §2: no key is 401 whatever the body; a read key on a write route is 403."""
    running, keys = server
    for method, path, segment in routes(running.url):
        target = running.url + path.replace("{owner}", "acme").replace("{name}", "evals")
        reply = httpx.request(method, target, content=b"{bad")
        error_of(reply, 401, "unauthenticated")
        reply = httpx.request(method, target, content=b"{bad", headers={"X-API-KEY": "nope"})
        error_of(reply, 401, "bad_key")
        if segment in WRITE_ROUTES:
            reply = httpx.request(method, target, content=b"{bad", headers={"X-API-KEY": keys.read})
            error_of(reply, 403, "forbidden")


# -- 2. bad HTTP input -------------------------------------------------------------------------


@pytest.fixture
def http(server: tuple[Server, Keys]) -> Iterator[tuple[str, httpx.Client]]:
    running, keys = server
    with httpx.Client(headers={"Authorization": f"Bearer {keys.write}"}, timeout=10) as client:
        yield f"{running.url}/v1/{REPO}", client


def test_oversized_bodies_are_413(http: tuple[str, httpx.Client]) -> None:
    base, client = http
    reply = client.post(f"{base}/packs", content=b"x" * (LIMIT + 1), headers=PACK)
    assert (
        error_of(reply, 413, "too_large") == "the request body is larger than this server accepts"
    )
    # Streamed without a Content-Length, so only the running count can catch it.
    chunks = (b"x" * 65536 for _ in range(LIMIT // 65536 + 2))
    reply = client.post(f"{base}/packs", content=chunks, headers=PACK)
    assert "larger than this server accepts" in error_of(reply, 413, "too_large")
    body = json.dumps({"kind": "page", "ids": [ZERO] * 20_000}).encode()
    assert len(body) > LIMIT
    reply = client.post(
        f"{base}/missing", content=body, headers={"content-type": "application/json"}
    )
    assert "larger than this server accepts" in error_of(reply, 413, "too_large")
    reply = client.post(f"{base}/missing", json={"kind": "page", "ids": [ZERO] * 501})
    assert "at most 500" in error_of(reply, 413, "too_large")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{bad", "JSON is malformed"),
        (b'{"kind": "page", "ids": [', "truncated"),
        (b"\xff\xfe{}", "JSON is malformed"),
        (b'{"kind": "page", "ids": [NaN]}', "JSON is malformed"),
        (b"[]", "Expected `object`, got `array`"),
        (b'"ids"', "Expected `object`"),
        (b'{"kind": "nope", "ids": []}', "kind: Invalid enum value 'nope'"),
        (b'{"kind": "page", "ids": ["zz"]}', "ids[0]: Expected `str` matching regex"),
        # `$` matches before a final newline; an id must still be exactly 64 hex digits.
        (b'{"kind": "page", "ids": ["' + ZERO.encode() + b'\\n"]}', "ids[0]: Expected `str`"),
        (b'{"kind": "page", "ids": "abc"}', "ids: Expected `array`"),
        (b'{"kind": "page"}', "ids"),
        (b"", "data"),
        (b'{"kind": "page", "ids": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too deeply"),
        (b'{"kind": "page", "ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too deeply"),
    ],
)
def test_malformed_json_bodies_are_400(
    http: tuple[str, httpx.Client], body: bytes, expected: str
) -> None:
    base, client = http
    reply = client.post(
        f"{base}/missing", content=body, headers={"content-type": "application/json"}
    )
    assert expected in error_of(reply, 400, "bad_request")


def test_bad_ref_updates_are_400(http: tuple[str, httpx.Client]) -> None:
    base, client = http
    update = {"name": "refs/heads/main", "old": None, "new": ZERO}
    for bad, expected in [
        ({**update, "new": "zz"}, "updates[0].new"),
        ({**update, "old": 5}, "updates[0].old"),
        ({**update, "name": "refs/heads/a\x01b"}, "refs/heads/a"),
        ({**update, "name": "../../etc/passwd"}, "only refs/heads/*"),
    ]:
        reply = client.post(f"{base}/refs", json={"updates": [bad]})
        assert expected in error_of(reply, 400, ("bad_request", "bad_ref_name"))
    assert "no ref updates" in error_of(
        client.post(f"{base}/refs", json={"updates": []}), 400, "bad_request"
    )


@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        ("missing", b'{"kind": "page", "ids": [], "kind": "dataset"}', "'kind' in body"),
        ("missing", b'{"kind": "page", "\\u0069ds": [], "ids": []}', "'ids' in body"),
        (
            "refs",
            b'{"updates": [{"name": "refs/heads/main", "old": null, "old": null, "new": "'
            + ZERO.encode()
            + b'"}]}',
            "'old' in body.updates[0]",
        ),
        ("commits", b'{"wants": [], "x": {"a-b": {"k": 1, "k": 2}}}', "'k' in body.x['a-b']"),
    ],
)
def test_a_json_body_with_a_repeated_key_is_422(
    http: tuple[str, httpx.Client], route: str, body: bytes, expected: str
) -> None:
    """A decoder keeps the last of repeated keys silently; the server refuses the body."""
    base, client = http
    reply = client.post(
        f"{base}/{route}", content=body, headers={"content-type": "application/json"}
    )
    assert error_of(reply, 422, "duplicate_key") == f"duplicate key {expected}"
    # The key is still checked first.
    reply = httpx.post(
        f"{base}/{route}", content=body, headers={"content-type": "application/json"}
    )
    error_of(reply, 401, "unauthenticated")


def test_wrong_content_types_are_415(http: tuple[str, httpx.Client]) -> None:
    """JSON routes take application/json and /packs takes the pack type; nothing else."""
    base, client = http
    pack = b"".join(encode_pack([(Kind.DATAPOINT, b'{"id":1}')]))
    reply = client.post(f"{base}/missing", content=pack, headers=PACK)
    assert error_of(reply, 415, "unsupported_media_type") == (
        "this route takes application/json, not application/x-dsv-pack"
    )
    reply = client.post(f"{base}/packs", json={"kind": "page", "ids": []})
    assert error_of(reply, 415, "unsupported_media_type") == (
        "this route takes application/x-dsv-pack, not application/json"
    )
    for given in ("application/x-www-form-urlencoded", "text/plain", ""):
        headers = {"content-type": given} if given else {}
        reply = client.post(f"{base}/missing", content=b'{"kind":"page","ids":[]}', headers=headers)
        error_of(reply, 415, "unsupported_media_type")
    # Parameters such as a charset are fine.
    reply = client.post(
        f"{base}/missing",
        content=b'{"kind":"page","ids":[]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert reply.status_code == 200


def test_what_is_not_a_whole_pack_is_refused_whole(http: tuple[str, httpx.Client]) -> None:
    base, client = http
    pack = b"".join(encode_pack([(Kind.DATAPOINT, b'{"id":%d}' % i) for i in range(50)]))
    for bad in (
        b"GET / HTTP/1.1\r\n" * 4,
        b"notapack",
        pack[:-1],
        pack[: len(pack) // 2],
        pack[:4],
    ):
        error_of(client.post(f"{base}/packs", content=bad, headers=PACK), 422, "corrupt")
    assert "truncated" in error_of(
        client.post(f"{base}/packs", content=pack[:-20], headers=PACK), 422, "corrupt"
    )
    # Nothing of the refused packs was kept.
    reply = client.get(f"{base}/info")
    assert reply.status_code == 200 and reply.json()["refs"] == {}, reply.text


def _stored_pack(tmp_path: Path, objects: list[tuple[Kind, bytes]]) -> bytes:
    """A pack as stored (protocol version 2's packs), made by the library's writer."""
    writer = PackWriter(tmp_path)
    for kind, body in objects:
        writer.add(kind, hash_object(kind, body), body)
    return (tmp_path / f"{writer.finish()}.pack").read_bytes()


def test_version_2_packs_are_checked_whole_and_refused_whole(
    http: tuple[str, httpx.Client], tmp_path: Path
) -> None:
    base, client = http
    v2 = base.replace("/v1/", "/v2/")
    tag = os.urandom(8).hex().encode()  # objects no other test stored
    points = [(Kind.DATAPOINT, b'{"id":%d,"t":"%s"}' % (i, tag)) for i in range(50)]
    pack = _stored_pack(tmp_path, points)
    # A version-1 pack is not one of version 2, and the other way round.
    v1 = b"".join(encode_pack(points))
    assert "not a dsv pack of version 2" in error_of(
        client.post(f"{v2}/packs", content=v1, headers=PACK), 422, "corrupt"
    )
    error_of(client.post(f"{base}/packs", content=pack, headers=PACK), 422, "corrupt")
    for bad in (pack[:-1], pack[: len(pack) // 2], pack[:4], pack[:-32] + bytes(32)):
        error_of(client.post(f"{v2}/packs", content=bad, headers=PACK), 422, "corrupt")
    not_canonical = _stored_pack(tmp_path, [(Kind.DATAPOINT, b'{"b": 1, "a": 2}')])
    assert "datapoint" in error_of(
        client.post(f"{v2}/packs", content=not_canonical, headers=PACK), 422, "corrupt"
    )
    # Large enough for the checking worker processes: the one bad datapoint is named.
    bad = b'{"id": 7}'
    many = _stored_pack(
        tmp_path,
        [*points, *[(Kind.DATAPOINT, b'{"n":%d}' % i) for i in range(400)], (Kind.DATAPOINT, bad)],
    )
    assert error_of(client.post(f"{v2}/packs", content=many, headers=PACK), 422, "corrupt") == (
        f"corrupt object {hash_object(Kind.DATAPOINT, bad).hex()}: datapoint is not canonical JSON"
    )
    page = b"".join(hash_object(k, b) for k, b in points)
    unconnected = _stored_pack(tmp_path, [(Kind.PAGE, page)])
    error_of(client.post(f"{v2}/packs", content=unconnected, headers=PACK), 422, "unconnected")
    assert client.get(f"{base}/info").json()["refs"] == {}
    # A whole pack is kept as it came, and answered from as stored.
    reply = client.post(f"{v2}/packs", content=pack, headers=PACK)
    assert reply.status_code == 200 and reply.json()["objects"] == 50, reply.text
    ids = [hash_object(k, b).hex() for k, b in points]
    reply = client.post(f"{v2}/objects", json={"kind": "datapoint", "ids": ids})
    assert reply.status_code == 200 and reply.content == pack
    reply = client.post(f"{base}/objects", json={"kind": "datapoint", "ids": ids[::-1]})
    assert [b for _, b in iter_pack([reply.content])] == [b for _, b in points][::-1]
    reply = client.post(f"{v2}/objects", json={"kind": "datapoint", "ids": [*ids, ZERO]})
    assert error_of(reply, 404, "object_not_found") == f"{REPO} has no datapoint {ZERO}"


@pytest.mark.parametrize(
    "repo",
    [
        "acme/%2e%2e",
        "%2e%2e/evals",
        "acme/.hidden",
        "acme/b%01c",
        "acme/b%0ac",
        "acme/b%00c",
        "acme/" + "b" * 300,
        "-acme/evals",
        "acme/%C3%A9vals",
        "acme/b%20c",
    ],
)
def test_invalid_repository_names_are_400(http: tuple[str, httpx.Client], repo: str) -> None:
    base, client = http
    url = base.rsplit("/v1/", 1)[0]
    message = error_of(client.get(f"{url}/v1/{repo}/info"), 400, "bad_request")
    assert message.startswith("invalid repository name"), message


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/v1/acme/evals/nope", 404),
        ("GET", "/v3/acme/evals/info", 404),
        ("GET", "/v1/acme/info", 404),
        ("GET", "/v1/acme/evals/x/info", 404),
        ("GET", "/v1/acme/..%2f..%2fx/info", 404),
        ("DELETE", "/v1/acme/evals/info", 405),
        ("GET", "/v1/acme/evals/packs", 405),
        ("PUT", "/v1/acme/evals/refs", 405),
        ("PATCH", "/v1/acme/evals/missing", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_unknown_routes_and_wrong_methods(
    http: tuple[str, httpx.Client], method: str, path: str, status: int
) -> None:
    base, client = http
    url = base.rsplit("/v1/", 1)[0]
    code = {404: "not_found", 405: "method_not_allowed"}[status]
    message = error_of(client.request(method, url + path), status, code)
    assert message.startswith(f"no such endpoint: {method} "), message


def test_odd_headers_are_refused_cleanly(http: tuple[str, httpx.Client]) -> None:
    base, _ = http
    info = f"{base}/info"
    for headers in (
        [(b"Authorization", b"Bearer \xe9\xff")],
        [(b"X-API-KEY", b"x" * 10_000)],
        [(b"Authorization", b"Basic dXNlcjpwYXNz")],
        [(b"Authorization", b"Bearer")],
    ):
        reply = httpx.get(info, headers=headers)
        error_of(reply, 401, ("bad_key", "unauthenticated"))
    # A request id that is not safe to log is replaced, never echoed.
    reply = httpx.get(info, headers=[(b"X-Request-ID", b"a\x7fb c")])
    assert reply.headers["x-request-id"] != "a\x7fb c"
    error_of(reply, 401, "unauthenticated")


# -- 3. eight clients pushing to one branch at once ----------------------------------------------


def dsv(root: Path, *args: str, key: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args], env={"DSV_API_KEY": key})
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def test_eight_clients_push_to_one_branch_at_once(
    tmp_path: Path, server: tuple[Server, Keys]
) -> None:
    running, keys = server
    url = f"{running.url}/acme/race"
    base = tmp_path / "base"
    dsv(tmp_path, "init", "base", key=keys.admin)
    (base / "qa.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(200)))
    dsv(base, "add", "qa.jsonl", key=keys.admin)
    dsv(base, "commit", "-m", "base", key=keys.admin)
    dsv(base, "remote", "add", "origin", url, key=keys.admin)
    dsv(base, "push", key=keys.admin)

    clients = []
    for i in range(8):
        dsv(tmp_path, "clone", url, f"c{i}", key=keys.admin)
        root = tmp_path / f"c{i}"
        (root / f"own{i}.jsonl").write_text(
            "".join(json.dumps({"id": j, "client": i}) + "\n" for j in range(50))
        )
        dsv(root, "add", f"own{i}.jsonl", key=keys.admin)
        dsv(root, "commit", "-m", f"client {i}", key=keys.admin)
        clients.append(root)

    env = {**os.environ, "DSV_API_KEY": keys.admin, "DSV_LOCK_TIMEOUT": "10"}
    procs = [
        subprocess.Popen(
            [*dsv_command(), "-C", str(root), "push"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for root in clients
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        outcomes.append((proc.returncode, out, err))

    winners = [i for i, (code, _, _) in enumerate(outcomes) if code == 0]
    for code, out, err in outcomes:
        assert "Traceback" not in out + err
        if code != 0:
            assert code == 5, (code, out, err)
            assert err.startswith("error: ") and "non-fast-forward" in err, err
            assert "hint: " in err, err
    # All started from the same base, so only one can be a fast-forward of the others.
    assert len(winners) == 1, outcomes
    (winner,) = winners

    final = tmp_path / "final"
    dsv(tmp_path, "clone", url, "final", key=keys.admin)
    dsv(final, "fsck", key=keys.admin)
    files = sorted(p.name for p in final.iterdir() if p.suffix == ".jsonl")
    assert files == sorted(["qa.jsonl", f"own{winner}.jsonl"]), files
    log = dsv(final, "log", key=keys.admin).stdout
    assert f"client {winner}" in log and "base" in log
    assert all(f"client {i}" not in log for i in range(8) if i != winner), log
    # The losers' work is intact locally: a pull and push would now succeed for one of them.
    loser = next(i for i in range(8) if i != winner)
    assert (clients[loser] / f"own{loser}.jsonl").exists()


# -- 4. the access log and the files killed servers leave -----------------------------------------


def log_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    """The log's lines once it has at least `count` of them (the line follows the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_bytes().decode("utf-8").split("\n")[:-1]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_the_access_log_escapes_what_clients_send_and_names_every_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    meta = SqliteMetaStore(root / "meta.sqlite3")
    try:
        record, key = create_key(meta, "write")
    finally:
        meta.close()
    forged = '127.0.0.1 "GET /forged" 200 0B 0.1ms rid=forged anonymous'
    with Server(root) as running:
        start = len(log_lines(running.log_path, 0))
        sent = [
            # Decoded from %0A, %0D, %1B, %E2%80%A8 (U+2028), %C2%85 (NEL) and %5C (a backslash).
            ("GET", "/v1/acme/x%0A" + forged.replace(" ", "%20") + "/info", {}),
            ("GET", "/nowhere%0D%0Aforged%1B[31m%E2%80%A8%C2%85%5Cn?q=%0A", {}),
            ("GET", "/healthz", {"User-Agent": b"agent\tone\x85two\xe2\x80\xa8"}),
            ("GET", f"/v1/{REPO}/info", {"X-API-KEY": key}),
            ("GET", "/v5/datasets", {"X-API-KEY": key}),
            ("POST", "/v4/datasets/ds_none/datapoints", {"X-API-KEY": key}),
        ]
        for i, (method, path, headers) in enumerate(sent):
            httpx.request(
                method,
                running.url + path,
                headers={**headers, "X-Request-ID": f"req-{i}"},
                json={} if method == "POST" else None,
                timeout=10,
            )
        # The start-up's own /healthz poll may log after `start` was read: ours begin at req-0.
        lines = log_lines(running.log_path, start + len(sent))[start:]
        ours = [i for i, line in enumerate(lines) if line.rsplit("rid=", 1)[1].startswith("req-0 ")]
        lines = log_lines(running.log_path, start + (ours[0] if ours else 0) + len(sent))[start:]
        lines = lines[ours[0] :] if ours else lines
    assert len(lines) == len(sent), lines
    assert [line.rsplit("rid=", 1)[1].split()[0] for line in lines] == [
        f"req-{i}" for i in range(len(sent))
    ]
    assert not any(line.startswith(("127.0.0.1 ", "forged")) for line in lines), lines
    assert '"GET /v1/acme/x\\n127.0.0.1 "GET /forged" 200' in lines[0], lines[0]
    assert '"GET /nowhere\\r\\nforged\\x1b[31m\\u2028\\x85\\\\n?q=%0A" 404' in lines[1]
    assert 'ua="agent\\tone\\x85two\\u2028"' in lines[2], lines[2]
    # Every route family names the key by its id, and never shows the key itself.
    for line, path in zip(lines[3:], [path for _, path, _ in sent[3:]], strict=True):
        assert f' {path}" ' in line and f" key {record.id} " in line, line
    assert all(key not in line for line in lines)
    assert " anonymous " not in lines[0] and " - " in lines[0]  # no key: nobody to name


def test_start_up_removes_the_temporary_packs_of_dead_servers_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pack_dir = root / "repos" / "acme" / "evals" / "objects" / "pack"
    pack_dir.mkdir(parents=True)
    (root / "tmp").mkdir()
    done = subprocess.Popen(["true"])
    done.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        dead_files = [
            root / "tmp" / f".recv-{done.pid}-{'a' * 32}.pack",
            root / "tmp" / f".tmp-{done.pid}-0badf00d.pack",
            root / "tmp" / f".tmp-{done.pid}-0badf00d.idx",
            pack_dir / f".tmp-{done.pid}-0badf00d.pack",
        ]
        live_files = [
            root / "tmp" / f".recv-{alive.pid}-{'b' * 32}.pack",
            pack_dir / f".tmp-{alive.pid}-0badf00d.pack",
            pack_dir / f".tmp-{os.getpid()}-0badf00d.pack",
            # Named without a pid, by an earlier version: kept until an hour old.
            root / "tmp" / f".recv-{'c' * 32}.pack",
        ]
        old = root / "tmp" / f".recv-{'d' * 32}.pack"
        for path in [*dead_files, *live_files, old]:
            path.write_bytes(b"x" * 1000)
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        with Server(root):
            assert [p.name for p in [*dead_files, old] if p.exists()] == []
            assert [p.name for p in live_files if not p.exists()] == []
    finally:
        alive.kill()
        alive.wait()


def test_a_request_looks_its_key_up_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's key lookup serves the handler too: with shared storage each lookup is a
    database round trip, on every page read."""
    import anyio

    from dsv.server.app import create_app
    from dsv.server.service import RemoteService, ServerConfig
    from dsv.server.storage import open_storage

    root = tmp_path / "root"
    blobs, meta = open_storage(root)
    service = RemoteService(ServerConfig(root=str(root), check_workers=0), blobs, meta)
    key = create_key(meta, "write")[1]
    lookups: list[bytes] = []
    real = meta.key_by_digest

    def counted(digest: bytes) -> Any:
        lookups.append(digest)
        return real(digest)

    monkeypatch.setattr(meta, "key_by_digest", counted)

    async def requests() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://dsv") as client:
            headers = {"X-API-KEY": key}
            upsert = {"path": "acme/evals/qa", "datapoints": [{"inputs": {"q": "x"}}]}
            paths = [
                ("POST", "/v5/datasets", upsert),
                ("GET", "/v5/datasets", None),
                ("POST", "/v1/acme/evals/missing", {"kind": "datapoint", "ids": []}),
                ("GET", "/api/datasets/", None),
            ]
            codes = []
            for method, path, body in paths:
                before = len(lookups)
                reply = await client.request(method, path, headers=headers, json=body)
                codes.append(reply.status_code)
                assert len(lookups) - before == 1, (path, reply.text)
            return codes

    try:
        assert anyio.run(requests) == [200, 200, 200, 200]
    finally:
        service.checker.close()
        blobs.close()
        meta.close()
