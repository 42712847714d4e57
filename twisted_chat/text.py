"""What chat text may hold, and how to show text from others safely.

A terminal obeys control characters: a newline in one user's message would start a line
that seems to come from someone else, ``ESC`` starts sequences that move the cursor,
recolour the screen, set the window title or write the clipboard (OSC 0/52), and the
bidirectional overrides reorder what is shown. So text that one user sends to another
must hold none of them. The server refuses such text (:func:`forbidden_character`), and
the client never writes one it received to the terminal (:func:`visible`), because a
modified client, a peer or an old stored message can bypass the server.

:func:`check_text` is the whole rule for chat text, wherever it comes from: the server
applies it to ``message`` and ``broadcast``, a client to ``private`` text from a peer.

No I/O; it imports only the leaves ``wire`` and ``errors``.
"""

from __future__ import annotations

import re

from twisted_chat import wire
from twisted_chat.errors import ControlCharacter, EmptyText, TextTooLong

BIDI_CONTROLS = frozenset(
    "\u061c"  # ARABIC LETTER MARK
    "\u200e\u200f"  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
    "\u202a\u202b\u202c\u202d\u202e"  # LRE RLE PDF LRO RLO
    "\u2066\u2067\u2068\u2069"  # LRI RLI FSI PDI
)
"""The bidirectional formatting characters ("Trojan Source", CVE-2021-42574)."""

LINE_SEPARATORS = frozenset("\u2028\u2029")
"""LINE and PARAGRAPH SEPARATOR: some terminals and log viewers break lines at them."""

_FORBIDDEN = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS | LINE_SEPARATORS)) + "]"
)
"""C0 except TAB, DEL, C1, bidi controls, line separators.

TAB is allowed: it cannot start a line, erase one or run a sequence, and people paste
tab-separated text; the client shows it as spaces (``docs/protocol.md``)."""


def forbidden_character(text: str) -> str | None:
    """The first character of ``text`` that chat text may not hold, or None."""
    found = _FORBIDDEN.search(text)
    return found.group() if found else None


def check_text(text: str) -> None:
    """Raise :class:`EmptyText`, :class:`TextTooLong` or :class:`ControlCharacter`
    unless ``text`` may be sent to another user."""
    if not text.strip():
        raise EmptyText()
    if len(text) > wire.MAX_TEXT_CHARS:
        raise TextTooLong(len(text), wire.MAX_TEXT_CHARS)
    bad = forbidden_character(text)
    if bad is not None:
        # One user's text must never forge a line or drive another user's terminal.
        raise ControlCharacter(describe(bad))


def describe(char: str) -> str:
    """A character named for an error message: ``U+001B``."""
    return f"U+{ord(char):04X}"


def _caret(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # ^@ .. ^_, as cat -v and readline show them
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def visible(text: str) -> str:
    """``text`` with every control, bidi or separator character replaced by a visible
    stand-in (``^[`` for ESC, ``^J`` for a newline, ``<U+202E>`` for RLO) and each TAB
    by spaces, so that writing it to a terminal can neither run a sequence nor start a
    forged line."""
    if "\t" in text:
        # As spaces up to the next 8-column stop, as a terminal would, but written as
        # spaces so that the width of what is on screen is known.
        text = text.expandtabs(8)
    if _FORBIDDEN.search(text) is None:
        return text  # the common case: no copy
    return _FORBIDDEN.sub(_caret, text)
