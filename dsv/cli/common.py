"""What every command of the CLI shares: opening the repository the way a terminal user
expects, `--quiet`, and progress on a terminal."""

from __future__ import annotations

import datetime as dt
import difflib
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import click
import msgspec

from dsv.errors import DsvError
from dsv.progress import Progress
from dsv.repo import Repository

__all__ = [
    "SHORT",
    "DsvGroup",
    "PathsAfterDashes",
    "ProgressLine",
    "emit_json",
    "format_size",
    "format_time",
    "is_quiet",
    "iso_time",
    "open_repo",
    "progress_line",
    "quiet_option",
    "short",
    "split_key",
    "user_paths",
]

F = TypeVar("F", bound=Callable[..., Any])
# A step shows progress only once it has taken this long: quick ones stay silent.
SHOW_AFTER = 0.5
_REDRAW = 0.1  # seconds between two redraws of the line


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
    if not is_quiet(ctx):
        lock.on_wait = lambda line: click.echo(line, err=True)
    return repo


# -- --quiet ---------------------------------------------------------------------------------


def _set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["quiet"] = True


def quiet_option(command: F) -> F:
    """`-q/--quiet` on a command: the same as `dsv -q COMMAND`."""
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="No progress, no waiting notice, no informational output; errors still show.",
    )(command)


def is_quiet(ctx: click.Context) -> bool:
    """Did the user ask for quiet (`dsv -q COMMAND` or `COMMAND -q`)?"""
    return bool((ctx.find_root().obj or {}).get("quiet"))


# -- progress --------------------------------------------------------------------------------


def format_size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 3.2 MiB, 1.1 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _on_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressLine:
    """Draws a library's Progress reports as one line on stderr, git-like: 'Phase: 45%
    (9/20 files)', each phase's line left finished ('…, done.') when the next begins.

    Only on a terminal, only once the command has taken SHOW_AFTER seconds, never with
    --quiet; otherwise `fn` is None, so the library skips its reports altogether.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.current: Progress | None = None
        self.phase_started = self.started
        self.phase_bytes = 0
        self.reported = self.started  # when the last report came
        self.drawn = 0.0  # when the line was last drawn; 0: not drawn in this phase
        self.width = 0

    @property
    def fn(self) -> Callable[[Progress], None] | None:
        """The callback to hand to the library, or None when nothing would be shown."""
        return self if self.enabled else None

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if self.current is not None and p.phase != self.current.phase:
            self._end_phase()
        if self.current is None or p.phase != self.current.phase:
            # The rate counts from the previous phase's last report: a phase's first report
            # may already carry bytes it moved.
            if self.current is not None:
                self.phase_started = self.reported
            self.phase_bytes = self.current.bytes if self.current is not None else 0
        self.reported = now
        self.current = p
        finished = bool(p.total) and p.done >= p.total
        if now - self.started < SHOW_AFTER or (now - self.drawn < _REDRAW and not finished):
            return
        self._draw(p, now)

    def _text(self, p: Progress, now: float) -> str:
        if p.unit == "bytes":
            amount = format_size(p.done) + (f"/{format_size(p.total)}" if p.total else "")
        else:
            amount = f"{p.done}/{p.total} {p.unit}" if p.total else f"{p.done} {p.unit}"
        text = f"{p.phase[:1].upper()}{p.phase[1:]}: "
        text += f"{100 * p.done // p.total:3d}% ({amount})" if p.total else amount
        if p.bytes:
            rate = (p.bytes - self.phase_bytes) / max(now - self.phase_started, 1e-3)
            text += f", {format_size(p.bytes)}, {format_size(rate)}/s"
        return text

    def _draw(self, p: Progress, now: float) -> None:
        text = self._text(p, now)
        click.echo("\r" + text.ljust(self.width), nl=False, err=True)
        self.width = len(text)
        self.drawn = now

    def _end_phase(self) -> None:
        """Leave the phase's line finished, if it was shown at all."""
        if self.drawn and self.current is not None:
            self._draw(self.current, time.monotonic())
            click.echo(", done.", err=True)
        self.drawn = 0.0
        self.width = 0

    def close(self, *, failed: bool = False) -> None:
        """End the last line, 'done.' unless the step failed: the terminal is left at a fresh
        line for what follows (an error, say)."""
        if failed and self.drawn:
            click.echo(err=True)
            self.drawn = 0.0
        self._end_phase()
        self.current = None

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(failed=kind is not None)


def progress_line(ctx: click.Context) -> ProgressLine:
    """The progress renderer for this command: enabled on a terminal without --quiet."""
    return ProgressLine(enabled=not is_quiet(ctx) and _on_terminal())


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


def split_key(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(","))
