"""End to end: the real client in a pseudo-terminal, its screen rendered by a terminal
emulator, next to a real server: typing is never clobbered, and the terminal is
restored exactly after every way out."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import HOME, WAIT
from tests.e2e.pty_client import COLUMNS, PipeClient, PtyClient, SyncServer
from twisted_chat.launch import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(workdir: Path) -> Iterator[SyncServer]:
    running = SyncServer(workdir, "--timeout", "3", "--block-duration", "60")
    yield running
    running.stop()


@contextlib.contextmanager
def hans_and_another(
    workdir: Path, term: str, user: str, password: str
) -> Iterator[tuple[PtyClient, PipeClient]]:
    """A server of its own, hans in a pseudo-terminal of kind ``term``, and ``user`` on
    a pipe, logged in after him (so that he sees it); all ended afterwards."""
    server = SyncServer(workdir)
    hans = PtyClient(server.port, env={"TERM": term})
    other: PipeClient | None = None
    try:
        hans.log_in("hans", "falcon*solo")
        other = PipeClient(server.port, user, password)
        hans.wait_for(f"{user} logged in")
        yield hans, other
    finally:
        hans.close()
        if other is not None:
            other.close()
        server.stop()


@pytest.fixture
def hans(server: SyncServer) -> Iterator[PtyClient]:
    client = PtyClient(server.port)
    yield client
    client.close()


def test_a_message_arrives_above_a_half_typed_line(server: SyncServer, hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    assert "falcon" not in hans.text()  # the password was never drawn
    yoda = PipeClient(server.port, "yoda", "wise@!man")
    try:
        hans.wait_for("yoda logged in")
        hans.type("message yoda héllo 中文 wor")
        hans.type("\x1b[D\x1b[D")  # two steps left
        yoda.send("message hans are you there? 🎉")
        hans.wait_for("yoda: are you there? 🎉")
        lines = [line for line in hans.lines() if line]
        assert lines[-3].endswith("] yoda: are you there? 🎉")
        assert lines[-2] == "[hans]"  # the status bar, between the chat and the input
        assert lines[-1] == "> message yoda héllo 中文 wor"
        # The cursor is where it was, after "w": "> message yoda héllo " is 21 columns,
        # 中文 is 4 (two wide characters) and " w" is 2.
        assert hans.screen.cursor.x == 27
        hans.type("ld\r")
        hans.pump(0.3)
        assert "\u2192 yoda: héllo 中文 wldor" in hans.text()  # said, as a chat line
    finally:
        yoda.close()


def test_history_and_completion_on_a_real_terminal(server: SyncServer, hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.type("whoe\t\t")
    hans.wait_for("whoelse  whoelsesince")
    hans.type("\r")
    hans.wait_for("No other users are online.")
    hans.type("\x1b[A")  # up: the last line again
    hans.pump(0.2)
    assert hans.lines()[hans.screen.cursor.y].startswith("> whoelse")


def test_logout_restores_the_terminal_and_exits_0(hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.type("logout\r")
    assert hans.exit_status() == 0
    assert "You have logged out." in hans.text()
    assert hans.terminal_restored()


def test_ctrl_d_restores_the_terminal_and_exits_0(hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.type("\x04")
    assert hans.exit_status() == 0
    assert "You have logged out." in hans.text()
    assert hans.terminal_restored()


def test_ctrl_c_never_logs_out_and_ctrl_d_does_cleanly(hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.type("half a line\x03")  # clears the line, as shells do
    hans.type("\x03")  # on the empty line: says how to leave, stays
    hans.wait_for("(type logout or press Ctrl-D to leave)")
    hans.type("whoelse\r")
    hans.wait_for("> whoelse")
    assert hans.process.poll() is None and "half a line" not in hans.text()
    hans.type("\x04")
    assert hans.exit_status() == 0
    assert "You have logged out." in hans.text()
    assert hans.terminal_restored()


def test_ctrl_c_at_the_password_prompt_restores_echo(hans: PtyClient) -> None:
    hans.wait_for("Username:")
    hans.type("hans\r")
    hans.wait_for("Password:")
    hans.type("\x03")
    assert hans.exit_status() == 130
    assert hans.terminal_restored()


def test_idle_timeout_restores_the_terminal_and_exits_0(hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.wait_for("You have been logged out due to inactivity.", wait=10)
    assert hans.exit_status() == 0
    assert hans.terminal_restored()


def test_lockout_restores_the_terminal_and_exits_1(hans: PtyClient) -> None:
    hans.wait_for("Username:")
    hans.type("yoda\r")
    for wrong in ("a", "b", "c"):
        hans.wait_for("Password:")
        hans.type(wrong + "\r")
    assert hans.exit_status() == 1
    assert "Your account has been blocked" in hans.text()
    assert hans.terminal_restored()


def test_the_server_going_away_restores_the_terminal_and_exits_1(server: SyncServer) -> None:
    hans = PtyClient(server.port, args=("--no-reconnect",))
    try:
        hans.log_in("hans", "falcon*solo")
        server.stop()
        assert hans.exit_status() == 1
        assert "The connection to the server was lost." in hans.text()
        assert hans.terminal_restored()
    finally:
        hans.close()


def test_while_away_ctrl_d_leaves_at_once(server: SyncServer, hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    server.stop()
    hans.wait_for("Connecting again in the")
    hans.type("\x04")
    assert hans.exit_status() == 0
    assert hans.terminal_restored()


def test_no_colour_when_no_color_is_set(server: SyncServer) -> None:
    plain = PtyClient(server.port, env={"NO_COLOR": "1"})
    coloured = PtyClient(server.port)
    try:
        plain.log_in("hans", "falcon*solo")
        coloured.log_in("luke", "=hope+")
        plain.wait_for("luke logged in")
        coloured.type("whatsthetime\r")
        coloured.wait_for("Error. Invalid command")
        assert b"\x1b[31m" in coloured.raw  # errors in red on a terminal
        assert b"\x1b[3" not in plain.raw and b"\x1b[2m" not in plain.raw
    finally:
        plain.close()
        coloured.close()


@pytest.mark.parametrize("term", ["dumb", ""])
def test_a_dumb_terminal_gets_plain_lines_without_one_escape_byte(
    server: SyncServer, term: str
) -> None:
    dumb = PtyClient(server.port, env={"TERM": term})
    luke = PipeClient(server.port, "luke", "=hope+")
    try:
        dumb.log_in("hans", "falcon*solo")
        luke.send("message hans \x1b[31mred?")  # refused by the server: control character
        luke.send("message hans plain words")
        dumb.wait_for("luke: plain words")
        dumb.type("whoelse\r")
        dumb.wait_for("luke")
        dumb.type("logout\r")
        assert dumb.exit_status() == 0
        assert b"\x1b" not in dumb.raw, dumb.raw
    finally:
        dumb.close()
        luke.close()


def test_piped_output_has_no_escape_byte_even_from_a_terminal(server: SyncServer) -> None:
    """``client.py PORT | tee log``: keys from a terminal, output to a file."""
    piped = PtyClient(server.port, stdout_to_pipe=True)
    try:
        piped.type("hans\r")
        piped.pump(0.5)
        piped.type("falcon*solo\r")
        piped.type("whoelse\r")
        piped.type("logout\r")
        assert piped.exit_status() == 0
        output = piped.piped_output()
        assert b"Welcome" in output and b"You have logged out." in output
        assert b"\x1b" not in output and b"\r" not in output, output
    finally:
        piped.close()


def test_history_survives_a_restart_without_secrets(server: SyncServer, tmp_path: Path) -> None:
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = PtyClient(server.port, env=state)
    try:
        first.log_in("hans", "falcon*solo")
        first.type("whoelse\r")
        first.type("private luke nobody should keep this\r")
        first.type("logout\r")
        assert first.exit_status() == 0
    finally:
        first.close()
    (kept,) = (tmp_path / "state" / "twisted-chat").iterdir()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert kept.read_text() == "whoelse\nlogout\n"  # no username, password or private text
    second = PtyClient(server.port, env=state)
    try:
        second.log_in("hans", "falcon*solo")
        second.type("\x1b[A\x1b[A")  # ↑ ↑: the last run's commands
        second.wait_for("> whoelse")
    finally:
        second.close()


def test_a_client_the_tests_start_keeps_its_history_in_the_tests_home(
    server: SyncServer,
) -> None:
    """A test never writes into the real home: a client started with the tests'
    environment keeps its history under their own HOME and XDG_STATE_HOME."""
    real_state = Path(os.path.expanduser("~")) / ".local" / "state" / "twisted-chat"
    before = sorted(real_state.iterdir()) if real_state.is_dir() else []
    hans = PtyClient(server.port)
    try:
        hans.log_in("hans", "falcon*solo")
        hans.type("whoelse\r")
        hans.type("logout\r")
        assert hans.exit_status() == 0
    finally:
        hans.close()
    (kept,) = (HOME / "state" / "twisted-chat").glob(f"history-*-{server.port}-hans.txt")
    assert kept.read_text() == "whoelse\nlogout\n"
    assert (sorted(real_state.iterdir()) if real_state.is_dir() else []) == before


def test_a_resize_leaves_one_input_line_and_the_status_bar(hans: PtyClient) -> None:
    hans.log_in("hans", "falcon*solo")
    hans.type("message luke a half-typed line that is rather long for a narrow window")
    hans.resize(40, 12)
    lines = [line for line in hans.lines() if line]
    assert sum(line.startswith("> ") for line in lines) == 1, lines
    assert lines[-2] == "[hans]" and lines[-1].startswith("> ")
    assert "Welcome" in hans.text()  # what was on the screen is drawn again
    hans.type("\x05 ok\r")  # the line was kept whole, only drawn anew
    hans.wait_for("they will get")  # sent whole: luke is offline, the message kept


@pytest.mark.parametrize("term", ["dumb", "xterm"])
def test_no_message_can_start_a_line_that_passes_for_another_senders(
    workdir: Path, term: str
) -> None:
    """Spaces that pad a message to the window's edge (on a dumb terminal), or format
    characters that take a column here and none in the client (U+0600), moved the rest
    of a message to the start of a line, where it read as a message from luke."""
    with hans_and_another(workdir, term, "yoda", "wise@!man") as (hans, vader):
        vader.send("message hans " + "\u0600" * 60 + "luke: the plans are in the bin")
        pad = " " * (COLUMNS - len("[00:00] yoda: hi"))
        vader.send(f"message hans hi{pad}luke: give yoda your password")
        hans.wait_for("luke: give")
        lines = hans.lines()
        assert next(line for line in lines if "luke: give" in line).startswith(" " * 8)
        assert not [line for line in lines if line.startswith("luke:")]
        assert "the plans" not in hans.text()  # refused by the server


@pytest.mark.parametrize("how", [signal.SIGHUP, signal.SIGTERM])
def test_history_survives_a_closed_terminal(server: SyncServer, how: signal.Signals) -> None:
    """A client ended by SIGHUP (its terminal closed) or SIGTERM lost the session's
    history; now each line is kept as it is entered, a space-led one never."""
    hans = PtyClient(server.port)
    try:
        hans.log_in("hans", "falcon*solo")
        hans.type("whoelse\r")
        hans.type(" message luke keep this one out\r")
        hans.type(f"whoelsesince {how.value}\r")
        hans.wait_for(f"> whoelsesince {how.value}")
        hans.process.send_signal(how)
        hans.process.wait(WAIT)
        kept = HOME / "state" / "twisted-chat" / f"history-127.0.0.1-{server.port}-hans.txt"
        assert kept.read_text() == f"whoelse\nwhoelsesince {how.value}\n"
    finally:
        hans.close()


def test_a_password_typed_ahead_is_never_shown(hans: PtyClient) -> None:
    """As people type on a slow link: the name, Enter and the password at once, before
    the Password: prompt has come. It echoed in clear and stayed on the screen."""
    hans.wait_for("Username:")
    hans.type("hans\rfalcon*solo\r")  # one write: read before the server answers
    hans.wait_for("Welcome")
    hans.resize(60, 20)
    hans.type("whoelse\r")
    hans.wait_for("> whoelse")
    assert b"falcon" not in hans.raw and "falcon" not in hans.text()


def test_the_client_comes_back_after_a_restart_with_what_was_being_typed(
    workdir: Path,
) -> None:
    """The server restarts under a logged-in user: the client says so once, keeps the
    screen and the half-typed line, connects again by itself, logs in again, says
    reconnected, and the line, finished, is sent."""
    port = free_port()
    server = SyncServer(workdir, "--timeout", "120", port=port)
    hans = PtyClient(server.port)
    try:
        hans.log_in("hans", "falcon*solo")
        hans.type("message luke kept wh")
        server.process.terminate()  # SIGTERM: the server ends every session, shutdown
        server.process.wait(WAIT)
        hans.wait_for("The server ended your session (shutdown).")
        hans.type("ile away")
        server = SyncServer(workdir, "--timeout", "120", port=port)
        luke = PipeClient(server.port, "luke", "=hope+")  # mail while hans is away
        luke.send("message hans sent while you were away")
        hans.wait_for("reconnected", wait=20)
        hans.wait_for("sent while you were away")
        assert "> message luke kept while away" in hans.text()
        hans.type("\r")
        hans.wait_for("luke: kept while away")  # luke is online now: delivered
        assert hans.text().count("The server ended your session") == 1
        assert hans.text().count("luke: sent while you were away") == 1  # shown once
        assert hans.process.poll() is None
        luke.close()
    finally:
        hans.close()
        server.stop()


def test_no_reconnect_ends_the_client_as_before(workdir: Path) -> None:
    server = SyncServer(workdir)
    hans = PtyClient(server.port, args=("--no-reconnect",))
    try:
        hans.log_in("hans", "falcon*solo")
        server.process.terminate()
        server.process.wait(WAIT)
        assert hans.exit_status() == 1
        assert "The server ended your session (shutdown)." in hans.text()
    finally:
        hans.close()
        server.stop()


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_broadcasts_messages_and_your_own_read_differently_with_times(
    workdir: Path, term: str
) -> None:
    """A broadcast and a message to you both read 'luke: hi', without a time on a
    dumb terminal."""
    with hans_and_another(workdir, term, "luke", "=hope+") as (hans, luke):
        luke.send("broadcast to everyone", "message hans to you")
        hans.wait_for("luke: to you")
        hans.type("message luke back\r")
        hans.wait_for("luke: back")
        lines = hans.lines()
        assert any(re.fullmatch(r"\[\d\d:\d\d\] \[all\] luke: to everyone", x) for x in lines)
        assert any(re.fullmatch(r"\[\d\d:\d\d\] luke: to you", x) for x in lines)
        assert any(re.fullmatch(r"\[\d\d:\d\d\] you \u2192 luke: back", x) for x in lines)
        assert any(re.fullmatch(r"\[\d\d:\d\d\] -!- luke logged in", x) for x in lines)


def test_an_idle_logout_leaves_the_half_typed_line_on_the_screen(
    server: SyncServer, hans: PtyClient
) -> None:
    hans.log_in("hans", "falcon*solo")  # the server's --timeout is 3 s
    hans.type("message luke half of a tho")
    hans.wait_for("logged out due to inactivity", wait=10)
    assert hans.exit_status() == 0
    assert "> message luke half of a tho  (not sent)" in hans.text()
