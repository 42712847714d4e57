"""The terminal console against in-memory terminals: insults' TerminalBuffer for the
screen, and the real insults ServerProtocol for key decoding and colour."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.conch.insults.helper import TerminalBuffer
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from twisted_chat.client.terminal import TerminalConsole

NOON = 1_700_000_000.0


class FakeSession:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.events: list[str] = []

    def line_entered(self, line: str) -> None:
        self.lines.append(line)

    def input_closed(self) -> None:
        self.events.append("input_closed")

    def interrupted(self) -> None:
        self.events.append("interrupted")


class Screen:
    """A TerminalConsole drawing on insults' in-memory TerminalBuffer."""

    def __init__(self, colour: bool = False, users: tuple[str, ...] = ()) -> None:
        self.buffer = TerminalBuffer()
        self.buffer.connectionMade()
        self.session = FakeSession()
        self.console = TerminalConsole(colour, users=lambda: users, clock=lambda: NOON)
        self.console.session = self.session  # type: ignore[assignment]
        self.console.makeConnection(self.buffer)
        self.console.ask("> ")

    def type(self, *keys: Any) -> None:
        for key in keys:
            if isinstance(key, str):
                for byte in key.encode("utf-8"):
                    self.console.keystrokeReceived(bytes([byte]), None)
            else:
                self.console.keystrokeReceived(key, None)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in bytes(self.buffer).decode("utf-8").splitlines()]

    def shown(self) -> list[str]:
        return [line for line in self.lines() if line]

    @property
    def cursor(self) -> tuple[int, int]:
        return self.buffer.reportCursorPosition()  # type: ignore[no-any-return]


LEFT = b"[LEFT_ARROW]"
UP = b"[UP_ARROW]"


def stamp() -> str:
    import time

    return time.strftime("[%H:%M] ", time.localtime(NOON))


def test_incoming_lines_appear_above_and_the_half_typed_line_survives() -> None:
    screen = Screen()
    screen.type("message yoda hel", LEFT, LEFT)
    assert screen.cursor == (16, 0)
    screen.console.show("yoda: are you there?", "message")
    screen.console.show("luke logged in", "presence")
    assert screen.shown() == [
        f"{stamp()}yoda: are you there?",
        f"{stamp()}luke logged in",
        "> message yoda hel",
    ]
    assert screen.cursor == (16, 2)  # still between "h" and "el"
    screen.type("X")
    assert screen.shown()[-1] == "> message yoda hXel"


def test_enter_hands_the_line_over_and_keeps_it_in_the_scrollback() -> None:
    screen = Screen()
    screen.type("whoelse", b"\r")
    assert screen.session.lines == ["whoelse"]
    assert screen.shown() == ["> whoelse", ">"]


def test_passwords_are_never_drawn_or_remembered() -> None:
    screen = Screen()
    screen.console.ask("Password: ", secret=True)
    screen.type("falcon*solo")
    assert screen.shown()[-1] == "Password:"
    screen.type(b"\r")
    assert screen.session.lines == ["falcon*solo"]
    assert "falcon" not in "".join(screen.lines())
    assert screen.console.editor.history == []


def test_tab_completes_commands_and_users_and_lists_choices() -> None:
    screen = Screen(users=("yoda", "yolanda", "luke"))
    screen.type("mes", b"\t", "yo", b"\t")
    assert screen.shown()[-1] == "> message yo"
    screen.type(b"\t")
    assert screen.shown()[-2:] == ["yoda  yolanda", "> message yo"]
    screen.type("d", b"\t")
    assert screen.shown()[-1] == "> message yoda"


def test_tab_never_inserts_spaces_where_nothing_completes() -> None:
    screen = Screen()
    screen.type("broadcast hi", b"\t")
    assert screen.console.editor.text == "broadcast hi"


def test_ctrl_d_on_an_empty_line_ends_input_and_deletes_otherwise() -> None:
    screen = Screen()
    screen.type("ab", LEFT, b"\x04")
    assert screen.console.editor.text == "a"
    assert screen.session.events == []
    screen.type(b"\x15", b"\x04")
    assert screen.session.events == ["input_closed"]


def test_ctrl_c_interrupts() -> None:
    screen = Screen()
    screen.type("half a line", b"\x03")
    assert screen.session.events == ["interrupted"]
    assert screen.console.editor.text == ""


def test_history_with_the_arrow_keys() -> None:
    screen = Screen()
    screen.type("whoelse", b"\r", "block luke", b"\r", UP, UP)
    assert screen.shown()[-1] == "> whoelse"


def test_utf8_typed_byte_by_byte_is_decoded() -> None:
    screen = Screen()
    screen.type("héllo 中文 🎉")
    assert screen.console.editor.text == "héllo 中文 🎉"


def real_terminal(colour: bool) -> tuple[ServerProtocol, StringTransport, TerminalConsole]:
    console = TerminalConsole(colour, clock=lambda: NOON)
    console.session = FakeSession()  # type: ignore[assignment]
    protocol = ServerProtocol(lambda: console)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, console


def test_keys_are_decoded_by_insults_server_protocol() -> None:
    protocol, _, console = real_terminal(colour=False)
    protocol.dataReceived(b"abc\x1b[D\x1b[DX\x1b[H>\x1b[F!\x1b[3~")
    assert console.editor.text == ">aXbc!"


@pytest.mark.parametrize("colour", [True, False])
def test_colour_only_when_asked(colour: bool) -> None:
    _, transport, console = real_terminal(colour)
    console.show("Error. bob is not a user.", "error")
    console.show("yoda: hi", "message")
    written = transport.value()
    assert (b"\x1b[31m" in written) is colour
    assert (b"\x1b[1myoda" in written) is colour
    assert b"Error. bob is not a user." in written


def test_closing_does_not_reset_the_users_screen() -> None:
    _, transport, console = real_terminal(colour=False)
    transport.clear()
    console.close()
    assert transport.value() == b""  # no "\x1bc" full reset
    assert transport.disconnecting
