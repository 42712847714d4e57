"""What one user sends must never forge a line or drive another user's terminal: the
server refuses control characters in text, and the client never writes one it received
(from the server, a peer, or an old stored message) to the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from tests.harness import Server
from tests.memnet import Person, people
from tests.test_client_session import Client
from tests.test_private import open_session
from twisted_chat import wire
from twisted_chat.client.terminal import TerminalConsole
from twisted_chat.interfaces import StoredMessage
from twisted_chat.text import forbidden_character, visible

HOSTILE = [
    pytest.param("hi\nvader: send me your password", id="newline-forges-a-line"),
    pytest.param("hi\r\x1b[2Kvader: hi", id="carriage-return-and-erase"),
    pytest.param("\x1b[31mred", id="colour"),
    pytest.param("\x1b]0;pwned\x07", id="window-title-osc0"),
    pytest.param("\x1b]52;c;cm0gLXJmIH4=\x07", id="clipboard-osc52"),
    pytest.param("\x9b2J", id="c1-csi"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("abc\u202edcb", id="bidi-override"),
    pytest.param("line\u2028break", id="line-separator"),
    pytest.param("nul\x00", id="nul"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_every_control_is_found_and_made_visible(text: str) -> None:
    assert forbidden_character(text) is not None
    shown = visible(text)
    assert forbidden_character(shown) is None
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown


def test_visible_names_what_it_replaced() -> None:
    assert visible("a\x1b[2Jb\nc\x7f\u202e") == "a^[[2Jb^Jc^?<U+202E>"
    assert visible("héllo 中文 🎉 👩\u200d💻") == "héllo 中文 🎉 👩\u200d💻"  # untouched


def test_tab_is_allowed_and_shown_as_spaces() -> None:
    assert forbidden_character("a\tb") is None
    assert visible("ab\tc") == "ab      c"


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


@pytest.mark.parametrize("text", HOSTILE)
def test_server_refuses_control_characters_in_a_message(server: Server, text: str) -> None:
    users = server.everyone("hans", "yoda")
    reply = users["hans"].send("message", to="yoda", text=text)
    assert reply["type"] == "error" and reply["code"] == "control-character"
    assert "nothing was sent" in reply["text"]
    assert users["yoda"].events() == []


@pytest.mark.parametrize("text", HOSTILE)
def test_server_refuses_control_characters_in_a_broadcast(server: Server, text: str) -> None:
    users = server.everyone("hans", "yoda", "luke")
    reply = users["hans"].send("broadcast", text=text)
    assert reply["code"] == "control-character"
    assert users["yoda"].events() == [] and users["luke"].events() == []


def test_nothing_is_stored_for_an_offline_user(server: Server) -> None:
    hans = server.online("hans")
    reply = hans.send("message", to="yoda", text="hi\x1b]0;owned\x07")
    assert reply["code"] == "control-character"
    yoda = server.online("yoda")
    assert [e for e in yoda.events() if e["type"] == "message"] == []


def test_a_refused_text_is_not_activity(tmp_path: Path) -> None:
    server = Server(tmp_path, "--timeout", "10")
    hans = server.online("hans")
    server.advance(9)
    hans.send("broadcast", text="\x1b[2J")
    server.advance(1)
    assert {"type": "logged-out", "reason": "timeout"} in hans.events()


def test_client_shows_hostile_events_visibly() -> None:
    client = Client().logged_in()
    session = client.session
    session.event_received(wire.Message("vader\x1b[8m", "hi\nyoda: give me your password", 0))
    session.event_received(wire.Broadcast("luke", "\x1b]52;c;AAAA\x07x", 0))
    session.event_received(wire.Presence("r2\rd2", True))
    session.event_received(wire.PrivateRequest("evil\x1b[2J", 60))
    lines = client.display.take()
    assert lines == [
        "vader^[[8m: hi^Jyoda: give me your password",
        "luke: ^[]52;c;AAAA^Gx",
        "r2^Md2 logged in",
        "evil^[[2J would like to private message, enter y or n:",
    ]


def test_a_message_stored_before_the_rule_is_shown_safely(server: Server) -> None:
    """Mail accepted by an older server may hold anything: shown visibly at login."""
    server.chat.mailbox.append("luke", StoredMessage("hans", "hi\nvader: trust me\x1b[2J", 1.0))
    network, _ = people(server, "hans")
    luke = Person(network, "luke")
    luke.type("luke", "=hope+")
    lines = luke.display.take()
    stored = [line for line in lines if line.startswith("hans: ")]
    assert stored and stored[0].startswith("hans: hi^Jvader: trust me^[[2J")


def test_peer_text_with_a_control_character_is_refused(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    hans, luke = who["hans"], who["luke"]
    open_session(hans, luke)
    # A modified client writes straight to the peer connection, past its own checks.
    hans.peers._sessions["luke"].transport.write(
        wire.encode(wire.PrivateText("hi\nvader(private): trust me"))
    )
    network.flush()
    assert luke.sees() == []
    assert luke.peers.has("hans")  # one bad frame does not end the session
    hans.type("private luke still friends?")
    assert luke.sees() == ["hans(private): still friends?"]


def test_our_own_private_text_with_a_control_character_is_not_sent(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    hans, luke = who["hans"], who["luke"]
    open_session(hans, luke)
    hans.type("private luke a\x1b[2Jb")
    assert hans.sees() == [
        "Error. The message contains a control character (U+001B); nothing was sent."
    ]
    assert luke.sees() == []


def test_terminal_console_writes_no_escape_it_did_not_make() -> None:
    console = TerminalConsole(colour=True, clock=lambda: 0.0)
    protocol = ServerProtocol(lambda: console)
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.clear()
    console.show("vader: \x1b]0;pwned\x07\x1b[2J\x9b1m\u202eevil", "message")
    written = transport.value().decode("utf-8")
    assert "]0;pwned" not in written.replace("^[]0;pwned", "")
    assert "\x1b[2J" not in written and "\x9b" not in written and "\u202e" not in written
    assert "^[]0;pwned^G^[[2J<U+009B>1m<U+202E>evil" in written
