"""The web view (issue 28) in a real headless Chromium (Debian's /usr/bin/chromium, driven by
playwright) against a real `dsv serve` on 127.0.0.1: sign in, browse, page, filter, diffs,
history, deploy, and dataset content that tries to run script.

With DSV_SCREENSHOTS=1 the main pages are saved into docs/images/ (the README shows two).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from benchmarks.push import Server, dsv_command
from dsv.cli import main
from dsv.objects import Commit, Kind, encode_object
from dsv.repo import Repository as Repo
from dsv.server.web import SECURITY_HEADERS
from dsv.server.web.view import describe_datapoint
from tests.conftest import KeyMaker

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"
SCRIPT = "<script>alert('xss')</script><img src=x onerror=alert(2)>"
REPO = "acme/evals"


def dsv(root: Path, *args: str, code: int = 0, key: str | None = None) -> Result:
    result = CliRunner().invoke(main, ["-C", str(root), *args], env={"DSV_API_KEY": key})
    assert result.exit_code == code, f"dsv {' '.join(args)}: {result.output}{result.exception!r}"
    return result


def chat(i: int, answer: str | None = None) -> dict[str, Any]:
    """A chat datapoint; the third holds script, the fourth a tool call and an image."""
    user: Any = f"question {i}: what is {i} squared?"
    if i == 3:
        user = SCRIPT
    if i == 4:
        user = [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": user},
    ]
    if i == 4:
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "describe_image", "arguments": '{"detail": "high"}'},
                    }
                ],
            }
        )
    messages.append({"role": "assistant", "content": answer or f"{i * i}"})
    return {"id": i, "lang": "fr" if i % 5 == 0 else "en", "messages": messages}


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


class Site:
    """The module's server, its repository's commits, and keys."""

    def __init__(
        self, root: Path, url: str, write_key: str, read_key: str, commits: dict[str, str]
    ) -> None:
        self.root = root
        self.url = url
        self.write_key = write_key
        self.read_key = read_key
        self.commits = commits


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, server_root: Path, server_keys: KeyMaker
) -> Iterator[Site]:
    """A repository of two datasets over four versions (one a merge), deployed, pushed."""
    work = tmp_path_factory.mktemp("web")
    dsv(work, "init", "a")
    root = work / "a"
    write(root / "chat.jsonl", [chat(i) for i in range(60)])
    write(root / "qa.jsonl", [
        {"id": i, "inputs": {"question": f"q{i}"}, "expected_output": f"a{i}"} for i in range(5)
    ])  # fmt: skip
    dsv(root, "add", "chat.jsonl", "qa.jsonl")
    dsv(root, "commit", "-m", "first version")
    repo = Repo(root)
    commits = {"first": head(repo)}
    write(
        root / "chat.jsonl", [chat(i, "forty-nine, surely" if i == 7 else None) for i in range(60)]
    )
    dsv(root, "commit", "-a", "-m", "fix the answer of 7")
    commits["fix"] = head(repo)
    dsv(root, "env", "deploy", "production", "HEAD~1")
    dsv(root, "env", "deploy", "staging", "HEAD")
    write(root / "qa.jsonl", [
        {"id": i, "inputs": {"question": f"q{i}"}, "expected_output": f"a{i}!"} for i in range(5)
    ])  # fmt: skip
    dsv(root, "commit", "-a", "-m", "qa: louder")
    commits["qa"] = head(repo)
    commits["merge"] = merge(repo, commits["qa"], commits["first"])
    write_key = server_keys("write", REPO)
    with Server(server_root) as running:
        dsv(root, "remote", "add", "origin", f"{running.url}/{REPO}")
        dsv(root, "push", "--envs", key=write_key)
        yield Site(server_root, running.url, write_key, server_keys("read", REPO), commits)


def head(repo: Repo) -> str:
    oid = repo.head()
    assert oid is not None
    return oid.hex()


def merge(repo: Repo, ours: str, theirs: str) -> str:
    """A merge commit on main of two versions, with ours' tree (dsv has no merge command)."""
    a, b = bytes.fromhex(ours), bytes.fromhex(theirs)
    commit = Commit(repo.read_commit(a).tree, (a, b), "Merger <m@example.com>", int(time.time()),
                    0, "merge the old side branch")  # fmt: skip
    with repo.store.writer() as writer:
        oid = writer.write(Kind.COMMIT, encode_object(commit))
    repo.refs.update("HEAD", oid, expected=bytes.fromhex(ours), user="test", reason="merge")
    return oid.hex()


class Browser:
    """One headless Chromium for the module; each test gets fresh contexts (cookies)."""

    def __init__(self, browser: Any, site: Site) -> None:
        self.browser = browser
        self.site = site

    def page(self, key: str | None = None) -> Any:
        """A new page of a new context, signed in with `key` through the form if given;
        every dialog, console error and uncaught script error it meets is recorded."""
        context = self.browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.problems = []
        page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: page.problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None,
        )  # fmt: skip
        if key is not None:
            page.goto(f"{self.site.url}/ui")
            assert "/ui/signin" in page.url  # a page needs a key first
            page.fill("#key", key)
            follow(page, "form.signin button")
            assert page.url == f"{self.site.url}/ui", page.content()
        return page

    def shoot(self, page: Any, name: str) -> None:
        if os.environ.get("DSV_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / name), full_page=False)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: apt-get install -y chromium (.ci/run does)")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield Browser(chromium, site)
        finally:
            chromium.close()


def follow(page: Any, target: Any) -> None:
    """Click a link or button (a selector or a locator) and wait for the page it opens."""
    with page.expect_navigation():
        (page.locator(target) if isinstance(target, str) else target).first.click()


def clean(page: Any) -> None:
    """No dialog opened, no console error or warning, no script error on the page."""
    assert page.problems == []
    page.context.close()


def test_sign_in_then_browse_repositories_datasets_and_a_dataset(browser: Browser) -> None:
    site = browser.site
    page = browser.page(site.read_key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "dsv_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.read_key not in cookie["value"] and cookie["path"] == "/ui"
    assert page.locator("ul.repos a").all_inner_texts() == [REPO]
    browser.shoot(page, "web-repositories.png")
    follow(page, "ul.repos a")
    rows = page.locator("table.datasets tbody tr")
    assert rows.count() == 2
    chat_row = rows.filter(has_text="chat.jsonl")
    assert chat_row.locator("td.num").inner_text() == "60"
    envs = chat_row.locator("span.env").all_inner_texts()
    assert [e.split(" @ ")[0] for e in envs] == ["production", "staging"]
    assert envs[0].endswith(site.commits["first"][:12]) and envs[1].endswith(
        site.commits["fix"][:12]
    )
    # the latest version of each: the commit that last changed it, not the merge above both
    assert (
        chat_row.locator("td.latest")
        .inner_text()
        .startswith(f"{site.commits['fix'][:12]} fix the answer of 7")
    )
    qa_row = rows.filter(has_text="qa.jsonl")
    assert (
        qa_row.locator("td.latest").inner_text().startswith(f"{site.commits['qa'][:12]} qa: louder")
    )
    browser.shoot(page, "web-repository.png")
    follow(page, chat_row.locator("a.dataset"))
    assert page.locator("h1").inner_text() == "chat.jsonl"
    assert page.locator("li.point").count() == 25
    first = page.locator("li.point").first
    # a conversation: roles in order, each message its own block
    assert first.locator(".msg .role").all_inner_texts() == ["SYSTEM", "USER", "ASSISTANT"]
    assert "question 0: what is 0 squared?" in first.locator(".msg.role-user").inner_text()
    tool = page.locator("#p4 .tool")
    assert "describe_image" in tool.inner_text() and '"detail": "high"' in tool.inner_text()
    link = page.locator("#p4 a.image")
    assert link.get_attribute("href") == "https://example.com/cat.png"
    browser.shoot(page, "web-dataset.png")
    follow(page, "a[rel=next]")
    assert page.url.endswith("?page=2")
    assert page.locator("li.point .pos").first.inner_text().startswith("#25 ")
    clean(page)


def test_filter_by_a_fields_value_and_by_text(browser: Browser) -> None:
    site = browser.site
    page = browser.page(site.read_key)
    page.goto(f"{site.url}/ui/r/{REPO}/data/main/chat.jsonl")
    page.fill("input[name=field]", "lang")
    page.fill("input[name=value]", "fr")
    follow(page, "form.filter button")
    shown = page.locator("li.point .pos").all_inner_texts()
    assert [s.split()[0] for s in shown] == [f"#{i}" for i in range(0, 60, 5)]
    page.goto(f"{site.url}/ui/r/{REPO}/data/main/chat.jsonl?size=5&field=lang&value=fr&page=2")
    assert [s.split()[0] for s in page.locator("li.point .pos").all_inner_texts()] == [
        "#25", "#30", "#35", "#40", "#45",
    ]  # fmt: skip
    # paging keeps the filter
    assert "field=lang" in (page.locator("a[rel=next]").first.get_attribute("href") or "")
    page.fill("input[name=q]", "FORTY-nine")
    page.fill("input[name=field]", "")
    page.fill("input[name=value]", "")
    follow(page, "form.filter button")
    assert page.locator("li.point .pos").all_inner_texts()[0].startswith("#7 ")
    assert page.locator("li.point").count() == 1
    # the same filter at the first version finds nothing: the revision is in the URL
    page.goto(f"{site.url}/ui/r/{REPO}/data/{site.commits['first']}/chat.jsonl?q=forty-nine")
    assert page.locator("li.empty").inner_text() == "No datapoint matches."
    clean(page)


def test_a_script_datapoint_is_shown_not_run(browser: Browser) -> None:
    site = browser.site
    page = browser.page(site.read_key)
    page.goto(f"{site.url}/ui/r/{REPO}/data/main/chat.jsonl")
    user = page.locator("#p3 .msg.role-user .text")
    assert user.inner_text() == SCRIPT  # the text is visible, as text
    assert page.locator("script").count() == 0 and page.locator("main img").count() == 0
    reply = httpx.get(page.url, cookies={c["name"]: c["value"] for c in page.context.cookies()})
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers[name] == value
    assert "script-src" not in reply.headers["content-security-policy"]  # default-src 'none'
    clean(page)  # no alert() dialog, no console error


def test_history_marks_environments_and_shows_merges(browser: Browser) -> None:
    site = browser.site
    page = browser.page(site.read_key)
    page.goto(f"{site.url}/ui/r/{REPO}")
    follow(page, page.locator("table.datasets tr", has_text="chat.jsonl").locator("text=history"))
    versions = page.locator("li.version")
    titles = [v.locator("b").inner_text() for v in versions.all()]
    # qa's commit does not touch chat.jsonl; the merge does show, as a merge
    assert titles == ["merge the old side branch", "fix the answer of 7", "first version"]
    assert versions.nth(0).locator(".badge.merge").count() == 1
    assert versions.nth(0).get_attribute("class") == "version merge"
    assert versions.nth(1).locator(".badge.env").all_inner_texts() == ["staging"]
    assert versions.nth(2).locator(".badge.env").all_inner_texts() == ["production"]
    browser.shoot(page, "web-history.png")
    # any two revisions compared, by name: to the diff's stable URL of their commits
    page.fill("form.compare input[name=old]", "production")
    page.fill("form.compare input[name=new]", "main")
    follow(page, "form.compare button")
    first, merged = site.commits["first"], site.commits["merge"]
    assert page.url == f"{site.url}/ui/r/{REPO}/diff/{first}/{merged}/chat.jsonl"
    assert "1 modified" in page.locator(".counts").inner_text()
    clean(page)


def test_a_diff_highlights_the_changed_field_as_dsv_diff_does(
    browser: Browser, tmp_path: Path
) -> None:
    site = browser.site
    page = browser.page(site.read_key)
    page.goto(f"{site.url}/ui/r/{REPO}/log/main/chat.jsonl")
    follow(page, page.locator("li.version", has_text="fix the answer of 7").locator("a.diff"))
    first, fix = site.commits["first"], site.commits["fix"]
    assert page.url == f"{site.url}/ui/r/{REPO}/diff/{first}/{fix}/chat.jsonl"
    assert "0 added · 0 removed · 1 modified · 59 unchanged" in page.locator(".counts").inner_text()
    row = page.locator("tr.changed-field")
    assert row.count() == 1
    assert row.locator("th").inner_text() == "messages[2].content"
    assert row.locator("del").inner_text() == "49"
    assert row.locator("ins").inner_text() == "forty-nine, surely"
    # highlighted: the changed words sit on coloured backgrounds
    assert row.locator("ins").evaluate("e => getComputedStyle(e).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )
    browser.shoot(page, "web-diff.png")
    # the same change `dsv diff --format jsonl` reports, field for field
    clone = tmp_path / "c"
    dsv(tmp_path, "clone", f"{site.url}/{REPO}", str(clone), key=site.read_key)
    lines = dsv(clone, "diff", "--format", "jsonl", first, fix, "--", "chat.jsonl").output
    (change,) = [json.loads(line) for line in lines.splitlines()]
    assert [f["path"] for f in change["fields"]] == ["messages[2].content"]
    assert change["new"][:12] in page.locator("li.change .head").inner_text()
    # a pasted link works in another browser once signed in (stable URL)
    other = browser.page(site.read_key)
    other.goto(page.url)
    assert other.locator("tr.changed-field th").inner_text() == "messages[2].content"
    clean(other)
    clean(page)


def test_deploy_with_a_write_key_refused_with_a_read_key(browser: Browser) -> None:
    site = browser.site
    reader = browser.page(site.read_key)
    reader.goto(f"{site.url}/ui/r/{REPO}/envs")
    assert reader.locator("form.deploy").count() == 0
    assert "Deploying needs a write key" in reader.locator("main").inner_text()
    # a forged form with the reader's own session token is refused as the API refuses it
    token = reader.locator("input[name=csrf]").first.get_attribute("value")
    refused = reader.request.post(
        f"{site.url}/ui/r/{REPO}/envs/deploy",
        form={"csrf": token, "env": "production", "path": "qa.jsonl", "version": "main",
              "expected": ""},
        max_redirects=0,
    )  # fmt: skip
    assert refused.status == 403
    assert "may only read acme/evals" in refused.text()
    clean(reader)

    writer = browser.page(site.write_key)
    writer.goto(f"{site.url}/ui/r/{REPO}/envs")
    # without the session's token: refused before anything is read
    forged = writer.request.post(
        f"{site.url}/ui/r/{REPO}/envs/deploy",
        form={"csrf": "x", "env": "production", "path": "qa.jsonl", "version": "main"},
        max_redirects=0,
    )
    assert forged.status == 403 and "CSRF token" in forged.text()
    stale = writer.locator("#env-production form.deploy input[name=expected]").get_attribute(
        "value"
    )
    form = writer.locator("#env-production form.deploy")
    form.locator("select[name=path]").select_option("qa.jsonl")
    form.locator("input[name=version]").fill(site.commits["qa"])
    follow(writer, form.locator("button"))
    assert writer.locator("p.ok").inner_text() == "Deployed qa.jsonl to production."
    held = writer.locator("#env-production ul li").all_inner_texts()
    assert held == [f"chat.jsonl @ {site.commits['first'][:12]}",
                    f"qa.jsonl @ {site.commits['qa'][:12]}"]  # fmt: skip
    assert "web: deploy qa.jsonl" in writer.locator("#env-production table.deploys").inner_text()
    browser.shoot(writer, "web-environments.png")
    # compare-and-swap: a form shown before that deploy cannot undo it
    token = writer.locator("input[name=csrf]").first.get_attribute("value")
    late = writer.request.post(
        f"{site.url}/ui/r/{REPO}/envs/deploy",
        form={"csrf": token, "env": "production", "path": "qa.jsonl",
              "version": site.commits["first"], "expected": stale},
        max_redirects=0,
    )  # fmt: skip
    assert late.status == 409 and "moved since the page was shown" in late.text()
    info = httpx.get(f"{site.url}/v1/{REPO}/info", headers={"X-API-KEY": site.read_key}).json()
    moved = info["refs"]["refs/envs/production"]
    assert moved != stale
    clean(writer)


def test_a_wrong_key_is_refused_on_the_form(browser: Browser) -> None:
    page = browser.page()
    page.goto(f"{browser.site.url}/ui/signin")
    page.fill("#key", "dsv_0000_wrong")
    with page.expect_response(lambda r: r.url.endswith("/ui/signin")) as reply:
        page.click("form.signin button")
    assert reply.value.status == 401
    assert page.locator("p.error").inner_text() == "the API key is not valid on this server"
    page.problems.clear()  # the 401 is the page's own status, logged by Chromium as an error
    clean(page)


def test_datapoint_shapes() -> None:
    fields = describe_datapoint({"inputs": {"q": 1}, "id": 3, "expected_output": "x"})
    assert fields["shape"] == "fields"
    assert [k for k, _ in fields["fields"]] == ["inputs", "expected_output", "id"]
    assert describe_datapoint({"a": [1, 2]}) == {
        "shape": "json",
        "json": '{\n  "a": [\n    1,\n    2\n  ]\n}',
    }
    image = describe_datapoint({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "javascript:alert(1)"}}]}]})  # fmt: skip
    (part,) = image["messages"][0]["parts"]
    assert part["link"] is None and part["image"] == "javascript:alert(1)"  # text, not a link


@pytest.fixture
def local_ui(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`dsv ui --port 0` in a repository with one committed dataset: (its root, the URL)."""
    root = tmp_path / "my evals"
    dsv(tmp_path, "init", str(root))
    write(root / "qa.jsonl", [{"id": i, "inputs": {"q": f"<i>{i}</i>"}} for i in range(3)])
    dsv(root, "add", "qa.jsonl")
    dsv(root, "commit", "-m", "first")
    proc = subprocess.Popen(
        [*dsv_command(), "ui", "--port", "0"], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        found = re.fullmatch(r"dsv ui: (http://127\.0\.0\.1:\d+/ui/r/local/my-evals)\n", line)
        assert found, line
        yield root, found[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_dsv_ui_serves_the_local_repository_without_a_key(
    browser: Browser, local_ui: tuple[Path, str]
) -> None:
    root, url = local_ui
    page = browser.page()
    page.goto(url)
    assert page.locator("h1").inner_text() == "local/my-evals"
    follow(page, "a.dataset")
    assert page.locator("li.point").count() == 3
    assert page.locator("#p0 .field .label").all_inner_texts() == ["INPUTS", "ID"]
    assert '"q": "<i>0</i>"' in page.locator("#p0 .field pre").first.inner_text()
    page.goto(url + "/envs")
    form = page.locator("#env-staging form.deploy")
    form.locator("input[name=version]").fill("main")
    follow(page, form.locator("button"))
    assert page.locator("p.ok").inner_text() == "Deployed qa.jsonl to staging."
    # the deploy moved the repository's own environment, as `dsv env deploy` would
    listed = dsv(root, "env", "list").output
    assert re.search(r"staging\s", listed), listed
    # loopback only: the listening socket is bound to 127.0.0.1, not to every address
    port = int(url.split(":")[2].split("/")[0])
    listening = [
        fields[1].split(":")[0]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A"
    ]
    assert listening == ["0100007F"]
    clean(page)


def test_dsv_ui_outside_a_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "ui", "--port", "0"])
    assert result.exit_code == 3
    assert result.stderr == (
        "error: not a dsv repository (or any parent)\nhint: run 'dsv init' to create one\n"
    )


def test_a_keys_scope_applies_to_pages_as_to_the_api(site: Site, server_keys: KeyMaker) -> None:
    other = server_keys("write", "other/repo")
    with httpx.Client(base_url=site.url) as client:
        assert client.get(f"/ui/r/{REPO}").headers["location"] == (
            f"/ui/signin?next=%2Fui%2Fr%2F{REPO.replace('/', '%2F')}"
        )
        assert client.post("/ui/signin", data={"key": other}).status_code == 303
        assert "No repository you may read." in client.get("/ui").text
        refused = client.get(f"/ui/r/{REPO}/data/main/chat.jsonl")
        assert refused.status_code == 403
        assert f"is for repository other/repo, not {REPO}" in refused.text
        # another site's form cannot sign a browser in (or deploy, or sign out)
        forged = client.post(
            "/ui/signin", data={"key": site.read_key}, headers={"origin": "https://evil.test"}
        )
        assert forged.status_code == 403
    # a revoked key signs its browsers out at their next page
    with httpx.Client(base_url=site.url) as client:
        key = server_keys("read", REPO)
        client.post("/ui/signin", data={"key": key})
        assert client.get(f"/ui/r/{REPO}").status_code == 200
        dsv(Path.cwd(), "keys", "revoke", "--root", str(site.root), key.split("_")[1])
        assert client.get(f"/ui/r/{REPO}").status_code == 303


def test_a_diff_is_paged_in_the_order_dsv_diff_gives(site: Site) -> None:
    fix, qa = site.commits["fix"], site.commits["qa"]
    with httpx.Client(base_url=site.url) as client:
        client.post("/ui/signin", data={"key": site.read_key})
        base = f"/ui/r/{REPO}/diff/{fix}/{qa}/qa.jsonl"
        keys = []
        for page in (1, 2, 3):
            text = client.get(f"{base}?size=2&page={page}").text
            keys += re.findall(r"<code>\{&#34;id&#34;: (\d)\}</code>", text)
            assert ('rel="next"' in text) == (page < 3)
        assert keys == ["0", "1", "2", "3", "4"]
        assert "5 modified" in text
