"""The remote commands of `dsv`: remote, push, fetch, pull, clone, serve and keys.

`register(main)` adds them to the main command group. Heavy modules (httpx, litestar,
uvicorn) are imported inside the commands, so other commands start as fast as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dsv.cli.common import DsvGroup, format_size, is_quiet, open_repo, progress_line, quiet_option
from dsv.project import ignore_in_git
from dsv.text import plural

if TYPE_CHECKING:
    from dsv.remote.client import FetchResult, RefResult

__all__ = ["COMMANDS", "clone", "fetch", "pull", "push", "remote"]

SHORT = 12


def _short(oid: bytes | None) -> str:
    return oid.hex()[:SHORT] if oid else "-"


def _print_refs(refs: list[RefResult], remote: str | None) -> None:
    marks = {
        "new": "*",
        "updated": " ",
        "forced": "+",
        "rebased": "*",
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
        if r.status == "rebased":
            change += " (your deployments replayed on the remote's)"
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
@click.option(
    "--force", "-f", is_flag=True, help="Replace working files that differ from the new version."
)
@click.option("--ff-only", is_flag=True, help="Refuse when the branches have diverged.")
@quiet_option
@click.pass_context
def pull(ctx: click.Context, remote_name: str, force: bool, ff_only: bool) -> None:
    """Fetch from REMOTE and fast-forward the current branch, writing the new files; when
    the branches have diverged, merge (as 'dsv merge REMOTE/BRANCH').

    Working files that differ from the new version are refused, unless --force (in a git
    project, git still holds them).

    \b
    Example:
      dsv pull
    """
    from dsv.remote.client import pull as pull_branch

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        result = pull_branch(repo, remote_name, force=force, ff_only=ff_only, progress=progress.fn)
        url = repo.config.remotes[remote_name].url
    tracking = f"{remote_name}/{result.branch}"
    if result.status == "conflicts":
        from dsv.cli.merging import conflict_line

        if not is_quiet(ctx):
            _print_fetch(result.fetch, url)
        for c in result.conflicts:
            click.echo(conflict_line(c))
        click.echo(
            f"merging {tracking} stopped at conflicts: resolve them (edit and 'dsv add', or "
            "'dsv resolve --ours|--theirs'), then 'dsv merge --continue'; or 'dsv merge --abort'"
        )
        ctx.exit(1)
    if is_quiet(ctx):
        return
    _print_fetch(result.fetch, url)
    if result.status == "merged":
        click.echo(f"Merged {tracking} into {result.branch}: {_short(result.new)}")
    elif result.status == "fast-forward":
        click.echo(f"Fast-forward {result.branch} {_short(result.old)}..{_short(result.new)}")
    elif result.status == "ahead":
        click.echo(f"{result.branch} is ahead of {tracking}; 'dsv push' sends your versions")
    else:
        click.echo("Already up to date.")


@click.command("clone")
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--key-env", metavar="VAR", help="Read the API key from $VAR, not $DSV_API_KEY.")
@click.option(
    "--no-gitignore", is_flag=True, help="Inside a git work tree, leave .gitignore alone."
)
@quiet_option
@click.pass_context
def clone(
    ctx: click.Context, url: str, directory: str | None, key_env: str | None, no_gitignore: bool
) -> None:
    """Copy the repository at URL into DIRECTORY (default: its NAME) and check it out.

    Inside a git work tree, `/.dsv/` is added to the clone's .gitignore, as `dsv init` does.

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
    ignored = None if no_gitignore else ignore_in_git(Path(result.path))
    if quiet:
        return
    if ignored is not None:
        click.echo(f"Added /.dsv/ to {ignored} (--no-gitignore to skip)")
    if result.fetch.objects:
        objects = plural(result.fetch.objects, "object")
        click.echo(f"Received {objects}, {format_size(result.fetch.bytes_received)}")
    if result.branch is not None:
        click.echo(f"Checked out branch {result.branch} in {result.path}")


COMMANDS = (remote, push, fetch, pull, clone)
