"""Shared fixtures: a repository in a temp dir and a CliRunner bound to it; a server root and
its API keys for the tests that start a real `dsv serve` (benchmarks.push.Server)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

from benchmarks.push import Server
from benchmarks.services import Deployment, Postgres, SeaweedFS
from dsv.cli import main
from dsv.server.keys import create_key
from dsv.server.storage.sqlite import SqliteMetaStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# CI replays a fixed set of examples so a run is reproducible; local runs keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSV_AUTHOR_NAME", "Test User")
    monkeypatch.setenv("DSV_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("DSV_LOCK_TIMEOUT", "0.5")


@pytest.fixture(autouse=True)
def _user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """dsv.load's user cache in the test run's temp directory, never the user's own."""
    monkeypatch.setenv("DSV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "user-cache"))


class Dsv:
    """Runs `dsv` commands in one directory, as a user would type them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Result:
        result = self.runner.invoke(main, ["-C", str(self.root), *args], input=input)
        assert result.exit_code == code, (
            f"dsv {' '.join(args)} exited {result.exit_code}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
        )
        return result

    def write(self, name: str, records: list[dict[str, Any]]) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path


QA = [{"id": i, "q": f"question {i}", "a": str(i * 2)} for i in range(1, 6)]
ONE_ERROR_LINE = re.compile(r"error: [^\n]+\n(hint: [^\n]+\n)?\Z")


def head_of(dsv: Dsv, rev: str = "HEAD") -> str:
    """The full id of the version `rev` names, as `dsv show --json` gives it."""
    return str(json.loads(dsv("show", "--json", rev).stdout)["oid"])


def commit_records(dsv: Dsv, name: str, records: list[dict[str, Any]], message: str) -> str:
    """Write, add (keyed by `id`) and commit `records` as `name`; the new version's id."""
    dsv.write(name, records)
    dsv("add", name, "--key", "id")
    dsv("commit", "-m", message)
    return head_of(dsv)


def datapoint_oid(record: dict[str, Any]) -> str:
    """A record's datapoint id, computed from the format's rules, not by dsv."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake3.blake3(b"datapoint\x00" + canonical.encode()).hexdigest()


def assert_one_error_line(stderr: str) -> None:
    """What every refused command prints: one `error:` line, maybe a `hint:` line, no traceback."""
    assert ONE_ERROR_LINE.match(stderr), stderr
    assert "Traceback" not in stderr


@pytest.fixture
def packs_of_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs written from now on have frames without content checksums, as dsv wrote them
    before format version 8: reads re-hash their bodies (docs/format.md §4, trust)."""
    import zstandard

    real = zstandard.ZstdCompressor

    def without_checksums(*args: Any, **kwargs: Any) -> zstandard.ZstdCompressor:
        return real(*args, **{**kwargs, "write_checksum": False})

    monkeypatch.setattr(zstandard, "ZstdCompressor", without_checksums)


@pytest.fixture
def parsed_lines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches of lines the JSONL reader canonicalises from now on (clear it to
    forget earlier reads): how a test tells that cached lines were not parsed again."""
    from dsv import ingest

    parsed: list[int] = []
    real = ingest.canonicalize_many

    def counting(raws: list[bytes]) -> list[bytes]:
        parsed.append(len(raws))
        return real(raws)

    monkeypatch.setattr(ingest, "canonicalize_many", counting)
    return parsed


@pytest.fixture
def dsv(tmp_path: Path) -> Iterator[Dsv]:
    runner = Dsv(tmp_path)
    runner("init")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield runner
    finally:
        os.chdir(cwd)


# (scope, repo or None for every repository) -> a new API key on the server root.
KeyMaker = Callable[..., str]


def key_maker(root: Path) -> KeyMaker:
    """Makes API keys on server root `root`, as `dsv keys create` does."""

    def make(scope: str, repo: str | None = None) -> str:
        meta = SqliteMetaStore(root / "meta.sqlite3")
        try:
            return create_key(meta, "write" if scope == "write" else "read", repo)[1]
        finally:
            meta.close()

    return make


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty root for the module's `dsv serve`."""
    root = tmp_path_factory.mktemp("server") / "root"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def server_keys(server_root: Path) -> KeyMaker:
    """Makes keys on `server_root`: `server_keys("write", "acme/evals")`."""
    return key_maker(server_root)


@pytest.fixture(scope="module")
def server(server_root: Path, server_keys: KeyMaker) -> Iterator[tuple[Server, str]]:
    """The module's `dsv serve` on 127.0.0.1 with default limits, and a write key for every
    repository; a module that needs other flags defines its own `server` over `server_root`."""
    key = server_keys("write")
    with Server(server_root) as running:
        yield running, key


@pytest.fixture(scope="session")
def hosted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, KeyMaker]]:
    """One `dsv serve` on 127.0.0.1 for the whole run, whose dialects (Humanloop, …) the
    hosted-platform remotes are tested against (tests/test_remote_hosted_*.py), and a maker
    of its keys."""
    root = tmp_path_factory.mktemp("hosted") / "root"
    root.mkdir()
    with Server(root) as running:
        yield running, key_maker(root)


# -- the shared stores: one SeaweedFS and one PostgreSQL for the whole run ----------------------


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """SeaweedFS's S3 on 127.0.0.1 with bucket `dsv`; this process gets its AWS_* settings."""
    with SeaweedFS() as running:
        saved = {name: os.environ.get(name) for name in running.env}
        os.environ.update(running.env)
        try:
            yield running
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on 127.0.0.1; `postgres.database()` makes an empty database."""
    with Postgres() as running:
        yield running


@pytest.fixture(scope="session")
def deployment(
    seaweedfs: SeaweedFS, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Three `dsv serve` processes sharing one S3 prefix and one PostgreSQL database."""
    with Deployment(seaweedfs, postgres, tmp_path_factory.mktemp("deployment")) as running:
        yield running
