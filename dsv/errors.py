"""The one exception tree of dsv: every failure a user can see is a DsvError."""

from __future__ import annotations

__all__ = [
    "BadInput",
    "BadState",
    "CorruptObject",
    "DsvError",
    "LockedError",
    "NotARepository",
    "RemoteError",
]


class DsvError(Exception):
    """Root of dsv's errors; `message` is one line, `hint` an optional next step."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadInput(DsvError):
    """The user's input is wrong: a file, an argument, a revision name."""

    exit_code = 2


class BadState(DsvError):
    """The repository is not in a state that allows the operation."""

    exit_code = 3


class NotARepository(BadState):
    """No `.dsv` directory was found."""


class LockedError(BadState):
    """Another process holds the repository lock."""


class CorruptObject(BadState):
    """An object is missing, unreadable or does not hash to its id."""

    exit_code = 4


class RemoteError(DsvError):
    """A remote refused a request or could not be reached."""

    exit_code = 5
