"""Remotes, the client side: push, fetch, pull and clone over HTTP (docs/protocol.md).

This module holds what needs no network: remote URLs and the remotes of `.dsv/config`.

- `dsv.remote.client`: push, fetch, pull, clone (httpx);
- the wire format both sides share is `dsv.protocol`; the server is `dsv.server`, which this
  package never imports (nor it this one).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec

from dsv.config import Remote
from dsv.errors import BadInput
from dsv.refs import REMOTES, check_ref_name
from dsv.repo import Repository
from dsv.store import ObjectStore

__all__ = [
    "RemoteUrl",
    "add_remote",
    "get_remote",
    "list_remotes",
    "missing_from",
    "parse_url",
    "remove_remote",
]


# -- URLs and the remotes of a repository ----------------------------------------------------


class RemoteUrl(msgspec.Struct, frozen=True):
    """`http(s)://HOST[:PORT][/PREFIX]/OWNER/NAME` split into the server's base and the repo."""

    base: str
    repo: str

    @property
    def url(self) -> str:
        return f"{self.base}/{self.repo}"


def parse_url(url: str) -> RemoteUrl:
    parts = urlsplit(url.strip())
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or not parts.netloc or len(path) < 2:
        raise BadInput(
            f"invalid remote URL {url!r}",
            hint="use http://HOST:PORT/OWNER/NAME, e.g. http://127.0.0.1:8080/acme/evals",
        )
    if parts.query or parts.fragment:
        raise BadInput(f"invalid remote URL {url!r}: no query or fragment is allowed")
    prefix = "/".join(path[:-2])
    base = f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return RemoteUrl(base, f"{path[-2]}/{path[-1]}")


def _check_remote_name(name: str) -> None:
    check_ref_name(name, what="remote name")
    if "/" in name:
        raise BadInput(f"invalid remote name {name!r}: '/' is not allowed")


def add_remote(
    repo: Repository,
    name: str,
    url: str,
    *,
    key_env: str | None = None,
    prefix: str | None = None,
) -> Remote:
    """Add remote `name`: a dsv server's repository, or a hosted platform (`KIND+https://…`,
    `prefix` the platform folder its datasets go in by default)."""
    from dsv.remote.hosted import is_hosted, parse_hosted_url

    _check_remote_name(name)
    if is_hosted(url):
        parse_hosted_url(url)
    else:
        parse_url(url)
        if prefix is not None:
            raise BadInput("--prefix is for hosted platforms' remotes (KIND+https://…) only")
    if key_env is not None and not key_env.replace("_", "a").isalnum():
        raise BadInput(f"invalid environment variable name {key_env!r}")
    with repo.lock():
        remotes = dict(repo.config.remotes)
        if name in remotes:
            raise BadInput(
                f"remote {name!r} exists already ({remotes[name].url})",
                hint=f"remove it first with 'dsv remote remove {name}'",
            )
        remotes[name] = Remote(
            url=url.strip().rstrip("/"),
            key_env=key_env,
            prefix=prefix.strip("/") if prefix else None,
        )
        repo.save_config(msgspec.structs.replace(repo.config, remotes=remotes))
    return remotes[name]


def remove_remote(repo: Repository, name: str) -> list[str]:
    """Forget remote `name` and its remote-tracking refs; return the refs removed."""
    with repo.lock():
        remotes = dict(repo.config.remotes)
        if name not in remotes:
            raise BadInput(f"no remote named {name!r}", hint="'dsv remote list' shows them")
        del remotes[name]
        repo.save_config(msgspec.structs.replace(repo.config, remotes=remotes))
        removed = []
        for full, oid in repo.refs.list_refs(f"{REMOTES}{name}/"):
            repo.refs.delete(full, expected=oid, user=repo.user, reason=f"remote {name} removed")
            removed.append(full)
        # A hosted remote's sync state goes with it: a remote added again syncs afresh.
        (repo.dsv_dir / "hosted" / f"{name}.json").unlink(missing_ok=True)
    return removed


def list_remotes(repo: Repository) -> dict[str, Remote]:
    return dict(sorted(repo.config.remotes.items()))


def get_remote(repo: Repository, name: str) -> Remote:
    remote = repo.config.remotes.get(name)
    if remote is None:
        if "://" in name:  # a URL where a remote's name goes
            hint = f"name it first: 'dsv remote add NAME {name}', then use NAME"
        else:
            hint = f"add it with 'dsv remote add {name} http://HOST:PORT/OWNER/NAME'"
        raise BadInput(f"no remote named {name!r}", hint=hint)
    return remote


def missing_from(store: ObjectStore, oids: Iterable[bytes]) -> set[bytes]:
    """Which of `oids` `store` lacks, looking for packs it does not know yet first."""
    return store.missing(oids)
