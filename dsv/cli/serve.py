"""The server's commands: serve, and keys for it."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dsv.cli.common import DsvGroup

if TYPE_CHECKING:
    from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = ["keys", "serve", "ui"]


@click.command("serve")
@click.option(
    "--root", required=True, metavar="DIR", help="Where repositories, refs and keys live."
)
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
    default=10_000,
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
def serve(
    root: str,
    host: str,
    port: int,
    no_auth: bool,
    max_request: int,
    max_ids: int,
    environments: tuple[str, ...],
    api_repo: str,
) -> None:
    """Serve the repositories under DIR over HTTP (protocol: docs/protocol.md).

    A repository OWNER/NAME is created by its first push. Keys: 'dsv keys create'.
    Also serves the Humanloop Datasets API under /v5 and /v4 (docs/humanloop.md) and
    orq.ai's under /v2 (docs/orq.md) and TensorZero's under /v1/datasets (docs/tensorzero.md),
    in --api-repo unless the key is for one repository.
    Logs one access line per request, with its request id, on stderr.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope write --repo acme/evals
      dsv serve --root /srv/dsv --port 8080
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
        auth=not no_auth,
        max_request_bytes=max_request,
        max_ids=max_ids,
        environments=check_environments(environments or DEFAULT_ENVIRONMENTS),
        api_repo=check_repo_name(api_repo),
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
    """Manage the API keys of a server root.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope read --repo acme/evals
    """


def _meta(root: str) -> SqliteMetaStore:
    from dsv.errors import BadInput
    from dsv.server.storage import open_meta

    if not os.path.isdir(root):
        raise BadInput(f"{root}: no such directory", hint="give the --root of 'dsv serve'")
    return open_meta(Path(root))


_root_option = click.option(
    "--root", required=True, metavar="DIR", help="The server root ('dsv serve --root')."
)


@keys.command("create")
@_root_option
@click.option(
    "--scope", required=True, type=click.Choice(["read", "write"]), help="What it may do."
)
@click.option("--repo", metavar="OWNER/NAME", help="Limit the key to one repository.")
@click.option("--note", default="", help="Whose key it is, for 'keys list'.")
def keys_create(root: str, scope: str, repo: str | None, note: str) -> None:
    """Create an API key; it is printed once, as the last line.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope write --repo acme/evals | tail -1
    """
    from dsv.server.keys import create_key

    Path(root).mkdir(parents=True, exist_ok=True)
    meta = _meta(root)
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
def keys_list(root: str) -> None:
    """List keys: id, scope, repository, creation time and whether revoked.

    \b
    Example:
      dsv keys list --root /srv/dsv
    """
    meta = _meta(root)
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
def keys_revoke(root: str, key_id: str) -> None:
    """Revoke key ID at once: requests with it get 401.

    \b
    Example:
      dsv keys revoke --root /srv/dsv 3fa2c1d9e0b1
    """
    from dsv.server.keys import revoke_key

    meta = _meta(root)
    try:
        revoke_key(meta, key_id)
    finally:
        meta.close()
    click.echo(f"Revoked key {key_id}")
