"""What chat text may hold, and how to show text from others safely.

A terminal obeys control characters: a newline in one user's message would start a line
that seems to come from someone else, ``ESC`` starts sequences that move the cursor,
recolour the screen, set the window title or write the clipboard (OSC 0/52), and the
bidirectional overrides reorder what is shown ("Trojan Source", CVE-2021-42574), and
other format characters take no column in one terminal and one in the next, moving
what follows to where it reads as a line of its own. So text that one user sends to
another must hold none of them. The server refuses such text (:func:`forbidden_character`), and
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

LINE_SEPARATORS = frozenset("\u2028\u2029")
"""LINE and PARAGRAPH SEPARATOR: some terminals and log viewers break lines at them."""

FORMAT_CHARACTERS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
"""Unicode's format characters (category Cf, as of Unicode 15.1) but the two joiners,
as a regular-expression class. Terminals disagree on their width (U+0600 takes no
column in our client and one in common terminals), so text holding one could push
what follows into a place that reads as a new line from someone else. The bidi
controls are among them."""

JOINERS = "\u200c\u200d"
"""ZERO WIDTH NON-JOINER and JOINER: Persian and Indic words and emoji sequences need
them, inside a word; at a word's edge they join nothing and only hide."""

_SUSPECT = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f"
    + "".join(sorted(LINE_SEPARATORS))
    + FORMAT_CHARACTERS
    + JOINERS
    + "]"
)
"""C0 except TAB, DEL, C1, line separators, format characters (bidi controls among
them), and the joiners, which are allowed inside a word (:func:`_joins`). One
character class: text without any of them (nearly all) costs one fast scan.

TAB is allowed: it cannot start a line, erase one or run a sequence, and people paste
tab-separated text; the client shows it as spaces (``docs/protocol.md``)."""


def _joins(text: str, at: int) -> bool:
    """Whether the joiner at ``at`` stands inside a word (nothing blank on either
    side; another joiner counts as part of the word)."""
    return 0 < at < len(text) - 1 and not text[at - 1].isspace() and not text[at + 1].isspace()


_ASCII_SUSPECT = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
"""What of :data:`_SUSPECT` ASCII holds: most chat text is ASCII, and this class is
four times faster to scan than the whole one (a cost every message pays)."""


def forbidden_character(text: str) -> str | None:
    """The first character of ``text`` that chat text may not hold, or None."""
    if text.isascii():
        found = _ASCII_SUSPECT.search(text)
        return found.group() if found else None
    for found in _SUSPECT.finditer(text):
        char = found.group()
        if char not in JOINERS or not _joins(text, found.start()):
            return char
    return None


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
    if char in JOINERS and _joins(match.string, match.start()):
        return char
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # ^@ .. ^_, as cat -v and readline show them
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def visible(text: str) -> str:
    """``text`` with every control, format (bidi among them) or separator character
    replaced by a visible stand-in (``^[`` for ESC, ``^J`` for a newline, ``<U+202E>``
    for RLO) and each TAB by spaces, so that writing it to a terminal can neither run a
    sequence nor start a forged line. A joiner inside a word is kept."""
    if "\t" in text:
        # As spaces up to the next 8-column stop, as a terminal would, but written as
        # spaces so that the width of what is on screen is known.
        text = text.expandtabs(8)
    if forbidden_character(text) is None:
        return text  # the common case: no copy
    return _SUSPECT.sub(_caret, text)
