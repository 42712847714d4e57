"""The plain line console: the client's :class:`Display` over Twisted's StandardIO.

Used when standard input or output is not a terminal (scripts, pipes, tests); a
terminal gets the line editor (``terminal.TerminalConsole``). :class:`TerminalState`,
used by both, turns echo off while a password is typed and restores the terminal's
settings, and blocking mode on the standard descriptors (StandardIO makes them
non-blocking), whatever way the client ends.
"""

from __future__ import annotations

import contextlib
import os
import termios
import time
import tty
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.client.editor import wrap
from twisted_chat.client.presentation import CHAT_STYLES, TimeStamps
from twisted_chat.client.session import ClientSession
from twisted_chat.text import visible

MAX_TYPED_LINE = 64 * 1024
"""Longest line read from standard input; a message is far shorter (1,000 characters)."""

CONTINUED = " " * 8
"""What a line broken to the window's width continues after (as the line editor's
lines continue under the text, past the time): no piece of a message ever starts a
line, where it could pass for a line from someone else."""


def output_columns(fd: int = 1) -> int | None:
    """The width of the terminal output goes to; None when it goes to a pipe or a file
    (then lines are never broken: whoever reads them sees one event a line)."""
    if not os.isatty(fd):
        return None
    try:
        return os.get_terminal_size(fd).columns or 80
    except OSError:
        return 80


class TerminalState:
    """Saves the terminal's settings at start and puts them back at exit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.is_tty = os.isatty(fd)
        self._saved: list[Any] | None = termios.tcgetattr(fd) if self.is_tty else None

    def echo(self, on: bool) -> None:
        if self._saved is None:
            return
        attrs = termios.tcgetattr(self.fd)
        if on:
            attrs[3] |= termios.ECHO
        else:
            attrs[3] &= ~termios.ECHO
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def raw(self) -> None:
        """Raw mode for the line editor: every key as it is typed, no echo, no signals
        (Ctrl-C arrives as a key: the line editor decides what it does)."""
        if self._saved is not None:
            tty.setraw(self.fd)

    def columns(self) -> int:
        """The window's width; 80 when the terminal does not say (a pty nobody sized
        reports 0)."""
        try:
            return os.get_terminal_size(self.fd).columns or 80
        except OSError:
            return 80

    def rows(self) -> int:
        try:
            return os.get_terminal_size(self.fd).lines or 24
        except OSError:
            return 24

    def restore(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):  # a closed descriptor needs no restoring
                os.set_blocking(fd, True)


@implementer(IHalfCloseableProtocol)
class PlainConsole(LineReceiver):
    """Reads typed lines, prints lines; implements the session's ``Display``."""

    transport: Any
    """Set by Twisted on connection. ``Any``: ``Protocol`` types it ``ITransport | None``,
    and the TCP/StringTransport providers we use have more (``disconnecting``)."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_TYPED_LINE

    def __init__(
        self,
        terminal: TerminalState,
        redraw: bool = False,
        columns: int | None = None,
        timestamps: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.terminal = terminal
        self.redraw = redraw
        """Output goes to a terminal that understands cursor codes: a prompt may be
        cleared and drawn again below an incoming line. Off for a pipe, a file, or
        ``TERM=dumb``: then every byte written is plain text, one line per event."""
        self.columns = columns
        """The width to break lines at (a terminal, even a dumb one), or None."""
        self.stamps = TimeStamps(timestamps)
        self.clock = clock
        self.session: ClientSession | None = None
        self.finished: Deferred[int] = Deferred()
        self._closed: Deferred[None] = Deferred()
        self._prompt = ""
        self._secret = False

    # --- typed input ----------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", errors="replace")
        if self._secret:
            self._secret = False
            if self.terminal.is_tty:
                self.terminal.echo(True)
                if self.redraw:
                    self._write("\n")  # the Enter the user typed was not echoed
        if self.session is not None:
            self.session.line_entered(text)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.show(f"That line is too long (over {self.MAX_LENGTH} bytes); it was ignored.")

    def readConnectionLost(self) -> None:
        if self.session is not None:
            self.session.input_closed()

    def writeConnectionLost(self) -> None:
        """Nobody reads our output any more; nothing to do until the session ends."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.readConnectionLost()
        if not self._closed.called:
            self._closed.callback(None)

    def close(self) -> Deferred[None]:
        """Close standard I/O once everything written has been flushed: StandardIO
        writes asynchronously, so stopping the reactor before this would lose the last
        lines (a farewell, an error)."""
        if self.transport is not None and not self._closed.called:
            self.transport.loseConnection()
        return self._closed

    # --- Display ----------------------------------------------------------------------

    def show(self, text: str, style: str = "") -> None:
        if self.redraw and self._prompt:
            self._write("\r\x1b[K")  # clear the prompt we drew; it comes back below
        changed, stamp = None, ""
        if style in CHAT_STYLES:
            now = self.clock()
            changed, stamp = self.stamps.day_changed(now), self.stamps.prefix(now)
        if changed is not None:
            self._write(self._broken(stamp + changed))
        # Never obey a control character from others: made visible first.
        self._write(self._broken(stamp + visible(text)))
        if self.redraw and self._prompt and not self._secret:
            self._write(self._prompt)

    def _broken(self, shown: str) -> str:
        """``shown`` as the lines to write: broken between words to fit the terminal,
        each piece after the first indented, or whole when nobody knows the width."""
        if self.columns is None:
            return shown + "\n"
        first, *rest = wrap(shown, max(20, self.columns - len(CONTINUED) - 1))
        return "".join([first + "\n", *(CONTINUED + piece + "\n" for piece in rest)])

    def ask(self, prompt: str, secret: bool = False) -> None:
        self._secret = secret
        if secret:
            self.terminal.echo(False)
        # Plain output gets only the login prompts; the command prompt is noise there.
        self._prompt = prompt if self.redraw or prompt.strip() != ">" else ""
        if self._prompt:
            # Plain output is lines: a prompt ends its own, so that nothing written
            # after it (an error, a message) runs into it.
            self._write(self._prompt if self.redraw else self._prompt + "\n")

    def show_status(self, text: str) -> None:
        """No status line on plain output: it would be a line per change."""

    def finish(self, status: int) -> None:
        self._prompt = ""
        self.terminal.restore()
        if not self.finished.called:
            self.finished.callback(status)

    def _write(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(text.encode("utf-8"))
