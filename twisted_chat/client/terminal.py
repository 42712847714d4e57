"""The full terminal client: the session's :class:`Display` as an insults terminal
protocol over StandardIO, with a line editor that incoming lines never clobber.

Twisted's ``insults.ServerProtocol`` decodes keys (arrows, Home/End, Delete) and writes
terminal control sequences. The editor is ours rather than ``recvline.HistoricRecvLine``:
that one is bytes-only (it drops every non-ASCII keystroke), counts one column per
byte, resets the whole screen at start and inserts spaces for Tab. Ours keeps a
Unicode buffer, measures display widths, draws only the input line, and completes.

Incoming lines are printed *above* the input line: erase it, print, redraw the prompt
and what was typed, and put the cursor back where it was.
"""

from __future__ import annotations

import codecs
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.conch.insults import insults
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_chat.client import history
from twisted_chat.client.editor import LineEditor, visible_window, wrap
from twisted_chat.client.presentation import TimeStamps
from twisted_chat.client.session import ClientSession
from twisted_chat.text import visible

RESET = "\x1b[0m"
STYLES = {
    "error": "\x1b[31m",  # red
    "private": "\x1b[35m",  # magenta
    "presence": "\x1b[32m",  # green
    "time": "\x1b[2m",  # dim
    "sender": "\x1b[1m",  # bold
    "own": "\x1b[36m",  # cyan: what we said
    "broadcast": "\x1b[33m",  # yellow: to everyone, not to you
    "status": "\x1b[7m",  # reverse video, as irssi's and WeeChat's bars
}

RECENT_LINES = 200
"""Lines kept to draw the screen again after a resize."""

STAMP_WIDTH = len("[12:00] ")
"""Columns the time before each line takes."""

PEOPLE = frozenset({"message", "private", "broadcast"})
"""Styles of what people said: the sender is set in bold (and the kind's colour), the
words in the terminal's own colour."""

LEAVING_HINT = "(type logout or press Ctrl-D to leave)"
"""What Ctrl-C on an empty command line says."""

CHAT_COMMANDS = frozenset({"message", "broadcast", "private"})
"""Commands whose line is shown as a chat line instead of being echoed."""


ALT = b"[ALT]"
"""insults' modifier for a key pressed with Alt (Esc then the key), set on
``ServerProtocol`` with setattr, out of the type checker's sight."""

WORD_MOVES = {
    b"\x1b[1;5D": "word_left",  # Ctrl-←
    b"\x1b[1;3D": "word_left",  # Alt-←
    b"\x1b[1;5C": "word_right",  # Ctrl-→
    b"\x1b[1;3C": "word_right",  # Alt-→
}


def _key(name: str) -> bytes:
    """insults' keyID for a function key (``ServerProtocol.UP_ARROW`` and friends are
    set with setattr, out of the type checker's sight; their values are these)."""
    key = f"[{name}]".encode("ascii")
    assert key in insults.FUNCTION_KEYS
    return key


class TerminalConsole(insults.TerminalProtocol):
    """Reads keys into a :class:`LineEditor`; shows lines above the input line."""

    terminal: Any
    """The insults terminal transport (``ServerProtocol`` in use, a TerminalBuffer in
    tests)."""

    def __init__(
        self,
        colour: bool,
        users: Callable[[], Iterable[str]] = lambda: (),
        clock: Callable[[], float] = time.time,
        columns: int = 80,
        names_for: Callable[[str], Iterable[str]] | None = None,
        history_file: Callable[[str], Path] | None = None,
        keep_private: bool = False,
        timestamps: bool = True,
    ) -> None:
        self.colour = colour
        self.stamps = TimeStamps(timestamps)
        """The time before each line, and a line when the day changes."""
        self.users = users
        """Names to complete after commands that take a user."""
        self.names_for = names_for
        """If given, the names that fit each command (``ClientSession.names_for``)."""
        self.history_file = history_file
        """Where a user's history is kept between runs (by username), if anywhere."""
        self.keep_private = keep_private
        """``private`` lines go into history too (the user asked for it)."""
        self._history_path: Path | None = None
        self.rows = 24
        self.status_text = ""
        """The status line above the input line (empty: none drawn)."""
        self._status_drawn = False
        self._recent: deque[tuple[float | None, str, str]] = deque(maxlen=RECENT_LINES)
        """The last lines shown (when, text, style; None: no time shown), to draw the
        screen again, broken to the new width, after a resize."""
        self.clock = clock
        self.columns = columns
        self.session: ClientSession | None = None
        self.editor = LineEditor()
        self.prompt = ""
        self.secret = False
        self._waiting = False
        """A login step was sent and its answer has not come: typing is hidden."""
        self.finished: Deferred[int] = Deferred()
        self._closed: Deferred[None] = Deferred()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._keys: dict[object, Callable[[], None]] = {
            b"\r": self._enter,
            b"\n": self._enter,
            b"\x7f": self.editor.backspace,
            b"\x08": self.editor.backspace,
            b"\t": self._complete,
            b"\x01": self.editor.home,
            b"\x05": self.editor.end,
            b"\x02": self.editor.left,
            b"\x06": self.editor.right,
            b"\x15": self.editor.kill_before,
            b"\x0b": self.editor.kill_after,
            b"\x17": self.editor.kill_word,
            b"\x03": self._interrupt,
            b"\x04": self._ctrl_d,
            b"\x0c": self._clear_screen,
            b"\x19": self.editor.yank,
            b"\x12": self.editor.search_start,
            _key("LEFT_ARROW"): self.editor.left,
            _key("RIGHT_ARROW"): self.editor.right,
            _key("HOME"): self.editor.home,
            _key("END"): self.editor.end,
            _key("DELETE"): self.editor.delete,
            _key("UP_ARROW"): self.editor.history_back,
            _key("DOWN_ARROW"): self.editor.history_forward,
        }
        self._alt_keys: dict[object, Callable[[], None]] = {
            b"b": self.editor.word_left,
            b"f": self.editor.word_right,
            b"d": self.editor.kill_word_after,
            b"\x7f": self.editor.kill_word,  # Alt-Backspace, as in readline
        }

    # --- keys ---------------------------------------------------------------------------

    def keystrokeReceived(self, keyID: object, modifier: object) -> None:
        if self.session is not None:
            self.session.key_pressed()  # while away, it says when the next try is
        if self.editor.search is not None and self._searching(keyID, modifier):
            self._draw_input()
            return
        handler = (self._alt_keys.get(keyID) if modifier == ALT else None) or self._keys.get(keyID)
        if handler is not None:
            handler()
        elif isinstance(keyID, bytes) and len(keyID) == 1 and modifier is None and keyID >= b" ":
            # A character, or one byte of a UTF-8 sequence: decode incrementally.
            self.editor.insert(self._decoder.decode(keyID))
        self._draw_input()

    def unhandledControlSequence(self, seq: bytes) -> None:
        """Keys insults does not name: Ctrl-← and Ctrl-→ (and Alt-←/→) move by word."""
        move = WORD_MOVES.get(seq)
        if move is not None:
            getattr(self.editor, move)()
            self._draw_input()

    def _searching(self, keyID: object, modifier: object) -> bool:
        """A key during Ctrl-R: True if the search took it (else it ends the search,
        keeping the line found, and the key does what it always does)."""
        editor = self.editor
        if keyID in (b"\x07", b"\x1b") or (keyID == b"g" and modifier is not None):
            editor.search_cancel()  # Ctrl-G, Esc: back to the line before the search
            return True
        if keyID == b"\x12":
            editor.search_start()  # an older match
            return True
        if keyID in (b"\x7f", b"\x08"):
            editor.search_erase()
            return True
        if isinstance(keyID, bytes) and len(keyID) == 1 and modifier is None and keyID >= b" ":
            editor.search_type(self._decoder.decode(keyID))
            return True
        editor.search_accept()
        return False

    def _clear_screen(self) -> None:
        """Ctrl-L: a clean screen, with the input line at the top."""
        if self.terminal is not None:
            self.terminal.eraseDisplay()
            self.terminal.cursorHome()

    def _enter(self) -> None:
        # Only commands are remembered: never a username or a password, and never
        # private text unless the user asked for it.
        if self._waiting:
            # Typed while the server was answering a login step: perhaps a password
            # typed ahead. Never shown; the session uses it only as a password.
            line = self.editor.submit(remember=False)
            if self.session is not None:
                self.session.secret_entered(line)
            return
        commanding = self._commanding()
        remember = commanding and history.remembered(self.editor.text, self.keep_private)
        line = self.editor.submit(remember=remember)
        if remember:
            self._append_history(line)
        # What was typed stays in the scrollback, but for chat: the session shows what
        # was said as a chat line ("→ luke: hi"), so a conversation reads as one.
        if not (commanding and line.split(" ", 1)[0] in CHAT_COMMANDS):
            self._write_line(self.prompt + ("" if self.secret else line), stamp=False)
        if not commanding:
            # A login step is on its way to the server: until its answer asks again,
            # what is typed is hidden (a password typed ahead must never be drawn).
            self._waiting = True
            self.secret = True
            self.prompt = ""
        if self.session is not None:
            self.session.line_entered(line)

    def _complete(self) -> None:
        if self.secret:
            return
        choices = self.editor.complete(self.names_for or self.users())
        if choices:
            self._write_line(visible("  ".join(choices)), stamp=False)

    def _interrupt(self) -> None:
        """Ctrl-C clears a line being typed, as shells do; on an empty line it says how
        to leave, and never logs out (a reflex Ctrl-C must not end a conversation). At
        the login prompts, where there is nothing to lose, it quits (exit 130)."""
        if self.editor.search is not None:
            self.editor.search_cancel()
        if self.editor.chars:
            self.editor.submit(remember=False)
            return
        if self._commanding():
            self._write_line(LEAVING_HINT)
            return
        self._write_line("^C", stamp=False)
        if self.session is not None:
            self.session.interrupted()

    def _ctrl_d(self) -> None:
        if self.editor.chars:
            self.editor.delete()
        elif self.session is not None:
            self._write_line(self.prompt + "^D", stamp=False)
            self.session.input_closed()

    # --- Display ----------------------------------------------------------------------

    def show(self, text: str, style: str = "") -> None:
        when = self.clock()
        self._day_check(when)
        self._recent.append((when, text, style))
        for line in self._rendered(when, text, style):
            self._put(line)
        self._draw_input()

    def _rendered(self, when: float | None, text: str, style: str) -> list[str]:
        """One logical line as written: the time, then the text made visible (our own
        colour codes are the only escapes written) and broken between words to the
        window's width (the terminal would break it mid-word), continued under the
        text, after the time."""
        if when is None:
            return [text]
        prefix = self.stamps.prefix(when)
        if self.colour and prefix:
            prefix = STYLES["time"] + prefix + RESET
        first, *rest = wrap(visible(text), max(20, self.columns - STAMP_WIDTH - 1))
        continued = "" if style in PEOPLE else style
        return [prefix + self._styled(first, style)] + [
            " " * STAMP_WIDTH + self._styled(piece, continued) for piece in rest
        ]

    def ask(self, prompt: str, secret: bool = False) -> None:
        if self._waiting and not secret:
            self.editor.submit(remember=False)  # typed ahead, hidden: never shown now
        self._waiting = False
        self.prompt = prompt
        self.secret = secret
        if self._commanding() and self._history_path is None:
            self._load_history()
        self._draw_input()

    def _commanding(self) -> bool:
        """The command prompt is up (not a login prompt)."""
        return not self.secret and self.prompt.strip() == ">"

    def _load_history(self) -> None:
        user = getattr(self.session, "user", "")
        if self.history_file is None or not user:
            return
        self._history_path = self.history_file(user)
        self.editor.history[:0] = history.load(self._history_path)

    def _append_history(self, line: str) -> None:
        """Kept at once: a terminal closed under the client loses nothing typed."""
        if self._history_path is None:
            return
        try:
            history.append(self._history_path, line)
        except OSError as e:
            self._write_line(f"(history not saved: {e.strerror or e})", stamp=False)
            self._history_path = None  # said once; the rest of the session is not kept

    def _trim_history(self) -> None:
        """At the end: every line is in the file already; keep it bounded."""
        if self._history_path is None:
            return
        try:
            history.trim(self._history_path)
        except OSError as e:
            self._write_line(f"(history not trimmed: {e.strerror or e})", stamp=False)

    def finish(self, status: int) -> None:
        self._trim_history()
        self.status_text = ""  # the bar goes; the last lines stay on the screen
        if self.editor.chars and not self.secret:
            # What was being typed stays on the screen, to copy: never lost unseen.
            self._write_line(f"{self.prompt}{self.editor.text}  (not sent)", stamp=False)
        self.prompt = ""
        self.editor.submit(remember=False)
        self._draw_input()
        if not self.finished.called:
            self.finished.callback(status)

    def show_status(self, text: str) -> None:
        """What the status line says (who you are, private chats, requests)."""
        if text != self.status_text:
            self.status_text = text
            self._draw_input()

    def terminal_size(self, columns: int, rows: int = 0) -> None:
        """The window changed size: draw the screen again, from a clean one. A terminal
        that reflows its lines (tmux, VTE) would otherwise leave pieces of the old
        input line behind, looking like a command that was sent."""
        self.columns = max(10, columns)
        if rows:
            self.rows = max(3, rows)
        if self.terminal is None:
            return
        self.terminal.eraseDisplay()
        self.terminal.cursorHome()
        self._status_drawn = False
        room = self.rows - (2 if self.status_text else 1)
        again: list[str] = []
        for when, text, style in self._recent:
            if when is None:  # an echo: broken where it must be, to fit
                again.extend(wrap(text, self.columns - 1))
            else:
                again.extend(self._rendered(when, text, style))
        for line in again[-room:] if room > 0 else []:
            self.terminal.write((line + "\r\n").encode("utf-8"))
        self._draw_input()

    def close(self) -> Deferred[None]:
        """Close standard I/O once what was written has been flushed."""
        # Not terminal.loseConnection(): insults' ServerProtocol sends a full terminal
        # reset first, which would wipe the user's screen on the way out.
        transport = getattr(self.terminal, "transport", None)
        if transport is not None and not self._closed.called:
            transport.loseConnection()
        return self._closed

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._closed.called:
            self._closed.callback(None)
        if self.session is not None:
            self.session.input_closed()

    # --- drawing ----------------------------------------------------------------------

    def _day_check(self, when: float) -> None:
        """A line of its own when the day changed since the last line shown."""
        changed = self.stamps.day_changed(when)
        if changed is not None:
            self._recent.append((when, changed, "presence"))
            for line in self._rendered(when, changed, "presence"):
                self._put(line)

    def _write_line(self, text: str, stamp: bool = True) -> None:
        """Print one line above the input line (our own echoes: no wrapping)."""
        when = self.clock() if stamp else None
        if when is not None:
            self._day_check(when)
        self._recent.append((when, text, ""))
        for line in self._rendered(when, text, ""):
            self._put(line)

    def _put(self, line: str) -> None:
        if self.terminal is None:
            return
        self._erase_area()
        self.terminal.write((line + "\n").encode("utf-8"))

    def _erase_area(self) -> None:
        """Erase the status and input lines; the cursor ends where the status was."""
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        if self._status_drawn:
            self.terminal.cursorUp(1)
            self.terminal.eraseLine()
            self._status_drawn = False

    def _draw_input(self) -> None:
        if self.terminal is None:
            return
        self._erase_area()
        if self.status_text:
            status = visible(self.status_text)
            status = status[: max(0, self.columns - 1)]
            if self.colour:
                status = STYLES["status"] + status + RESET
            self.terminal.write((status + "\r\n").encode("utf-8"))
            self._status_drawn = True
        if self.secret:
            self.terminal.write(self.prompt.encode("utf-8"))
            return
        prompt = self.prompt
        if self.editor.search is not None:
            prompt = f"(reverse-i-search)'{visible(self.editor.search)}': "
        shown, back = visible_window(prompt, self.editor, self.columns)
        self.terminal.write((prompt + shown).encode("utf-8"))
        if back:
            self.terminal.cursorBackward(back)

    def _styled(self, line: str, style: str) -> str:
        if not self.colour or not style:
            return line
        if style in PEOPLE and ": " in line:
            sender, _, text = line.partition(": ")
            colour = STYLES[style] if style != "message" else ""
            return f"{colour}{STYLES['sender']}{sender}{RESET}: {text}"
        return f"{STYLES.get(style, '')}{line}{RESET}"
