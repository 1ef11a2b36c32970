"""`dsv lock`, `dsv sync`, `dsv verify`: a code project's pinned dataset versions (dsv.lock)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dsv.cli.common import is_quiet, progress_line, quiet_option, short
from dsv.config import Remote
from dsv.errors import BadInput, BadState
from dsv.lockfile import LOCK_NAME, check_remote_url, find_lock, read_lock
from dsv.project import git_work_tree
from dsv.repo import DSV_DIR

__all__ = ["COMMANDS", "lock", "sync", "verify"]


def _cwd(ctx: click.Context) -> Path:
    return Path((ctx.obj or {}).get("cwd") or ".").resolve()


def _project_root(ctx: click.Context) -> Path:
    """Where dsv.lock is, or goes: beside an existing one, else at the top of the dsv
    repository, else of the git work tree, else here."""
    cwd = _cwd(ctx)
    found = find_lock(cwd)
    if found is not None:
        return found.parent
    for candidate in (cwd, *cwd.parents):
        if (candidate / DSV_DIR).is_dir():
            return candidate
    return git_work_tree(cwd) or cwd


def _existing_root(ctx: click.Context) -> Path:
    found = find_lock(_cwd(ctx))
    if found is None:
        raise BadState(
            f"no {LOCK_NAME} here or above", hint="pin a dataset first: dsv lock PATH@REV"
        )
    return found.parent


def _name(ctx: click.Context, root: Path, spec: str) -> str:
    """A 'PATH[@REV]' with PATH made relative to the project root."""
    path, at, rev = spec.rpartition("@")
    if not at:
        path, rev = spec, ""
    full = os.path.normpath(_cwd(ctx) / path)
    rel = os.path.relpath(full, root)
    if rel == os.curdir or rel.startswith(os.pardir):
        raise BadInput(f"path {path!r} is outside the project {root}")
    return Path(rel).as_posix() + (f"@{rev}" if at else "")


def _remote(root: Path, value: str, key_env: str | None) -> Remote:
    if "://" in value:
        return Remote(url=check_remote_url(value.strip(), where="--remote"), key_env=key_env)
    if (root / DSV_DIR).is_dir():
        from dsv.repo import Repository

        with Repository.open(root) as repo:
            known = repo.config.remotes.get(value)
        if known is not None:
            url = check_remote_url(known.url, where=f"remote {value!r}")
            return Remote(url=url, key_env=key_env or known.key_env)
    raise BadInput(
        f"no remote named {value!r} in {root}",
        hint="give its URL: dsv lock PATH@REV --remote http://HOST:PORT/OWNER/NAME",
    )


@click.command()
@click.argument("specs", nargs=-1, metavar="[PATH@REV]...")
@click.option(
    "--remote",
    "remote_name",
    default="origin",
    show_default=True,
    help="The remote to pin from: a remote's name or its URL.",
)
@click.option("--key-env", metavar="VAR", help="The variable holding the remote's API key.")
@click.option(
    "--update",
    is_flag=True,
    help="Move the named pins (all when none is named) to what their revisions "
    "name now; PATH@REV also changes the revision.",
)
@quiet_option
@click.pass_context
def lock(
    ctx: click.Context,
    specs: tuple[str, ...],
    remote_name: str,
    key_env: str | None,
    update: bool,
) -> None:
    """Pin dataset versions in dsv.lock, for the code project to commit.

    A pin names the dataset's path, its remote, the revision asked for and the commit and
    content it resolved to. It moves only with --update. Without arguments, shows the pins.

    \b
    Examples:
      dsv lock evals/qa.jsonl@production
      dsv lock --update evals/qa.jsonl
      dsv lock --update evals/qa.jsonl@v4
    """
    from dsv.remote.pins import lock as lock_pins

    root = _project_root(ctx)
    names = [_name(ctx, root, spec) for spec in specs]
    if not names and not update:
        for pin in read_lock(root / LOCK_NAME).pins.values():
            click.echo(f"{pin.path}\t{pin.rev}\t{short(pin.commit)}\t{pin.remote}")
        return
    if update:
        changes = lock_pins(root, update=names)
    else:
        changes = lock_pins(root, names, remote=_remote(root, remote_name, key_env))
    if is_quiet(ctx):
        return
    for change in changes:
        new = change.new
        if change.status == "updated" and change.old is not None:
            click.echo(
                f"updated {new.path}: {new.rev} {short(change.old.commit)} -> {short(new.commit)}"
            )
        else:
            click.echo(f"{change.status} {new.path}: {new.rev} at {short(new.commit)}")


@click.command()
@click.option("--force", "-f", is_flag=True, help="Overwrite working files with local changes.")
@quiet_option
@click.pass_context
def sync(ctx: click.Context, force: bool) -> None:
    """Make the working files exactly the versions dsv.lock pins, fetching what is missing.

    Works in a fresh clone of the code project: `.dsv` is made and the remotes added.

    \b
    Example:
      git clone git@host:team/evals-code.git && cd evals-code && dsv sync
    """
    from dsv.remote.pins import sync as sync_pins

    root = _existing_root(ctx)
    with progress_line(ctx) as progress:
        results = sync_pins(root, force=force, progress=progress.fn)
    if is_quiet(ctx):
        return
    for result in results:
        click.echo(f"{result.status} {result.path} ({short(result.commit)})")


@click.command()
@click.option(
    "--offline",
    is_flag=True,
    help="Check the working files only, not whether the pinned revisions moved.",
)
@quiet_option
@click.pass_context
def verify(ctx: click.Context, offline: bool) -> None:
    """Check the working files and pins against dsv.lock; exit 1 naming each difference.

    A working file that is missing or holds other records fails; so does a pin whose
    revision names another version of its dataset on the remote now (unless --offline).

    \b
    Example (a CI step):
      dsv sync && dsv verify
    """
    from dsv.remote.pins import verify as verify_pins

    root = _existing_root(ctx)
    problems = verify_pins(root, offline=offline)
    for problem in problems:
        click.echo(f"{problem.kind} {problem.message}")
    if problems:
        ctx.exit(1)
    if not is_quiet(ctx):
        pins = read_lock(root / LOCK_NAME).pins
        click.echo(f"ok: {len(pins)} pinned dataset(s) match {LOCK_NAME}")


# The commands of this family, as `dsv.cli` registers them.
COMMANDS = (lock, sync, verify)
