"""The time before each line, a line when the day changes, in every output mode, and
plain output that is lines: a prompt never runs into what follows."""

from __future__ import annotations

import os
import time

from twisted.internet.testing import StringTransport

from tests.test_terminal import Screen
from twisted_chat.client.console import PlainConsole, TerminalState
from twisted_chat.client.presentation import TimeStamps

EVENING = time.mktime((2026, 12, 7, 23, 59, 0, 0, 0, -1))
MORNING = time.mktime((2026, 12, 8, 0, 1, 0, 0, 0, -1))


def test_each_line_has_the_time_and_a_new_day_gets_a_line_of_its_own() -> None:
    stamps = TimeStamps()
    assert (stamps.day_changed(EVENING), stamps.prefix(EVENING)) == (None, "[23:59] ")
    assert stamps.day_changed(EVENING + 30) is None
    changed, stamp = stamps.day_changed(MORNING), stamps.prefix(MORNING)
    assert changed == "-!- Day changed to Tuesday 08 December 2026" and stamp == "[00:01] "
    off = TimeStamps(on=False)
    assert (off.day_changed(EVENING), off.day_changed(MORNING), off.prefix(MORNING)) == (
        None,
        None,
        "",
    )


def plain(timestamps: bool = True) -> tuple[PlainConsole, StringTransport, list[float]]:
    now = [EVENING]
    console = PlainConsole(
        TerminalState(os.open(os.devnull, os.O_RDONLY)),
        timestamps=timestamps,
        clock=lambda: now[0],
    )
    transport = StringTransport()
    console.makeConnection(transport)
    return console, transport, now


def test_plain_output_has_the_time_too_and_every_line_ends() -> None:
    console, transport, now = plain()
    console.ask("Username: ")
    console.show("Error. Invalid username.", "error")
    console.show("hans: hi", "message")
    now[0] = MORNING
    console.show("yoda", "")  # a reply to whoelse: bare, for scripts that read it
    console.show("-!- hans logged out", "presence")
    assert transport.value().decode().split("\n") == [
        "Username: ",  # the prompt ends its line: the error does not run into it
        "Error. Invalid username.",
        "[23:59] hans: hi",
        "yoda",
        "[00:01] -!- Day changed to Tuesday 08 December 2026",
        "[00:01] -!- hans logged out",
        "",
    ]


def test_no_timestamps_means_none() -> None:
    console, transport, _ = plain(timestamps=False)
    console.show("hans: hi", "message")
    assert transport.value() == b"hans: hi\n"


def test_the_line_editor_says_when_the_day_changes() -> None:
    screen = Screen()
    now = [EVENING]
    screen.console.clock = lambda: now[0]
    screen.console.show("hans: late", "message")
    now[0] = MORNING
    screen.console.show("hans: early", "message")
    shown = screen.shown()
    assert "[23:59] hans: late" in shown
    assert "[00:01] -!- Day changed to Tuesday 08 December 2026" in shown
    assert shown.index("[00:01] hans: early") > shown.index("[23:59] hans: late")
