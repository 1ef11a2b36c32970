"""The web view (docs/web.md): server-rendered pages of repositories, datasets, versions,
diffs and environments, under `/ui` of `dsv serve` and of `dsv ui`.

Pages are Jinja2 templates with autoescaping and one stylesheet, sent with a strict
Content-Security-Policy and no JavaScript. A browser signs in with an API key once: the
server keeps the key's digest in a session of its own memory and gives the browser only a
random session id in an HttpOnly, SameSite=Strict cookie; each page checks the key's scope
exactly as the API does. The one form that writes (deploy) carries the session's CSRF token
and moves the environment by compare-and-swap.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import anyio.to_thread
import jinja2
from litestar import Request, Response, get, post
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.response import Redirect

from dsv.errors import AccessDenied, BadInput, Forbidden, NotFound, Unauthorized
from dsv.objects import OID_SIZE
from dsv.server.keys import authenticate, permit
from dsv.server.storage import KeyRecord
from dsv.server.web import view
from dsv.server.web.view import DEFAULT_SIZE, MAX_SIZE, Store

__all__ = ["PREFIX", "SECURITY_HEADERS", "Sessions", "WebMount", "error_page", "routes"]

PREFIX = "/ui"
COOKIE = "dsv_session"
_SESSION_SECONDS = 12 * 3600
# No script at all, styles and images only from this server, no framing, forms post here.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("dsv.server.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["q"] = lambda s: quote(str(s), safe="/")


def _stylesheet() -> bytes:
    return resources.files("dsv.server.web").joinpath("static/dsv.css").read_bytes()


def _icon() -> bytes:
    return resources.files("dsv.server.web").joinpath("static/icon.svg").read_bytes()


class _Session(NamedTuple):
    digest: bytes | None  # the key's SHA-256 (never the key); None on a server without keys
    csrf: str
    expires: float


class Sessions:
    """Signed-in browsers: a random id -> the key's digest and a CSRF token, in memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._guard = threading.Lock()

    def new(self, digest: bytes | None) -> str:
        sid = secrets.token_urlsafe(32)
        with self._guard:
            now = time.time()
            for old in [s for s, found in self._sessions.items() if found.expires < now]:
                del self._sessions[old]
            self._sessions[sid] = _Session(
                digest, secrets.token_urlsafe(32), now + _SESSION_SECONDS
            )
        return sid

    def get(self, sid: str | None) -> _Session | None:
        if not sid:
            return None
        with self._guard:
            found = self._sessions.get(sid)
            if found is not None and found.expires < time.time():
                del self._sessions[sid]
                return None
            return found

    def drop(self, sid: str | None) -> None:
        with self._guard:
            self._sessions.pop(sid or "", None)


class WebMount(NamedTuple):
    """What the app gives the web view."""

    store: Store
    auth: bool
    environments: tuple[str, ...]
    # Names the request's key (its id, never the key) in the access log.
    note_caller: Callable[[KeyRecord | None], None]
    # Shown in the page title: the server's name for what it serves.
    title: str = "dsv"


class _SignIn(Exception):
    """The page needs a signed-in key: answered with a redirect to the sign-in form."""


def _html(body: str, status: int = 200, cookie: str | None = None) -> Response[Any]:
    headers = dict(SECURITY_HEADERS)
    response: Response[Any] = Response(
        content=body.encode(), status_code=status, media_type="text/html",
        headers=headers,
    )  # fmt: skip
    if cookie is not None:
        _set_cookie(response, cookie)
    return response


def _set_cookie(response: Response[Any], sid: str, *, max_age: int = _SESSION_SECONDS) -> None:
    response.set_cookie(COOKIE, sid, path=PREFIX, httponly=True, samesite="strict", max_age=max_age)


def render(template: str, **context: Any) -> str:
    """A page: `template` with `context`, every value escaped."""
    defaults = {"signed_in": False, "auth": True, "csrf": "", "repo": None, "title_base": "dsv"}
    return _env.get_template(template).render({**defaults, "prefix": PREFIX, **context})


def error_page(status: int, message: str, hint: str | None, request_id: str) -> Response[Any]:
    """The page of a failed request (app._handle sends it for paths under /ui)."""
    body = render(
        "error.html", title=f"{status}", status=status, message=message, hint=hint,
        request_id=request_id,
    )  # fmt: skip
    return _html(body, status)


def _int(text: str | None, name: str, default: int, high: int | None = None) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, not {text[:40]!r}") from None
    if value < 1 or (high is not None and value > high):
        raise BadInput(f"{name} must be 1 to {high}" if high else f"{name} must be at least 1")
    return value


def routes(mount: WebMount) -> list[HTTPRouteHandler]:
    """The pages and the sign-in, deploy and stylesheet routes under /ui."""
    store, meta = mount.store, mount.store.meta
    sessions = Sessions()

    def session_of(request: Request[Any, Any, Any]) -> tuple[str | None, _Session | None]:
        sid = request.cookies.get(COOKIE)
        return sid, sessions.get(sid)

    def key_of(request: Request[Any, Any, Any]) -> KeyRecord | None:
        """The signed-in key's record (None without auth); _SignIn when there is none."""
        if not mount.auth:
            mount.note_caller(None)
            return None
        sid, found = session_of(request)
        if found is None or found.digest is None:
            raise _SignIn
        record = meta.key_by_digest(found.digest)
        if record is None or record.revoked is not None:
            sessions.drop(sid)
            raise _SignIn
        mount.note_caller(record)
        return record

    def may(record: KeyRecord | None, repo: str, *, write: bool) -> bool:
        if record is None:
            return not mount.auth
        try:
            permit(record, repo, write=write)
        except AccessDenied:
            return False
        return True

    def access(request: Request[Any, Any, Any], owner: str, name: str, *, write: bool) -> str:
        repo = f"{owner}/{name}"
        record = key_of(request)
        if record is not None:
            permit(record, repo, write=write)
        if meta.get_repo(repo) is None:
            raise NotFound(f"no repository {repo}", "the repositories page lists yours")
        return repo

    def page(
        request: Request[Any, Any, Any], build: Callable[[], tuple[str, dict[str, Any]]]
    ) -> Response[Any]:
        try:
            template, context = build()
        except _SignIn:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return Redirect(f"{PREFIX}/signin?{urlencode({'next': target})}", status_code=303)
        sid, found = session_of(request)
        signed_in = mount.auth and found is not None and found.digest is not None
        cookie = None
        if context.pop("wants_csrf", False) and found is None:
            # A server without keys still gets a session: the deploy form's CSRF token.
            cookie = sid = sessions.new(None)
            found = sessions.get(sid)
        context.setdefault("repo", None)
        body = render(
            template, signed_in=signed_in, auth=mount.auth, title_base=mount.title,
            csrf=found.csrf if found else "", **context,
        )  # fmt: skip
        return _html(body, cookie=cookie)

    def rev_name(repo: str, rev: str) -> bytes:
        return view.resolve(store, repo, rev)

    @get(f"{PREFIX}/static/dsv.css", sync_to_thread=False, include_in_schema=False)
    def stylesheet() -> Response[bytes]:
        return Response(_stylesheet(), media_type="text/css; charset=utf-8",
                        headers={"cache-control": "max-age=3600", **_nosniff()})  # fmt: skip

    @get(f"{PREFIX}/static/icon.svg", sync_to_thread=False, include_in_schema=False)
    def icon() -> Response[bytes]:
        return Response(_icon(), media_type="image/svg+xml",
                        headers={"cache-control": "max-age=3600", **_nosniff()})  # fmt: skip

    @get("/favicon.ico", sync_to_thread=False, include_in_schema=False)
    def favicon() -> Response[bytes]:
        return Response(_icon(), media_type="image/svg+xml", headers=_nosniff())

    @get(PREFIX, sync_to_thread=True, include_in_schema=False)
    def repositories(request: Request[Any, Any, Any]) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            record = key_of(request)
            repos = [r for r in meta.list_repos() if may(record, r.name, write=False)]
            return "repos.html", {"title": "Repositories", "repos": repos, "key": record}

        return page(request, build)

    @get(f"{PREFIX}/signin", sync_to_thread=False, include_in_schema=False)
    def signin_form(request: Request[Any, Any, Any], next: str | None = None) -> Response[Any]:
        body = render(
            "signin.html", title="Sign in", next=_local(next), error=None,
            title_base=mount.title,
        )  # fmt: skip
        return _html(body)

    @post(f"{PREFIX}/signin", include_in_schema=False)
    async def signin(request: Request[Any, Any, Any]) -> Response[Any]:
        _check_origin(request)
        form = await request.form()
        target = _local(str(form.get("next") or ""))
        try:
            record = authenticate(meta, str(form.get("key") or "").strip())
        except Unauthorized as exc:
            body = render(
                "signin.html", title="Sign in", next=target, error=exc.message,
                title_base=mount.title,
            )  # fmt: skip
            return _html(body, 401)
        mount.note_caller(record)
        sessions.drop(request.cookies.get(COOKIE))
        response: Response[Any] = Redirect(target, status_code=303)
        _set_cookie(response, sessions.new(record.digest))
        return response

    @post(f"{PREFIX}/signout", include_in_schema=False)
    async def signout(request: Request[Any, Any, Any]) -> Response[Any]:
        _check_origin(request)
        sid, found = session_of(request)
        form = await request.form()
        if found is not None and hmac.compare_digest(found.csrf, str(form.get("csrf") or "")):
            sessions.drop(sid)
        response: Response[Any] = Redirect(f"{PREFIX}/signin", status_code=303)
        _set_cookie(response, "", max_age=0)
        return response

    base = PREFIX + "/r/{owner:str}/{name:str}"

    @get(base, sync_to_thread=True, include_in_schema=False)
    def repository(request: Request[Any, Any, Any], owner: str, name: str) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            repo = access(request, owner, name, write=False)
            return "repo.html", {"title": repo, "repo": repo, **view.repo_page(store, repo)}

        return page(request, build)

    @get(base + "/data/{rev:str}/{path:path}", sync_to_thread=True, include_in_schema=False)
    def data(
        request: Request[Any, Any, Any], owner: str, name: str, rev: str, path: str
    ) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            repo = access(request, owner, name, write=False)
            commit = rev_name(repo, rev)
            q = request.query_params
            field = (q.get("field") or "").strip() or None
            value = q.get("value") if q.get("value") not in (None, "") else None
            text = (q.get("q") or "").strip() or None
            shown = view.page_of(
                store, repo, commit, path.lstrip("/"),
                page=_int(q.get("page"), "page", 1),
                size=_int(q.get("size"), "size", DEFAULT_SIZE, MAX_SIZE),
                field=field, value=value, text=text,
            )  # fmt: skip
            return "data.html", {
                "title": f"{path.lstrip('/')} · {repo}", "repo": repo, "path": path.lstrip("/"),
                "rev": rev, "commit": commit.hex(), "field": field or "", "value": value or "",
                "q": text or "", "query": _query(q, ("field", "value", "q", "size")), **shown,
            }  # fmt: skip

        return page(request, build)

    @get(base + "/log/{rev:str}/{path:path}", sync_to_thread=True, include_in_schema=False)
    def history(
        request: Request[Any, Any, Any], owner: str, name: str, rev: str, path: str
    ) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            repo = access(request, owner, name, write=False)
            commit = rev_name(repo, rev)
            q = request.query_params
            shown = view.history_page(
                store, repo, commit, path.lstrip("/"),
                page=_int(q.get("page"), "page", 1),
                size=_int(q.get("size"), "size", DEFAULT_SIZE, MAX_SIZE),
            )  # fmt: skip
            return "log.html", {
                "title": f"history of {path.lstrip('/')} · {repo}", "repo": repo,
                "path": path.lstrip("/"), "rev": rev, "commit": commit.hex(), **shown,
            }  # fmt: skip

        return page(request, build)

    @get(
        base + "/diff/{old:str}/{new:str}/{path:path}", sync_to_thread=True,
        include_in_schema=False,
    )  # fmt: skip
    def compare(
        request: Request[Any, Any, Any], owner: str, name: str, old: str, new: str, path: str
    ) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            repo = access(request, owner, name, write=False)
            q = request.query_params
            shown = view.diff_page(
                store, repo, rev_name(repo, old), rev_name(repo, new), path.lstrip("/"),
                page=_int(q.get("page"), "page", 1),
                size=_int(q.get("size"), "size", DEFAULT_SIZE, MAX_SIZE),
            )  # fmt: skip
            return "diff.html", {
                "title": f"diff of {path.lstrip('/')} · {repo}", "repo": repo,
                "path": path.lstrip("/"), **shown,
            }  # fmt: skip

        return page(request, build)

    @get(base + "/compare", sync_to_thread=True, include_in_schema=False)
    def compare_form(request: Request[Any, Any, Any], owner: str, name: str) -> Response[Any]:
        """The history page's compare form: to the stable URL of the diff it names."""
        try:
            repo = access(request, owner, name, write=False)
        except _SignIn:
            return Redirect(f"{PREFIX}/signin", status_code=303)
        q = request.query_params
        old = rev_name(repo, (q.get("old") or "").strip())
        new = rev_name(repo, (q.get("new") or "").strip())
        path = quote((q.get("path") or "").strip("/"), safe="/")
        return Redirect(f"{PREFIX}/r/{repo}/diff/{old.hex()}/{new.hex()}/{path}", status_code=303)

    @get(base + "/envs", sync_to_thread=True, include_in_schema=False)
    def environments(request: Request[Any, Any, Any], owner: str, name: str) -> Response[Any]:
        def build() -> tuple[str, dict[str, Any]]:
            repo = access(request, owner, name, write=False)
            writable = may(key_of(request), repo, write=True)
            shown = view.env_page(store, repo, mount.environments)
            return "envs.html", {
                "title": f"environments · {repo}", "repo": repo, "writable": writable,
                "wants_csrf": writable, "done": request.query_params.get("deployed"), **shown,
            }  # fmt: skip

        return page(request, build)

    @post(base + "/envs/deploy", include_in_schema=False)
    async def deploy_form(request: Request[Any, Any, Any], owner: str, name: str) -> Response[Any]:
        _check_origin(request)
        form = await request.form()
        fields = {k: str(form.get(k) or "") for k in ("csrf", "env", "path", "version", "expected")}

        def run() -> Response[Any]:
            _, found = session_of(request)
            if found is None or not hmac.compare_digest(found.csrf, fields["csrf"]):
                raise Forbidden(
                    "the form's CSRF token does not match this browser's session",
                    "reload the environments page and submit its form again",
                )
            try:
                repo = access(request, owner, name, write=True)
                record = key_of(request)
            except _SignIn:
                return Redirect(f"{PREFIX}/signin", status_code=303)
            who = f"key {record.id}" if record else "anonymous"
            env, path = fields["env"], fields["path"]
            if env not in view.env_names(store, repo, mount.environments):
                raise BadInput(f"no environment {env[:80]!r} on this server")
            version = rev_name(repo, fields["version"].strip())
            expected = _oid(fields["expected"]) if fields["expected"] else None
            view.deploy(
                store, repo, env=env, path=path, version=version, expected=expected,
                user=f"web [{who}]", author=f"dsv web <{who.replace(' ', '-')}@dsv>",
            )  # fmt: skip
            target = f"{PREFIX}/r/{repo}/envs?{urlencode({'deployed': f'{path} to {env}'})}"
            return Redirect(target, status_code=303)

        return await anyio.to_thread.run_sync(run)

    return [
        stylesheet, icon, favicon, repositories, signin_form, signin, signout, repository,
        data, history, compare, compare_form, environments, deploy_form,
    ]  # fmt: skip


def _check_origin(request: Request[Any, Any, Any]) -> None:
    """A form posted from another site is refused (browsers send Origin with every POST)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
        raise Forbidden(
            f"a form from {origin[:80]} may not post here", "use this server's own pages"
        )


def _nosniff() -> dict[str, str]:
    return {"x-content-type-options": "nosniff"}


def _oid(text: str) -> bytes:
    try:
        oid = bytes.fromhex(text)
    except ValueError:
        oid = b""
    if len(oid) != OID_SIZE:
        raise BadInput(f"not a commit id: {text[:80]!r}")
    return oid


def _local(target: str | None) -> str:
    """A sign-in's `next`: a path of this view only, never another site."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


def _query(params: Any, names: tuple[str, ...]) -> str:
    """The query string of the filters kept when paging, `&`-led, or ''."""
    kept = [(n, params.get(n)) for n in names if params.get(n)]
    return "&" + urlencode(kept) if kept else ""
