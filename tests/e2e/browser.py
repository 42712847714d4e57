"""A real browser for the web page's end-to-end tests: Playwright driving the system's
Chromium, headless (Playwright's own browser download needs a network the tests may not
have; ``scripts/need-chromium.sh`` installs the system's). Tests never skip: without
Chromium they fail, saying what to install.

Elements are found by role and accessible name, as a screen reader finds them, so the
tests also check that the page can be used without seeing it. Playwright's sync API
blocks while it waits for the browser; the server and the terminal clients are other
processes, whose output the reactor reads once a test awaits again.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.processes import WAIT, ServerProcess
from twisted_chat import launch

WEB_LISTENING = re.compile(r"web page listening on 127\.0\.0\.1:(\d+)")
TIMEOUT_MS = WAIT * 1000


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("chromium is not installed: run scripts/need-chromium.sh")


@contextmanager
def chromium(home: Path) -> Iterator[Browser]:
    """A headless Chromium, whose files go under ``home`` (never the real home)."""
    home.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            # Needed when the tests run as root, as CI does: Chromium's sandbox refuses.
            args=["--no-sandbox"],
            env={"HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)},
            timeout=TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


async def web_server(workdir: Path, *extra: str, web_port: int = 0) -> tuple[ServerProcess, int]:
    """A server with a web listener on loopback; (the server, the web port)."""
    server = ServerProcess(workdir, 60, 120, "--web", f"tcp:{web_port}:interface=127.0.0.1", *extra)
    await server.started()
    port = await launch.ready(server.process, WEB_LISTENING, WAIT)
    return server, port


@dataclass
class User:
    """One person at the page, in a browser context of their own."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions and console errors on the page (there must be none)."""

    @classmethod
    def open(cls, browser: Browser, port: int, width: int = 1100, height: int = 750) -> User:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        user = cls(page, f"http://127.0.0.1:{port}")
        page.on("request", lambda request: user.requests.append(request.url))
        page.on("websocket", lambda socket: user.websockets.append(socket.url))

        def dialog(shown: object) -> None:
            user.dialogs.append(str(getattr(shown, "message", "")))
            shown.dismiss()  # type: ignore[attr-defined]

        page.on("dialog", dialog)
        page.on("pageerror", lambda error: user.errors.append(str(error)))
        page.on(
            "console",
            lambda message: user.errors.append(message.text) if message.type == "error" else None,
        )
        page.goto(user.origin + "/")
        return user

    @classmethod
    def logged_in(cls, browser: Browser, port: int, name: str, password: str) -> User:
        """A page opened and logged in as ``name``."""
        user = cls.open(browser, port)
        user.log_in(name, password)
        return user

    def _submit(self, name: str, password: str) -> None:
        page = self.page
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Log in").click()

    def log_in(self, name: str, password: str) -> None:
        self._submit(name, password)
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()

    def create_account(self, name: str, password: str) -> None:
        page = self.page
        self._submit(name, password)
        expect(page.get_by_role("alert")).to_contain_text("is a new user")
        page.get_by_label("Repeat password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()

    def say(self, text: str) -> None:
        box = self.page.get_by_label("Message")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")  # taken by the server

    def open_conversation(self, name: str) -> None:
        conversations = self.page.get_by_role("list", name="Conversations")
        conversations.get_by_role("button", name=re.compile(f"^{re.escape(name)}")).click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def talk_to(self, name: str) -> None:
        """Click the user in the Online list."""
        online = self.page.get_by_role("list", name="Online")
        online.get_by_role("button", name=name, exact=True).click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    @property
    def log(self) -> object:
        return self.page.get_by_role("log")

    def sees(self, text: str) -> None:
        expect(self.page.get_by_role("log")).to_contain_text(text)

    def count(self, text: str) -> int:
        return str(self.page.get_by_role("log").inner_text()).count(text)

    def elsewhere(self) -> list[str]:
        """Requests and WebSockets the page opened to any other origin (there must be
        none)."""
        ws_origin = "ws" + self.origin.removeprefix("http")
        return [url for url in self.requests if not url.startswith(self.origin + "/")] + [
            url for url in self.websockets if url != ws_origin + "/ws"
        ]
