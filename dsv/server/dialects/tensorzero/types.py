"""Request shapes of TensorZero's dataset endpoints, as the `tensorzero` client (HTTP mode)
and the older gateway endpoints send them."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "CreateBody",
    "CreateDatapoint",
    "IdsBody",
    "Input",
    "LegacyBulkBody",
    "ListBody",
    "MetadataBody",
    "MetadataUpdate",
    "UpdateBody",
    "UpdateDatapoint",
]


class Input(msgspec.Struct, forbid_unknown_fields=True):
    system: Any = None
    messages: list[dict[str, Any]] | None = None


class CreateDatapoint(msgspec.Struct, forbid_unknown_fields=True):
    function_name: str
    input: Input
    # The client sends it; the older bulk endpoint does not (json when output_schema is given
    # or the output is an object).
    type: Literal["chat", "json"] | None = None
    output: Any = None
    output_schema: Any = None
    tags: dict[str, Any] | None = None
    name: str | None = None
    episode_id: str | None = None
    allowed_tools: list[str] | None = None
    additional_tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    provider_tools: list[Any] | None = None


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[CreateDatapoint]


class LegacyBulkBody(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[CreateDatapoint]


class UpdateDatapoint(msgspec.Struct, forbid_unknown_fields=True):
    """An update: null or absent fields stay as they are (the client sends null for both)."""

    id: str
    type: Literal["chat", "json"] | None = None
    input: Input | None = None
    output: Any = None
    output_schema: Any = None
    tags: dict[str, Any] | None = None
    name: str | None = None
    allowed_tools: list[str] | None = None
    additional_tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    provider_tools: list[Any] | None = None


class UpdateBody(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[UpdateDatapoint]


class MetadataUpdate(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str | None = None


class MetadataBody(msgspec.Struct, forbid_unknown_fields=True):
    datapoints: list[MetadataUpdate]


class IdsBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class ListBody(msgspec.Struct, forbid_unknown_fields=True):
    function_name: str | None = None
    limit: int | None = None
    offset: int | None = None
    # The older name of `limit`.
    page_size: int | None = None
    filter: dict[str, Any] | None = None
    order_by: list[dict[str, Any]] | None = None
    search_query_experimental: str | None = None
