"""The operator console (GET /console) in a real browser, against a real server with keys.

Debian's chromium, driven by Python playwright (never a browser playwright
downloads). Without chromium these tests are skipped with the command that
installs it; CI (.ci/run) installs it and sets MAILROOM_BROWSER_STRICT=1,
under which its absence fails instead. Every browser test also checks that the
page made no request outside the server, opened no dialog, raised no script
error and broke no rule of its Content-Security-Policy.

MAILROOM_CONSOLE_SCREENSHOTS=docs/console keeps screenshots of the main views.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

from tests.helpers import temporary_database
from tests.servers import ROOT, Server, clean_env

ADMIN = "console-admin-" + secrets.token_urlsafe(16)
SETTINGS = {
    "MAILROOM_AUTH": "required",
    "MAILROOM_ADMIN_TOKEN": ADMIN,
    "MAILROOM_WRITE_RATE_LIMIT": "0",
    "MAILROOM_STREAM_HEARTBEAT": "1",
}
XSS = "<img src=x onerror=alert(1)>"
MAILBOX_SIZE = 250
CHROMIUM = os.environ.get("MAILROOM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STRICT = os.environ.get("MAILROOM_BROWSER_STRICT") == "1"
SCREENSHOTS = os.environ.get("MAILROOM_CONSOLE_SCREENSHOTS")
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# The server and its data -------------------------------------------------------


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(database_url, tmp_path_factory.mktemp("console"), **SETTINGS)
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


def restart(server: Server, database_url: str) -> None:
    """Stop the server with SIGTERM (as a deploy does) and start it again on its port."""
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=20)
    with server.stdout_path.open("ab") as out, server.stderr_path.open("ab") as err:
        server.process = subprocess.Popen(
            server.argv,
            cwd=ROOT,
            env=clean_env(DATABASE_URL=database_url, **SETTINGS),
            stdout=out,
            stderr=err,
        )
    server.wait_healthy()


@dataclass
class World:
    """Agents (ids and keys by short name), a conversation with replies, a full mailbox."""

    http: httpx.Client
    prefix: str
    ids: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    thread: list[str] = field(default_factory=list)  # message ids, in the order sent
    conversation: str = ""

    def send(self, sender: str, to: list[str], content: str, **extra: Any) -> dict[str, Any]:
        body = {
            "sender_id": self.ids[sender],
            "recipient_ids": [self.ids[name] for name in to],
            "content": content,
            **extra,
        }
        response = self.http.post("/messages", json=body, headers=bearer(self.keys[sender]))
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    with httpx.Client(base_url=server.base_url, timeout=10, headers=bearer(ADMIN)) as http:
        made = World(http, f"c{secrets.token_hex(3)}-")
        for name in ("alice", "bob", "carol", "dave", "mallory"):
            agent_name = made.prefix + (XSS if name == "mallory" else name)
            response = http.post("/agents", json={"agent_name": agent_name})
            assert response.status_code == 201, response.text
            made.ids[name], made.keys[name] = response.json()["id"], response.json()["api_key"]
        made.conversation = http.post(
            "/conversations",
            json={"title": f"Release {made.prefix}", "metadata": {"ticket": 42}},
            headers=bearer(made.keys["alice"]),
        ).json()["id"]
        in_thread = {"conversation_id": made.conversation}
        root = made.send("alice", ["bob", "carol"], "Ship on Friday?", **in_thread)
        first = made.send("bob", ["alice"], "Yes, if CI is green.", parent_message_id=root["id"],
                          **in_thread)  # fmt: skip
        second = made.send("carol", ["alice"], "I need a day more.\n" * 30,
                           parent_message_id=root["id"], **in_thread)  # fmt: skip
        deep = made.send("alice", ["bob"], XSS, parent_message_id=first["id"], **in_thread)
        made.thread = [root["id"], first["id"], second["id"], deep["id"]]
        http.put(f"/message_recipients/{root['id']}/{made.ids['bob']}", json={"is_read": True})
        http.post(
            "/agent_message_metadata",
            json={"message_id": root["id"], "key": "priority", "value": XSS},
        )
        for number in range(MAILBOX_SIZE):
            made.send("carol", ["dave"], f"report {number}")
        yield made


# The browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        message = f"chromium is not installed: apt-get install -y chromium (looked for {CHROMIUM})"
        if STRICT:
            pytest.fail(message + " (.ci/run installs it)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@dataclass
class Tab:
    """A page and what it did: every request, dialog, script error and CSP report."""

    page: Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, hash_path: str = "") -> None:
        self.page.goto(f"{self.base_url}/console{hash_path}")

    def sign_in(self, key: str, then: str = "") -> None:
        self.open()
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("h1:text-is('Agents')")
        if then:
            self.go(then)

    def go(self, hash_path: str) -> None:
        self.page.evaluate("hash => { location.hash = hash; }", hash_path)

    def main_text(self) -> str:
        return self.page.inner_text("main")

    def snap(self, name: str, full_page: bool = True) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            path = str(Path(SCREENSHOTS) / f"{name}.png")
            self.page.screenshot(path=path, full_page=full_page)

    def assert_clean(self) -> None:
        """Nothing left the server, nothing ran that should not have."""
        outside = [url for url in self.requests if not url.startswith(self.base_url + "/")]
        assert outside == [], f"requests outside {self.base_url}: {outside}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"script errors or CSP violations: {self.errors}"


def open_tab(browser: Browser, base_url: str, viewport: dict[str, int] = WIDE) -> Tab:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    tab = Tab(page, base_url)
    context.on("request", lambda request: tab.requests.append(request.url))

    def dialog(opened: Any) -> None:
        tab.dialogs.append(opened.message)
        opened.dismiss()

    page.on("dialog", dialog)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            tab.errors.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )
    page.set_default_timeout(10_000)
    return tab


@pytest.fixture
def tab(browser: Browser, server: Server) -> Iterator[Tab]:
    opened = open_tab(browser, server.base_url)
    try:
        yield opened
    finally:
        opened.page.context.close()


def cards(tab: Tab, selector: str = "main article.message") -> list[str]:
    """The message ids of the cards shown, in page order."""
    return tab.page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.dataset.id)")


# What the server sends --------------------------------------------------------------


def test_console_and_its_files_carry_the_policy(server: Server) -> None:
    for path in ("/console", "/static/console/app.js", "/static/console/console.css"):
        response = httpx.get(server.base_url + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        directives = {part.strip() for part in policy.split(";")}
        assert {"default-src 'self'", "frame-ancestors 'none'"} <= directives, policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] in ("no-store", "no-cache"), path
    assert httpx.get(server.base_url + "/console").headers["cache-control"] == "no-store"
    # The API itself is unchanged: no policy meant for a page on its JSON.
    assert "content-security-policy" not in httpx.get(server.base_url + "/health").headers


def test_console_page_has_no_inline_script_or_style_and_no_html_sinks() -> None:
    folder = ROOT / "static" / "console"
    page = (folder / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", page) == [
        '<script type="module" src="/static/console/app.js">'
    ]
    assert "<style" not in page and " style=" not in page
    for script in folder.rglob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"
        assert "localStorage" not in source and "document.cookie" not in source, script.name


# Signing in ----------------------------------------------------------------------------


def test_sign_in_shows_the_seeded_agents_and_keeps_the_key_out_of_urls(
    tab: Tab, world: World
) -> None:
    tab.open()
    tab.snap("sign-in")
    key_field = tab.page.locator("#key")
    assert key_field.get_attribute("type") == "password"
    assert key_field.get_attribute("autocomplete") == "off"
    assert key_field.get_attribute("name") is None  # a native submit could not send it
    tab.page.fill("#key", ADMIN)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("h1:text-is('Agents')")
    tab.go(f"#/agents?name={world.prefix}")
    tab.page.wait_for_selector(f"main td a:text-is('{world.prefix}alice')")
    names = tab.page.eval_on_selector_all(
        "main tbody tr td:first-child", "cells => cells.map(c => c.textContent)"
    )
    assert sorted(names) == sorted(world.prefix + n for n in ("alice", "bob", "carol", "dave", XSS))
    assert tab.page.locator("main th", has_text="Unread").count() == 1  # the admin's view
    dave = tab.page.locator("main tbody tr", has_text=world.prefix + "dave")
    assert int(dave.locator("td[data-label='Unread']").inner_text()) == MAILBOX_SIZE
    tab.snap("directory")

    assert ADMIN not in tab.page.url
    assert all(ADMIN not in url for url in tab.requests)
    stored = tab.page.evaluate("() => ({...sessionStorage})")
    assert ADMIN in stored.values()
    assert tab.page.evaluate("() => localStorage.length") == 0
    assert tab.page.context.cookies() == []

    tab.page.click("header button:text-is('Sign out')")
    assert "forgotten the key" in tab.page.locator("main [role=alert]").inner_text()
    assert tab.page.evaluate("() => sessionStorage.length") == 0
    tab.assert_clean()


def test_a_wrong_key_is_refused_with_a_clear_message(tab: Tab) -> None:
    tab.open()
    tab.page.fill("#key", "not-the-admin-token")
    tab.page.click("button[type=submit]")
    alert = tab.page.locator("main [role=alert]")
    alert.wait_for()
    assert "refused" in alert.inner_text()
    assert "neither the admin token nor a current agent key" in alert.inner_text()
    assert tab.page.evaluate("() => sessionStorage.length") == 0
    assert "not-the-admin-token" not in tab.page.url
    assert tab.page.locator("#key").is_visible()
    tab.assert_clean()


def test_the_empty_directory_says_how_to_register_an_agent(
    browser: Browser, database_url: str, tmp_path: Path
) -> None:
    with temporary_database(database_url, "console_empty") as empty_url:
        empty = Server(empty_url, tmp_path, **SETTINGS)
        try:
            empty.wait_healthy()
            tab = open_tab(browser, empty.base_url)
            tab.sign_in(ADMIN)
            tab.page.wait_for_selector("main pre.command")
            text = tab.main_text()
            assert "No agents are registered yet" in text
            assert f"curl -X POST {empty.base_url}/agents" in text
            assert "$MAILROOM_ADMIN_TOKEN" in text and ADMIN not in text
            tab.snap("empty")
            tab.assert_clean()
            tab.page.context.close()
        finally:
            empty.stop()


def test_an_agent_key_sees_that_agent_only(tab: Tab, world: World) -> None:
    tab.sign_in(world.keys["alice"], f"#/agents?name={world.prefix}")
    tab.page.wait_for_selector(f"main td a:text-is('{world.prefix}bob')")
    assert "agent key" in tab.page.inner_text("header")
    assert tab.page.locator("main th", has_text="Unread").count() == 0
    tab.go(f"#/agents/{world.ids['bob']}/mail/all")
    refused = tab.page.locator("main [role=alert]")
    refused.wait_for()
    assert "may only do this for itself" in refused.inner_text()
    tab.go(f"#/agents/{world.ids['alice']}/mail/received")
    tab.page.wait_for_selector(f"main article[data-id='{world.thread[1]}']")
    tab.assert_clean()


# The views -------------------------------------------------------------------------


def test_a_conversation_is_a_thread_in_order_with_replies_under_their_parent(
    tab: Tab, world: World
) -> None:
    tab.sign_in(ADMIN, f"#/conversations/{world.conversation}")
    tab.page.wait_for_selector("main ol.thread article")
    root, first, second, deep = world.thread
    # Depth first: each reply follows its parent, siblings in the order sent.
    assert cards(tab) == [root, first, deep, second]
    depth = tab.page.eval_on_selector_all(
        "main ol.thread article",
        "nodes => nodes.map(n => { let d = 0; for (let e = n; e; e = e.parentElement)"
        " if (e.matches('ol.thread')) d++; return d; })",
    )
    assert depth == [1, 2, 3, 2]
    card = tab.page.locator(f"main article[data-id='{root}']")
    to = card.locator(".to").inner_text()
    assert f"{world.prefix}bob" in to and f"{world.prefix}carol" in to
    assert "read" in card.locator(".to li", has_text="bob").inner_text()
    assert "unread" in card.locator(".to li", has_text="carol").inner_text()
    assert card.locator("dl.metadata").inner_text().startswith("priority")
    # The long reply is folded behind a button that unfolds it.
    long = tab.page.locator(f"main article[data-id='{second}']")
    unfold = long.locator("button", has_text="Show all")
    assert unfold.get_attribute("aria-expanded") == "false"
    unfold.click()
    assert long.locator("button", has_text="Fold").get_attribute("aria-expanded") == "true"
    # Local time shown, the UTC instant on hover.
    stamp = card.locator("header time")
    assert stamp.get_attribute("title").endswith(" UTC")
    assert re.match(r"\d{4}-\d\d-\d\dT", stamp.get_attribute("datetime"))
    tab.snap("thread")
    tab.assert_clean()


def test_a_thread_past_one_page_continues_by_the_link_header(tab: Tab, world: World) -> None:
    """Two messages a page (?limit=2): the thread's next page holds the rest, in order; a
    reply whose parent is on the page before starts a branch of its own."""
    root, first, second, deep = world.thread
    tab.sign_in(ADMIN, f"#/conversations/{world.conversation}?limit=2")
    tab.page.wait_for_selector("main ol.thread article")
    assert cards(tab) == [root, first]
    assert "4" in tab.page.locator("main dl.facts").inner_text()  # the whole count
    tab.page.click("main a[rel=next]")
    tab.page.wait_for_selector(f"main article[data-id='{second}']")  # the next page shown
    assert cards(tab) == [second, deep]
    assert tab.page.locator("main a[rel=next]").count() == 0
    tab.page.click("main a:text-is('← First page')")
    tab.page.wait_for_selector(f"main article[data-id='{root}']")  # not on the second page
    assert cards(tab) == [root, first, deep, second]
    tab.assert_clean()


def test_the_mailbox_pages_through_250_messages_by_the_link_header(tab: Tab, world: World) -> None:
    tab.sign_in(ADMIN, f"#/agents/{world.ids['dave']}/mail/received")
    seen: list[str] = []
    sizes = []
    for _ in range(5):
        tab.page.wait_for_selector("main ol.messages article")
        page_ids = cards(tab)
        sizes.append(len(page_ids))
        seen += page_ids
        following = tab.page.locator("main a[rel=next]")
        if following.count() == 0:
            break
        if len(sizes) == 1:
            tab.snap("mailbox", full_page=False)
        following.click()
        tab.page.wait_for_function(
            "first => document.querySelector('main article.message')?.dataset.id !== first",
            arg=page_ids[0],
        )
    assert sizes == [100, 100, 50]
    listed = httpx.get(
        f"{tab.base_url}/agents/{world.ids['dave']}/messages",
        params={"direction": "received", "limit": 1000},
        headers=bearer(ADMIN),
    ).json()
    assert seen == [item["id"] for item in listed]  # each once, newest first
    assert "report 0" in tab.main_text() and "report 249" not in tab.main_text()
    tab.page.click("main a:text-is('← First page')")
    tab.page.wait_for_selector("main article:has-text('report 249')")
    tab.page.click("main nav.tabs a:text-is('Unread')")
    tab.page.wait_for_selector("main nav.tabs a[aria-current=page]:text-is('Unread')")
    tab.page.wait_for_selector("main article .badge.unread")
    tab.assert_clean()


def test_content_names_and_metadata_are_shown_as_text(tab: Tab, world: World) -> None:
    tab.sign_in(ADMIN, f"#/agents?name={world.prefix}")
    tab.page.wait_for_selector(f"main td a:text-is('{world.prefix}{XSS}')")
    for view in (
        f"#/conversations/{world.conversation}",
        f"#/agents/{world.ids['bob']}/mail/all",
        f"#/agents/{world.ids['mallory']}/mail/all",
    ):
        tab.go(view)
        tab.page.wait_for_selector("main h1 code.id")
        tab.page.wait_for_load_state("networkidle")
        assert tab.page.locator("main img").count() == 0, view
    tab.go(f"#/conversations/{world.conversation}")
    tab.page.wait_for_selector("main ol.thread")
    assert tab.page.locator("main .content", has_text=XSS).count() == 1
    assert XSS in tab.page.locator("main dl.metadata").inner_text()
    tab.page.wait_for_timeout(300)  # a handler that would run has had its chance
    assert tab.dialogs == []
    tab.assert_clean()


def test_search_finds_a_message_and_marks_the_matched_words(tab: Tab, world: World) -> None:
    """The Search tab (shown because /openapi.json lists the endpoint) finds a message by a
    word and marks it; the marks are elements made from the snippet's markers, not HTML."""
    alice, bob = world.ids["alice"], world.ids["bob"]
    word = f"zebra{secrets.token_hex(3)}"
    sent = httpx.post(
        f"{tab.base_url}/messages",
        json={"sender_id": bob, "recipient_ids": [alice], "content": f"the <b>{word}</b> build"},
        headers=bearer(ADMIN),
    )
    assert sent.status_code == 201, sent.text
    tab.sign_in(ADMIN, f"#/agents/{alice}/mail/all")
    tab.page.click("main nav.tabs a:text-is('Search')")
    tab.page.fill("#search-q", word)
    tab.page.press("#search-q", "Enter")
    card = tab.page.wait_for_selector(f"main article[data-id='{sent.json()['id']}']")
    assert card is not None
    assert tab.page.locator("main p.snippet mark").all_inner_texts() == [word]
    assert tab.page.locator("main p.snippet b").count() == 0  # the tag is text
    assert "<b>" in tab.page.locator("main p.snippet").first.inner_text()
    tab.assert_clean()


def test_the_live_tail_shows_new_mail_within_a_second_and_survives_a_restart(
    tab: Tab, world: World, server: Server, database_url: str
) -> None:
    bob = world.ids["bob"]
    tab.sign_in(ADMIN, f"#/agents/{bob}/tail")
    status = tab.page.locator("main p.status")
    tab.page.wait_for_selector("main p.status[data-state=live]")
    tab.page.wait_for_selector(f"main article[data-id='{world.thread[3]}']")  # unread: replayed

    before = time.monotonic()
    live = world.send("alice", ["bob"], "Sent while you watch")
    tab.page.wait_for_selector(f"main article[data-id='{live['id']}']", timeout=1000)
    assert time.monotonic() - before < 1.0
    tab.snap("tail")

    restart(server, database_url)
    after = world.send("carol", ["bob"], "Sent after the restart")
    tab.page.wait_for_selector(f"main article[data-id='{after['id']}']", timeout=15_000)
    assert status.get_attribute("data-state") == "live"
    shown = cards(tab)
    # Resumed after the last event: nothing shown twice, nothing lost, newest on top.
    assert len(shown) == len(set(shown)), shown
    assert shown[:2] == [after["id"], live["id"]]
    tab.assert_clean()


# Working for people -----------------------------------------------------------------


def contrast(tab: Tab, selector: str) -> float:
    """WCAG contrast ratio of an element's text against the background it sits on."""
    return tab.page.eval_on_selector(
        selector,
        """node => {
            const rgb = text => text.match(/[\\d.]+/g).map(Number);
            const lum = ([r, g, b]) => [r, g, b].map(v => v / 255)
              .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
              .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
            let back = node;
            while (back && rgb(getComputedStyle(back).backgroundColor)[3] === 0) {
              back = back.parentElement;
            }
            const bg = back ? rgb(getComputedStyle(back).backgroundColor) : [255, 255, 255];
            const [a, b] = [lum(rgb(getComputedStyle(node).color)), lum(bg)];
            return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        }""",
    )


def test_keyboard_contrast_and_loading(tab: Tab, world: World) -> None:
    tab.sign_in(ADMIN, f"#/agents?name={world.prefix}")
    target = f"{world.prefix}alice"
    tab.page.wait_for_selector(f"main td a:text-is('{target}')")
    for selector in (
        "main h1",
        "main td a",
        "main td code.id",
        "main th",
        "main .badge.unread",
        "header .who",
        "header nav a",
    ):
        assert contrast(tab, selector) >= 4.5, selector

    # From the top of the page to alice's mailbox with Tab and Enter only.
    tab.page.locator("body").focus()
    for _ in range(40):
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("() => document.activeElement.textContent") == target:
            break
    else:
        pytest.fail("Tab never reached the agent's link")
    outline = tab.page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector(f"main h1:has-text('{target}')")

    # A slow list shows that it is loading: its answer is held until we have looked.
    held: list[Route] = []
    directory = re.compile(r".*/agents(\?.*)?$")
    tab.page.route(directory, lambda route: held.append(route))
    tab.go("#/agents")
    loading = tab.page.locator("main .loading[role=status]")
    loading.wait_for()
    assert "Loading agents" in loading.inner_text()
    assert tab.page.get_attribute("main", "aria-busy") == "true"
    tab.page.wait_for_function("() => true")  # lets the held request reach us
    assert held, "the directory was not requested"
    for route in held:
        route.continue_()
    tab.page.unroute(directory)
    tab.page.wait_for_selector("main table")
    tab.assert_clean()


@pytest.mark.parametrize("view", ["directory", "mailbox", "thread"])
def test_phone_width_needs_no_sideways_scrolling(
    browser: Browser, server: Server, world: World, view: str
) -> None:
    tab = open_tab(browser, server.base_url, PHONE)
    try:
        tab.sign_in(ADMIN)
        tab.go(
            {
                "directory": f"#/agents?name={world.prefix}",
                "mailbox": f"#/agents/{world.ids['alice']}/mail/all",
                "thread": f"#/conversations/{world.conversation}",
            }[view]
        )
        tab.page.wait_for_selector("main table, main article")
        tab.page.wait_for_load_state("networkidle")
        overflow = tab.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{view} is {overflow}px wider than the phone"
        tab.snap(f"phone-{view}", full_page=False)
        tab.assert_clean()
    finally:
        tab.page.context.close()
