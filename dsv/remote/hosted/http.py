"""Requests to a hosted platform: JSON in and out, retried with backoff on 429 and 5xx
(honouring Retry-After) and on dropped connections, bytes counted, error bodies turned into
one-line errors."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import httpx
import msgspec

from dsv.errors import NotFound, RemoteError
from dsv.version import __version__

__all__ = [
    "RETRY_STATUSES",
    "HostedHttp",
    "HttpPlatform",
    "Interrupted",
    "retry_delay",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0)
# A Retry-After longer than this is a platform asking for a pause no command should sit
# through: the command fails, saying when to run it again.
_LONGEST_WAIT = 120.0


def retry_delay(attempt: int, retry_after: str | None, *, now: float | None = None) -> float:
    """Seconds to wait before retry `attempt` (from 1): Retry-After (seconds or an HTTP date)
    when the platform sent one, else exponential backoff from 0.5 s with jitter, at most 30 s."""
    if retry_after:
        text = retry_after.strip()
        if text.isdigit():
            return float(text)
        try:
            when = email.utils.parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
        else:
            return max(0.0, when - (time.time() if now is None else now))
    base: float = min(30.0, 0.5 * 2 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)


class Interrupted(RemoteError):
    """A write that is not safe to repeat failed in a way that may have left it applied (a
    dropped connection, a 5xx): the caller reads the platform's state before going on."""


class _Counting(httpx.BaseTransport):
    """Counts the bytes of every request and response (start line, headers and body)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self.sent = 0
        self.received = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.sent += len(request.method) + len(request.url.raw_path) + 12 + len(body)
        self.sent += sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        response = self._inner.handle_request(request)
        content = response.read()
        self.received += 17 + len(content)
        self.received += sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
        return response

    def close(self) -> None:
        self._inner.close()


class HostedHttp:
    """One platform's API at `base`, authenticated by `headers`."""

    def __init__(
        self,
        base: str,
        *,
        name: str,
        headers: Mapping[str, str],
        key_source: str,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.base = base
        self.key_source = key_source
        self._transport = _Counting(transport or httpx.HTTPTransport())
        self._http = httpx.Client(
            base_url=base,
            headers={"User-Agent": f"dsv/{__version__}", **headers},
            timeout=_TIMEOUT,
            transport=self._transport,
        )
        self.attempts = attempts
        self.sleep = sleep
        self.retries = 0

    @property
    def bytes_sent(self) -> int:
        return self._transport.sent

    @property
    def bytes_received(self) -> int:
        return self._transport.received

    def close(self) -> None:
        self._http.close()

    def _where(self) -> str:
        return f"remote {self.name!r} ({self.base})"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        missing_ok: bool = False,
        idempotent: bool = True,
    ) -> Any:
        """The decoded JSON answer (None for a 404 when `missing_ok`).

        A request that is not `idempotent` (an insert the platform would make twice) is
        retried only when refused outright (429); a dropped connection or a 5xx raises
        Interrupted at once.
        """
        content = msgspec.json.encode(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if not idempotent:
                    raise Interrupted(
                        f"the connection to {self._where()} failed during a write: "
                        f"{exc or type(exc).__name__}"
                    ) from exc
                if last:
                    raise RemoteError(
                        f"cannot reach {self._where()}: {exc or type(exc).__name__}",
                        hint="run the command again: it resumes where it stopped",
                    ) from exc
                self._pause(retry_delay(attempt, None))
                continue
            if response.status_code >= 500 and not idempotent:
                try:
                    self._fail(response)
                except RemoteError as exc:
                    raise Interrupted(exc.message, exc.hint) from exc
            if response.status_code in RETRY_STATUSES and not last:
                delay = retry_delay(attempt, response.headers.get("Retry-After"))
                if delay > _LONGEST_WAIT:
                    self._fail(response, f" (it asks to wait {delay:.0f} s)")
                self._pause(delay)
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code >= 300:
                self._fail(response)
            if not response.content:
                return None
            try:
                return msgspec.json.decode(response.content)
            except msgspec.DecodeError as exc:
                raise RemoteError(f"{self._where()} sent a malformed answer: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, seconds: float) -> None:
        self.retries += 1
        self.sleep(seconds)

    def _fail(self, response: httpx.Response, extra: str = "") -> NoReturn:
        detail = _error_detail(response.content)
        status = response.status_code
        message = f"{self._where()} answered HTTP {status}" + (f": {detail}" if detail else "")
        hint = None
        if status == 401:
            hint = f"set {self.key_source} to an API key of the platform"
        elif status == 403:
            hint = f"the key in {self.key_source} may not do this; ask for one that may"
        elif status == 429 or status >= 500:
            hint = "the platform is busy or failing: run the command again later; it resumes"
        if status == 404:
            raise NotFound(message + extra, hint)
        raise RemoteError(message + extra, hint)


def _error_detail(content: bytes) -> str:
    """The message of a platform's error body: Humanloop's and FastAPI's `detail` (a string or
    a list of `{loc, msg}`), `error` / `message` as other platforms send them, or Django REST
    framework's `{"field": ["message"]}`."""
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        text = content.decode("utf-8", "replace").strip()
        return text.splitlines()[0][:200] if text else ""
    if isinstance(body, dict):
        for field in ("detail", "error", "message"):
            value = body.get(field)
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
            if isinstance(value, list) and value and isinstance(value[0], dict):
                first = value[0]
                loc = ".".join(str(p) for p in first.get("loc", []) if p != "body")
                return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
        # Django REST framework's validation error: {"field": ["message", …]}.
        for field, value in body.items():
            if isinstance(value, list) and value and isinstance(value[0], str):
                return value[0] if field == "non_field_errors" else f"{field}: {value[0]}"
    return ""


class HttpPlatform:
    """What every platform's client shares: its `HostedHttp` (the key in the header
    `auth_headers` names), the bytes it moved, and closing it."""

    def __init__(
        self,
        base: str,
        *,
        name: str,
        key: str | None,
        key_source: str,
        transport: httpx.BaseTransport | None = None,
        sleep: Any = None,
    ) -> None:
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = HostedHttp(
            base,
            name=name,
            headers=self.auth_headers(key) if key else {},
            key_source=key_source,
            transport=transport,
            **extra,
        )

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    @property
    def bytes_sent(self) -> int:
        return self.http.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.http.bytes_received

    def close(self) -> None:
        self.http.close()
