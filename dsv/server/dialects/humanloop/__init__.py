"""The Humanloop Datasets API (docs/humanloop.md): its routes, types, history and own store."""

from __future__ import annotations

from typing import Any

from dsv.server.dialects import Dialect, FieldError
from dsv.server.dialects.humanloop.routes import routes

__all__ = ["HUMANLOOP", "error_body"]


def error_body(exc: Exception, message: str, hint: str | None, request_id: str) -> Any:
    """Every failure under /v5 and /v4 as the Humanloop API's `{"detail": ...}` that its SDK
    reads: a validation error's `[{loc, msg, type}]`, any other's message."""
    detail: Any = exc.detail if isinstance(exc, FieldError) else message
    return {"detail": detail, "hint": hint, "request_id": request_id}


HUMANLOOP = Dialect("humanloop", ("/v5/", "/v4/"), routes, error_body)
