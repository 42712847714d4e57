"""The status bar and a resize, on a terminal emulator (pyte): the bar sits above the
input line, incoming lines go above both, and after a resize the screen is drawn
again with one input line, no ghost of the old one."""

from __future__ import annotations

import pyte

from tests.fakes import FakePeers, RecordingDisplay, ScriptedLink
from twisted_chat import wire
from twisted_chat.client.session import ClientSession
from twisted_chat.client.terminal import TerminalConsole


class PyteTerminal:
    """What TerminalConsole writes to, rendered by pyte (the insults calls it uses)."""

    def __init__(self, columns: int = 60, rows: int = 10) -> None:
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.ByteStream(self.screen)

    def write(self, data: bytes) -> None:
        self.stream.feed(data)

    def eraseLine(self) -> None:
        self.write(b"\x1b[2K")

    def eraseDisplay(self) -> None:
        self.write(b"\x1b[2J")

    def cursorHome(self) -> None:
        self.write(b"\x1b[H")

    def cursorUp(self, n: int = 1) -> None:
        self.write(b"\x1b[%dA" % n)

    def cursorBackward(self, n: int = 1) -> None:
        self.write(b"\x1b[%dD" % n)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display if line.strip()]


def console_on(terminal: PyteTerminal) -> TerminalConsole:
    console = TerminalConsole(colour=False, clock=lambda: 0.0, columns=60)
    console.rows = 10
    console.terminal = terminal
    console.ask("> ")
    return console


def test_the_status_bar_sits_above_the_input_and_lines_go_above_both() -> None:
    terminal = PyteTerminal()
    console = console_on(terminal)
    console.show_status("[hans]  private: luke")
    console.keystrokeReceived(b"h", None)
    console.keystrokeReceived(b"i", None)
    console.show("luke: hello")
    console.show("yoda logged in")
    lines = terminal.lines()
    assert lines[-2:] == ["[hans]  private: luke", "> hi"]
    assert [line[8:] for line in lines[:-2]] == ["luke: hello", "yoda logged in"]


def test_a_resize_draws_the_screen_again_with_one_input_line() -> None:
    terminal = PyteTerminal(60, 10)
    console = console_on(terminal)
    console.show_status("[hans]")
    for n in range(3):
        console.show(f"line {n} " + "word " * 8)
    for char in "a long half-typed message to luke":
        console.keystrokeReceived(char.encode(), None)
    terminal.screen.resize(10, 30)  # narrower: old lines no longer fit
    console.terminal_size(30, 10)
    lines = terminal.lines()
    assert lines[-1].startswith("> ") and lines[-2] == "[hans]"
    assert sum(line.startswith("> ") for line in lines) == 1  # no ghost input line
    assert all(len(line) <= 30 for line in lines)
    assert any("line 2" in line for line in lines)  # the recent lines are drawn again


def test_the_session_says_who_you_are_your_chats_and_waiting_requests() -> None:
    display, link, peers = RecordingDisplay(), ScriptedLink(), FakePeers()
    session = ClientSession(display, peers)
    session.link_made(link)
    link.answer(version=2)
    session.line_entered("hans")
    link.answer(account="existing")
    session.line_entered("pw")
    link.answer(user="hans")
    assert display.status_line == "[hans]"
    peers.sessions.add("luke")
    session.peer_opened("luke")
    session.event_received(wire.PrivateRequest("yoda", 60.0))
    assert display.status_line == "[hans]  private: luke  asking you: yoda (y/n)"
    session.line_entered("startprivate leia")
    assert display.status_line.endswith("you asked: leia")
