"""The terminal console against in-memory terminals: insults' TerminalBuffer for the
screen, and the real insults ServerProtocol for key decoding and colour."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.conch.insults.helper import TerminalBuffer
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from twisted_chat.client import presentation
from twisted_chat.client.terminal import TerminalConsole

NOON = 1_700_000_000.0


class FakeSession:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.events: list[str] = []

    def line_entered(self, line: str) -> None:
        self.lines.append(line)

    def secret_entered(self, line: str) -> None:
        self.lines.append(f"(secret) {line}")

    def key_pressed(self) -> None:
        pass

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


def test_ctrl_c_clears_a_line_and_on_an_empty_line_says_how_to_leave() -> None:
    """Ctrl-C on an empty line logged out (exit 130): a reflex ended the session."""
    screen = Screen()
    screen.console.ask("> ")
    screen.type("half a line", b"\x03")
    assert screen.session.events == []  # the line is cleared, as shells do
    assert screen.console.editor.text == ""
    screen.type(b"\x03")
    assert screen.session.events == []
    assert any(line.endswith("(type logout or press Ctrl-D to leave)") for line in screen.shown())
    screen.type(b"\x04")  # Ctrl-D on the empty line leaves, cleanly
    assert screen.session.events == ["input_closed"]


def test_ctrl_c_at_a_login_prompt_quits() -> None:
    screen = Screen()
    screen.console.ask("Password: ", secret=True)
    screen.type(b"\x03")
    assert screen.session.events == ["interrupted"]


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


def keys(protocol: ServerProtocol, data: bytes) -> None:
    protocol.dataReceived(data)


@pytest.mark.parametrize(
    ("typed", "text", "cursor"),
    [
        (b"one two three\x1bb", "one two three", 8),  # Alt-b
        (b"one two three\x1bb\x1bb\x1bf", "one two three", 7),  # Alt-b Alt-b Alt-f
        (b"one two three\x1b[1;5D\x1b[1;5D", "one two three", 4),  # Ctrl-← Ctrl-←
        (b"one two three\x01\x1b[1;5C", "one two three", 3),  # Ctrl-A Ctrl-→
        (b"one two three\x01\x1bd", " two three", 0),  # Alt-d
        (b"one two three\x17\x01\x19 ", "three one two ", 6),  # Ctrl-W, Ctrl-A, Ctrl-Y
        (b"one two\x15x\x19", "xone two", 8),  # Ctrl-U then Ctrl-Y puts it back
        (b"one two\x01\x0b\x19\x19", "one twoone two", 14),  # Ctrl-K, Ctrl-Y twice
        (b"one two\x1b\x7f", "one ", 4),  # Alt-Backspace
    ],
)
def test_readline_keys_key_by_key(typed: bytes, text: str, cursor: int) -> None:
    protocol, _, console = real_terminal(colour=False)
    keys(protocol, typed)
    assert (console.editor.text, console.editor.cursor) == (text, cursor)


def test_ctrl_r_searches_history_backwards_as_you_type() -> None:
    protocol, transport, console = real_terminal(colour=False)
    console.ask("> ")
    for line in (b"message luke hi", b"whoelse", b"message yoda hello", b"block vader"):
        keys(protocol, line + b"\r")
    keys(protocol, b"\x12mess")
    assert console.editor.text == "message yoda hello"
    assert b"(reverse-i-search)'mess': message yoda hello" in transport.value()
    keys(protocol, b"\x12")  # an older match
    assert console.editor.text == "message luke hi"
    keys(protocol, b"\x1b[C")  # any other key: keep the line found, edit it
    assert console.editor.search is None and console.editor.text == "message luke hi"
    keys(protocol, b"\x05\x15\x12who\x07")  # Ctrl-G: back to the line before the search
    assert console.editor.text == "" and console.editor.search is None
    keys(protocol, b"\x12vad\r")  # Enter: run the line found
    assert console.session.lines[-1] == "block vader"  # type: ignore[union-attr]


def test_ctrl_l_clears_the_screen_and_redraws_the_line() -> None:
    screen = Screen()
    screen.console.show("an old line")
    screen.type("half typed", b"\x0c")
    assert screen.shown() == ["> half typed"]


def test_chat_lines_are_not_echoed_as_commands_other_commands_are() -> None:
    screen = Screen()
    screen.type("message luke hi", b"\r", "whoelse", b"\r")
    assert screen.session.lines == ["message luke hi", "whoelse"]
    assert "> message luke hi" not in screen.shown()  # the session shows "→ luke: hi"
    assert "> whoelse" in screen.shown()


def test_help_in_a_narrow_window_breaks_between_words() -> None:
    screen = Screen()
    screen.console.terminal_size(40)
    screen.console.show("message <user> <message>  send a message; kept for later if offline")
    shown = [line for line in screen.shown() if line != ">"]
    assert all(len(line) <= 40 for line in shown)
    words = " ".join(shown).replace("[12:", "").split()
    assert "offline" in words and "late" not in words  # no word cut in two


def test_a_broadcast_a_message_to_you_and_your_own_read_differently() -> None:
    """Broadcasts and messages to you looked the same: ``hans: hi`` either way."""
    assert presentation.message("hans", "hi") == "hans: hi"
    assert presentation.broadcast("hans", "hi") == "[all] hans: hi"
    assert presentation.own_message("luke", "hi") == "you \u2192 luke: hi"
    assert presentation.own_broadcast("hi") == "you \u2192 all: hi"
    assert presentation.presence("hans", True) == "-!- hans logged in"
    coloured = Screen(colour=True)
    coloured.console.show(presentation.broadcast("hans", "hi"), "broadcast")
    coloured.console.show(presentation.message("hans", "hi"), "message")
    drawn = bytes(coloured.buffer).decode("utf-8")
    assert "[33m[1m[all] hans" in drawn  # the broadcast's sender in its own colour


def test_a_password_typed_ahead_is_never_drawn_and_goes_to_the_session_as_held() -> None:
    """Typing the password before the Password: prompt came echoed it, kept it in the
    scrollback and drew it again on resize."""
    screen = Screen()
    screen.console.ask("Username: ")
    screen.type("hans", b"\r", "falcon*so")  # the server has not answered yet
    assert "falcon" not in "".join(screen.lines())
    screen.console.ask("Password: ", secret=True)
    screen.type("lo", b"\r")
    assert screen.session.lines == ["hans", "falcon*solo"]
    screen.console.terminal_size(60, 20)  # drawn again: the password is nowhere
    assert "falcon" not in "".join(screen.lines())


def test_a_line_typed_while_the_server_checks_is_held_as_a_secret() -> None:
    screen = Screen()
    screen.console.ask("Username: ")
    screen.type("hans", b"\r", "falcon*solo", b"\r")
    assert screen.session.lines == ["hans", "(secret) falcon*solo"]
    assert "falcon" not in "".join(screen.lines())
    screen.type("half")  # then the name is refused: nothing typed ahead shows
    screen.console.ask("Username: ")
    assert screen.console.editor.text == "" and "half" not in "".join(screen.lines())


def test_what_was_being_typed_stays_on_the_screen_when_the_client_ends() -> None:
    """On idle logout the half-typed line disappeared with the input line."""
    screen = Screen()
    screen.type("message luke the half of it")
    screen.console.finish(0)
    assert any(
        line.endswith("> message luke the half of it  (not sent)") for line in screen.shown()
    )
