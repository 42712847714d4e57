"""The web page in a real browser (headless Chromium through Playwright), against the
real server with its web listener, beside real terminal clients: what each person sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest_twisted
from playwright.sync_api import expect

from tests.e2e.browser import User, chromium, web_server
from tests.e2e.processes import Process, finish, logged_in, sleep
from twisted_chat import launch


async def typed(terminal: Process, *lines: str) -> None:
    """Type lines into a terminal client, and let the reactor hand them to it before
    the browser's next wait blocks the test (Playwright's sync API)."""
    terminal.send(*lines)
    await sleep(0.2)


XSS = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(2)</script>"


@pytest_twisted.ensureDeferred
async def test_two_people_in_browsers_talk(workdir: Path) -> None:
    server, port = await web_server(workdir)
    try:
        with chromium(workdir / "home") as browser:
            hans = User.logged_in(browser, port, "hans", "falcon*solo")
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            hans.sees("yoda logged in")

            hans.talk_to("yoda")
            hans.say("do or do not")
            hans.sees("you \u2192 yoda: do or do not")
            unread = yoda.page.get_by_role("list", name="Conversations").get_by_role(
                "button", name=re.compile("^hans")
            )
            expect(unread).to_contain_text("1")  # its unread count
            yoda.open_conversation("hans")
            yoda.sees("hans: do or do not")
            yoda.say("there is no try")
            hans.sees("yoda: there is no try")
            assert hans.elsewhere() == [] and yoda.elsewhere() == []
            assert hans.errors == [] and yoda.errors == []
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_browser_and_a_terminal_exchange_a_message_and_a_broadcast(
    workdir: Path,
) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            terminal = await logged_in(server, "hans", "falcon*solo")
            yoda.sees("hans logged in")
            await typed(terminal, "message yoda hello from the terminal")
            yoda.open_conversation("hans")
            yoda.sees("hans: hello from the terminal")
            yoda.say("hello from the browser")
            await terminal.expect("yoda: hello from the browser")

            yoda.open_conversation("Everyone")
            yoda.say("a broadcast from the browser")
            await terminal.expect("yoda: a broadcast from the browser")
            await typed(terminal, "broadcast and one back")
            yoda.sees("hans \u2192 all: and one back")
    finally:
        await finish(server, *([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_mail_for_a_browser_user_while_away_is_shown_once_in_order(
    workdir: Path,
) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        terminal = await logged_in(server, "hans", "falcon*solo")
        for n in (1, 2, 3):
            await typed(terminal, f"message yoda while you were out {n}")
            await terminal.expect("they will get the message when they log in")
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            yoda.open_conversation("hans")
            yoda.sees("while you were out 3")
            log = str(yoda.page.get_by_role("log").inner_text())
            positions = [log.index(f"while you were out {n}") for n in (1, 2, 3)]
            assert positions == sorted(positions)
            assert log.count("while you were out") == 3  # once each, history or not
            assert log.count("sent while you were away") == 3

            # Logging in again: acknowledged, so not delivered again as mail.
            yoda.page.get_by_role("button", name="Log out").click()
            yoda.log_in("yoda", "wise@!man")
            yoda.talk_to("hans")
            yoda.sees("while you were out 3")  # from the history now
            assert yoda.count("while you were out 1") == 1
            assert yoda.count("sent while you were away") == 0
            assert yoda.errors == []
    finally:
        await finish(server, *([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_a_room_with_a_browser_and_a_terminal_member(workdir: Path) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            yoda.say("/join #jedi")
            expect(yoda.page.get_by_role("heading", name="#jedi")).to_be_visible()
            yoda.sees("You joined #jedi")
            terminal = await logged_in(server, "hans", "falcon*solo")
            await typed(terminal, "join #jedi")
            yoda.sees("hans joined #jedi")
            await typed(terminal, "message #jedi hello room")
            yoda.sees("hans: hello room")
            yoda.say("welcome, hans")
            await terminal.expect("[#jedi] yoda: welcome, hans")
            assert yoda.errors == []
    finally:
        await finish(server, *([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_markup_in_a_message_is_shown_as_text_and_never_run(workdir: Path) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            terminal = await logged_in(server, "hans", "falcon*solo")
            await typed(
                terminal, f"message yoda {XSS}", f"message yoda {SCRIPT}", f"broadcast {XSS}"
            )
            yoda.open_conversation("hans")
            yoda.sees(f"hans: {XSS}")
            yoda.sees(f"hans: {SCRIPT}")
            yoda.open_conversation("Everyone")
            yoda.sees(XSS)
            page = yoda.page
            assert page.locator("img").count() == 0  # no element was made of it
            assert page.locator("script").count() == 1  # the page's own, no more
            page.wait_for_timeout(300)  # an onerror would have run by now
            assert yoda.dialogs == [] and yoda.errors == []
    finally:
        await finish(server, *([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_the_page_reconnects_after_a_restart_keeping_what_was_typed(
    workdir: Path,
) -> None:
    web_port = launch.free_port()
    server, port = await web_server(workdir, web_port=web_port)
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            await server.stop()
            yoda.sees("The connection to the server was lost.")
            box = yoda.page.get_by_label("Message")
            box.fill("typed while it was down")
            box.press("Enter")  # nowhere to send it: kept in the box
            expect(box).to_have_value("typed while it was down")
            server, port = await web_server(workdir, web_port=web_port)
            yoda.sees("reconnected")
            assert yoda.count("reconnected") == 1
            box.press("Enter")
            yoda.sees("you \u2192 all: typed while it was down")
            assert yoda.count("typed while it was down") == 1
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_page_of_another_origin_cannot_open_the_websocket(workdir: Path) -> None:
    server, port = await web_server(workdir)
    try:
        with chromium(workdir / "home") as browser:
            context = browser.new_context()
            # As if the visitor allowed the page to reach local addresses: the browser's
            # own Local Network Access check must not be what stops it, the server must.
            context.grant_permissions(["local-network-access"])
            page = context.new_page()
            # A page the attacker serves: it tries the chat in the visitor's name.
            context.route(
                "http://127.0.0.1:9/**",
                lambda route: route.fulfill(body="<p>hello</p>", content_type="text/html"),
            )
            page.goto("http://127.0.0.1:9/")
            outcome = page.evaluate(
                """url => new Promise(done => {
                    const socket = new WebSocket(url);
                    socket.onopen = () => done("open");
                    socket.onerror = () => done("refused");
                })""",
                f"ws://127.0.0.1:{port}/ws",
            )
            assert outcome == "refused"
            # The page's own origin is let in.
            User.logged_in(browser, port, "yoda", "wise@!man")
        await server.process.expect(
            "refused a WebSocket from .*: origin http://127.0.0.1:9", regex=True
        )
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_keyboard_only_at_a_phone_s_width(workdir: Path) -> None:
    """Log in and send with the keyboard alone, on a 320 px wide screen, with no
    sideways scrolling."""
    server, port = await web_server(workdir)
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.open(browser, port, width=320, height=640)
            page = yoda.page
            keyboard = page.keyboard
            expect(page.get_by_label("Username")).to_be_focused()
            keyboard.type("yoda")
            keyboard.press("Tab")
            keyboard.type("wise@!man")
            keyboard.press("Enter")
            expect(page.get_by_label("Message")).to_be_focused()
            keyboard.type("typed, not clicked")
            keyboard.press("Enter")
            yoda.sees("you \u2192 all: typed, not clicked")
            width = page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 320
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_errors_lockout_and_new_accounts_as_in_the_terminal(workdir: Path) -> None:
    server, port = await web_server(workdir)
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.open(browser, port)
            page = yoda.page
            for left in ("2 tries left", "1 try left"):
                page.get_by_label("Username").fill("yoda")
                page.get_by_label("Password", exact=True).fill("wrong")
                page.get_by_role("button", name="Log in").click()
                expect(page.get_by_role("alert")).to_contain_text(left)
            page.get_by_label("Password", exact=True).fill("wrong")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_contain_text("blocked")

            leia = User.open(browser, port)
            leia.create_account("rey", "scavenger*1")
            expect(leia.page.get_by_role("heading", name="Everyone")).to_be_visible()
        assert "rey scavenger*1" in (workdir / "credentials.txt").read_text()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_private_chat_request_from_a_terminal_is_declined_for_the_browser(
    workdir: Path,
) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            terminal = await logged_in(server, "hans", "falcon*solo")
            await sleep(0.5)  # its peer listener announced
            await typed(terminal, "startprivate yoda")
            await terminal.expect("yoda is using the chat in a web browser")
            yoda.sees("hans asked for a private chat, which a browser cannot take.")
    finally:
        await finish(server, *([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_an_idle_browser_is_told_why_it_was_logged_out(workdir: Path) -> None:
    server, port = await web_server(workdir, "--timeout", "3")
    try:
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            expect(yoda.page.get_by_role("alert")).to_contain_text(
                "you sent nothing for too long", timeout=10_000
            )
            expect(yoda.page.get_by_label("Username")).to_have_value("yoda")
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_browser_on_one_node_and_a_terminal_on_another_are_one_chat(
    workdir: Path,
) -> None:
    """With --redis, a node's web listener serves users of the one chat: messages,
    rooms and the private-chat refusal cross nodes."""
    from tests.e2e.browser import WEB_LISTENING
    from tests.e2e.test_cluster import Cluster

    cluster = await Cluster(workdir).start()
    terminal = None
    try:
        a = await cluster.add("a", "--web", "tcp:0:interface=127.0.0.1")
        port = await launch.ready(a.process, WEB_LISTENING)
        b = await cluster.add("b")
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            yoda.say("/join #council")
            terminal = await logged_in(b, "hans", "falcon*solo")
            online = yoda.page.get_by_role("list", name="Online")
            expect(online.get_by_role("button", name="hans")).to_be_visible()
            await typed(terminal, "join #council")
            await terminal.expect("You joined #council")
            await typed(terminal, "message #council across the nodes")
            yoda.sees("hans: across the nodes")
            yoda.talk_to("hans")
            yoda.say("and back again")
            await terminal.expect("yoda: and back again")
            await typed(terminal, "startprivate yoda")
            await terminal.expect("yoda is using the chat in a web browser")
            yoda.open_conversation("Everyone")
            yoda.sees("hans asked for a private chat, which a browser cannot take.")
            assert yoda.errors == []
    finally:
        await cluster.close(*([terminal] if terminal else []))


@pytest_twisted.ensureDeferred
async def test_scrolling_up_loads_older_history(workdir: Path) -> None:
    server, port = await web_server(workdir)
    terminal = None
    try:
        terminal = await logged_in(server, "hans", "falcon*solo")
        await typed(terminal, *(f"message yoda number {n:02d}" for n in range(70)))
        for _ in range(70):  # each kept: as mail for yoda, and in their history
            await terminal.expect("they will get the message when they log in")
        with chromium(workdir / "home") as browser:
            yoda = User.logged_in(browser, port, "yoda", "wise@!man")
            yoda.open_conversation("hans")
            yoda.sees("hans: number 69")
            yoda.page.get_by_role("button", name="Log out").click()
            yoda.log_in("yoda", "wise@!man")  # the mail was shown: now only history
            yoda.talk_to("hans")
            yoda.sees("hans: number 69")
            assert yoda.count("number 19") == 0  # the newest 50 first
            yoda.page.get_by_role("log").evaluate("log => { log.scrollTop = 0; }")
            yoda.sees("hans: number 00")
            log = str(yoda.page.get_by_role("log").inner_text())
            assert [log.count(f"number {n:02d}") for n in range(70)] == [1] * 70
            assert log.index("number 00") < log.index("number 69")
    finally:
        await finish(server, *([terminal] if terminal else []))
