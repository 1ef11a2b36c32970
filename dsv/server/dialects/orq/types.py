"""Request shapes of the orq.ai v2 Datasets API, as the official `orq-ai-sdk` sends them."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "BulkCreate",
    "BulkDelete",
    "CreateDataset",
    "DatapointBody",
    "UpdateDataset",
]


class CreateDataset(msgspec.Struct, forbid_unknown_fields=True):
    display_name: str
    # orq.ai's folder of the dataset in its project: the file's folder in the repository.
    path: str | None = None


class UpdateDataset(msgspec.Struct, forbid_unknown_fields=True):
    display_name: str | None = None
    project_id: str | None = None


class DatapointBody(msgspec.Struct, forbid_unknown_fields=True):
    """A datapoint to create, or the fields a PATCH sets (the SDK sends only those set)."""

    inputs: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    expected_output: str | None = None
    metadata: dict[str, Any] | None = None


class BulkCreate(msgspec.Struct, forbid_unknown_fields=True):
    items: list[DatapointBody]


class BulkDelete(msgspec.Struct, forbid_unknown_fields=True):
    item_ids: list[str]
