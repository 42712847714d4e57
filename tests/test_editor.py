"""The line editor: every key's effect, history, completion, display widths."""

from __future__ import annotations

import pytest

from twisted_chat.client.editor import LineEditor, char_width, text_width, visible_window, wrap


def typed(text: str, cursor: int | None = None) -> LineEditor:
    editor = LineEditor()
    editor.insert(text)
    if cursor is not None:
        editor.cursor = cursor
    return editor


def test_insert_in_the_middle_and_move() -> None:
    editor = typed("helo")
    editor.left()
    editor.insert("l")
    assert (editor.text, editor.cursor) == ("hello", 4)
    editor.home()
    editor.insert(">")
    editor.end()
    editor.insert("!")
    assert editor.text == ">hello!"
    editor.right()  # at the end: stays
    assert editor.cursor == 7


def test_backspace_and_delete_at_the_edges() -> None:
    editor = typed("abc", cursor=0)
    editor.backspace()
    assert editor.text == "abc"
    editor.delete()
    assert (editor.text, editor.cursor) == ("bc", 0)
    editor.end()
    editor.delete()
    editor.backspace()
    assert (editor.text, editor.cursor) == ("b", 1)


def test_kill_keys() -> None:
    editor = typed("message yoda hello there", cursor=13)
    editor.kill_after()
    assert editor.text == "message yoda "
    editor.kill_word()
    assert editor.text == "message "
    editor.insert("luke hi")
    editor.cursor = 8
    editor.kill_before()
    assert (editor.text, editor.cursor) == ("luke hi", 0)


def test_unicode_is_kept_and_controls_are_not() -> None:
    editor = typed("héllo 中文 🎉\x07\x1b")
    assert editor.text == "héllo 中文 🎉"
    editor.insert("👩\u200d💻")  # a zero-width-joiner sequence survives whole
    assert editor.text.endswith("👩\u200d💻")


def test_history_keeps_the_draft() -> None:
    editor = LineEditor()
    for line in ("whoelse", "broadcast hi", "broadcast hi", "   "):
        editor.insert(line)
        editor.submit()
    assert editor.history == ["whoelse", "broadcast hi"]
    editor.insert("mess")
    editor.history_back()
    assert editor.text == "broadcast hi"
    editor.history_back()
    editor.history_back()  # at the oldest: stays
    assert editor.text == "whoelse"
    editor.history_forward()
    editor.history_forward()
    assert (editor.text, editor.cursor) == ("mess", 4)
    editor.history_forward()  # past the draft: nothing changes
    assert editor.text == "mess"


def test_secret_lines_are_not_remembered() -> None:
    editor = typed("falcon*solo")
    assert editor.submit(remember=False) == "falcon*solo"
    assert editor.history == []


@pytest.mark.parametrize(
    ("before", "users", "after", "choices"),
    [
        ("whoelses", [], "whoelsesince ", []),
        ("hel", [], "help ", []),
        ("who", [], "whoelse", []),  # whoelse and whoelsesince share it
        ("whoelse", [], "whoelse", ["whoelse", "whoelsesince"]),
        ("message y", ["yoda", "luke"], "message yoda ", []),
        ("block ", ["yoda", "luke"], "block ", ["luke", "yoda"]),
        ("broadcast y", ["yoda"], "broadcast y", []),  # broadcast takes no user
        ("message yoda he", ["hello"], "message yoda he", []),  # no completion in text
        ("xyz", [], "xyz", []),
    ],
)
def test_completion(before: str, users: list[str], after: str, choices: list[str]) -> None:
    editor = typed(before)
    assert editor.complete(users) == choices
    assert editor.text == after


def test_widths() -> None:
    assert [char_width(c) for c in "a中🎉é\u0301\x07"] == [1, 2, 2, 1, 0, 0]
    assert text_width("> 中文") == 6


def test_visible_window_scrolls_to_keep_the_cursor_in_view() -> None:
    editor = typed("x" * 100)
    shown, back = visible_window("> ", editor, 40)
    assert shown.endswith("x") and len(shown) <= 37 and back == 0
    editor.home()
    shown, back = visible_window("> ", editor, 40)
    assert len(shown) == 37 and back == 37
    short = typed("abc", cursor=1)
    assert visible_window("> ", short, 40) == ("abc", 2)
    wide = typed("中" * 30)
    shown, back = visible_window("> ", wide, 40)
    assert text_width(shown) <= 37


def test_completion_asks_which_names_fit_the_command() -> None:
    editor = LineEditor()
    asked: list[str] = []

    def names_for(command: str) -> list[str]:
        asked.append(command)
        return {"unblock": ["vader"], "message": ["luke", "leia"]}.get(command, [])

    editor.set("unblock ")
    assert editor.complete(names_for) == []
    assert editor.text == "unblock vader "
    editor.set("message l")
    assert editor.complete(names_for) == ["leia", "luke"]
    assert asked == ["unblock", "message"]


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        (
            "message <user> <message>  send a message",
            20,
            ["message <user>", "<message>  send a", "message"],
        ),
        ("short", 20, ["short"]),
        ("abcdefghijkl xy", 5, ["abcde", "fghij", "kl xy"]),
        ("中文中文中文 ok", 6, ["中文中", "文中文", "ok"]),
        ("", 10, [""]),
    ],
)
def test_wrap_breaks_between_words_by_display_width(
    text: str, width: int, lines: list[str]
) -> None:
    from twisted_chat.client.editor import text_width

    assert wrap(text, width) == lines
    assert all(text_width(line) <= width for line in lines)
