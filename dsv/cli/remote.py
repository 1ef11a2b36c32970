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
    from dsv.remote.hosted.engine import HostedPushResult

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
        # From a hosted platform what arrives is its versions, each a commit.
        noun = "version" if "+" in url.split("://", 1)[0] else "object"
        click.echo(f"Received {plural(result.objects, noun)}, {format_size(result.bytes_received)}")


def _hosted(repo: object, name: str) -> bool:
    """Is remote `name` a hosted platform (`KIND+https://…`)?"""
    from dsv.remote.hosted import is_hosted

    remotes = getattr(getattr(repo, "config", None), "remotes", {})
    return name in remotes and is_hosted(remotes[name].url)


_HOSTED_MARKS = {
    "create": "*",
    "set": " ",
    "add": " ",
    "remove": " ",
    "up-to-date": "=",
    "adopted": "=",
}


def _print_hosted_push(result: HostedPushResult) -> None:
    if result.dry_run:
        click.echo(f"Would push to {result.url} (dry run: nothing sent)")
    else:
        click.echo(f"To {result.url}")
    for d in result.datasets:
        if d.action in ("up-to-date", "adopted"):
            change = f"{d.version}" + (
                " (the platform had it already)" if d.action == "adopted" else ""
            )
        elif d.action == "create":
            change = f"new dataset, {plural(d.records, 'datapoint')}"
        elif d.action == "set":
            change = f"whole version: {plural(d.records, 'datapoint')} (+{d.added} -{d.removed})"
        elif d.action == "add":
            change = f"+{plural(d.added, 'datapoint')}"
        else:
            change = f"-{plural(d.removed, 'datapoint')}"
        if d.version and d.action not in ("up-to-date", "adopted"):
            change += f" -> {d.version}"
        mark = _HOSTED_MARKS[d.action]
        click.echo(f" {mark} {d.action:<11} {d.file} -> {d.path}  {change}")
    for e in result.envs:
        mark = {"deployed": "*", "up-to-date": "=", "rejected": "!", "skipped": "-"}[e.status]
        why = f"  ({e.reason})" if e.reason else ""
        click.echo(f" {mark} {e.status:<11} env {e.environment}: {e.file} {e.version or ''}{why}")
    if result.dry_run:
        return
    sent = any(d.action not in ("up-to-date", "adopted") for d in result.datasets)
    deployed = any(e.status == "deployed" for e in result.envs)
    if sent or deployed:
        retried = f" ({plural(result.retries, 'retry', 'retries')})" if result.retries else ""
        click.echo(f"Sent {format_size(result.bytes_sent)}{retried}")
    else:
        click.echo("Everything up to date")


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
@click.option("--prefix", metavar="FOLDER", help="Hosted platforms: the folder new datasets go in.")
@click.pass_context
def remote_add(
    ctx: click.Context, name: str, url: str, key_env: str | None, prefix: str | None
) -> None:
    """Add remote NAME at URL: a dsv server (http://HOST:PORT/OWNER/NAME) or a hosted
    platform (humanloop+https://HOST/v5; docs/remotes.md).

    \b
    Examples:
      dsv remote add origin http://127.0.0.1:8080/acme/evals --key-env ACME_KEY
      dsv remote add hl humanloop+https://api.humanloop.com/v5 --key-env HUMANLOOP_API_KEY
    """
    from dsv.remote import add_remote

    with open_repo(ctx) as repo:
        added = add_remote(repo, name, url, key_env=key_env, prefix=prefix)
    click.echo(f"Added remote {name} {added.url}")


@remote.command("show")
@click.argument("name")
@click.pass_context
def remote_show(ctx: click.Context, name: str) -> None:
    """Show remote NAME: its URL, key, and a hosted platform's dataset mapping.

    \b
    Example:
      dsv remote show hl
    """
    from dsv.remote.hosted.engine import show

    with open_repo(ctx) as repo:
        shown = show(repo, name)
    click.echo(f"remote {shown.name}")
    click.echo(f"  URL: {shown.url}")
    click.echo(f"  kind: {shown.kind}")
    click.echo(f"  key: ${shown.key_env}")
    if shown.prefix:
        click.echo(f"  new datasets go in: {shown.prefix}")
    if shown.branch:
        click.echo(f"  synced branch: {shown.branch}")
    if shown.kind != "dsv":
        if not shown.datasets:
            click.echo("  datasets: none mapped yet ('dsv push' maps each file)")
        for d in shown.datasets:
            state = (
                f"{d.id}, synced at {d.synced}, {plural(d.versions, 'version')} known"
                if d.id
                else "not synced yet"
            )
            click.echo(f"  {d.file} -> {d.path} ({state})")


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
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="FILE=PATH",
    help="Hosted platforms: the platform dataset FILE maps to (on its first push).",
)
@click.option(
    "--drop",
    multiple=True,
    metavar="FIELD",
    help="Hosted platforms: leave FIELD out of every record (it has no place there).",
)
@click.option(
    "--dry-run", is_flag=True, help="Hosted platforms: show what would change, send nothing."
)
@quiet_option
@click.pass_context
def push(
    ctx: click.Context,
    remote_name: str,
    refs: tuple[str, ...],
    force: bool,
    tags: bool,
    envs: bool,
    paths: tuple[str, ...],
    drop: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Send branches, tags or environments (default: the current branch) to REMOTE.

    Refs move together or not at all, once the remote holds all their data. To a hosted
    platform, each dataset file of the current branch becomes the platform's next version
    of its dataset (docs/remotes.md).

    \b
    Examples:
      dsv push
      dsv push origin main production --tags
      dsv push hl --path qa.jsonl=evals/qa --dry-run
    """
    from dsv.errors import BadInput, RemoteError
    from dsv.remote.client import push as push_refs

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        if _hosted(repo, remote_name):
            from dsv.remote.hosted.engine import push as push_hosted

            if refs or force or tags:
                raise BadInput(
                    f"remote {remote_name} is a hosted platform: it takes the current branch "
                    "only (no REF, --force or --tags)"
                )
            hosted = push_hosted(
                repo,
                remote_name,
                paths=paths,
                drop=drop,
                envs=envs,
                dry_run=dry_run,
                progress=progress.fn,
            )
        else:
            hosted = None
            if paths or drop or dry_run:
                raise BadInput(
                    "--path, --drop and --dry-run are for hosted platforms' remotes only"
                )
    if hosted is not None:
        if not is_quiet(ctx) or dry_run:
            _print_hosted_push(hosted)
        refused = [e.environment for e in hosted.envs if e.status == "rejected"]
        if refused:
            raise RemoteError(
                f"not deployed on {remote_name}: {', '.join(dict.fromkeys(refused))}",
                hint="the lines marked ! above say why",
            )
        return
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
    from dsv.remote.hosted.engine import fetch as fetch_hosted

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        how = fetch_hosted if _hosted(repo, remote_name) else fetch_refs
        result = how(repo, remote_name, progress=progress.fn)
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
    from dsv.remote.hosted.engine import pull as pull_hosted

    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        how = pull_hosted if _hosted(repo, remote_name) else pull_branch
        result = how(repo, remote_name, force=force, ff_only=ff_only, progress=progress.fn)
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
    "--path",
    "paths",
    multiple=True,
    metavar="[FILE=]PATH",
    help="Hosted platforms: a platform dataset to clone with all its versions (repeatable).",
)
@click.option(
    "--no-gitignore", is_flag=True, help="Inside a git work tree, leave .gitignore alone."
)
@quiet_option
@click.pass_context
def clone(
    ctx: click.Context,
    url: str,
    directory: str | None,
    key_env: str | None,
    paths: tuple[str, ...],
    no_gitignore: bool,
) -> None:
    """Copy the repository at URL into DIRECTORY (default: its NAME) and check it out; from
    a hosted platform, the datasets named by --path, every version a commit.

    Inside a git work tree, `/.dsv/` is added to the clone's .gitignore, as `dsv init` does.

    \b
    Examples:
      dsv clone http://127.0.0.1:8080/acme/evals
      dsv clone humanloop+https://api.humanloop.com/v5 --path evals/qa --key-env HL_KEY
    """
    from dsv.errors import BadInput
    from dsv.remote import parse_url
    from dsv.remote.client import clone as clone_repo
    from dsv.remote.hosted import is_hosted

    base = (ctx.obj or {}).get("cwd") or "."
    hosted = is_hosted(url)
    if hosted:
        if not paths:
            raise BadInput(
                "name the platform datasets to clone: --path PLATFORM_PATH (repeatable)",
                hint="e.g. dsv clone humanloop+https://api.humanloop.com/v5 --path evals/qa",
            )
        file, sep, _ = paths[0].partition("=")
        leaf = file if sep else file.strip("/").rsplit("/", 1)[-1]
        name = directory or leaf.rsplit(".", 1)[0] or "dataset"
    else:
        if paths:
            raise BadInput("--path is for hosted platforms' URLs (KIND+https://…) only")
        name = directory or parse_url(url).repo.split("/")[1]
    target = os.path.join(base, name)
    quiet = is_quiet(ctx)
    if not quiet:
        click.echo(f"Cloning into '{name}'...", err=True)
    with progress_line(ctx) as progress:
        if hosted:
            from dsv.remote.hosted.engine import clone as clone_hosted

            result = clone_hosted(url, target, paths=paths, key_env=key_env, progress=progress.fn)
        else:
            result = clone_repo(url, target, key_env=key_env, progress=progress.fn)
    if result.branch is None:
        click.echo("warning: the repository has no branches yet", err=True)
    ignored = None if no_gitignore else ignore_in_git(Path(result.path))
    if quiet:
        return
    if ignored is not None:
        click.echo(f"Added /.dsv/ to {ignored} (--no-gitignore to skip)")
    if result.fetch.objects:
        objects = plural(result.fetch.objects, "version" if hosted else "object")
        click.echo(f"Received {objects}, {format_size(result.fetch.bytes_received)}")
    if result.branch is not None:
        click.echo(f"Checked out branch {result.branch} in {result.path}")


COMMANDS = (remote, push, fetch, pull, clone)
