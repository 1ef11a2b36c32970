"""The server's commands: serve, and keys for it."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dsv.cli.common import DsvGroup

if TYPE_CHECKING:
    from dsv.server.storage import MetaStore

__all__ = ["COMMANDS", "copy_server", "keys", "serve", "ui"]


_meta_option = click.option(
    "--meta",
    "meta_dsn",
    envvar="DSV_META",
    metavar="DSN",
    help="Keep repositories, refs and keys in PostgreSQL (postgresql://…; PG* variables and "
    "~/.pgpass fill in what the DSN leaves out). Env: DSV_META.",
)


@click.command("serve")
@click.option(
    "--root",
    required=True,
    metavar="DIR",
    help="Where repositories, refs and keys live; with --objects and --meta, only this "
    "server's read cache and temporary files.",
)
@click.option(
    "--objects",
    envvar="DSV_OBJECTS",
    metavar="s3://BUCKET/PREFIX",
    help="Keep objects in S3 (credentials, region and endpoint from AWS_*). Env: DSV_OBJECTS.",
)
@_meta_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-auth", is_flag=True, help="Accept requests without keys (loopback only).")
@click.option(
    "--max-request-size",
    "max_request",
    default=64 << 20,
    show_default=True,
    type=click.IntRange(min=1 << 20),
    metavar="BYTES",
    help="Largest request body (at least 1 MiB, so the largest page fits); bigger get 413.",
)
@click.option(
    "--max-ids",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="Most ids in one request.",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    metavar="NAME",
    help="An environment of the Humanloop API (repeat; the first is the default). "
    "Default: production, staging.",
)
@click.option(
    "--api-repo",
    default="api/datasets",
    show_default=True,
    metavar="OWNER/NAME",
    help="Where the orq.ai, TensorZero and Overmind Lab APIs keep datasets for a key not "
    "limited to one repository (docs/dialects.md).",
)
@click.option(
    "--check-workers",
    type=click.IntRange(min=0),
    metavar="N",
    help="Processes that check received datapoints beside the receiving thread (default: "
    "one less than the cores; 0: in the request's thread). With several servers on one "
    "machine, share the cores out.",
)
def serve(
    root: str,
    objects: str | None,
    meta_dsn: str | None,
    host: str,
    port: int,
    no_auth: bool,
    max_request: int,
    max_ids: int,
    environments: tuple[str, ...],
    api_repo: str,
    check_workers: int | None,
) -> None:
    """Serve the repositories under DIR over HTTP (protocol: docs/protocol.md).

    A repository OWNER/NAME is created by its first push. Keys: 'dsv keys create'.
    Also serves the Humanloop Datasets API under /v5 and /v4 (docs/humanloop.md) and
    orq.ai's under /v2 (docs/orq.md), TensorZero's under /v1/datasets (docs/tensorzero.md) and
    Overmind Lab's under /api/datasets (docs/overmind.md), in --api-repo unless the key is for
    one repository; and a web view under /ui (docs/web.md).
    Logs one access line per request, with its request id, on stderr.

    \b
    Any number of servers may share one --objects and one --meta (docs/deploy.md).

    \b
    Example:
      dsv keys create --root /srv/dsv --scope write --repo acme/evals
      dsv serve --root /srv/dsv --port 8080
      dsv serve --root /var/cache/dsv --objects s3://acme-dsv/prod \\
        --meta postgresql://dsv@db.internal/dsv
    """
    import logging  # here: only the server logs

    from dsv.server import ServerConfig
    from dsv.server import serve as run
    from dsv.server.service import DEFAULT_ENVIRONMENTS, check_environments
    from dsv.server.storage import check_repo_name

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    config = ServerConfig(
        root=str(Path(root).resolve()),
        objects=objects,
        meta=meta_dsn,
        auth=not no_auth,
        max_request_bytes=max_request,
        max_ids=max_ids,
        environments=check_environments(environments or DEFAULT_ENVIRONMENTS),
        api_repo=check_repo_name(api_repo),
        check_workers=check_workers,
    )
    run(config, host=host, port=port, announce=lambda line: click.echo(line))


@click.command("ui")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def ui(ctx: click.Context, port: int) -> None:
    """Browse this repository's datasets, versions, diffs and environments in a web browser.

    Serves the web view (docs/web.md) of the current repository on 127.0.0.1 only, without
    keys, and prints its URL; stop it with Ctrl-C.

    \b
    Example:
      dsv ui --port 8765
    """
    import logging  # here: only the server logs

    from dsv.server import serve_repository

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    where = Path((ctx.obj or {}).get("cwd") or ".")
    serve_repository(where, port=port, announce=lambda line: click.echo(line, nl=True))


@click.group("keys", cls=DsvGroup)
def keys() -> None:
    """Manage the API keys of a server: its --root, or its --meta database when servers share
    one (a key made or revoked there holds on every server at once).

    \b
    Example:
      dsv keys create --root /srv/dsv --scope read --repo acme/evals
      dsv keys revoke --meta postgresql://dsv@db.internal/dsv 3fa2c1d9e0b1
    """


def _meta(root: str | None, dsn: str | None) -> MetaStore:
    from dsv.errors import BadInput
    from dsv.server.storage import open_meta

    if dsn is not None:
        return open_meta(None, dsn)
    if root is None:
        raise BadInput("no server given", hint="give the --root (or --meta) of 'dsv serve'")
    if not os.path.isdir(root):
        raise BadInput(f"{root}: no such directory", hint="give the --root of 'dsv serve'")
    return open_meta(Path(root))


F = TypeVar("F", bound=Callable[..., Any])


def _root_option(command: F) -> F:
    """--root DIR or --meta DSN: where the server keeps its keys."""
    command = _meta_option(command)
    return click.option("--root", metavar="DIR", help="The server root ('dsv serve --root').")(
        command
    )


@keys.command("create")
@_root_option
@click.option(
    "--scope", required=True, type=click.Choice(["read", "write"]), help="What it may do."
)
@click.option("--repo", metavar="OWNER/NAME", help="Limit the key to one repository.")
@click.option("--note", default="", help="Whose key it is, for 'keys list'.")
def keys_create(
    root: str | None, meta_dsn: str | None, scope: str, repo: str | None, note: str
) -> None:
    """Create an API key; it is printed once, as the last line.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope write --repo acme/evals | tail -1
    """
    from dsv.server.keys import create_key

    if root is not None and meta_dsn is None:
        Path(root).mkdir(parents=True, exist_ok=True)
    meta = _meta(root, meta_dsn)
    try:
        record, key = create_key(meta, "write" if scope == "write" else "read", repo, note=note)
    finally:
        meta.close()
    where = f"repository {repo}" if repo else "every repository"
    click.echo(f"Created {scope} key {record.id} for {where}.")
    click.echo("It is shown only now; only its SHA-256 is stored. The key:")
    click.echo(key)


@keys.command("list")
@_root_option
def keys_list(root: str | None, meta_dsn: str | None) -> None:
    """List keys: id, scope, repository, creation time and whether revoked.

    \b
    Example:
      dsv keys list --root /srv/dsv
    """
    meta = _meta(root, meta_dsn)
    try:
        records = meta.list_keys()
    finally:
        meta.close()
    for k in records:
        created = dt.datetime.fromtimestamp(k.created, dt.UTC).strftime("%Y-%m-%d %H:%M")
        state = "revoked" if k.revoked is not None else "active"
        note = f"  {k.note}" if k.note else ""
        click.echo(f"{k.id}  {k.scope:<5}  {k.repo or '*':<24}  {created}  {state}{note}")


@keys.command("revoke")
@_root_option
@click.argument("key_id", metavar="ID")
def keys_revoke(root: str | None, meta_dsn: str | None, key_id: str) -> None:
    """Revoke key ID at once: requests with it get 401.

    \b
    Example:
      dsv keys revoke --root /srv/dsv 3fa2c1d9e0b1
    """
    from dsv.server.keys import revoke_key

    meta = _meta(root, meta_dsn)
    try:
        revoke_key(meta, key_id)
    finally:
        meta.close()
    click.echo(f"Revoked key {key_id}")


@click.command("copy-server")
@click.option("--root", required=True, metavar="DIR", help="The embedded root to copy from.")
@click.option(
    "--objects",
    required=True,
    envvar="DSV_OBJECTS",
    metavar="s3://BUCKET/PREFIX",
    help="Where the objects go (AWS_* as for 'dsv serve').",
)
@click.option(
    "--meta",
    "meta_dsn",
    required=True,
    envvar="DSV_META",
    metavar="DSN",
    help="The PostgreSQL database the rest goes to (postgresql://…).",
)
@click.option(
    "--cache",
    metavar="DIR",
    help="Read cache of the copying side (default: a temporary directory, removed after).",
)
def copy_server(root: str, objects: str, meta_dsn: str, cache: str | None) -> None:
    """Copy a server root into S3 + PostgreSQL, then verify it from the far side.

    Every repository's packs, refs and default branch, every key and the Humanloop API's
    dataset ids, moves and version notes are copied; then every object reachable from every
    ref is read back from S3 (with an empty cache) and re-hashed. Stop the old server first;
    a copy cut short is finished by running it again.

    \b
    Example:
      dsv copy-server --root /srv/dsv --objects s3://acme-dsv/prod \\
        --meta postgresql://dsv@db.internal/dsv
    """
    import shutil
    import tempfile

    from dsv.errors import BadInput
    from dsv.server.moving import copy_root, verify_copy
    from dsv.server.storage import open_storage

    if not os.path.isdir(root):
        raise BadInput(f"{root}: no such directory", hint="give the --root of 'dsv serve'")
    work = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="dsv-copy-"))
    try:
        blobs, meta = open_storage(work / "copy", objects=objects, meta=meta_dsn)
        try:
            report = copy_root(Path(root), blobs, meta, progress=click.echo)
        finally:
            blobs.close()
        click.echo(
            f"Copied {report.repos} repositories ({report.packs} packs, {report.refs} refs), "
            f"{report.keys} keys, {report.datasets} API datasets."
        )
        # Verified through a store with an empty cache: every byte comes from S3.
        from dsv.server.storage.s3 import S3BlobStore

        fresh = S3BlobStore(objects, work / "verify")
        try:
            count = verify_copy(fresh, meta)
        finally:
            fresh.close()
            meta.close()
        click.echo(f"Verified: {count} objects reachable from every ref, read back from S3.")
    finally:
        if not cache:
            shutil.rmtree(work, ignore_errors=True)


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (serve, ui, keys, copy_server)
