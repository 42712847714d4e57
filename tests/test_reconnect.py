"""Coming back by itself: the waits, and a session that loses its server, connects
again on a Clock, logs in again with what it holds, and sends what was typed."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from tests.fakes import FakePeers, RecordingDisplay, ScriptedLink
from twisted_chat import wire
from twisted_chat.client.reconnect import Reconnector, wait_before
from twisted_chat.client.session import ClientSession, Stage


def test_the_waits_double_from_1_s_to_30_s_with_jitter() -> None:
    assert [wait_before(n, lambda: 0.5) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert wait_before(0, lambda: 0.0) == 0.8 and wait_before(0, lambda: 1.0) == 1.2
    assert wait_before(10_000, lambda: 0.5) == 30


class Away:
    """A logged-in session whose server can be taken away and given back."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.display = RecordingDisplay()
        self.links: list[ScriptedLink] = []
        self.refusing = False
        self.session = ClientSession(
            self.display,
            FakePeers(),
            reconnect=lambda s: Reconnector(s, self.clock, self.connect, lambda: 0.5),
        )
        self.link = self.new_link()
        self.link.answer(version=3)
        self.session.line_entered("hans")
        self.link.answer(account="existing")
        self.session.line_entered("falcon*solo")
        self.link.answer(user="hans")
        self.link.answer()  # listening
        self.link.answer(users=["hans", "luke"])  # accounts
        self.display.take()

    def new_link(self) -> ScriptedLink:
        link = ScriptedLink()
        self.links.append(link)
        self.session.link_made(link)
        return link

    def first_try(self) -> ScriptedLink:
        """The server goes; a second later the client's first try says hello."""
        self.session.server_lost("The connection to the server was lost.")
        self.clock.advance(1)
        link = self.links[-1]
        link.answer(version=3)
        return link

    def connect(self) -> Deferred[Any]:
        if self.refusing:
            return fail(ConnectionRefusedError())
        return succeed(self.new_link())


def test_a_lost_server_is_said_once_and_the_client_comes_back_as_the_same_user() -> None:
    away = Away()
    session, display = away.session, away.display
    session.server_lost("The connection to the server was lost.")
    assert session.stage is Stage.RECONNECTING and display.status is None
    assert display.take() == [
        "The connection to the server was lost. Connecting again in the background; keep typing."
    ]
    session.line_entered("message luke typed while away")
    assert display.take() == ["(not connected: sent once the client is back)"]
    away.refusing = True
    away.clock.advance(1)  # the first try: refused, nothing said
    assert display.take() == [] and "next try in 2 s" in display.status_line
    away.refusing = False
    away.clock.advance(2)
    link = away.links[-1]
    assert link.answer(version=3) == wire.Hello(wire.PROTOCOL_VERSION)
    assert link.answer(account="existing") == wire.Login("hans")
    assert link.answer(user="hans") == wire.Password("falcon*solo")
    assert session.stage.value == "online"
    assert display.take() == ["reconnected"]
    sent = link.sent()[3:]
    assert wire.Listening(4321, "ab" * 32) in sent
    assert wire.SendMessage("luke", "typed while away") in sent  # what was typed goes out


def test_an_old_session_the_server_still_holds_means_trying_again_later() -> None:
    away = Away()
    link = away.first_try()
    link.fail("already-online", "hans is online already.")
    assert away.session.stage is Stage.RECONNECTING  # not given up


def test_a_refused_password_ends_the_client_instead_of_guessing() -> None:
    away = Away()
    link = away.first_try()
    link.answer(account="existing")
    link.fail("wrong-password", "Invalid password.")
    assert away.session.stage is Stage.DONE and away.display.status == 1


def test_idle_logout_never_comes_back_and_a_shutdown_does() -> None:
    idle = Away()
    idle.session.logged_out("timeout")
    assert idle.session.stage is Stage.DONE
    restart = Away()
    restart.session.logged_out("shutdown")
    assert restart.session.stage is Stage.RECONNECTING
    assert restart.display.take()[0].startswith("The server ended your session (shutdown).")


def test_without_a_reconnector_a_lost_server_ends_the_client() -> None:
    display = RecordingDisplay()
    session = ClientSession(display, FakePeers())
    session.link_made(ScriptedLink())
    session.server_lost("The connection to the server was lost.")
    assert display.status == 1


def test_leaving_while_away_is_at_once() -> None:
    away = Away()
    away.session.server_lost("The connection to the server was lost.")
    away.session.input_closed()  # Ctrl-D
    assert away.session.stage is Stage.DONE and away.display.status == 0
    again = Away()
    again.session.server_lost("The connection to the server was lost.")
    again.session.line_entered("logout")
    assert again.display.status == 0
