"""The line editor's logic, apart from any terminal: a Unicode buffer with a cursor,
history, the readline keys people expect, completion, and display widths.

Pure (no I/O, no Twisted), so every key's effect is unit-tested directly.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from twisted_chat.client.commands import COMMANDS

MAX_HISTORY = 500


def char_width(char: str) -> int:
    """Columns a character takes on a terminal: 2 for wide East Asian characters and
    most emoji, 0 for combining marks and controls, 1 otherwise."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Cc", "Cf", "Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(c) for c in text)


class LineEditor:
    """What the user is typing: characters, a cursor between them, and history."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.cursor = 0
        self.history: list[str] = []
        self._browsing: int | None = None
        """Index into history while ↑/↓ browse it; None when editing a new line."""
        self._draft: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.chars)

    @property
    def before(self) -> str:
        return "".join(self.chars[: self.cursor])

    @property
    def after(self) -> str:
        return "".join(self.chars[self.cursor :])

    def set(self, text: str) -> None:
        self.chars = list(text)
        self.cursor = len(self.chars)

    # --- editing ------------------------------------------------------------------------

    def insert(self, text: str) -> None:
        for char in text:
            # Printable characters, and format characters such as the zero-width joiner
            # inside emoji sequences; never control characters.
            if char.isprintable() or unicodedata.category(char) == "Cf":
                self.chars.insert(self.cursor, char)
                self.cursor += 1

    def backspace(self) -> None:
        if self.cursor > 0:
            self.cursor -= 1
            del self.chars[self.cursor]

    def delete(self) -> None:
        if self.cursor < len(self.chars):
            del self.chars[self.cursor]

    def left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def right(self) -> None:
        self.cursor = min(len(self.chars), self.cursor + 1)

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.chars)

    def kill_before(self) -> None:
        """Ctrl-U: delete from the start of the line to the cursor."""
        del self.chars[: self.cursor]
        self.cursor = 0

    def kill_after(self) -> None:
        """Ctrl-K: delete from the cursor to the end of the line."""
        del self.chars[self.cursor :]

    def kill_word(self) -> None:
        """Ctrl-W: delete the word before the cursor (and the spaces after it)."""
        start = self.cursor
        while start > 0 and self.chars[start - 1] == " ":
            start -= 1
        while start > 0 and self.chars[start - 1] != " ":
            start -= 1
        del self.chars[start : self.cursor]
        self.cursor = start

    # --- history ------------------------------------------------------------------------

    def submit(self, remember: bool = True) -> str:
        """Enter: return the line and start a new one; remember it in history."""
        line = self.text
        if remember and line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-MAX_HISTORY]
        self.chars, self.cursor, self._browsing, self._draft = [], 0, None, []
        return line

    def history_back(self) -> None:
        """↑: the previous line of history (the line being typed is kept as a draft)."""
        if not self.history or self._browsing == 0:
            return
        if self._browsing is None:
            self._draft = list(self.chars)
            self._browsing = len(self.history)
        self._browsing -= 1
        self.set(self.history[self._browsing])

    def history_forward(self) -> None:
        """↓: the next line of history, and finally the draft again."""
        if self._browsing is None:
            return
        self._browsing += 1
        if self._browsing >= len(self.history):
            self._browsing = None
            self.chars = list(self._draft)
            self.cursor = len(self.chars)
        else:
            self.set(self.history[self._browsing])

    # --- completion ---------------------------------------------------------------------

    def complete(self, users: Iterable[str] | Callable[[str], Iterable[str]]) -> list[str]:
        """Tab: complete the word before the cursor. Inserts what all candidates share;
        returns the candidates when that leaves a choice (to be shown to the user)."""
        word, candidates = completions(self.before, users)
        if not candidates:
            return []
        if len(candidates) == 1:
            self.insert(candidates[0][len(word) :] + " ")
            return []
        shared = _common_prefix(candidates)
        if len(shared) > len(word):
            self.insert(shared[len(word) :])
            return []
        return candidates


def completions(
    before: str, users: Iterable[str] | Callable[[str], Iterable[str]]
) -> tuple[str, list[str]]:
    """The word being completed and its candidates: command names for the first word,
    usernames for the second word of a command that takes a user. ``users`` is either
    the names, or what gives the names that fit a command (``names_for(command)``)."""
    words = before.split(" ")
    word = words[-1]
    if len(words) == 1:
        pool: Iterable[str] = COMMANDS
    elif len(words) == 2 and words[0] in COMMANDS and COMMANDS[words[0]].takes_user:
        pool = users(words[0]) if callable(users) else users
    else:
        return word, []
    return word, sorted({c for c in pool if c.startswith(word)})


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def visible_window(prompt: str, editor: LineEditor, columns: int) -> tuple[str, int]:
    """What to draw after the prompt and how many columns the cursor sits back from
    its end, scrolling horizontally so the cursor stays on a line ``columns`` wide."""
    room = max(1, columns - text_width(prompt) - 1)
    chars = editor.chars
    start = 0
    if text_width(editor.text) > room:
        # Keep the cursor in view with some context before it.
        start = editor.cursor
        used = 0
        while start > 0 and used + char_width(chars[start - 1]) <= room * 2 // 3:
            start -= 1
            used += char_width(chars[start])
    end = start
    used = 0
    while end < len(chars) and used + char_width(chars[end]) <= room:
        used += char_width(chars[end])
        end += 1
    end = max(end, editor.cursor)
    shown = "".join(chars[start:end])
    return shown, text_width("".join(chars[editor.cursor : end]))
