"""Commands that read history: log, show, cat-object, diff."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
import msgspec

from dsv.cli.common import (
    PathsAfterDashes,
    emit_json,
    format_time,
    iso_time,
    open_repo,
    short,
    split_key,
    user_paths,
)
from dsv.objects import Commit, Kind

if TYPE_CHECKING:
    from dsv import ops
    from dsv.diff import DiffResult
from dsv.repo import Repository
from dsv.text import change_counts, plural

__all__ = ["COMMANDS", "cat_object", "diff_command", "log", "show"]


def _decorations(repo: Repository) -> dict[bytes, list[str]]:
    from dsv import labels  # here, as `ops` in the commands: a diff needs neither

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


def _commit_lines(oid: bytes, entry: Commit, refs: list[str]) -> list[str]:
    deco = f" ({', '.join(refs)})" if refs else ""
    lines = [click.style(f"version {oid.hex()}", fg="yellow") + deco]
    if len(entry.parents) > 1:
        lines.append("Merge: " + " ".join(short(p) for p in entry.parents))
    lines.append(f"Author: {entry.author}")
    lines.append(f"Date:   {format_time(entry.time, entry.tz)}")
    lines.append("")
    lines += [f"    {line}" for line in entry.message.rstrip("\n").splitlines()]
    return lines


def _print_commit(oid: bytes, entry: Commit, refs: list[str]) -> None:
    for line in _commit_lines(oid, entry, refs):
        click.echo(line)


class _Graph:
    """The columns of `log --graph`: each commit a `*` in its column, a merge opening a
    column to its right (`|\\`), two columns waiting for one parent joining (`|/`)."""

    def __init__(self) -> None:
        self.cols: list[bytes] = []

    def row(self, oid: bytes) -> str:
        if oid not in self.cols:
            self.cols.append(oid)
        at = self.cols.index(oid)
        return " ".join("*" if j == at else "|" for j in range(len(self.cols)))

    def rest(self) -> str:
        return " ".join("|" for _ in self.cols)

    def advance(self, oid: bytes, parents: tuple[bytes, ...]) -> list[str]:
        """Lines drawn between this commit and the next."""
        at = self.cols.index(oid)
        lines: list[str] = []
        self.cols[at : at + 1] = list(parents[:1])
        for extra in parents[1:]:
            if extra in self.cols:
                continue
            self.cols.insert(at + 1, extra)
            lines.append(" ".join(["|"] * (at + 1)) + "\\" + " \\" * (len(self.cols) - at - 2))
        seen: dict[bytes, int] = {}
        for j, col in enumerate(list(self.cols)):
            if col in seen:
                lines.append(" ".join(["|"] * j) + "/")
                del self.cols[j]
                break
            seen[col] = j
        return [line.rstrip() for line in lines]


@click.command(cls=PathsAfterDashes)
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
@click.option("--graph", is_flag=True, help="Draw the history's branches and merges.")
@click.option("-m", "each_parent", is_flag=True, help="With --stat: a merge against each parent.")
@click.pass_context
def log(
    ctx: click.Context,
    rev: str | None,
    max_count: int | None,
    oneline: bool,
    as_json: bool,
    with_stat: bool,
    decorate: bool,
    graph: bool,
    each_parent: bool,
) -> None:
    """Show the history of versions, newest first, each with the names that point at it:
    (HEAD -> main, tag: v1, env: production, origin/main, env: origin/production).

    \b
    Example:
      dsv log -n 5 --oneline -- evals/qa.jsonl
    """
    from dsv import diffview, ops  # here: a diff needs none of it
    from dsv.diff import diff_commit

    paths = user_paths(ctx, ctx.meta.get("paths") or []) or None
    with open_repo(ctx) as repo:
        refs = _decorations(repo) if decorate or as_json else {}
        entries = ops.log(repo, rev, max_count=max_count, paths=paths, topo=graph)
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
        drawing = _Graph() if graph else None
        for i, e in enumerate(entries):
            deco = refs.get(e.oid, [])
            lines: list[str] = []
            if oneline:
                first = e.commit.message.splitlines()[0] if e.commit.message else ""
                tail = f" ({', '.join(deco)})" if deco else ""
                lines.append(click.style(short(e.oid), fg="yellow") + tail + f" {first}")
            else:
                if i and drawing is None:
                    click.echo()
                lines += _commit_lines(e.oid, e.commit, deco)
            if with_stat:
                if not oneline:
                    lines.append("")
                numbers = range(1, len(e.commit.parents) + 1) if each_parent else (1,)
                for number in numbers:
                    if each_parent and len(e.commit.parents) > 1:
                        parent = e.commit.parents[number - 1]
                        lines.append(f"against parent {number} ({short(parent)}):")
                    found = diff_commit(repo, e.oid, paths=paths, parent_number=number)
                    lines += diffview.render_stat(found)
            if drawing is None:
                for line in lines:
                    click.echo(line)
                continue
            click.echo(f"{drawing.row(e.oid)} {lines[0]}")
            rest = drawing.rest()
            for line in lines[1:]:
                click.echo(f"{rest} {line}".rstrip())
            for line in drawing.advance(e.oid, e.commit.parents):
                click.echo(line)


@click.command()
@click.argument("rev", default="HEAD")
@click.option("--json", "as_json", is_flag=True, help="Version and datasets as JSON.")
@click.option("-m", "each_parent", is_flag=True, help="A merge against each of its parents.")
@click.pass_context
def show(ctx: click.Context, rev: str, as_json: bool, each_parent: bool) -> None:
    """Show a version and its datasets, or with REV:PATH one dataset as JSONL.

    \b
    Examples:
      dsv show production
      dsv show HEAD~1:evals/qa.jsonl > old.jsonl
    """
    from dsv import ops  # here: a diff needs none of it

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
        others = []
        if each_parent:
            others = [
                ops.show(repo, rev, parent_number=n)
                for n in range(2, len(summary.commit.parents) + 1)
            ]
    if as_json:
        doc = _commit_json(summary.oid, summary.commit, refs)
        doc["datasets"] = [msgspec.structs.asdict(d) for d in summary.datasets]
        if each_parent:
            doc["by_parent"] = [
                [msgspec.structs.asdict(d) for d in s.datasets] for s in (summary, *others)
            ]
        emit_json(doc)
        return
    _print_commit(summary.oid, summary.commit, refs)
    for number, each in enumerate((summary, *others), start=1):
        click.echo()
        if others:
            click.echo(f"against parent {number} ({short(summary.commit.parents[number - 1])}):")
        _print_datasets(each.datasets)


def _print_datasets(datasets: list[ops.DatasetSummary]) -> None:
    for d in datasets:
        change = {
            "modified": f" ({change_counts(d.added, d.removed, d.modified)})",
            "deleted": f" (-{d.removed})",
        }.get(d.status, "")
        letter = {"added": "A", "modified": "M", "deleted": "D"}.get(d.status, " ")
        click.echo(f" {letter} {d.path}  {plural(d.count, 'datapoint')}{change}")


@click.command("cat-object")
@click.argument("oid")
@click.option("-t", "--type", "kind_only", is_flag=True, help="Print only the object's kind.")
@click.pass_context
def cat_object(ctx: click.Context, oid: str, kind_only: bool) -> None:
    """Print a stored object: a datapoint as JSON, others as readable JSON.

    \b
    Example:
      dsv cat-object 3f2a9c1e
    """
    from dsv import ops  # here: a diff needs none of it

    with open_repo(ctx) as repo:
        kind, value = ops.cat_object(repo, oid)
    if kind_only:
        click.echo(kind.name.lower())
    elif kind == Kind.DATAPOINT:
        assert isinstance(value, bytes)
        click.echo(value.decode())
    else:
        click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


@click.command("diff", cls=PathsAfterDashes)
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
@click.option(
    "--change", "change_of", metavar="REV", help="The change REV made, against its first parent."
)
@click.option("-m", "each_parent", is_flag=True, help="With --change: against each parent.")
@click.pass_context
def diff_command(
    ctx: click.Context,
    revs: tuple[str, ...],
    change_of: str | None,
    each_parent: bool,
    staged: bool,
    stat: bool,
    name_status: bool,
    as_json: bool,
    out_format: str,
    key: str | None,
    limit: int | None,
    color: bool | None,
) -> None:
    """Show changed datapoints: working files vs HEAD, --staged, REV, A B, or the change a
    version made (--change REV; a merge against its first parent, -m against each).

    \b
    Examples:
      dsv diff
      dsv diff --change HEAD -m --stat
      dsv diff production staging --stat
      dsv diff HEAD~1 HEAD --format jsonl -- evals/qa.jsonl
    """
    from dsv.diff import diff as compare

    if len(revs) > 2:
        raise click.UsageError("give at most two revisions; put paths after --")
    if as_json and not stat:
        raise click.UsageError("--json goes with --stat; use --format jsonl for datapoints")
    if sum((stat, name_status, out_format == "jsonl")) > 1:
        raise click.UsageError("choose one of --stat, --name-status and --format jsonl")
    if change_of is not None and (revs or staged):
        raise click.UsageError("--change REV takes no other revision, nor --staged")
    if each_parent and (change_of is None or out_format == "jsonl" or as_json):
        raise click.UsageError("-m goes with --change, in human, --stat or --name-status output")
    paths = user_paths(ctx, ctx.meta.get("paths") or []) or None
    a = revs[0] if revs else None
    b = revs[1] if len(revs) == 2 else None
    out = sys.stdout.buffer
    with open_repo(ctx) as repo:
        if change_of is not None:
            from dsv.diff import diff_commit

            oid = repo.resolve(change_of)
            parents = repo.read_commit(oid).parents
            numbers = range(1, len(parents) + 1) if each_parent and len(parents) > 1 else [1]
            results = [
                (n, diff_commit(repo, oid, paths=paths, key=split_key(key), parent_number=n))
                for n in numbers
            ]
        else:
            results = [(1, compare(repo, a, b, staged=staged, paths=paths, key=split_key(key)))]
        for number, result in results:
            if len(results) > 1:
                header = f"against parent {number} ({short(parents[number - 1])}):"
                out.write(header.encode() + b"\n")
            _emit_diff(result, stat, as_json, name_status, out_format, color, limit)


def _emit_diff(
    result: DiffResult,
    stat: bool,
    as_json: bool,
    name_status: bool,
    out_format: str,
    color: bool | None,
    limit: int | None,
) -> None:
    from dsv import diffview

    out = sys.stdout.buffer
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


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (cat_object, diff_command, log, show)
