"""`.dsv/config`: the repository's format version, identity and remotes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from dsv.errors import BadInput, BadState
from dsv.fsutil import write_atomic

__all__ = [
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "Config",
    "Remote",
    "now_and_tz",
    "read_config",
    "user_identity",
    "write_config",
]

FORMAT_VERSION = 3  # what this dsv writes (docs/format.md §6)
READABLE_FORMATS = (1, 2, 3)


class Remote(msgspec.Struct, frozen=True):
    """A remote: its URL and key variable; a hosted platform's (`KIND+https://…`) also maps
    dataset files to platform datasets (`datasets`: file -> platform path or id) and names
    the platform folder new datasets go in (`prefix`), docs/remotes.md."""

    url: str
    key_env: str | None = None
    datasets: dict[str, str] = {}
    prefix: str | None = None


class Config(msgspec.Struct, frozen=True):
    format: int = FORMAT_VERSION
    user_name: str | None = None
    user_email: str | None = None
    environments: tuple[str, ...] = ("production", "staging")
    remotes: dict[str, Remote] = {}


def read_config(path: Path) -> Config:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadState(f"{path} is missing: not a complete dsv repository") from None
    try:
        raw = msgspec.json.decode(data)
        version = raw.get("format") if isinstance(raw, dict) else None
    except msgspec.DecodeError as exc:
        raise BadState(f"{path}: malformed JSON ({exc})") from exc
    if version not in READABLE_FORMATS:
        raise BadState(
            f"repository format {version!r} is not supported (this dsv reads formats "
            f"{', '.join(map(str, READABLE_FORMATS[:-1]))} and {READABLE_FORMATS[-1]})",
            hint="use a dsv release that supports it",
        )
    try:
        return msgspec.json.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise BadState(f"{path}: {exc}") from exc


def write_config(path: Path, config: Config) -> None:
    write_atomic(path, msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n")


def _git_identity() -> tuple[str | None, str | None]:
    """user.name and user.email from ~/.gitconfig, which most users have set already."""
    name = email = None
    section = ""
    try:
        lines = (Path.home() / ".gitconfig").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    for line in lines:
        text = line.strip()
        if text.startswith("["):
            section = text.strip("[]").strip().lower()
        elif section == "user" and "=" in text:
            key, _, value = text.partition("=")
            key = key.strip().lower()
            if key == "name":
                name = value.strip().strip('"')
            elif key == "email":
                email = value.strip().strip('"')
    return name, email


def user_identity(config: Config | None = None) -> str:
    """'Name <email>' from DSV_AUTHOR_NAME/EMAIL, the repo config, git's config, or the login."""
    name = os.environ.get("DSV_AUTHOR_NAME") or (config.user_name if config else None)
    email = os.environ.get("DSV_AUTHOR_EMAIL") or (config.user_email if config else None)
    if not name or not email:
        git_name, git_email = _git_identity()
        name = name or git_name
        email = email or git_email
    if not name:
        import getpass  # here, as socket below: every ref move asks, and most find a name

        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
    if not email:
        import socket

        email = f"{name}@{socket.gethostname()}"
    return f"{name} <{email}>"


def now_and_tz() -> tuple[int, int]:
    """The time and UTC offset (minutes) a new commit records; `DSV_DATE` fixes them."""
    forced = os.environ.get("DSV_DATE")
    if forced:
        try:
            when, _, zone = forced.partition(" ")
            return int(when), _parse_tz(zone or "+0000")
        except ValueError:
            raise BadInput(f"DSV_DATE={forced!r}: expected 'UNIXTIME +HHMM'") from None
    now = time.time()
    return int(now), round(time.localtime(now).tm_gmtoff / 60)


def _parse_tz(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(text)
    return sign * (int(digits[:2]) * 60 + int(digits[2:]))
