"""API keys of a dsv server: created once, stored as SHA-256 digests, checked per request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from dsv.errors import AccessDenied, BadInput, Forbidden, Unauthorized
from dsv.server.storage import KeyRecord, MetaStore, Scope, check_repo_name

__all__ = [
    "KEY_PREFIX",
    "AccessDenied",
    "authenticate",
    "authorize",
    "create_key",
    "key_digest",
    "permit",
    "revoke_key",
]

KEY_PREFIX = "dsv_"
_ID_BYTES = 6
_SECRET_BYTES = 32
_ENV_HINT = (
    "set DSV_API_KEY (or the variable named by 'dsv remote add --key-env') to a key "
    "made with 'dsv keys create' on the server"
)


def key_digest(key: str) -> bytes:
    """What is stored of a key: a key has 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def create_key(
    meta: MetaStore, scope: Scope, repo: str | None = None, *, note: str = ""
) -> tuple[KeyRecord, str]:
    """A new key for `repo` (every repository when None); the clear key is returned only here."""
    if scope not in ("read", "write"):
        raise BadInput(f"invalid scope {scope!r}", hint="use read or write")
    if repo is not None:
        check_repo_name(repo)
    key_id = secrets.token_hex(_ID_BYTES)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    record = KeyRecord(key_id, key_digest(key), scope, repo, int(time.time()), None, note)
    meta.add_key(record)
    return record, key


def revoke_key(meta: MetaStore, key_id: str) -> None:
    if not meta.revoke_key(key_id):
        known = {k.id: k for k in meta.list_keys()}
        if key_id in known:
            raise BadInput(f"key {key_id} is revoked already")
        raise BadInput(f"no key with id {key_id!r}", hint="'dsv keys list' shows the ids")


def authorize(meta: MetaStore, key: str | None, repo: str, *, write: bool) -> KeyRecord:
    """The key's record if it may read (or write) `repo`; otherwise AccessDenied."""
    return permit(authenticate(meta, key), repo, write=write)


def authenticate(meta: MetaStore, key: str | None) -> KeyRecord:
    """The record of a valid, unrevoked key; otherwise Unauthorized."""
    if not key:
        raise Unauthorized("this server requires an API key", _ENV_HINT)
    record = meta.key_by_digest(key_digest(key))
    # compare_digest keeps the check constant-time even though the lookup is by digest.
    if record is None or not hmac.compare_digest(record.digest, key_digest(key)):
        raise Unauthorized("the API key is not valid on this server", _ENV_HINT, code="bad_key")
    if record.revoked is not None:
        raise Unauthorized(f"API key {record.id} has been revoked", _ENV_HINT, code="bad_key")
    return record


def permit(record: KeyRecord, repo: str, *, write: bool) -> KeyRecord:
    """`record` if its key may read (or write) `repo`; otherwise Forbidden."""
    if record.repo is not None and record.repo != repo:
        raise Forbidden(
            f"API key {record.id} is for repository {record.repo}, not {repo}",
            f"use a key made with 'dsv keys create --repo {repo}'",
        )
    if write and record.scope != "write":
        raise Forbidden(
            f"API key {record.id} may only read {repo}; pushing needs a write key",
            f"use a key made with 'dsv keys create --scope write --repo {repo}'",
        )
    return record
