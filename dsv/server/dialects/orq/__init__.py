"""The orq.ai v2 Datasets API (docs/orq.md): its routes, types and service."""

from __future__ import annotations

from typing import Any

from dsv.server.dialects import Dialect, FieldError
from dsv.server.dialects.orq.routes import routes

__all__ = ["ORQ", "error_body"]


def error_body(exc: Exception, message: str, hint: str | None, request_id: str) -> Any:
    """Every failure under /v2 as orq.ai's `{"message": ...}`, which its SDK reads; a
    validation error's `[{loc, msg, type}]` goes in `details`."""
    details = exc.detail if isinstance(exc, FieldError) else None
    return {"message": message, "details": details, "hint": hint, "request_id": request_id}


ORQ = Dialect("orq", ("/v2/",), routes, error_body)
