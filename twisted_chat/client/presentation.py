"""How the conversation reads: every line about what people said, and about who came
and went, in one place, so that they read alike wherever they are made.

Each function returns the text of one line; the display adds the time, colour and
wrapping. What others wrote is passed on as it came: the display shows any control
character in it visibly, never obeys it.
"""

from __future__ import annotations

import time

WELCOME = "Welcome to the greatest messaging application ever!"

NOTICE = "-!- "
"""What starts a line about who came and went (irssi's mark): set apart from what
people said, in plain output too."""
ARROW = "\u2192"

CHAT_STYLES = frozenset({"message", "broadcast", "private", "own", "presence"})
"""The display styles of chat lines (what people said, who came and went): the lines
plain output puts the time before. Replies to commands and errors stay bare there,
for the scripts that read them."""


def message(sender: str, text: str) -> str:
    """A message sent to you."""
    return f"{sender}: {text}"


def stored_message(sender: str, text: str, sent: float) -> str:
    """A message that waited for you while you were away."""
    return f"{sender}: {text}  (sent {_when(sent)} while you were away)"


def broadcast(sender: str, text: str) -> str:
    """A message to everyone, told apart at a glance from one to you, as a room's
    lines are (``[#jedi] hans: hi``); the handout's ``hans: text`` stays within it."""
    return f"[all] {sender}: {text}"


def private(sender: str, text: str) -> str:
    return f"{sender}(private): {text}"


def own_message(to: str, text: str) -> str:
    """What you said to one user, once the server accepted it."""
    return f"you {ARROW} {to}: {text}"


def own_broadcast(text: str) -> str:
    return f"you {ARROW} all: {text}"


def own_private(to: str, text: str) -> str:
    return f"you {ARROW} {to} (private): {text}"


def presence(user: str, online: bool) -> str:
    return f"{NOTICE}{user} logged {'in' if online else 'out'}"


def room_message(room: str, sender: str, text: str) -> str:
    return f"[{room}] {sender}: {text}"


def replayed_room_message(room: str, sender: str, text: str, sent: float) -> str:
    """A room's message said while you were away, sent at login."""
    return f"[{room}] {sender}: {text}  (sent {_when(sent)} while you were away)"


def own_room_message(room: str, text: str) -> str:
    return f"you {ARROW} {room}: {text}"


def room_member(room: str, user: str, joined: bool) -> str:
    return f"{NOTICE}{user} {'joined' if joined else 'left'} {room}"


def more_in_room(room: str, more: int) -> str:
    return f"\u2026 {more} more: history {room}"


def history_line(target: str, sender: str, text: str, sent: float) -> str:
    """One line of a ``history`` reply: with its date, for it may be from any day."""
    where = f"[{target}] " if target.startswith("#") else ""
    return f"{_when(sent)} {where}{sender}: {text}"


def _when(sent: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(sent))


class TimeStamps:
    """The local time before each line shown (``[14:05] ``), and a line of its own
    when the day changes since the last one (irssi's "Day changed")."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self._day: tuple[int, int] | None = None

    def prefix(self, when: float) -> str:
        """The time to put before a line shown at ``when`` ("" when they are off)."""
        return time.strftime("[%H:%M] ", time.localtime(when)) if self.on else ""

    def day_changed(self, when: float) -> str | None:
        """The line to show before one shown at ``when`` if the day changed since the
        last line; None otherwise (and always when times are off)."""
        if not self.on:
            return None
        local = time.localtime(when)
        day = (local.tm_year, local.tm_yday)
        changed = None
        if self._day is not None and day != self._day:
            changed = NOTICE + time.strftime("Day changed to %A %d %B %Y", local)
        self._day = day
        return changed
