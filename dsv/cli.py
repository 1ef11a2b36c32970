"""The `dsv` command: parses arguments, calls dsv.ops, formats the result. Nothing else."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec

from dsv import __version__, labels, maintenance, ops, project
from dsv.cli_common import DsvGroup, is_quiet, open_repo, progress_line, quiet_option
from dsv.cli_remote import register
from dsv.index import read_index
from dsv.objects import Commit, Kind
from dsv.repo import Repository
from dsv.text import change_counts, plural
from dsv.worktree import repo_path

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
SHORT = 12


def short(oid: bytes) -> str:
    return oid.hex()[:SHORT]


def format_time(when: int, tz: int) -> str:
    zone = dt.timezone(dt.timedelta(minutes=tz))
    stamp = dt.datetime.fromtimestamp(when, zone)
    sign = "-" if tz < 0 else "+"
    return stamp.strftime("%Y-%m-%d %H:%M:%S ") + f"{sign}{abs(tz) // 60:02d}{abs(tz) % 60:02d}"


def iso_time(when: int, tz: int) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone(dt.timedelta(minutes=tz))).isoformat()


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


class PathsAfterDashes(click.Command):
    """A command taking `[ARGS] -- PATH...`: what follows `--` lands in ctx.meta['paths']."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["paths"] = args[at + 1 :]
            args = args[:at]
        else:
            ctx.meta["paths"] = []
        return super().parse_args(ctx, args)


def user_paths(ctx: click.Context, paths: list[str] | tuple[str, ...]) -> list[str]:
    """Paths as typed, made absolute against the directory dsv runs in (`-C` or the cwd)."""
    base = os.path.abspath(ctx.obj.get("cwd") or ".")
    return [os.path.join(base, path) for path in paths]


@click.group(name="dsv", cls=DsvGroup, context_settings={"help_option_names": ["-h", "--help"]})
# The version given, not looked up in the installed metadata: that lookup costs ~50 ms.
@click.version_option(__version__, prog_name="dsv")
@click.option("-C", "cwd", metavar="PATH", help="Run as if dsv was started in PATH.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress, no waiting notice, no informational output (as COMMAND -q).",
)
@click.pass_context
def main(ctx: click.Context, cwd: str | None, quiet: bool) -> None:
    """dsv: version control for LLM-evaluation datasets.

    Long steps (add, commit -a, checkout, switch, restore, gc, fsck, push, fetch, pull,
    clone) show progress on stderr once they take half a second, on a terminal only.

    \b
    Example:
      dsv init && dsv add evals/qa.jsonl && dsv commit -m "first version"
    """
    ctx.ensure_object(dict)
    if quiet:
        ctx.obj["quiet"] = True
    if cwd:
        if not os.path.isdir(cwd):
            raise click.BadParameter(f"{cwd}: no such directory", param_hint="-C")
        ctx.obj["cwd"] = cwd


# -- setting up and staging -----------------------------------------------------------------


@main.command()
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


def _split_key(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(","))


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--key",
    metavar="FIELD,...",
    help="Top-level fields that identify a datapoint (diffs match by them). Kept for later adds.",
)
@quiet_option
@click.pass_context
def add(ctx: click.Context, paths: tuple[str, ...], key: str | None) -> None:
    """Stage dataset files (.jsonl .json .csv .tsv .parquet) or directories of them.

    A key is a contract, checked on every add and commit -a of the dataset: a record
    without a key field, or two records with the same key, is an error naming the
    line(s), and nothing is staged.

    \b
    Example:
      dsv add evals/qa.jsonl --key id
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        names = ops.add(repo, user_paths(ctx, paths), key=_split_key(key), progress=progress.fn)
    if not is_quiet(ctx):
        for name in names:
            click.echo(f"add {name}")


@main.command()
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


@main.command()
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


# -- status, commit, log, show ----------------------------------------------------------------


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


@main.command()
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

    with open_repo(ctx) as repo:
        entries = ops.status(repo)
        branch = repo.current_branch()
        head = repo.head()
        untracked = ops.untracked(repo) if untracked_mode == "normal" else []
    if porcelain:
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


@main.command()
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


def _decorations(repo: Repository) -> dict[bytes, list[str]]:
    out: dict[bytes, list[str]] = {}
    current = repo.current_branch()
    head = repo.head()
    if head and not current:
        out.setdefault(head, []).append("HEAD")
    for name, oid, is_current in labels.list_branches(repo):
        out.setdefault(oid, []).append(f"HEAD -> {name}" if is_current else name)
    for name, oid in labels.list_tags(repo):
        out.setdefault(oid, []).append(f"tag: {name}")
    for env in labels.list_envs(repo):
        out.setdefault(env.oid, []).append(f"env: {env.name}")
    for remote, name, oid in labels.list_remote_branches(repo):
        out.setdefault(oid, []).append(f"{remote}/{name}")
    for env in labels.list_remote_envs(repo):
        out.setdefault(env.oid, []).append(f"env: {env.remote}/{env.name}")
    return out


def _commit_json(oid: bytes, entry: Commit, refs: list[str]) -> dict[str, Any]:
    return {
        "oid": oid.hex(),
        "parents": [p.hex() for p in entry.parents],
        "author": entry.author,
        "time": iso_time(entry.time, entry.tz),
        "message": entry.message,
        "refs": refs,
    }


def _print_commit(oid: bytes, entry: Commit, refs: list[str]) -> None:
    deco = f" ({', '.join(refs)})" if refs else ""
    click.echo(click.style(f"version {oid.hex()}", fg="yellow") + deco)
    if len(entry.parents) > 1:
        click.echo("Merge: " + " ".join(short(p) for p in entry.parents))
    click.echo(f"Author: {entry.author}")
    click.echo(f"Date:   {format_time(entry.time, entry.tz)}")
    click.echo()
    for line in entry.message.rstrip("\n").splitlines():
        click.echo(f"    {line}")


@main.command(cls=PathsAfterDashes)
@click.argument("rev", required=False)
@click.option("-n", "--max-count", type=click.IntRange(min=0), help="Show at most N versions.")
@click.option("--oneline", is_flag=True, help="One line per version.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of versions.")
@click.option("--stat", "with_stat", is_flag=True, help="Per-dataset counts against the parent.")
@click.option(
    "--decorate/--no-decorate",
    default=True,
    help="Name the branches, tags and environments (local and remote) at each version.",
)
@click.pass_context
def log(
    ctx: click.Context,
    rev: str | None,
    max_count: int | None,
    oneline: bool,
    as_json: bool,
    with_stat: bool,
    decorate: bool,
) -> None:
    """Show the history of versions, newest first, each with the names that point at it:
    (HEAD -> main, tag: v1, env: production, origin/main, env: origin/production).

    \b
    Example:
      dsv log -n 5 --oneline -- evals/qa.jsonl
    """
    from dsv import diffview
    from dsv.diff import diff_commit

    paths = user_paths(ctx, ctx.meta.get("paths") or []) or None
    with open_repo(ctx) as repo:
        refs = _decorations(repo) if decorate or as_json else {}
        entries = ops.log(repo, rev, max_count=max_count, paths=paths)
        if as_json:
            docs = []
            for e in entries:
                doc = _commit_json(e.oid, e.commit, refs.get(e.oid, []))
                if with_stat:
                    changed = diff_commit(repo, e.oid, paths=paths).datasets
                    doc["datasets"] = [diffview.dataset_json(d) for d in changed]
                docs.append(doc)
            emit_json(docs)
            return
        for i, e in enumerate(entries):
            deco = refs.get(e.oid, [])
            if oneline:
                first = e.commit.message.splitlines()[0] if e.commit.message else ""
                tail = f" ({', '.join(deco)})" if deco else ""
                click.echo(click.style(short(e.oid), fg="yellow") + tail + f" {first}")
            else:
                if i:
                    click.echo()
                _print_commit(e.oid, e.commit, deco)
            if with_stat:
                if not oneline:
                    click.echo()
                for line in diffview.render_stat(diff_commit(repo, e.oid, paths=paths)):
                    click.echo(line)


@main.command()
@click.argument("rev", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Version and datasets as JSON.")
@click.pass_context
def show(ctx: click.Context, rev: str, as_json: bool) -> None:
    """Show a version and its datasets, or with REV:PATH one dataset as JSONL.

    \b
    Examples:
      dsv show production
      dsv show HEAD~1:evals/qa.jsonl > old.jsonl
    """
    with open_repo(ctx) as repo:
        if ":" in rev:
            version, path = rev.split(":", 1)
            out = sys.stdout.buffer
            dataset = ops.dataset_at(repo, version or "HEAD", path)
            for body in repo.read_datapoints(dataset):
                out.write(body + b"\n")
            return
        summary = ops.show(repo, rev)
        refs = _decorations(repo).get(summary.oid, [])
    if as_json:
        doc = _commit_json(summary.oid, summary.commit, refs)
        doc["datasets"] = [msgspec.structs.asdict(d) for d in summary.datasets]
        emit_json(doc)
        return
    _print_commit(summary.oid, summary.commit, refs)
    click.echo()
    for d in summary.datasets:
        change = {
            "modified": f" ({change_counts(d.added, d.removed, d.modified)})",
            "deleted": f" (-{d.removed})",
        }.get(d.status, "")
        letter = {"added": "A", "modified": "M", "deleted": "D"}.get(d.status, " ")
        click.echo(f" {letter} {d.path}  {plural(d.count, 'datapoint')}{change}")


@main.command("cat-object")
@click.argument("oid")
@click.option("-t", "--type", "kind_only", is_flag=True, help="Print only the object's kind.")
@click.pass_context
def cat_object(ctx: click.Context, oid: str, kind_only: bool) -> None:
    """Print a stored object: a datapoint as JSON, others as readable JSON.

    \b
    Example:
      dsv cat-object 3f2a9c1e
    """
    with open_repo(ctx) as repo:
        kind, value = ops.cat_object(repo, oid)
    if kind_only:
        click.echo(kind.name.lower())
    elif kind == Kind.DATAPOINT:
        assert isinstance(value, bytes)
        click.echo(value.decode())
    else:
        click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


@main.command(cls=PathsAfterDashes)
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


@main.command()
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


@main.command("diff", cls=PathsAfterDashes)
@click.argument("revs", nargs=-1, metavar="[A [B]]")
@click.option(
    "--staged",
    "--cached",
    "staged",
    is_flag=True,
    help="Compare the index (what the next commit holds), not the working files.",
)
@click.option("--stat", is_flag=True, help="Per-dataset counts and a total line.")
@click.option("--name-status", is_flag=True, help="One line per changed dataset: A, D or M.")
@click.option("--json", "as_json", is_flag=True, help="With --stat: one JSON object.")
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["human", "jsonl"]),
    default="human",
    show_default=True,
    help="jsonl: one JSON line per changed datapoint.",
)
@click.option("--key", metavar="FIELD,...", help="Match datapoints by these fields.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="Show at most N datapoints per dataset.",
)
@click.option(
    "--color/--no-color", default=None, help="Colour the output (default: only on a terminal)."
)
@click.pass_context
def diff_command(
    ctx: click.Context,
    revs: tuple[str, ...],
    staged: bool,
    stat: bool,
    name_status: bool,
    as_json: bool,
    out_format: str,
    key: str | None,
    limit: int | None,
    color: bool | None,
) -> None:
    """Show changed datapoints: working files vs HEAD, --staged, REV, or A B.

    \b
    Examples:
      dsv diff
      dsv diff production staging --stat
      dsv diff HEAD~1 HEAD --format jsonl -- evals/qa.jsonl
    """
    from dsv import diffview
    from dsv.diff import diff as compare

    if len(revs) > 2:
        raise click.UsageError("give at most two revisions; put paths after --")
    if as_json and not stat:
        raise click.UsageError("--json goes with --stat; use --format jsonl for datapoints")
    if sum((stat, name_status, out_format == "jsonl")) > 1:
        raise click.UsageError("choose one of --stat, --name-status and --format jsonl")
    paths = user_paths(ctx, ctx.meta.get("paths") or []) or None
    a = revs[0] if revs else None
    b = revs[1] if len(revs) == 2 else None
    out = sys.stdout.buffer
    with open_repo(ctx) as repo:
        result = compare(repo, a, b, staged=staged, paths=paths, key=_split_key(key))
        if stat and as_json:
            out.write(diffview.stat_json(result) + b"\n")
        elif out_format == "jsonl":
            for line in diffview.render_jsonl(result):
                out.write(line)
        else:
            if stat:
                lines = diffview.render_stat(result)
            elif name_status:
                lines = diffview.render_name_status(result)
            else:
                use_color = sys.stdout.isatty() if color is None else color
                lines = diffview.render_human(result, color=use_color, limit=limit)
            for text in lines:
                out.write(text.encode() + b"\n")


# -- branches, tags, environments ------------------------------------------------------------


@main.command()
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


@main.command()
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


@main.command()
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


@main.group(cls=DsvGroup)
def env() -> None:
    """Deploy versions to environments (production, staging, ...).

    \b
    Example:
      dsv env deploy production HEAD
    """


@env.command("deploy")
@click.argument("name")
@click.argument("rev", default="HEAD")
@click.pass_context
def env_deploy(ctx: click.Context, name: str, rev: str) -> None:
    """Point environment NAME at version REV.

    \b
    Example:
      dsv env deploy staging main~1
    """
    with open_repo(ctx) as repo:
        old, new = labels.deploy(repo, name, rev)
    was = f" (was {short(old)})" if any(old) else ""
    click.echo(f"Deployed {short(new)} to {name}{was}")


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


@env.command("rm")
@click.argument("name")
@click.pass_context
def env_rm(ctx: click.Context, name: str) -> None:
    """Remove the deployment of environment NAME (its history stays).

    \b
    Example:
      dsv env rm staging
    """
    with open_repo(ctx) as repo:
        old = labels.remove_env(repo, name)
    click.echo(f"Removed {name} (was {short(old)})")


@env.command("log")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of deployments.")
@click.pass_context
def env_log(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show the deployment history of environment NAME, newest first.

    \b
    Example:
      dsv env log production
    """
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


# -- maintenance ---------------------------------------------------------------------------------


@main.command()
@quiet_option
@click.pass_context
def fsck(ctx: click.Context) -> None:
    """Check every pack's checksum, re-hash every reachable object and check every tree's
    dataset paths; exit 1 on a problem.

    \b
    Example:
      dsv fsck
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        report = maintenance.fsck(repo, progress=progress.fn)
    for item in report.missing:
        click.echo(f"missing {item}")
    for item in report.corrupt:
        click.echo(f"corrupt {item}")
    if not (report.ok and is_quiet(ctx)):
        verdict = "ok" if report.ok else "PROBLEMS FOUND"
        click.echo(f"checked {plural(report.checked, 'object')}: {verdict}")
    if not report.ok:
        ctx.exit(1)


@main.command()
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be removed.")
@quiet_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool) -> None:
    """Drop objects nothing reaches and repack the rest into one pack.

    \b
    Example:
      dsv gc --dry-run
    """
    with open_repo(ctx) as repo, progress_line(ctx) as progress:
        report = maintenance.gc(repo, dry_run=dry_run, progress=progress.fn)
    if is_quiet(ctx) and not dry_run:
        return  # a dry run's report is its result, not chatter
    verb = "would remove" if dry_run else "removed"
    for name in report.temp_files:
        click.echo(f"{verb} {name} (a temporary file of an interrupted command)")
    if report.bytes_after is None:
        click.echo(
            f"would remove {plural(report.removed, 'unreachable object')}, keep {report.kept} "
            f"(the store takes {report.bytes_before} bytes now)"
        )
    else:
        click.echo(
            f"removed {plural(report.removed, 'unreachable object')}, kept {report.kept}; "
            f"{report.bytes_before} -> {report.bytes_after} bytes"
        )


register(main)
