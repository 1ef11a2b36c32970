"""The Overmind Lab Datasets API's shapes: its requests, responses, errors, ids, and how its
datapoints map onto dsv records (docs/overmind.md). The rules are in its `service` module.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import blake3
import msgspec

from dsv.errors import BadInput, NotFound
from dsv.server.dialects.records import expected_output_of

__all__ = [
    "DATASET_SUFFIX",
    "PAGE_SIZE",
    "SOURCES",
    "CreateDataset",
    "DatasetResponse",
    "Invalid",
    "agent_of_path",
    "agent_of_record_id",
    "check_uuid",
    "datapoint_id",
    "datapoint_response",
    "decode_body",
    "not_found",
    "page_links",
    "parse_int",
    "parse_page",
    "record_id_of_agent",
    "record_of",
    "version_uuid",
]

DATASET_SUFFIX = ".jsonl"
# Overmind Lab's page size: its API takes no size parameter.
PAGE_SIZE = 100
SOURCES = ("seed", "synthetic", "augmented", "production")
# Fields of a datapoint that the API itself gives (not kept in the record: `order` is the
# datapoint's position, `id` comes from its content).
_DERIVED = ("id", "order")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Invalid(BadInput):
    """A 400 in Django REST framework's shape: `{"field": ["message"]}`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.fields = {field: [message]}


def not_found(message: str = "Not found.") -> NotFound:
    return NotFound(message)


# -- ids ------------------------------------------------------------------------------------------


def check_uuid(text: str, field: str) -> str:
    """A UUID in its canonical lowercase form; a 400 naming `field` otherwise."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, AttributeError, TypeError):
        raise Invalid(field, "Must be a valid UUID.") from None


def _uuid8(data: bytes) -> str:
    """A version 8 (custom) UUID of the first 16 bytes of `data`."""
    raw = bytearray(data[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def datapoint_id(oid: bytes) -> str:
    """A datapoint's id: its object id's first 16 bytes as a version 8 UUID."""
    return _uuid8(oid)


def version_uuid(dataset_id: str, commit: bytes) -> str:
    """A dataset version's id: of the dataset (its Humanloop `ds_` id) and the commit."""
    return _uuid8(blake3.blake3(f"overmind version\x00{dataset_id}\x00".encode() + commit).digest())


def agent_of_record_id(dataset_id: str) -> str:
    """The agent of a dataset whose file is not named by a UUID: its `ds_` id's 24 hex digits
    inside a version 8 UUID (`hhhhhhhh-hhhh-8hhh-8hhh-hhhhhh000000`), so it maps back."""
    h = dataset_id[3:]
    return str(uuid.UUID(h[0:12] + "8" + h[12:15] + "8" + h[15:24] + "000000"))


def record_id_of_agent(agent: str) -> str | None:
    """The `ds_` id an agent of agent_of_record_id's form stands for; None for any other."""
    h = agent.replace("-", "")
    if len(h) != 32 or h[12] != "8" or h[16] != "8" or h[26:] != "000000":
        return None
    return "ds_" + h[0:12] + h[13:16] + h[17:26]


def agent_of_path(path: str) -> str | None:
    """The agent a file `UUID.jsonl` (at the repository's top) belongs to; None for others."""
    stem = path[: -len(DATASET_SUFFIX)] if path.endswith(DATASET_SUFFIX) else ""
    return stem if _UUID.fullmatch(stem) else None


# -- requests -------------------------------------------------------------------------------------


class CreateDataset(msgspec.Struct, forbid_unknown_fields=True):
    agent: str
    datapoints: list[dict[str, Any]]
    name: str | None = None
    source: str | None = None
    make_active: bool = False
    generator_model: str | None = None
    metadata: dict[str, Any] | None = None


def decode_body(data: bytes) -> CreateDataset:
    """The body of `POST /api/datasets/`; a 400 naming the field otherwise."""
    if not data.strip():
        raise Invalid("non_field_errors", "No data provided")
    try:
        body = msgspec.json.decode(data, type=CreateDataset)
    except msgspec.ValidationError as exc:
        text = str(exc)
        missing = re.search(r"missing required field `([^`]+)`", text)
        unknown = re.search(r"unknown field `([^`]+)`", text)
        at = re.search(r"at `\$\.?([^`]*)`", text)
        if missing:
            raise Invalid(missing[1], "This field is required.") from exc
        if unknown:
            raise Invalid(unknown[1], "Unknown field.") from exc
        field = at[1].split(".")[0].split("[")[0] if at and at[1] else "non_field_errors"
        raise Invalid(field, text.split(" - at ")[0]) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise Invalid("non_field_errors", f"JSON parse error: {exc}") from exc
    body.agent = check_uuid(body.agent, "agent")
    if body.name is not None and len(body.name) > 255:
        raise Invalid("name", "Ensure this field has no more than 255 characters.")
    if body.generator_model is not None and len(body.generator_model) > 128:
        raise Invalid("generator_model", "Ensure this field has no more than 128 characters.")
    if body.source is not None and body.source not in SOURCES:
        raise Invalid("source", f'"{body.source}" is not a valid choice.')
    return body


def record_of(point: Any, at: int) -> tuple[int | None, dict[str, Any]]:
    """A posted datapoint as (its `order`, the record kept): `input` as `inputs` when it is an
    object (else under `input`), `expected_output`, `persona`, non-empty `tags`, and every
    other field under its own name; `id` and `order` are the API's, not kept."""
    field = f"datapoints[{at}]"
    if not isinstance(point, dict):
        raise Invalid(field, "Expected a dictionary of items.")
    order = point.get("order")
    if order is not None and (
        not isinstance(order, int) or isinstance(order, bool) or not 0 <= order < 1 << 63
    ):
        raise Invalid(f"{field}.order", "A valid non-negative integer is required.")
    persona = point.get("persona")
    if persona is not None and (not isinstance(persona, str) or len(persona) > 128):
        raise Invalid(
            f"{field}.persona", "Ensure this field is a string of at most 128 characters."
        )
    tags = point.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise Invalid(f"{field}.tags", "Expected a dictionary of items.")
    record: dict[str, Any] = {}
    for name, value in point.items():
        if name in _DERIVED or value is None:
            continue
        if name == "input":
            record["inputs" if isinstance(value, dict) else "input"] = value
        elif name == "tags":
            if value:
                record["tags"] = value
        elif name == "inputs" and "input" in point:
            raise Invalid(f"{field}.inputs", "Give input or inputs, not both.")
        else:
            record[name] = value
    return order, record


# -- responses ------------------------------------------------------------------------------------


class DatasetResponse(msgspec.Struct, frozen=True):
    id: str
    agent: str
    created_at: str
    version: int
    num_datapoints: int
    name: str | None
    source: str | None
    generator_model: str | None
    policy_hash: str | None
    metadata: dict[str, Any] | None
    # dsv's own: the version's commit (as Humanloop's `version_id` spells it), and whether it
    # is the agent's active dataset (the one deployed to the default environment).
    dsv_version: str
    is_active: bool
    # UNSET leaves it out: every response but a create's.
    version_created: bool | msgspec.UnsetType = msgspec.UNSET


def datapoint_response(oid: bytes, record: dict[str, Any], position: int) -> dict[str, Any]:
    """A record as an Overmind datapoint (docs/overmind.md, "Reading any record"): `input` is
    its `inputs`, else its own `input`; `expected_output` its own, else `output`, else
    `target`; `order` its position; every other field under its own name."""
    shown: dict[str, Any] = {
        "id": datapoint_id(oid),
        "input": record["inputs"] if "inputs" in record else record.get("input"),
        "expected_output": expected_output_of(record),
        "order": position,
        "persona": record.get("persona"),
        "tags": record.get("tags", {}),
    }
    for name, value in record.items():
        if name not in shown and name not in ("inputs", "input"):
            shown[name] = value
    return shown


# -- query parameters -----------------------------------------------------------------------------


def parse_int(name: str, text: str | None) -> int | None:
    """An integer filter (django-filter's NumberFilter); a 400 naming it otherwise."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise Invalid(name, "Enter a number.") from None


def parse_page(text: str | None, count: int) -> int:
    """Django REST framework's page number: from 1, or `last`; past the end is a 404."""
    last = max(1, -(-count // PAGE_SIZE))
    if text is None or text == "":
        return 1
    if text == "last":
        return last
    try:
        page = int(text)
    except ValueError:
        raise not_found("Invalid page.") from None
    if not 1 <= page <= last:
        raise not_found("Invalid page.")
    return page


def page_links(url: str, page: int, count: int) -> tuple[str | None, str | None]:
    """`next` and `previous` of a page, as Django REST framework builds them: the request's
    URL with `page` replaced (removed for the first page)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]

    def at(number: int) -> str:
        wanted = query if number == 1 else [*query, ("page", str(number))]
        return urlunsplit(parts._replace(query=urlencode(wanted)))

    more = page * PAGE_SIZE < count
    return (at(page + 1) if more else None, at(page - 1) if page > 1 else None)
