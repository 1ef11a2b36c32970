"""Interrupted pushes, hostile clients, size limits and the HTTP surface of a real `dsv serve`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.generate import generate
from benchmarks.push import Server, dsv_command
from dsv import maintenance, materialize, ops
from dsv.canonical import canonicalize
from dsv.cli import main
from dsv.notebook import Repository
from dsv.objects import (
    Commit,
    Dataset,
    Format,
    Kind,
    Slice,
    Tree,
    TreeEntry,
    content_id,
    encode_object,
    hash_object,
    split_oids,
)
from dsv.packindex import scan_pack
from dsv.protocol import PACK_MEDIA_TYPE, Info, Limits, PackReply, encode_pack, iter_pack
from dsv.remote.client import RemoteRefused, _send, pull, push
from dsv.remote.packing import Sending
from dsv.store import PACKS_MOST, ObjectStore
from tests.conftest import KeyMaker

LIMIT = 1 << 20


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: KeyMaker) -> Iterator[tuple[Server, str]]:
    """A server taking at most 1 MiB and 500 ids a request, so pushes are cut into packs."""
    key = server_keys("write")
    with Server(server_root, "--max-request-size", str(LIMIT), "--max-ids", "500") as running:
        yield running, key


def dsv(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == code, (
        f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def stored_objects(server: Server, repo: str) -> int:
    store = ObjectStore(server.root / "repos" / repo / "objects")
    try:
        return sum(pack.count for pack in store.packs)
    finally:
        store.close()


def test_push_killed_midway_then_rerun_sends_only_what_is_missing(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, key = server
    small = "".join(json.dumps({"id": i}) + "\n" for i in range(50))
    url = _pushed(tmp_path, server, monkeypatch, "kill/test", small)
    root = tmp_path / "a"
    v1 = Repository.open(root).head()
    before = stored_objects(running, "kill/test")
    big, _ = generate(24_000, tmp_path / "data")
    shutil.copyfile(big, root / "big.jsonl")
    dsv(root, "add", "big.jsonl")
    dsv(root, "commit", "-m", "v2")
    with Repository.open(root) as repo:
        dataset = ops.dataset_at(repo, "HEAD", "big.jsonl")
        needed = 24_000 + len({s.page for s in dataset.slices}) + 3  # + dataset, tree, commit
    proc = subprocess.Popen(
        [*dsv_command(), "-C", str(root), "push"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DSV_API_KEY": key},
    )
    packs = running.root / "repos" / "kill" / "test" / "objects" / "pack"
    deadline = time.monotonic() + 30
    while len(list(packs.glob("*.idx"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the push finished before it could be killed"
    partial = stored_objects(running, "kill/test") - before
    assert 0 < partial < needed
    # The ref still points at complete data: a clone gets v1, whole.
    dsv(tmp_path, "clone", url, "b")
    assert Repository.open(tmp_path / "b").head() == v1
    assert "ok" in dsv(tmp_path / "b", "fsck").stdout
    with Repository.open(root) as repo:
        again = push(repo)
    assert again.objects == needed - partial  # only what the killed push had not stored
    assert again.packs > 1  # cut to the server's 1 MiB limit

    # A fetch killed midway: the remote-tracking ref stays at v1, and the rerun asks only for
    # what had not arrived.
    b = tmp_path / "b"
    local = b / ".dsv" / "objects" / "pack"
    ahead = len(list(local.glob("*.idx")))
    with Repository.open(b) as repo:
        held = len(set(repo.store.iter_oids()))
    proc = subprocess.Popen(
        [*dsv_command(), "-C", str(b), "fetch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DSV_API_KEY": key},
    )
    while len(list(local.glob("*.idx"))) < ahead + 3 and proc.poll() is None:
        assert time.monotonic() < deadline + 30
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the fetch finished before it could be killed"
    with Repository.open(b) as repo:
        assert repo.refs.read("refs/remotes/origin/main") == v1
        assert maintenance.fsck(repo).ok
        arrived = len(set(repo.store.iter_oids())) - held
        assert 0 < arrived < needed
        pulled = pull(repo)
        assert pulled.status == "fast-forward"
        assert pulled.fetch.objects == needed - arrived
    with Repository.open(b) as b_repo, Repository.open(root) as a:
        assert b_repo.head() == a.head()
        assert list(b_repo.records("HEAD", "big.jsonl")) == list(a.records("HEAD", "big.jsonl"))
        assert maintenance.fsck(b_repo).ok
        assert ops.status(b_repo) == []


# -- a hand-made client ---------------------------------------------------------------------


class Raw:
    """Speaks the protocol with plain httpx, to send what a dsv client never would."""

    def __init__(self, server: Server, key: str, repo: str) -> None:
        self.base = f"{server.url}/v1/{repo}"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {key}"})

    def pack(self, objects: list[tuple[Kind, bytes]]) -> httpx.Response:
        return self.pack_bytes(b"".join(encode_pack(objects)))

    def pack_bytes(self, data: bytes) -> httpx.Response:
        return self.http.post(
            f"{self.base}/packs", content=data, headers={"content-type": PACK_MEDIA_TYPE}
        )

    def refs(self, *updates: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"{self.base}/refs", json={"updates": list(updates)})

    def missing(self, kind: str, oids: list[bytes]) -> set[bytes]:
        reply = self.http.post(
            f"{self.base}/missing", json={"kind": kind, "ids": [o.hex() for o in oids]}
        )
        assert reply.status_code == 200, reply.text
        return {oids[i] for i in reply.json()["missing"]}


def _error(reply: httpx.Response, status: int, code: str) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == reply.headers["x-request-id"]
    message: str = error["message"]
    return message


def _objects() -> dict[str, tuple[Kind, bytes]]:
    """A small, complete, valid history: datapoints, page, dataset, tree, commit."""
    points = [canonicalize(json.dumps({"id": i}).encode()) for i in range(3)]
    ids = [hash_object(Kind.DATAPOINT, p) for p in points]
    page = b"".join(ids)
    page_oid = hash_object(Kind.PAGE, page)
    dataset = encode_object(
        Dataset(Format("jsonl"), (), 3, content_id(page), (Slice(page_oid, 0, 3),))
    )
    tree = encode_object(Tree((TreeEntry("a.jsonl", hash_object(Kind.DATASET, dataset)),)))
    commit = encode_object(Commit(hash_object(Kind.TREE, tree), (), "x <y>", 1, 0, "m\n"))
    out = {f"p{i}": (Kind.DATAPOINT, p) for i, p in enumerate(points)}
    out.update(
        page=(Kind.PAGE, page),
        dataset=(Kind.DATASET, dataset),
        tree=(Kind.TREE, tree),
        commit=(Kind.COMMIT, commit),
    )
    return out


def test_corrupt_and_unconnected_objects_are_refused_whole(server: tuple[Server, str]) -> None:
    running, key = server
    raw = Raw(running, key, "hostile/repo")
    good = _objects()
    every = list(good.values())
    oid = {name: hash_object(*obj) for name, obj in good.items()}

    data = bytearray(b"".join(encode_pack(every)))
    data[30] ^= 0xFF
    assert "pack" in _error(raw.pack_bytes(bytes(data)), 422, "corrupt")
    _error(raw.pack_bytes(bytes(data[:-40])), 422, "corrupt")
    _error(raw.pack_bytes(b"GET / HTTP/1.1\r\n" * 4), 422, "corrupt")
    message = _error(raw.pack([*every, (Kind.DATAPOINT, b'{"b":1,"a":2}')]), 422, "corrupt")
    assert "not canonical JSON" in message
    # A commit without its tree, a page without its datapoints.
    message = _error(raw.pack([good["commit"]]), 422, "unconnected")
    assert "refers to 1 object that neither it nor hostile/repo holds" in message
    _error(raw.pack([good["page"], good["p0"]]), 422, "unconnected")
    # A dataset whose pages do not give its content id.
    wrong = Dataset(Format("jsonl"), (), 3, bytes(32), (Slice(oid["page"], 0, 3),))
    bad = [good["p0"], good["p1"], good["p2"], good["page"], (Kind.DATASET, encode_object(wrong))]
    assert "content id" in _error(raw.pack(bad), 422, "corrupt")
    assert raw.missing("datapoint", [oid["p0"]]) == {oid["p0"]}  # nothing of it was kept

    # Refs may only point at complete commits the repository holds.
    commit = oid["commit"].hex()
    update = {"name": "refs/heads/main", "old": None, "new": commit}
    _error(raw.refs(update), 422, "missing_objects")
    reply = raw.pack(every)
    assert reply.status_code == 200 and reply.json()["objects"] == len(every)
    _error(raw.refs({**update, "name": "refs/heads/a..b"}), 400, "bad_ref_name")
    _error(raw.refs({**update, "name": "refs/remotes/x/y"}), 400, "bad_ref_name")
    _error(raw.refs({**update, "new": oid["tree"].hex()}), 422, "corrupt")  # not a commit
    assert raw.refs(update).status_code == 200
    _error(raw.refs(update), 409, "ref_moved")  # stale: it exists now
    # All or none: one bad update keeps the good one from moving.
    both = [{**update, "name": "refs/heads/x"}, {**update, "name": "refs/tags/t", "old": commit}]
    _error(raw.refs(*both), 409, "ref_moved")
    info = raw.http.get(f"{raw.base}/info").json()
    assert info["refs"] == {"refs/heads/main": commit} and info["head"] == "refs/heads/main"


def test_size_limits_answer_413(server: tuple[Server, str]) -> None:
    running, key = server
    raw = Raw(running, key, "limits/repo")
    message = _error(raw.pack_bytes(b"x" * (LIMIT + 1)), 413, "too_large")
    assert "larger than this server accepts" in message
    reply = raw.http.post(f"{raw.base}/missing", json={"kind": "page", "ids": ["0" * 64] * 501})
    assert "at most 500" in _error(reply, 413, "too_large")


@pytest.mark.parametrize("version", [1, 2])
def test_client_halves_packs_when_a_413_comes_anyway(tmp_path: Path, version: int) -> None:
    """A proxy may take less than the server announced: the client resends in smaller packs."""
    repo = Repository.init(tmp_path / "repo")
    points = [os.urandom(2000).hex().encode() for _ in range(400)]
    bodies = [canonicalize(b'{"x": "' + p + b'"}') for p in points]
    with repo.store.writer() as writer:
        items = Sending()
        items.add(Kind.DATAPOINT, b"".join(writer.write(Kind.DATAPOINT, b) for b in bodies))

    class Proxy:
        info = Info((version,), "t", "a/b", True, None, {}, Limits(4 << 20, 500), True)
        received: list[bytes] = []
        refused = 0

        def send_pack(self, chunks: Iterator[bytes]) -> PackReply:
            data = b"".join(chunks)
            if len(data) > 300_000:
                Proxy.refused += 1
                raise RemoteRefused("too big", None, status=413, code="too_large")
            if version == 1:
                got = [body for _, body in iter_pack([data])]
            else:
                (tmp_path / "sent.pack").write_bytes(data)
                got = [body for _, body in scan_pack(tmp_path / "sent.pack")]
            Proxy.received += got
            return PackReply(len(got), len(got), len(data))

    proxy = Proxy()
    proxy.version = version  # type: ignore[attr-defined]
    packs = _send(repo, proxy, items, lambda _: None)  # type: ignore[arg-type]
    assert Proxy.refused >= 1 and packs >= 3
    assert Proxy.received == bodies


def _info(
    versions: list[int], *, server: str = "dsv", max_ids: int = 100, can_write: bool = False
) -> dict[str, Any]:
    """The /info answer of a scripted remote of repository a/b."""
    return {
        "versions": versions,
        "server": server,
        "repository": "a/b",
        "exists": True,
        "head": None,
        "refs": {},
        "limits": {"max_request_bytes": 1 << 20, "max_ids": max_ids},
        "can_write": can_write,
    }


# -- the HTTP surface ------------------------------------------------------------------------------


def test_health_errors_request_ids_openapi_and_access_log(server: tuple[Server, str]) -> None:
    running, key = server
    assert httpx.get(f"{running.url}/healthz").json()["status"] == "ok"
    reply = httpx.get(f"{running.url}/nowhere", headers={"X-Request-ID": "trace-42"})
    assert reply.headers["x-request-id"] == "trace-42"
    assert _error(reply, 404, "not_found") == "no such endpoint: GET /nowhere"
    reply = httpx.get(
        f"{running.url}/v1/-bad/name/info", headers={"X-API-KEY": key, "X-Request-ID": "a b"}
    )
    assert reply.headers["x-request-id"] != "a b"  # not a safe id: a fresh one instead
    assert "invalid repository name" in _error(reply, 400, "bad_request")
    reply = httpx.post(
        f"{running.url}/v1/a/b/missing",
        headers={"X-API-KEY": key},
        json={"kind": "blob", "ids": []},
    )
    assert "kind" in _error(reply, 400, "bad_request")
    spec = httpx.get(f"{running.url}/openapi.json").json()
    assert {"/v1/{owner}/{name}/packs", "/v1/{owner}/{name}/refs"} <= set(spec["paths"])
    # The access line is written after the answer is sent: wait for it, not a fixed time.
    deadline = time.monotonic() + 10
    log = running.log_path.read_text()
    while not ('"GET /nowhere" 404' in log and "rid=trace-42" in log):
        assert time.monotonic() < deadline, log
        time.sleep(0.02)
        log = running.log_path.read_text()


def test_version_negotiation_and_foreign_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from dsv.errors import RemoteError
    from dsv.remote import connection

    info = _info([3, 4], server="dsv 9", max_ids=10, can_write=True)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/future/b/info":
            return httpx.Response(200, json=info)
        if request.url.path == "/v1/garbled/b/info":
            return httpx.Response(200, text="{not json")
        return httpx.Response(502, text="<html>bad gateway</html>")

    monkeypatch.setattr(connection.httpx, "HTTPTransport", lambda **_: httpx.MockTransport(answer))

    def connect(url: str) -> None:
        connection.Connection(url, key=None, key_source="DSV_API_KEY", name="origin").close()

    with pytest.raises(
        RemoteError, match=r"speaks protocol version\(s\) 3, 4; this dsv speaks 1, 2"
    ):
        connect("http://h/future/b")
    with pytest.raises(RemoteError, match="sent a malformed answer"):
        connect("http://h/garbled/b")
    with pytest.raises(RemoteRefused, match="answered HTTP 502 Bad Gateway") as refused:
        connect("http://h/proxy/b")
    assert refused.value.status == 502


def test_an_object_over_the_limit_is_named(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    root = tmp_path / "a"
    dsv(tmp_path, "init", "a")
    (root / "big.jsonl").write_text(json.dumps({"id": 1, "blob": os.urandom(LIMIT).hex()}) + "\n")
    dsv(root, "add", "big.jsonl")
    dsv(root, "commit", "-m", "one huge datapoint")
    dsv(root, "remote", "add", "origin", f"{running.url}/huge/repo")
    err = dsv(root, "push", code=5).stderr
    assert "more than the remote accepts in one request" in err
    assert "hint: raise the server's --max-request-size" in err


def _pushed(
    tmp_path: Path,
    server: tuple[Server, str],
    monkeypatch: pytest.MonkeyPatch,
    repo: str,
    records: str,
) -> str:
    """Commit `records` as qa.jsonl in a new repository `a`, push it to `repo`; its URL."""
    running, key = server
    monkeypatch.setenv("DSV_API_KEY", key)
    url = f"{running.url}/{repo}"
    root = tmp_path / "a"
    dsv(tmp_path, "init", "a")
    (root / "qa.jsonl").write_text(records)
    dsv(root, "add", "qa.jsonl")
    dsv(root, "commit", "-m", "v1")
    dsv(root, "remote", "add", "origin", url)
    dsv(root, "push")
    return url


def _runs_by_pack(objects: Path, position: dict[bytes, int]) -> list[list[int]]:
    """Per pack, the dataset positions of its datapoints in the order the pack holds them."""
    runs = []
    for pack in sorted((objects / "pack").glob("*.pack")):
        points = [
            position[hash_object(kind, body)]
            for kind, body in scan_pack(pack)
            if kind == Kind.DATAPOINT
        ]
        if points:
            runs.append(points)
    return runs


def test_push_and_clone_store_datapoints_in_their_datasets_order_in_one_pack_a_fetch(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout reads a dataset in order: stored in id order instead, a clone's checkout
    # decompressed a block for nearly every record (3x slower at 100k).
    running = server[0]
    records = "".join(json.dumps({"id": i, "t": "x" * (i % 7)}) + "\n" for i in range(2000))
    url = _pushed(tmp_path, server, monkeypatch, "order/test", records)
    dsv(tmp_path, "clone", url, "b")
    with Repository.open(tmp_path / "b") as repo:
        ids = repo.read_oid_list(ops.dataset_at(repo, "HEAD", "qa.jsonl"))
    position = {oid: i for i, oid in enumerate(split_oids(ids))}
    pushed = _runs_by_pack(running.root / "repos" / "order" / "test" / "objects", position)
    fetched = _runs_by_pack(tmp_path / "b" / ".dsv" / "objects", position)
    # Asked 500 ids at a time, each batch published as it ended, then one pack of them all.
    assert fetched == [list(range(2000))]
    for runs in (pushed, fetched):
        assert sorted(p for run in runs for p in run) == list(range(2000))
        for run in runs:
            assert run == list(range(run[0], run[0] + len(run)))


def test_a_fetch_whose_pack_merge_fails_still_completes(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = "".join(json.dumps({"id": i}) + "\n" for i in range(1200))
    url = _pushed(tmp_path, server, monkeypatch, "merge/fails", records)

    def disk_full(self: ObjectStore, names: list[str]) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ObjectStore, "merge_packs", disk_full)
    dsv(tmp_path, "clone", url, "b")  # the merge is only an optimisation
    assert (tmp_path / "b" / "qa.jsonl").read_text() == records.replace(" ", "")
    assert maintenance.fsck(Repository.open(tmp_path / "b")).ok
    assert len(list((tmp_path / "b" / ".dsv" / "objects" / "pack").glob("*.idx"))) >= 3


def test_a_checkout_writes_datapoints_a_small_fetch_left_loose(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fetch of a few datapoints stores them loose, beside the clone's pack: the parallel
    # checkout, reading packs, once failed on them with "missing object".
    monkeypatch.setattr(materialize, "PARALLEL_MIN", 0)
    lines = [json.dumps({"id": i, "t": "x" * (i % 7)}) + "\n" for i in range(2000)]
    url = _pushed(tmp_path, server, monkeypatch, "loose/fetch", "".join(lines))
    dsv(tmp_path, "clone", url, "b")
    lines[1234] = json.dumps({"id": 1234, "t": "edited"}) + "\n"
    (tmp_path / "a" / "qa.jsonl").write_text("".join(lines))
    dsv(tmp_path / "a", "commit", "-a", "-m", "v2")
    dsv(tmp_path / "a", "push")
    dsv(tmp_path / "b", "pull")
    assert list((tmp_path / "b" / ".dsv" / "objects").glob("??/*"))  # some objects are loose
    assert (tmp_path / "b" / "qa.jsonl").read_text() == "".join(lines).replace(" ", "")
    dsv(tmp_path / "b", "checkout", "HEAD~1")
    dsv(tmp_path / "b", "checkout", "main")
    assert (tmp_path / "b" / "qa.jsonl").read_text() == "".join(lines).replace(" ", "")


def test_a_server_merges_the_small_packs_pushes_leave(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running = server[0]
    lines = [json.dumps({"id": i}) + "\n" for i in range(300)]
    url = _pushed(tmp_path, server, monkeypatch, "many/pushes", "".join(lines))
    packs = running.root / "repos" / "many" / "pushes" / "objects" / "pack"
    for n in range(PACKS_MOST + 6):
        lines[n] = json.dumps({"id": n, "push": n}) + "\n"
        (tmp_path / "a" / "qa.jsonl").write_text("".join(lines))
        dsv(tmp_path / "a", "commit", "-a", "-m", f"v{n + 2}")
        dsv(tmp_path / "a", "push")
    # The server merges in the background, after the writes: soon, not within each push.
    deadline = time.monotonic() + 60
    while len(list(packs.glob("*.idx"))) > PACKS_MOST + 1:
        assert time.monotonic() < deadline, sorted(p.name for p in packs.glob("*.idx"))
        time.sleep(0.1)
    dsv(tmp_path, "clone", url, "b")
    assert (tmp_path / "b" / "qa.jsonl").read_text() == "".join(lines).replace(" ", "")


def test_a_version_2_answer_may_bring_datapoints_along_but_not_more_than_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server may send a stored block whole, with datapoints not asked for (protocol.md
    §5); no more of them than were asked, and never another kind."""
    from dsv.errors import RemoteError
    from dsv.objects import hash_object
    from dsv.pack import PackWriter
    from dsv.remote import connection

    info = _info([1, 2])
    points = [canonicalize(b'{"n": %d}' % i) for i in range(30)]
    oids = [hash_object(Kind.DATAPOINT, p) for p in points]

    def pack_of(objects: list[tuple[Kind, bytes]]) -> bytes:
        writer = PackWriter(tmp_path)
        for kind, body in objects:
            writer.add(kind, hash_object(kind, body), body)
        return (tmp_path / f"{writer.finish()}.pack").read_bytes()

    answers = {
        "whole": pack_of([(Kind.DATAPOINT, p) for p in points]),
        "page": pack_of([(Kind.DATAPOINT, p) for p in points[:10]] + [(Kind.PAGE, oids[0])]),
    }
    served = {"name": "whole"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/info"):
            return httpx.Response(200, json=info)
        return httpx.Response(200, stream=httpx.ByteStream(answers[served["name"]]))

    monkeypatch.setattr(connection.httpx, "HTTPTransport", lambda **_: httpx.MockTransport(answer))
    with connection.Connection(
        "http://h/a/b", key=None, key_source="DSV_API_KEY", name="origin"
    ) as conn:
        conn.scratch = tmp_path
        # 20 asked, 10 more came with them: kept out of what objects() gives.
        assert dict(conn.objects(Kind.DATAPOINT, oids[:20])) == dict(
            zip(oids[:20], points[:20], strict=True)
        )
        with pytest.raises(RemoteError, match="sent an object that was not asked for"):
            list(conn.objects(Kind.DATAPOINT, oids[:10]))  # 20 unasked for 10 asked
        served["name"] = "page"
        with pytest.raises(RemoteError, match="sent an object that was not asked for"):
            list(conn.objects(Kind.DATAPOINT, oids[:10]))


def test_a_clone_re_hashes_what_the_server_read_from_a_pack_that_lies(
    tmp_path: Path, server: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server's bulk reads trust its packs (docs/format.md §4, trust); a client trusts no
    # server, so a pack whose index gives an id another body is caught on receipt.
    from dsv.pack import PackWriter

    lines = "".join(json.dumps({"id": i, "text": "x" * i}) + "\n" for i in range(300))
    url = _pushed(tmp_path, server, monkeypatch, "lying/pack", lines)
    store = ObjectStore(server[0].root / "repos" / "lying" / "pack" / "objects")
    try:
        [pack] = store.packs
        entries = [(pack.oid_at(i), *pack.read_at(i)) for i in range(pack.count)]
        forged = next(n for n, (_, kind, _) in enumerate(entries) if kind == Kind.DATAPOINT)
        writer = PackWriter(store.pack_dir)
        for n, (oid, kind, body) in enumerate(entries):
            writer.add(kind, oid, b'{"forged":true}' if n == forged else body)
        writer.finish()
        store.remove_pack(pack.name)
    finally:
        store.close()
    # A server started now opens the lying pack (the running one holds the old one open).
    with Server(server[0].root) as fresh:
        url = f"{fresh.url}/lying/pack"
        err = dsv(tmp_path, "clone", url, "b", code=5).stderr
    # The forged body hashes to an id not asked for: under protocol version 2 a datapoint
    # may come unasked (a block sent whole), so what the client finds is the one left out.
    assert err.splitlines()[1:] == [f"error: remote 'origin' ({url}) left out 1 object asked for"]


def test_a_version_2_answer_larger_than_the_cap_is_refused_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server is not trusted with the client's disk: an endless answer stops at the cap."""
    from dsv.errors import RemoteError
    from dsv.objects import hash_object
    from dsv.remote import connection

    info = _info([2])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/info"):
            return httpx.Response(200, json=info)
        return httpx.Response(200, stream=httpx.ByteStream(b"x" * 5000))

    monkeypatch.setattr(connection.httpx, "HTTPTransport", lambda **_: httpx.MockTransport(answer))
    monkeypatch.setattr(connection, "MAX_ANSWER_BYTES", 1000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    oid = hash_object(Kind.DATAPOINT, b"{}")
    with connection.Connection(
        "http://h/a/b", key=None, key_source="DSV_API_KEY", name="origin"
    ) as conn:
        conn.scratch = scratch
        with pytest.raises(RemoteError, match="sent an answer of more than 0 MiB"):
            list(conn.object_packs(Kind.DATAPOINT, [oid]))
    assert list(scratch.iterdir()) == []


def test_a_push_plan_gives_its_ids_in_batches_from_any_point() -> None:
    """What a push sends: its ids in order, in batches from any point."""
    ids = [i.to_bytes(4, "big") * 8 for i in range(20)]
    sending = Sending()
    sending.add(Kind.DATAPOINT, b"".join(ids[:10]))
    sending.add(Kind.PAGE, b"")
    sending.add(Kind.PAGE, b"".join(ids[10:15]))
    assert len(sending) == 15
    assert list(sending.batches(8, 4)) == [
        (Kind.DATAPOINT, ids[8:10]),
        (Kind.PAGE, ids[10:14]),
        (Kind.PAGE, ids[14:15]),
    ]
    assert list(sending.batches(15, 4)) == []


@pytest.mark.parametrize("order", ["as asked", "out of order", "repeated", "left out"])
def test_the_ids_still_to_come_are_counted_whatever_order_they_come_in(order: str) -> None:
    """An answer is checked against its request by comparing lists while it follows the
    request's order, by a set from the first object out of it: the same counts either way."""
    from dsv.remote.connection import _Asked

    batch = [bytes([i]) * 32 for i in range(10)]
    asked = _Asked(batch)
    sent = {
        "as asked": [batch[:4], batch[4:]],
        "out of order": [batch[:3], [batch[5], batch[3], batch[4]], batch[6:]],
        "repeated": [batch[:4], batch[3:]],
        "left out": [batch[:4], batch[5:]],
    }[order]
    flags = [asked.take(part) for part in sent]
    # In order, each part is taken whole (None); from the first object out of order, each
    # object is said to have been asked or not.
    assert flags[0] is None
    taken: list[bool] = []
    for part, found in zip(sent, flags, strict=True):
        taken += [True] * len(part) if found is None else found
    assert taken.count(False) == (1 if order == "repeated" else 0)
    assert len(asked) == (1 if order == "left out" else 0)
