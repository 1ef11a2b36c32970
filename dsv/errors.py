"""The one exception tree of dsv: every failure a user can see is a DsvError."""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BadInput",
    "BadState",
    "Conflict",
    "CorruptObject",
    "DsvError",
    "Forbidden",
    "LockedError",
    "NotARepository",
    "NotFound",
    "RemoteError",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
]


class DsvError(Exception):
    """Root of dsv's errors; `message` is one line, `hint` an optional next step.

    `code` is the stable name a server sends for it (docs/protocol.md §6); each class has one,
    and a raise may name a finer one (`non_fast_forward` is a Conflict).
    """

    exit_code = 1
    code = "internal"

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class BadInput(DsvError):
    """The user's input is wrong: a file, an argument, a revision name."""

    exit_code = 2
    code = "bad_request"


class NotFound(BadInput):
    """What the input names does not exist: a repository, an object, a dataset, a version."""

    code = "not_found"


class TooLarge(BadInput):
    """The input is over a limit: too many ids, too many bytes."""

    code = "too_large"


class Unprocessable(BadInput):
    """The input is well formed but cannot be applied: it refers to what is not there."""

    code = "unprocessable"


class BadState(DsvError):
    """The repository is not in a state that allows the operation."""

    exit_code = 3


class NotARepository(BadState):
    """No `.dsv` directory was found."""


class LockedError(BadState):
    """Another process holds the repository lock."""


class Conflict(BadState):
    """The state moved or holds something the operation would clash with."""

    code = "conflict"


class CorruptObject(BadState):
    """An object is missing, unreadable or does not hash to its id."""

    exit_code = 4
    code = "corrupt"


class RemoteError(DsvError):
    """A remote refused a request or could not be reached."""

    exit_code = 5


class AccessDenied(DsvError):
    """A request without a valid key, or with a key that may not do it."""


class Unauthorized(AccessDenied):
    """No key, or one that is not valid (here, or any more)."""

    code = "unauthenticated"


class Forbidden(AccessDenied):
    """A valid key that may not do this."""

    code = "forbidden"
