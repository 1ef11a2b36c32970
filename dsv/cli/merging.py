"""The merge commands of `dsv`: merge, conflicts, resolve, revert and cherry-pick."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from dsv.cli.common import emit_json, is_quiet, open_repo, quiet_option, short, user_paths
from dsv.merge import Conflict
from dsv.ops import merging
from dsv.repo import Repository
from dsv.text import plural

__all__ = ["COMMANDS", "cherry_pick", "conflicts", "merge", "resolve", "revert"]

_WIDTH = 60


def _value(value: Any, plain: bool) -> str:
    if value is msgspec.UNSET:
        return "(none)"
    if plain:
        return str(value)
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def conflict_line(c: Conflict) -> str:
    """One conflict as `dsv conflicts` and `dsv merge` show it."""
    where = " ".join(part for part in (c.path, merging.key_text(c.key), c.field or "") if part)
    plain = c.key is None and c.field is None
    values = ", ".join(
        f"{side} {_value(getattr(c, side), plain)}" for side in ("base", "ours", "theirs")
    )
    return f"CONFLICT ({c.kind}) {where}: {values}"


def _report(ctx: click.Context, repo: Repository, outcome: merging.MergeOutcome, what: str) -> None:
    """Print a merge's outcome; exit 1 when it stopped at conflicts, as git does."""
    if outcome.status == "conflicts":
        for c in outcome.conflicts:
            click.echo(conflict_line(c))
        datasets = len({c.path for c in outcome.conflicts})
        click.echo(
            f"{what} stopped at {plural(len(outcome.conflicts), 'conflict')} in "
            f"{plural(datasets, 'dataset')}: resolve them (edit and 'dsv add', or "
            "'dsv resolve --ours|--theirs'), then 'dsv merge --continue'; or 'dsv merge --abort'"
        )
        ctx.exit(1)
    if is_quiet(ctx):
        return
    if outcome.status == "up-to-date":
        click.echo("Already up to date.")
    elif outcome.status == "fast-forward":
        assert outcome.commit is not None
        click.echo(f"Fast-forward to {short(outcome.commit)}")
    else:
        assert outcome.commit is not None
        branch = repo.current_branch() or "detached HEAD"
        subject = repo.read_commit(outcome.commit).message.splitlines()[0]
        click.echo(f"[{branch} {short(outcome.commit)}] {subject}")
        for name in outcome.changed:
            click.echo(f"  merged {name}")


@click.command()
@click.argument("rev", required=False)
@click.option("-m", "--message", help="The merge commit's message (default: 'Merge REV').")
@click.option("--ff-only", is_flag=True, help="Refuse unless HEAD can fast-forward to REV.")
@click.option("--continue", "continue_", is_flag=True, help="Commit the resolved merge.")
@click.option("--abort", is_flag=True, help="Give back the state from before the merge.")
@quiet_option
@click.pass_context
def merge(
    ctx: click.Context,
    rev: str | None,
    message: str | None,
    ff_only: bool,
    continue_: bool,
    abort: bool,
) -> None:
    """Merge REV into the current branch: datapoints by key, fields by JSON path.

    A clean merge is committed with two parents. Conflicts are left for you: 'dsv
    conflicts' lists them, 'dsv resolve' takes a side, or edit the file and 'dsv add' it;
    then 'dsv merge --continue'. 'dsv merge --abort' gives back the state from before.

    \b
    Example:
      dsv merge feature
    """
    if (rev is None) == (not (continue_ or abort)) or (continue_ and abort):
        raise click.UsageError("give REV, or --continue, or --abort")
    with open_repo(ctx) as repo:
        if abort:
            merging.abort_merge(repo)
            if not is_quiet(ctx):
                head = repo.head()
                click.echo(f"merge aborted: back at {short(head) if head else 'no version'}")
            return
        if continue_:
            oid = merging.continue_merge(repo, message=message)
            if not is_quiet(ctx):
                branch = repo.current_branch() or "detached HEAD"
                subject = repo.read_commit(oid).message.splitlines()[0]
                click.echo(f"[{branch} {short(oid)}] {subject}")
            return
        assert rev is not None
        outcome = merging.merge(repo, rev, message=message, ff_only=ff_only)
        _report(ctx, repo, outcome, "merge")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the conflicts.")
@click.pass_context
def conflicts(ctx: click.Context, as_json: bool) -> None:
    """List the unresolved conflicts of the merge in progress: path, key, field, and the
    value at the merge base, ours and theirs ((none) where a side has none).

    \b
    Example:
      dsv conflicts --json
    """
    with open_repo(ctx) as repo:
        found = merging.unresolved(repo)
    if as_json:
        emit_json([msgspec.to_builtins(c) for c in found])
        return
    for c in found:
        click.echo(conflict_line(c))


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--ours", "side", flag_value="ours", help="Take our side.")
@click.option("--theirs", "side", flag_value="theirs", help="Take their side.")
@click.option("--key", metavar="K", help="Only the datapoint with this key: id=3, or 3.")
@quiet_option
@click.pass_context
def resolve(ctx: click.Context, paths: tuple[str, ...], side: str | None, key: str | None) -> None:
    """Resolve conflicts by taking a side: of one datapoint (--key), of PATHS, or all.

    A datapoint whose other fields merged keeps them; the conflicting fields take the side.

    \b
    Example:
      dsv resolve --theirs evals/qa.jsonl --key id=17
    """
    if side is None:
        raise click.UsageError("say which side: --ours or --theirs")
    if key is not None and len(paths) != 1:
        raise click.UsageError("--key needs exactly one PATH")
    with open_repo(ctx) as repo:
        done = merging.resolve(
            repo,
            "ours" if side == "ours" else "theirs",
            paths=user_paths(ctx, paths) if paths else None,
            key=key,
        )
        left = len(merging.unresolved(repo))
    if is_quiet(ctx):
        return
    shown: dict[tuple[str, str], None] = {}
    for c in done:
        shown[(c.path, merging.key_text(c.key))] = None
    for path, text in shown:
        click.echo(f"resolved {path}{' ' + text if text else ''} ({side})")
    click.echo(
        f"{plural(left, 'conflict')} left"
        if left
        else "all conflicts resolved: dsv merge --continue"
    )


def _pick(ctx: click.Context, rev: str, mainline: int | None, revert_: bool) -> None:
    with open_repo(ctx) as repo:
        run = merging.revert if revert_ else merging.cherry_pick
        outcome = run(repo, rev, mainline=mainline)
        _report(ctx, repo, outcome, "revert" if revert_ else "cherry-pick")


@click.command()
@click.argument("rev")
@click.option("-m", "--mainline", type=int, help="Of a merge: the parent (1 or 2) to go back to.")
@quiet_option
@click.pass_context
def revert(ctx: click.Context, rev: str, mainline: int | None) -> None:
    """Make a new version undoing REV's datapoint changes (a three-way merge).

    \b
    Example:
      dsv revert HEAD~2
    """
    _pick(ctx, rev, mainline, True)


@click.command("cherry-pick")
@click.argument("rev")
@click.option("-m", "--mainline", type=int, help="Of a merge: the parent (1 or 2) it is against.")
@quiet_option
@click.pass_context
def cherry_pick(ctx: click.Context, rev: str, mainline: int | None) -> None:
    """Make REV's datapoint changes again on the current branch, as a new version.

    \b
    Example:
      dsv cherry-pick feature~1
    """
    _pick(ctx, rev, mainline, False)


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (cherry_pick, conflicts, merge, resolve, revert)
