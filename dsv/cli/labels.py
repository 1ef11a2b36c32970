"""Commands on names: branch, tag, env."""

from __future__ import annotations

import click

from dsv import labels
from dsv.cli.common import (
    DsvGroup,
    PathsAfterDashes,
    emit_json,
    format_time,
    iso_time,
    open_repo,
    short,
    user_paths,
)

__all__ = ["COMMANDS", "branch", "env", "tag"]


@click.command()
@click.argument("name", required=False)
@click.argument("rev", required=False)
@click.option("-d", "--delete", is_flag=True, help="Delete branch NAME.")
@click.option("-r", "--remotes", is_flag=True, help="List the remote-tracking branches.")
@click.option("-a", "--all", "all_", is_flag=True, help="List local and remote-tracking branches.")
@click.option("--json", "as_json", is_flag=True, help="List branches as JSON.")
@click.pass_context
def branch(
    ctx: click.Context,
    name: str | None,
    rev: str | None,
    delete: bool,
    remotes: bool,
    all_: bool,
    as_json: bool,
) -> None:
    """List branches (-r: the remotes', -a: both), create NAME at REV (default HEAD), or
    delete NAME.

    \b
    Examples:
      dsv branch experiment && dsv switch experiment
      dsv branch -a
    """
    if delete and (name is None or rev is not None):
        raise click.UsageError("-d takes exactly one branch name")
    if (remotes or all_) and (name is not None or delete):
        raise click.UsageError("-r and -a only list branches")
    with open_repo(ctx) as repo:
        if name is None:
            rows = [] if remotes and not all_ else labels.list_branches(repo)
            theirs = labels.list_remote_branches(repo) if remotes or all_ else []
            if as_json:
                emit_json(
                    [{"name": n, "oid": o.hex(), "current": c, "remote": None} for n, o, c in rows]
                    + [
                        {"name": f"{r}/{n}", "oid": o.hex(), "current": False, "remote": r}
                        for r, n, o in theirs
                    ]
                )
                return
            for n, o, c in rows:
                click.echo(f"{'*' if c else ' '} {n}  {short(o)}")
            # As git: `-a` names them by their full place, `-r` by REMOTE/NAME; both resolve.
            shown = "remotes/" if all_ else ""
            for r, n, o in theirs:
                click.echo(f"  {shown}{r}/{n}  {short(o)}")
        elif delete:
            old = labels.delete_branch(repo, name)
            click.echo(f"Deleted branch {name} (was {short(old)})")
        else:
            oid = labels.create_branch(repo, name, rev)
            click.echo(f"Created branch {name} at {short(oid)}")


@click.command()
@click.argument("name", required=False)
@click.argument("rev", required=False)
@click.option("-d", "--delete", is_flag=True, help="Delete tag NAME.")
@click.pass_context
def tag(ctx: click.Context, name: str | None, rev: str | None, delete: bool) -> None:
    """List tags, tag REV (default HEAD) as NAME, or delete NAME.

    \b
    Example:
      dsv tag v1.0
    """
    if delete and (name is None or rev is not None):
        raise click.UsageError("-d takes exactly one tag name")
    with open_repo(ctx) as repo:
        if name is None:
            for n, o in labels.list_tags(repo):
                click.echo(f"{n}  {short(o)}")
        elif delete:
            click.echo(f"Deleted tag {name} (was {short(labels.delete_tag(repo, name))})")
        else:
            click.echo(f"Tagged {short(labels.create_tag(repo, name, rev))} as {name}")


@click.group(cls=DsvGroup)
def env() -> None:
    """Deploy versions to environments (production, staging, ...), all datasets at once or
    one at a time.

    \b
    Example:
      dsv env deploy production HEAD
      dsv env deploy production v3 -- qa.jsonl
    """


@env.command("deploy", cls=PathsAfterDashes)
@click.argument("name")
@click.argument("rev", default="HEAD")
@click.pass_context
def env_deploy(ctx: click.Context, name: str, rev: str) -> None:
    """Point environment NAME at version REV; with `-- PATH...`, deploy only those datasets
    of REV and keep every other dataset of NAME as it was.

    \b
    Example:
      dsv env deploy staging main~1
      dsv env deploy production v3 -- evals/qa.jsonl
    """
    typed = ctx.meta.get("paths") or []
    with open_repo(ctx) as repo:
        old, new = labels.deploy(repo, name, rev, paths=user_paths(ctx, typed))
    was = f" (was {short(old)})" if any(old) else ""
    if not typed:
        click.echo(f"Deployed {short(new)} to {name}{was}")
    elif old == new:
        click.echo(f"{name} already holds {', '.join(typed)} of {rev}")
    else:
        click.echo(f"Deployed {', '.join(typed)} of {rev} to {name}: now {short(new)}{was}")


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of environments.")
@click.pass_context
def env_list(ctx: click.Context, as_json: bool) -> None:
    """List environments with their version, when and by whom it was deployed; then the
    remotes' environments as last fetched, as REMOTE/NAME (remote).

    \b
    Example:
      dsv env list --json
    """
    with open_repo(ctx) as repo:
        rows = labels.list_envs(repo)
        theirs = labels.list_remote_envs(repo)
    if as_json:
        emit_json(
            [
                {
                    "name": r.name,
                    "oid": r.oid.hex(),
                    "time": iso_time(r.time, r.tz) if r.time else None,
                    "user": r.user,
                    "remote": None,
                }
                for r in rows
            ]
            + [
                {
                    "name": f"{r.remote}/{r.name}",
                    "oid": r.oid.hex(),
                    "time": None,
                    "user": None,
                    "remote": r.remote,
                }
                for r in theirs
            ]
        )
        return
    names = [r.name for r in rows] + [f"{r.remote}/{r.name}" for r in theirs]
    width = max([14, *(len(n) + 2 for n in names)])
    for r in rows:
        when = format_time(r.time, r.tz) if r.time else "-"
        click.echo(f"{r.name:<{width}}{short(r.oid)}  {when}  {r.user}")
    for r in theirs:
        click.echo(f"{f'{r.remote}/{r.name}':<{width}}{short(r.oid)}  (remote)")


@env.command("rm", cls=PathsAfterDashes)
@click.argument("name")
@click.pass_context
def env_rm(ctx: click.Context, name: str) -> None:
    """Remove the deployment of environment NAME (its history stays); with `-- PATH...`,
    only that of those datasets.

    \b
    Example:
      dsv env rm staging
      dsv env rm production -- evals/qa.jsonl
    """
    paths = user_paths(ctx, ctx.meta.get("paths") or [])
    with open_repo(ctx) as repo:
        if paths:
            old, new = labels.undeploy(repo, name, paths)
            now = f"now {short(new)}" if any(new) else "nothing left deployed"
            click.echo(f"Removed {len(paths)} dataset(s) from {name} ({now}; was {short(old)})")
            return
        old = labels.remove_env(repo, name)
    click.echo(f"Removed {name} (was {short(old)})")


@env.command("log", cls=PathsAfterDashes)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of deployments.")
@click.pass_context
def env_log(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show the deployment history of environment NAME, newest first; with `-- PATH`, the
    deployments of that dataset: which version, replacing which, when and by whom.

    \b
    Example:
      dsv env log production
      dsv env log production -- evals/qa.jsonl
    """
    paths = user_paths(ctx, ctx.meta.get("paths") or [])
    if len(paths) > 1:
        raise click.UsageError("env log takes one dataset path after --")
    if paths:
        with open_repo(ctx) as repo:
            deployments = list(reversed(labels.env_path_log(repo, name, paths[0])))
        _print_path_log(deployments, as_json)
        return
    with open_repo(ctx) as repo:
        rows = list(reversed(labels.env_log(repo, name)))
    if as_json:
        emit_json(
            [
                {
                    "old": r.old.hex() if any(r.old) else None,
                    "new": r.new.hex() if any(r.new) else None,
                    "time": iso_time(r.time, r.tz),
                    "user": r.user,
                    "reason": r.reason,
                }
                for r in rows
            ]
        )
        return
    for r in rows:
        target = short(r.new) if any(r.new) else "(removed)"
        click.echo(f"{target}  {format_time(r.time, r.tz)}  {r.user}  {r.reason}")


def _print_path_log(deployments: list[labels.Deployment], as_json: bool) -> None:
    if as_json:
        emit_json(
            [
                {
                    "version": d.version.hex() if d.version else None,
                    "previous": d.previous.hex() if d.previous else None,
                    "commit": d.entry.new.hex() if any(d.entry.new) else None,
                    "time": iso_time(d.entry.time, d.entry.tz),
                    "user": d.entry.user,
                    "reason": d.entry.reason,
                }
                for d in deployments
            ]
        )
        return
    for d in deployments:
        target = short(d.version) if d.version else "(removed)"
        was = f"  (was {short(d.previous)})" if d.previous else ""
        when = format_time(d.entry.time, d.entry.tz)
        click.echo(f"{target}  {when}  {d.entry.user}  {d.entry.reason}{was}")


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (branch, env, tag)
