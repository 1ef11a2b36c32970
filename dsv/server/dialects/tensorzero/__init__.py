"""TensorZero's dataset endpoints (docs/tensorzero.md): routes, types and service."""

from __future__ import annotations

from typing import Any

from dsv.server.dialects import Dialect, FieldError
from dsv.server.dialects.tensorzero.routes import routes

__all__ = ["TENSORZERO", "error_body"]


def error_body(exc: Exception, message: str, hint: str | None, request_id: str) -> Any:
    """Every failure under TensorZero's paths as its gateway's `{"error": "..."}`; a
    validation error's `[{loc, msg, type}]` goes in `details`."""
    details = exc.detail if isinstance(exc, FieldError) else None
    return {"error": message, "details": details, "hint": hint, "request_id": request_id}


TENSORZERO = Dialect(
    "tensorzero", ("/v1/datasets/", "/datasets/", "/internal/datasets"), routes, error_body
)
