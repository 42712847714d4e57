"""History kept between runs: where, what goes in (and what never does), bounded,
owner-only, and loaded when the user is logged in."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.test_terminal import Screen
from twisted_chat.client import history


def test_the_file_is_per_server_and_user_in_the_xdg_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert history.history_path("chat.example", 5000, "hans") == (
        tmp_path / "twisted-chat" / "history-chat.example-5000-hans.txt"
    )
    odd = history.history_path("::1", 5000, "../jos\u00e9")
    assert odd.parent == tmp_path / "twisted-chat" and "/" not in odd.name[:-4]
    monkeypatch.setenv("XDG_STATE_HOME", "relative/path")  # invalid: the default instead
    assert history.state_directory() == Path.home() / ".local" / "state" / "twisted-chat"


def test_saved_owner_only_bounded_and_loaded_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "twisted-chat" / "h.txt"
    for n in range(1500):
        history.append(path, f"message luke {n}")
    history.trim(path)
    assert len(path.read_bytes().splitlines()) == history.MAX_LINES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = history.load(path)
    assert len(loaded) == history.MAX_LINES and loaded[-1] == "message luke 1499"
    path.write_bytes(b"whoelse\n\x1b[2Jclear\n\xff\xfe\nblock vader\n")  # a damaged file
    assert history.load(path) == ["whoelse", "\ufffd\ufffd", "block vader"]


@pytest.mark.parametrize(
    ("line", "keep_private", "kept"),
    [
        ("message luke hi", False, True),
        ("private luke the plans", False, False),
        ("private luke the plans", True, True),
        ("   ", False, False),
        (" message luke not this one", False, False),  # bash's ignorespace
        (" block vader", True, False),
    ],
)
def test_what_is_remembered(line: str, keep_private: bool, kept: bool) -> None:
    assert history.remembered(line, keep_private) is kept


class LoggedIn:
    user = "hans"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line_entered(self, line: str) -> None:
        self.lines.append(line)

    def secret_entered(self, line: str) -> None:
        self.lines.append(f"(secret) {line}")

    def key_pressed(self) -> None:
        pass


def console_for(path: Path, keep_private: bool = False) -> Screen:
    screen = Screen()
    screen.console.history_file = lambda user: path
    screen.console.keep_private = keep_private
    screen.console.session = LoggedIn()  # type: ignore[assignment]
    return screen


def test_only_commands_are_kept_never_login_prompts_or_private_text(tmp_path: Path) -> None:
    path = tmp_path / "h.txt"
    screen = console_for(path)
    screen.console.ask("Username: ")
    screen.type("hans", b"\r")
    screen.console.ask("Password: ", secret=True)
    screen.type("falcon*solo", b"\r")
    screen.console.ask("> ")
    screen.type("whoelse", b"\r", "private luke the plans", b"\r", "block vader", b"\r")
    screen.console.finish(0)
    assert path.read_text() == "whoelse\nblock vader\n"
    again = console_for(path)
    again.console.ask("> ")
    again.type(b"[UP_ARROW]")
    assert again.console.editor.text == "block vader"


def test_each_line_is_kept_as_it_is_entered_not_only_at_a_clean_exit(tmp_path: Path) -> None:
    """A client ended by SIGHUP or SIGTERM lost the session's history: it was written
    only when the client ended cleanly."""
    path = tmp_path / "state" / "h.txt"
    screen = console_for(path)
    screen.console.ask("> ")
    screen.type("whoelse", b"\r")
    assert path.read_text() == "whoelse\n"  # on disk before anything else happens
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    screen.type(" message luke off the record", b"\r", "private luke the plans", b"\r")
    screen.type("block vader", b"\r")
    assert path.read_text() == "whoelse\nblock vader\n"
    screen.type(b"[UP_ARROW]")
    assert screen.console.editor.text == "block vader"  # the space-led line is not kept
