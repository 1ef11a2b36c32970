"""Commands on the working files: init, add, rm, mv, status, commit, checkout, restore, switch."""

from __future__ import annotations

import os

import click
import msgspec

from dsv import ops, project
from dsv.cli.common import (
    PathsAfterDashes,
    emit_json,
    is_quiet,
    open_repo,
    progress_line,
    quiet_option,
    short,
    split_key,
    user_paths,
)
from dsv.index import read_index
from dsv.repo import Repository
from dsv.text import change_counts, plural
from dsv.worktree import repo_path

__all__ = [
    "COMMANDS",
    "add",
    "checkout",
    "commit",
    "init",
    "mv",
    "restore",
    "rm",
    "status",
    "switch",
]


@click.command()
@click.argument("path", default=".", required=False)
@click.option("--branch", "-b", default="main", show_default=True, help="Name of the first branch.")
@click.option(
    "--no-gitignore",
    is_flag=True,
    help="Inside a git work tree, leave .gitignore alone (by default /.dsv/ is added to it).",
)
@quiet_option
@click.pass_context
def init(ctx: click.Context, path: str, branch: str, no_gitignore: bool) -> None:
    """Create an empty repository.

    Inside a git work tree, `/.dsv/` is added to the .gitignore beside `.dsv`: git tracks
    the dataset files, dsv their history.

    \b
    Example:
      dsv init my-evals
    """
    base = ctx.obj.get("cwd") or "."
    repo = Repository.init(os.path.join(base, path), branch=branch)
    quiet = is_quiet(ctx)
    if not quiet:
        click.echo(f"Initialized empty dsv repository in {repo.dsv_dir}")
    changed = None if no_gitignore else project.ignore_in_git(repo.root)
    if changed is not None and not quiet:
        click.echo(f"Added /.dsv/ to {changed} (--no-gitignore to skip)")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--key",
    metavar="FIELD,...",
    help="Top-level fields that identify a datapoint (diffs match by them). Kept for later adds.",
)
@quiet_option
@click.pass_context
def add(ctx: click.Context, paths: tuple[str, ...], key: str | None) -> None:
    """Stage dataset files (.jsonl .ndjson .json .csv .tsv .parquet) or directories of them.

    A key is a contract, checked on every add and commit -a of the dataset: a record
    without a key field, or two records with the same key, is an error naming the
    line(s), and nothing is staged.

    \b
    Example:
      dsv add evals/qa.jsonl --key id
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        names = ops.add(repo, user_paths(ctx, paths), key=split_key(key), progress=progress.fn)
    if not is_quiet(ctx):
        for name in names:
            click.echo(f"add {name}")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--cached", is_flag=True, help="Only unstage; keep the file.")
@click.option("--force", "-f", is_flag=True, help="Delete the file even if it has changes.")
@click.pass_context
def rm(ctx: click.Context, paths: tuple[str, ...], cached: bool, force: bool) -> None:
    """Stop tracking datasets (and delete their files unless --cached).

    \b
    Example:
      dsv rm --cached evals/old.jsonl
    """
    with open_repo(ctx) as repo:
        for name in ops.remove(repo, user_paths(ctx, paths), cached=cached, force=force):
            click.echo(f"rm {name}")


@click.command()
@click.argument("source")
@click.argument("destination")
@click.pass_context
def mv(ctx: click.Context, source: str, destination: str) -> None:
    """Rename a tracked dataset file.

    \b
    Example:
      dsv mv qa.jsonl evals/qa.jsonl
    """
    with open_repo(ctx) as repo:
        src, dst = user_paths(ctx, [source, destination])
        # As move takes it: a tracked name from before the path rule is taken as it is.
        name = repo_path(repo, src, tracked=read_index(repo.index_path))
        click.echo(f"mv {name} -> {ops.move(repo, src, dst)}")


def _describe(entry: ops.DatasetStatus, state: str, *, staged: bool) -> str:
    """Counts of the staged change (index vs HEAD) or the unstaged one (file vs index)."""
    e = entry
    if staged:
        count, added, removed, modified = (
            e.staged_count, e.staged_added, e.staged_removed, e.staged_modified
        )  # fmt: skip
    else:
        count, added, removed, modified = (
            e.count, e.unstaged_added, e.unstaged_removed, e.unstaged_modified
        )  # fmt: skip
    if state == "added":
        return plural(count, "datapoint")
    if state == "deleted":
        return plural(removed, "datapoint")
    return f"{plural(count, 'datapoint')}, {change_counts(added, removed, modified)}"


@click.command()
@click.option(
    "--porcelain", is_flag=True, help="One stable line per changed dataset: A|M|D|?? PATH."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of changed datasets.")
@click.option(
    "-u",
    "--untracked-files",
    "untracked_mode",
    type=click.Choice(["normal", "no"]),
    default="normal",
    show_default=True,
    help="no: do not look for untracked dataset files.",
)
@click.pass_context
def status(ctx: click.Context, porcelain: bool, as_json: bool, untracked_mode: str) -> None:
    """Show datasets changed in the index and the working files, and untracked dataset files
    (.jsonl .ndjson .json .csv .tsv .parquet; not in dot-directories, node_modules,
    __pycache__ or venv).

    \b
    Example:
      dsv status --porcelain
    """
    from dsv.listing import ONLY_UNTRACKED, UNTRACKED_HEADER, quote_path
    from dsv.ops import merging

    with open_repo(ctx) as repo:
        entries = ops.status(repo)
        branch = repo.current_branch()
        head = repo.head()
        untracked = ops.untracked(repo) if untracked_mode == "normal" else []
        merge_state = merging.read_state(repo)
    conflicted: dict[str, int] = {}
    if merge_state is not None:
        for p in merge_state.paths:
            if p.conflicts:
                conflicted[p.path] = len(p.conflicts)
    if porcelain:
        for name in conflicted:
            click.echo(f"U {name}")
        for entry in entries:
            click.echo(f"{entry.letter} {entry.path}")
        for name in untracked:
            click.echo(f"?? {quote_path(name)}")
        return
    if as_json:
        emit_json(
            [msgspec.structs.asdict(e) for e in entries]
            + [{"path": name, "staged": None, "unstaged": "untracked"} for name in untracked]
        )
        return
    click.echo(f"On branch {branch}" if branch else f"HEAD detached at {short(head or b'')}")
    if merge_state is not None:
        click.echo(
            f"Merging {short(merge_state.theirs)}: "
            + ("fix the conflicts, then " if conflicted else "all conflicts resolved: ")
            + "'dsv merge --continue' (or 'dsv merge --abort')"
        )
    if conflicted:
        click.echo(
            "Unresolved conflicts (dsv conflicts lists them; edit and dsv add, or dsv resolve):"
        )
        for name, count in conflicted.items():
            click.echo(f"  {'both:':<10}{name} ({plural(count, 'conflict')})")
    staged = [e for e in entries if e.staged]
    unstaged = [e for e in entries if e.unstaged]
    if staged:
        click.echo("Changes to be committed:")
        for e in staged:
            assert e.staged
            click.echo(f"  {e.staged + ':':<10}{e.path} ({_describe(e, e.staged, staged=True)})")
    if unstaged:
        click.echo("Changes not staged for commit (dsv add, or dsv commit -a):")
        for e in unstaged:
            assert e.unstaged
            click.echo(
                f"  {e.unstaged + ':':<10}{e.path} ({_describe(e, e.unstaged, staged=False)})"
            )
    if untracked:
        click.echo(UNTRACKED_HEADER, nl=False)
        for name in untracked:
            click.echo(f"  {quote_path(name)}")
    if not entries:
        click.echo(
            ONLY_UNTRACKED if untracked else "nothing to commit, working tree clean\n", nl=False
        )


@click.command()
@click.option("-m", "--message", required=True, help="What changed and why.")
@click.option("-a", "--all", "all_", is_flag=True, help="First stage every changed tracked file.")
@click.option("--author", metavar="'NAME <EMAIL>'", help="Override the author.")
@quiet_option
@click.pass_context
def commit(ctx: click.Context, message: str, all_: bool, author: str | None) -> None:
    """Record the staged datasets as a new version.

    \b
    Example:
      dsv commit -a -m "fix 3 wrong answers"
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        oid = ops.commit(repo, message, all=all_, author=author, progress=progress.fn)
        branch = repo.current_branch() or "detached HEAD"
    if not is_quiet(ctx):
        click.echo(f"[{branch} {short(oid)}] {message.strip().splitlines()[0]}")


@click.command(cls=PathsAfterDashes)
@click.argument("rev")
@click.option("--force", "-f", is_flag=True, help="Discard uncommitted changes.")
@quiet_option
@click.pass_context
def checkout(ctx: click.Context, rev: str, force: bool) -> None:
    """Write the tracked files as of REV (all of them, or those after --).

    Refuses, unless --force, to overwrite changes that are not committed; a deleted file
    has none and is restored. REV may be a name only a remote has (production ->
    origin/production).

    \b
    Examples:
      dsv checkout production
      dsv checkout HEAD~2 -- evals/qa.jsonl
    """
    from dsv.repo import remote_short_name

    paths = user_paths(ctx, ctx.meta.get("paths") or []) or None
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        remote = repo.resolve_remote_name(rev.strip())
        oid = ops.checkout(repo, rev, paths=paths, force=force, progress=progress.fn)
        branch = repo.current_branch()
    if is_quiet(ctx):
        return
    if remote is not None and remote_short_name(remote) != rev.strip():
        rev = f"{rev.strip()}: {remote_short_name(remote)}"
    if paths:
        click.echo(f"Updated {plural(len(paths), 'path')} from {short(oid)}")
    elif rev.strip() == "HEAD":
        click.echo(f"Restored the files of HEAD ({short(oid)})")
    elif branch:
        click.echo(f"Switched to branch '{branch}'")
    else:
        click.echo(f"HEAD is now at {short(oid)} ({rev})")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-s", "--source", metavar="REV", help="Restore from REV, not from the index.")
@click.option(
    "-S", "--staged", is_flag=True, help="Restore the index (from HEAD, or REV): unstage."
)
@click.option(
    "-W", "--worktree", is_flag=True, help="Restore the working files (the default; with -S both)."
)
@click.option("--force", "-f", is_flag=True, help="Discard changes no version holds.")
@quiet_option
@click.pass_context
def restore(
    ctx: click.Context,
    paths: tuple[str, ...],
    source: str | None,
    staged: bool,
    worktree: bool,
    force: bool,
) -> None:
    """Restore working files from the index (or --source REV), or unstage with --staged.

    Refuses, unless --force, to discard a file's or the index's content that neither HEAD,
    REV nor the index holds; a deleted file is always restored.

    \b
    Examples:
      dsv restore evals/qa.jsonl
      dsv restore --source production evals/qa.jsonl
      dsv restore --staged evals/qa.jsonl
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        names = ops.restore(
            repo,
            user_paths(ctx, paths),
            source=source,
            staged=staged,
            worktree=worktree or not staged,
            force=force,
            progress=progress.fn,
        )
    if is_quiet(ctx):
        return
    where = "the index" if source is None and not staged else (source or "HEAD").strip()
    what = "and the index " if staged and (worktree or not staged) else ""
    for name in names:
        if staged and not worktree:
            click.echo(f"unstaged {name} (index as in {where})")
        else:
            click.echo(f"restored {name} {what}from {where}")


@click.command()
@click.argument("name")
@click.option("-c", "--create", is_flag=True, help="Create the branch at HEAD first.")
@click.option("--force", "-f", is_flag=True, help="Discard uncommitted changes.")
@quiet_option
@click.pass_context
def switch(ctx: click.Context, name: str, create: bool, force: bool) -> None:
    """Make branch NAME the current branch and write its files.

    \b
    Example:
      dsv switch -c relabel
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        ops.switch(repo, name, create=create, force=force, progress=progress.fn)
    if not is_quiet(ctx):
        click.echo(f"Switched to {'a new ' if create else ''}branch '{name}'")


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (add, checkout, commit, init, mv, restore, rm, status, switch)
