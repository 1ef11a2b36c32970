"""Hosted-platform APIs served beside dsv's own protocol, one package per dialect.

A dialect has its routes, its types, its translation to repository operations, and its own
metadata behind an interface of its own; `Dialect` is what the app needs to mount it: the
path prefixes it owns, its routes, and the one place its errors become its error body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from litestar.connection import ASGIConnection
from litestar.handlers.http_handlers import HTTPRouteHandler

from dsv.errors import Unprocessable
from dsv.server.service import DEFAULT_API_REPO
from dsv.server.storage import KeyRecord, MetaStore
from dsv.server.storage.stored import StoredObjects

__all__ = ["Dialect", "FieldError", "Mount"]


class FieldError(Unprocessable):
    """A 422 naming the field at fault: `loc` (e.g. ["query", "size"]), a message and a kind.

    `detail` is the validation error of the FastAPI-style APIs: `[{loc, msg, type}]`.
    """

    def __init__(self, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> None:
        where = ".".join(str(part) for part in loc)
        super().__init__(f"{where}: {msg}")
        self.detail = [{"loc": list(loc), "msg": msg, "type": kind}]


class Mount(NamedTuple):
    """What the app gives a dialect to build its routes on."""

    objects: StoredObjects
    meta: MetaStore
    tmp_dir: Path
    auth: bool
    environments: tuple[str, ...]
    # The request's API key, if it sent one.
    key_of: Callable[[ASGIConnection[Any, Any, Any, Any]], str | None]
    # Names the request's key (its id, never the key) in the access log.
    note_caller: Callable[[KeyRecord | None], None]
    # Where the datasets of dialects without owners in their paths live when the request's
    # key is not for one repository (`dsv serve --api-repo`; dialects.ownerless.repo_for).
    api_repo: str = DEFAULT_API_REPO


class Dialect(NamedTuple):
    """A hosted-platform API: the prefixes of its paths, its routes, and its error body."""

    name: str
    prefixes: tuple[str, ...]
    routes: Callable[[Mount], list[HTTPRouteHandler]]
    # (the error, its one-line message, its hint, the request id) -> the JSON body to send.
    error_body: Callable[[Exception, str, str | None, str], Any]
