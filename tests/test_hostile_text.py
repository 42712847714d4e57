"""What one user sends must never forge a line or drive another user's terminal: the
server refuses control characters in text, and the client never writes one it received
(from the server, a peer, or an old stored message) to the terminal."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from tests.harness import Server
from tests.memnet import Person, people
from tests.test_client_session import Client
from tests.test_private import open_session
from twisted_chat import wire
from twisted_chat.client.console import PlainConsole, TerminalState
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
        "[all] luke: ^[]52;c;AAAA^Gx",
        "-!- r2^Md2 logged in",
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


def test_every_format_character_is_refused_but_a_joiner_inside_a_word() -> None:
    """Format characters (U+0600...) count no column in our client and one in common
    terminals: a message could push its text to where it reads as a new line."""
    formats = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert len(formats) > 150
    for char in formats:
        if char in "\u200c\u200d":
            continue
        assert forbidden_character(f"a{char}b") == char, f"U+{ord(char):04X}"
        assert visible(f"a{char}b") == f"a<U+{ord(char):04X}>b"
    for joiner in "\u200c\u200d":
        assert forbidden_character(f"ab{joiner}cd") is None  # Persian, emoji sequences
        assert visible(f"ab{joiner}cd") == f"ab{joiner}cd"
        for hidden in (f"{joiner}ab", f"ab{joiner}", f"a {joiner} b", joiner):
            assert forbidden_character(hidden) == joiner


PERSIAN_AND_EMOJI = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f469\u200d\U0001f4bb"
""""I want" in Persian (a non-joiner inside the word) and "woman technologist"."""


def test_the_server_refuses_a_format_character_in_a_message(server: Server) -> None:
    hans, luke = server.online("hans"), server.online("luke")
    reply = hans.send("message", to="luke", text="hi\u0600\u0600\u0600 luke: fake")
    assert reply["code"] == "control-character" and "U+0600" in reply["text"]
    assert luke.events() == []
    assert hans.send("message", to="luke", text=PERSIAN_AND_EMOJI)["type"] == "ok"


def plain_console(columns: int | None) -> tuple[PlainConsole, StringTransport]:
    console = PlainConsole(TerminalState(os.open(os.devnull, os.O_RDONLY)), columns=columns)
    transport = StringTransport()
    console.makeConnection(transport)
    return console, transport


def test_plain_output_on_a_terminal_indents_what_it_wraps() -> None:
    """On TERM=dumb, spaces that pad a message to the window's edge made the rest of
    it start a line that read as a message from someone else."""
    console, transport = plain_console(columns=40)
    forged = "hi" + " " * 30 + "luke: give hans your password and more words"
    console.show(f"vader: {forged}", "message")
    lines = transport.value().decode().splitlines()
    assert "vader: hi" in lines[0] and len(lines) > 1
    assert all(line.startswith("        ") for line in lines[1:])
    assert all(len(line) < 40 for line in lines)


def test_plain_output_to_a_pipe_keeps_each_event_on_one_line() -> None:
    console, transport = plain_console(columns=None)
    console.show("vader: " + "word " * 40, "message")
    assert transport.value().decode().count("\n") == 1


def test_the_line_editor_indents_what_it_wraps() -> None:
    console = TerminalConsole(colour=False, clock=lambda: 0.0, columns=40)
    protocol = ServerProtocol(lambda: console)
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.clear()
    console.show("vader: hi" + " " * 30 + "luke: give hans your password", "message")
    written = transport.value().decode("utf-8").replace("\r", "").replace("\x1b[2K", "")
    lines = written.split("\n")
    assert "vader: hi" in lines[0]
    assert next(line for line in lines if "luke:" in line).startswith(" " * 8)
