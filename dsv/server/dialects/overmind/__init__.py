"""The Overmind Lab Datasets API (docs/overmind.md): its routes, types and own store."""

from __future__ import annotations

from typing import Any

from dsv.server.dialects import Dialect, FieldError
from dsv.server.dialects.overmind.routes import routes
from dsv.server.dialects.overmind.types import Invalid

__all__ = ["OVERMIND", "error_body"]


def error_body(exc: Exception, message: str, hint: str | None, request_id: str) -> Any:
    """Every failure under /api as Django REST framework's body, which Overmind Lab sends: a
    validation error as `{"field": ["message"]}`, any other as `{"detail": "message"}` (with
    dsv's `hint` and `request_id`)."""
    if isinstance(exc, Invalid):
        return exc.fields
    if isinstance(exc, FieldError):
        where = ".".join(str(p) for p in exc.detail[0]["loc"][1:]) or "non_field_errors"
        return {where: [exc.detail[0]["msg"]]}
    return {"detail": message, "hint": hint, "request_id": request_id}


OVERMIND = Dialect("overmind", ("/api/",), routes, error_body)
