"""What every command of the CLI shares: opening the repository the way a terminal user expects."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from dsv.errors import DsvError
from dsv.repo import Repository

__all__ = ["DsvGroup", "open_repo"]


class DsvGroup(click.Group):
    """Runs a command and turns every DsvError into `error: …` plus an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Like click's, but usage errors are one `error: …` line with a hint, too."""
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            code = 0
        except click.ClickException as exc:
            message = exc.format_message().rstrip(".")
            click.echo(f"error: {message[:1].lower()}{message[1:]}", err=True)
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                click.echo(f"hint: see '{ctx.command_path} --help'", err=True)
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Suggest only a close match: click's own cutoff offers `serve` for `merge`.
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.75)
            ctx.fail(
                f"No such command {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DsvError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader (e.g. `head`) went away; that is not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)


def open_repo(ctx: click.Context) -> Repository:
    """The repository dsv runs in (`-C` or the cwd); its lock names this command to waiters
    and tells this user when it has to wait for another."""
    repo = Repository.open((ctx.obj or {}).get("cwd") or ".")
    lock = repo.lock()
    names: list[str] = []
    while ctx.parent is not None:  # not ctx.command_path: under `python -m dsv` it says so
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    lock.purpose = " ".join(["dsv", *names])
    lock.on_wait = lambda line: click.echo(line, err=True)
    return repo
