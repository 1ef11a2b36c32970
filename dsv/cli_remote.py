"""The remote commands of `dsv`: remote, push, fetch, pull, clone, serve and keys.

`register(main)` adds them to the main command group. Heavy modules (httpx, litestar,
uvicorn) are imported inside the commands, so other commands start as fast as before.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dsv.cli_common import DsvGroup, format_size, is_quiet, open_repo, progress_line, quiet_option
from dsv.text import plural

if TYPE_CHECKING:
    from dsv.remote.client import FetchResult, RefResult
    from dsv.server.storage.sqlite import SqliteMetaStore

__all__ = ["register"]

SHORT = 12


def _short(oid: bytes | None) -> str:
    return oid.hex()[:SHORT] if oid else "-"


def _print_refs(refs: list[RefResult], remote: str | None) -> None:
    marks = {
        "new": "*",
        "updated": " ",
        "forced": "+",
        "up-to-date": "=",
        "rejected": "!",
        "deleted": "-",
    }
    for r in refs:
        name = r.name.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if r.name.startswith("refs/envs/"):
            name = "env " + r.name.removeprefix("refs/envs/")
        if r.target != r.name and remote is not None:
            name += " -> " + r.target.removeprefix("refs/remotes/").removeprefix("refs/tags/")
        if r.status == "rejected":
            change = r.reason
        elif r.new is None:
            change = f"(was {_short(r.old)})" if r.old else ""
        elif r.status == "up-to-date" or r.old is None:
            change = _short(r.new)
        else:
            change = f"{_short(r.old)}..{_short(r.new)}"
        click.echo(f" {marks.get(r.status, ' ')} {r.status:<11} {name}  {change}")


def _print_fetch(result: FetchResult, url: str) -> None:
    changed = [r for r in result.refs if r.status != "up-to-date"]
    if changed:
        click.echo(f"From {url}")
        _print_refs(changed, "")
    if result.objects:
        click.echo(
            f"Received {plural(result.objects, 'object')}, {format_size(result.bytes_received)}"
        )


# -- remote ----------------------------------------------------------------------------------


@click.group("remote", cls=DsvGroup)
def remote() -> None:
    """Manage the remotes this repository pushes to and fetches from.

    \b
    Example:
      dsv remote add origin http://127.0.0.1:8080/acme/evals
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--key-env", metavar="VAR", help="Read the API key from $VAR, not $DSV_API_KEY.")
@click.pass_context
def remote_add(ctx: click.Context, name: str, url: str, key_env: str | None) -> None:
    """Add remote NAME at URL (http://HOST:PORT/OWNER/NAME).

    \b
    Example:
      dsv remote add origin http://127.0.0.1:8080/acme/evals --key-env ACME_KEY
    """
    from dsv.remote import add_remote

    with open_repo(ctx) as repo:
        added = add_remote(repo, name, url, key_env=key_env)
    click.echo(f"Added remote {name} {added.url}")


@remote.command("list")
@click.pass_context
def remote_list(ctx: click.Context) -> None:
    """List remotes with their URL and where their key comes from.

    \b
    Example:
      dsv remote list
    """
    from dsv.remote import list_remotes

    with open_repo(ctx) as repo:
        remotes = list_remotes(repo)
    for name, r in remotes.items():
        click.echo(f"{name}\t{r.url}\t(key from ${r.key_env or 'DSV_API_KEY'})")


@remote.command("remove")
@click.argument("name")
@click.pass_context
def remote_remove(ctx: click.Context, name: str) -> None:
    """Remove remote NAME and its remote-tracking refs.

    \b
    Example:
      dsv remote remove origin
    """
    from dsv.remote import remove_remote

    with open_repo(ctx) as repo:
        removed = remove_remote(repo, name)
    click.echo(f"Removed remote {name} ({plural(len(removed), 'remote-tracking ref')})")


# -- push, fetch, pull, clone ---------------------------------------------------------------------


@click.command("push")
@click.argument("remote_name", metavar="[REMOTE]", required=False, default="origin")
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option("--force", "-f", is_flag=True, help="Move remote refs even when versions are lost.")
@click.option("--tags", is_flag=True, help="Push every tag too.")
@click.option("--envs", is_flag=True, help="Push every environment too.")
@quiet_option
@click.pass_context
def push(
    ctx: click.Context,
    remote_name: str,
    refs: tuple[str, ...],
    force: bool,
    tags: bool,
    envs: bool,
) -> None:
    """Send branches, tags or environments (default: the current branch) to REMOTE.

    Refs move together or not at all, once the remote holds all their data.

    \b
    Examples:
      dsv push
      dsv push origin main production --tags
    """
    from dsv.errors import BadInput
    from dsv.remote.client import push as push_refs

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        if remote_name not in repo.config.remotes and any(
            repo.refs.read(prefix + remote_name)
            for prefix in ("refs/heads/", "refs/tags/", "refs/envs/")
        ):
            raise BadInput(
                f"no remote named {remote_name!r}",
                hint=f"the remote comes first: dsv push origin {remote_name}",
            )
        url = repo.config.remotes[remote_name].url if remote_name in repo.config.remotes else ""
        result = push_refs(
            repo, remote_name, list(refs), force=force, tags=tags, envs=envs, progress=progress.fn
        )
    if is_quiet(ctx):
        return
    click.echo(f"To {url}")
    _print_refs(result.refs, None)
    if result.objects:
        packs = plural(result.packs, "pack")
        objects = plural(result.objects, "object")
        click.echo(f"Sent {objects} in {packs}, {format_size(result.bytes_sent)}")
    elif all(r.status == "up-to-date" for r in result.refs):
        click.echo("Everything up to date")


@click.command("fetch")
@click.argument("remote_name", metavar="[REMOTE]", required=False, default="origin")
@quiet_option
@click.pass_context
def fetch(ctx: click.Context, remote_name: str) -> None:
    """Bring in REMOTE's branches, tags and environments (as REMOTE/NAME, REMOTE/envs/NAME).

    \b
    Examples:
      dsv fetch
      dsv checkout origin/envs/production
    """
    from dsv.remote.client import fetch as fetch_refs

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        result = fetch_refs(repo, remote_name, progress=progress.fn)
        url = repo.config.remotes[remote_name].url
    if not is_quiet(ctx):
        _print_fetch(result, url)


@click.command("pull")
@click.argument("remote_name", metavar="[REMOTE]", required=False, default="origin")
@quiet_option
@click.pass_context
def pull(ctx: click.Context, remote_name: str) -> None:
    """Fetch from REMOTE and fast-forward the current branch, writing the new files.

    \b
    Example:
      dsv pull
    """
    from dsv.remote.client import pull as pull_branch

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        result = pull_branch(repo, remote_name, progress=progress.fn)
        url = repo.config.remotes[remote_name].url
    if is_quiet(ctx):
        return
    _print_fetch(result.fetch, url)
    tracking = f"{remote_name}/{result.branch}"
    if result.status == "fast-forward":
        click.echo(f"Fast-forward {result.branch} {_short(result.old)}..{_short(result.new)}")
    elif result.status == "ahead":
        click.echo(f"{result.branch} is ahead of {tracking}; 'dsv push' sends your versions")
    else:
        click.echo("Already up to date.")


@click.command("clone")
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--key-env", metavar="VAR", help="Read the API key from $VAR, not $DSV_API_KEY.")
@quiet_option
@click.pass_context
def clone(ctx: click.Context, url: str, directory: str | None, key_env: str | None) -> None:
    """Copy the repository at URL into DIRECTORY (default: its NAME) and check it out.

    \b
    Example:
      dsv clone http://127.0.0.1:8080/acme/evals
    """
    from dsv.remote import parse_url
    from dsv.remote.client import clone as clone_repo

    base = (ctx.obj or {}).get("cwd") or "."
    name = directory or parse_url(url).repo.split("/")[1]
    target = os.path.join(base, name)
    quiet = is_quiet(ctx)
    if not quiet:
        click.echo(f"Cloning into '{name}'...", err=True)
    with progress_line(ctx) as progress:
        result = clone_repo(url, target, key_env=key_env, progress=progress.fn)
    if result.branch is None:
        click.echo("warning: the repository has no branches yet", err=True)
    if quiet:
        return
    if result.fetch.objects:
        objects = plural(result.fetch.objects, "object")
        click.echo(f"Received {objects}, {format_size(result.fetch.bytes_received)}")
    if result.branch is not None:
        click.echo(f"Checked out branch {result.branch} in {result.path}")


# -- serve and keys -----------------------------------------------------------------------------


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
def serve(
    root: str,
    host: str,
    port: int,
    no_auth: bool,
    max_request: int,
    max_ids: int,
    environments: tuple[str, ...],
) -> None:
    """Serve the repositories under DIR over HTTP (protocol: docs/protocol.md).

    A repository OWNER/NAME is created by its first push. Keys: 'dsv keys create'.
    Also serves the Humanloop Datasets API under /v5 and /v4 (docs/humanloop.md).
    Logs one access line per request, with its request id, on stderr.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope write --repo acme/evals
      dsv serve --root /srv/dsv --port 8080
    """
    import logging  # here: only the server logs

    from dsv.server import ServerConfig
    from dsv.server import serve as run
    from dsv.server.dialects.humanloop.types import DEFAULT_ENVIRONMENTS, check_environments

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    config = ServerConfig(
        root=str(Path(root).resolve()),
        auth=not no_auth,
        max_request_bytes=max_request,
        max_ids=max_ids,
        environments=check_environments(environments or DEFAULT_ENVIRONMENTS),
    )
    run(config, host=host, port=port, announce=lambda line: click.echo(line))


@click.group("keys", cls=DsvGroup)
def keys() -> None:
    """Manage the API keys of a server root.

    \b
    Example:
      dsv keys create --root /srv/dsv --scope read --repo acme/evals
    """


def _meta(root: str) -> SqliteMetaStore:
    from dsv.errors import BadInput
    from dsv.server.storage.sqlite import SqliteMetaStore

    if not os.path.isdir(root):
        raise BadInput(f"{root}: no such directory", hint="give the --root of 'dsv serve'")
    return SqliteMetaStore(Path(root) / "meta.sqlite3")


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


_COMMANDS = (remote, push, fetch, pull, clone, serve, keys)


def register(main: click.Group) -> None:
    """Add the remote commands to `main` (once)."""
    for command in _COMMANDS:
        if command.name not in main.commands:
            main.add_command(command)
