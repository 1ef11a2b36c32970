"""`dsv serve`: the server side of remotes (docs/protocol.md), above dsv's core, beside the client.

- `dsv.server.app`: the HTTP app (litestar), error mapping, request log, and the runner;
- `dsv.server.service`: the protocol's rules, HTTP-free;
- `dsv.server.storage`: the blob and metadata store interfaces and their embedded backends;
- `dsv.server.keys`: API keys;
- `dsv.server.dialects`: hosted-platform APIs (Humanloop) served beside the protocol;
- `dsv.server.web`: the web view (docs/web.md), also served alone by `dsv ui`.

It never imports the client (`dsv.remote`), nor the client it; both use `dsv.protocol`.
"""

from __future__ import annotations

from dsv.server.app import create_app, serve, serve_repository
from dsv.server.service import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve", "serve_repository"]
