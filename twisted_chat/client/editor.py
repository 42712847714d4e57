"""The line editor's logic, apart from any terminal: a Unicode buffer with a cursor,
history, the readline keys people expect, completion, and display widths.

Pure (no I/O, no Twisted), so every key's effect is unit-tested directly.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from twisted_chat.client.commands import COMMANDS

MAX_HISTORY = 1000


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
        self.killed = ""
        """What the last Ctrl-U/K/W or Alt-d removed: Ctrl-Y puts it back."""
        self.search: str | None = None
        """Ctrl-R: the text searched for in history (None: not searching)."""
        self._found: int | None = None
        """Ctrl-R: the index of the history line shown, while searching."""
        self._before_search: tuple[list[str], int] = ([], 0)

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

    def _kill(self, start: int, end: int) -> None:
        if end > start:
            self.killed = "".join(self.chars[start:end])
            del self.chars[start:end]
            self.cursor = start

    def kill_before(self) -> None:
        """Ctrl-U: delete from the start of the line to the cursor."""
        self._kill(0, self.cursor)

    def kill_after(self) -> None:
        """Ctrl-K: delete from the cursor to the end of the line."""
        self._kill(self.cursor, len(self.chars))

    def kill_word(self) -> None:
        """Ctrl-W: delete the word before the cursor (and the spaces after it)."""
        self._kill(self._word_start(), self.cursor)

    def kill_word_after(self) -> None:
        """Alt-d: delete from the cursor to the end of the next word."""
        self._kill(self.cursor, self._word_end())

    def yank(self) -> None:
        """Ctrl-Y: insert what the last kill removed."""
        self.insert(self.killed)

    def word_left(self) -> None:
        """Alt-b, Ctrl-←: to the start of this word, or of the one before."""
        self.cursor = self._word_start()

    def word_right(self) -> None:
        """Alt-f, Ctrl-→: to the end of this word, or of the next."""
        self.cursor = self._word_end()

    def _word_start(self) -> int:
        start = self.cursor
        while start > 0 and self.chars[start - 1] == " ":
            start -= 1
        while start > 0 and self.chars[start - 1] != " ":
            start -= 1
        return start

    def _word_end(self) -> int:
        end = self.cursor
        while end < len(self.chars) and self.chars[end] == " ":
            end += 1
        while end < len(self.chars) and self.chars[end] != " ":
            end += 1
        return end

    # --- reverse search (Ctrl-R) ---------------------------------------------------------

    def search_start(self) -> None:
        """Ctrl-R: search history backwards as the user types; Ctrl-R again finds an
        older match."""
        if self.search is not None:
            self._find(self._found)
            return
        self.search = ""
        self._found = None
        self._before_search = (list(self.chars), self.cursor)

    def search_type(self, text: str) -> None:
        assert self.search is not None
        self.search += text
        self._find(None if self._found is None else self._found + 1)

    def search_erase(self) -> None:
        assert self.search is not None
        self.search = self.search[:-1]
        self._find(None)

    def _find(self, before: int | None) -> None:
        """Show the newest history line above ``before`` holding the search text."""
        assert self.search is not None
        start = len(self.history) if before is None else before
        for index in range(start - 1, -1, -1):
            if self.search in self.history[index]:
                self._found = index
                self.set(self.history[index])
                self.cursor = self.history[index].index(self.search)
                return

    def search_accept(self) -> None:
        """Keep the line found, and edit it."""
        self.search = None
        self._found = None

    def search_cancel(self) -> None:
        """Ctrl-G, Esc: back to the line as it was before the search."""
        self.chars, self.cursor = self._before_search
        self.search = None
        self._found = None

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


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines at most ``width`` columns wide, broken between words (a word
    wider than a line is broken where it must). Display widths count: a CJK character
    takes two columns."""
    width = max(1, width)
    lines: list[str] = []
    line, used = "", 0
    for word in text.split(" "):
        size = text_width(word)
        if line and used + 1 + size <= width:
            line, used = f"{line} {word}", used + 1 + size
            continue
        if line or lines:
            lines.append(line)
        line, used = "", 0
        while size > width:  # a word longer than a line: break it
            cut, cut_used = 0, 0
            while cut < len(word) and cut_used + char_width(word[cut]) <= width:
                cut_used += char_width(word[cut])
                cut += 1
            cut = max(cut, 1)
            lines.append(word[:cut])
            word = word[cut:]
            size = text_width(word)
        line, used = word, size
    lines.append(line)
    return lines
