"""Files an operator edits must not betray them: a BOM, a NUL, a refused or repeated name,
a hand append racing a creation, a symlink, a mode, a read-only file, a crash's leftovers,
and the SQLite state's -wal file."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.harness import Server, run_inline, verified, write_credentials
from tests.logcapture import LogEvent, formatted, log_events
from twisted_chat.interfaces import StoredMessage
from twisted_chat.server import credfile as accounts_module
from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.credfile import parse_credentials
from twisted_chat.server.passwords import RESERVED
from twisted_chat.server.sqlite_store import SqliteState, StateFileError, backup, open_state

REPO_ROOT = Path(__file__).resolve().parents[1]


class Logged:
    """Every log line while in a ``with`` block."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._capture = log_events()
        self._events: list[LogEvent] = []

    def __enter__(self) -> list[str]:
        self._events = self._capture.__enter__()
        return self.lines

    def __exit__(self, *exc: Any) -> None:
        self._capture.__exit__(*exc)
        self.lines.extend(formatted(self._events))


# --- what the file holds ---------------------------------------------------------------


def test_a_bom_does_not_hand_the_first_account_to_anyone(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfhans solo\r\nyoda wise\r\n")  # as Notepad saves it
    accounts = CredentialsFile(path, run_inline)
    assert accounts.exists("hans") and verified(accounts, "hans", "solo")
    assert not accounts.exists("\ufeffhans")


def test_a_bom_at_the_server_keeps_hans_from_strangers(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.credentials.write_bytes(b"\xef\xbb\xbf" + server.credentials.read_bytes())
    connection = server.connect()
    connection.hello()
    # Without the fix "hans" was unknown: anyone could create it with any password.
    assert connection.send("login", user="hans")["account"] == "existing"
    assert connection.send("password", password="guess")["code"] == "wrong-password"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"lando cal\x00rissian", "control character"),
        (b"\xff\xfe bad", "not valid UTF-8"),
        ("\u3164 blank".encode(), "invisible or blank"),
        (b"hans other", "hans appears again; the first line for it is used"),
    ],
)
def test_damaged_lines_are_reported_with_file_and_line_and_skipped(
    line: bytes, reason: str
) -> None:
    parsed = parse_credentials(b"hans solo\n" + line + b"\nyoda wise\n", "c.txt")
    assert parsed.accounts == {"hans": "solo", "yoda": "wise"}
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith("c.txt, line 2: ") and reason in parsed.problems[0]


def test_a_line_of_the_wrong_shape_keeps_its_name_from_strangers(tmp_path: Path) -> None:
    """``lando a b`` cannot be used, but lando's name is not free for the taking: a
    stranger would otherwise create the account the operator meant for lando."""
    parsed = parse_credentials(b"hans solo\nlando a b\nyoda wise\n", "c.txt")
    assert parsed.accounts["lando"] == RESERVED
    (problem,) = parsed.problems
    assert problem == (
        "c.txt, line 2: expected 'username password', got 3 field(s); nobody can log in "
        "as lando or take the name until it is fixed"
    )
    server = Server(tmp_path)
    server.credentials.write_text("hans solo\nlando a b\n")
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="lando")["account"] == "existing"
    for guess in ("a", "b", "\0reserved"):  # the third locks the name, as for anyone
        assert connection.send("password", password=guess)["type"] == "error"


def test_odd_names_are_kept_but_reported(tmp_path: Path) -> None:
    parsed = parse_credentials("hans solo\nh\u0430ns x\nhan(solo) y\n".encode(), "c.txt")
    assert set(parsed.accounts) == {"hans", "h\u0430ns", "han(solo)"}
    assert [n.split(":")[0] for n in parsed.notes] == ["c.txt, line 2", "c.txt, line 3"]


def test_names_are_read_in_nfc(tmp_path: Path) -> None:
    parsed = parse_credentials("jose\u0301 pw\njos\u00e9 other\n".encode(), "c.txt")
    assert parsed.accounts == {"jos\u00e9": "pw"}  # one name: the second line is a repeat
    assert "appears again" in parsed.problems[0]


def test_problems_are_reported_at_start_and_at_each_re_read(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    with path.open("a") as f:
        f.write("\nhans again\n")
    with Logged() as lines:
        accounts = CredentialsFile(path, run_inline)
    assert any(f"{path}, line 2: hans appears again" in line for line in lines)
    with path.open("a") as f:
        f.write("bad line here\n")
    with Logged() as lines:
        accounts.refresh()
    assert any(f"{path}, line 2: hans appears again" in line for line in lines)
    assert any(f"{path}, line 3: expected 'username password'" in line for line in lines)


def test_the_shipped_file_ends_with_a_newline_so_a_hand_append_is_safe() -> None:
    shipped = (REPO_ROOT / "credentials.txt").read_bytes()
    assert shipped.endswith(b"\n")
    parsed = parse_credentials(shipped + b"jaba hutt\n", "credentials.txt")
    assert parsed.accounts["palpatine"] == "sithlord**" and parsed.accounts["jaba"] == "hutt"


# --- how the server writes it ----------------------------------------------------------


def test_a_hand_append_racing_a_creation_is_not_written_twice(tmp_path: Path) -> None:
    """The client got "account: new"; the operator then adds the same name by hand; the
    password arrives. The name is taken, the file lists it once, and a restart works."""
    server = Server(tmp_path)
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="jaba")["account"] == "new"
    with server.credentials.open("a") as f:
        f.write("\njaba byhand\n")
    reply = connection.send("password", password="fromclient")
    assert reply["code"] == "username-taken"
    text = server.credentials.read_text()
    assert text.count("jaba ") == 1 and "jaba byhand" in text
    assert verified(CredentialsFile(server.credentials, run_inline), "jaba", "byhand")


def test_an_append_does_not_read_an_unchanged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_credentials(tmp_path / "c.txt", {f"user{n}": "pw" for n in range(1000)})
    accounts = CredentialsFile(path, run_inline)

    def never(*_: object) -> bytes:
        raise AssertionError("the whole file was read for an append")

    monkeypatch.setattr(accounts_module, "read_all", never)
    monkeypatch.setattr(Path, "read_bytes", never)
    accounts.create("jaba", "hutt")
    accounts.create("boba", "fett")
    monkeypatch.undo()
    assert path.read_text().endswith("user999 pw\njaba hutt\nboba fett\n")


def test_logins_do_not_wait_for_accounts_being_created(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    appends: list[Deferred[Any]] = []

    def appends_wait(f: Callable[..., Any], *args: object) -> Deferred[Any]:
        if f is not accounts_module.append_account:
            return run_inline(f, *args)  # re-reads run at once
        d: Deferred[Any] = Deferred()  # appends stay in the worker thread
        appends.append(d)
        return d

    accounts = CredentialsFile(path, appends_wait)
    accounts.watched()
    accounts.refresh()  # the first check after the watch begins
    accounts.create("jaba", "hutt")
    assert len(appends) == 1  # its write is still under way
    answered: list[object] = []
    accounts.refresh().addCallback(answered.append)
    assert answered == [None]


def test_a_symlinked_file_stays_a_symlink_with_its_owner_and_mode(tmp_path: Path) -> None:
    real = write_credentials(tmp_path / "real.txt", {"hans": "solo"})
    real.chmod(0o640)
    os.chown(real, os.getuid(), 1)
    link = tmp_path / "credentials.txt"
    link.symlink_to(real)
    CredentialsFile(link, run_inline).create("jaba", "hutt")
    assert link.is_symlink()
    assert real.read_text() == "hans solo\njaba hutt\n"
    status = real.stat()
    assert stat.S_IMODE(status.st_mode) == 0o640 and status.st_gid == 1


def test_a_read_only_file_is_never_written_and_the_user_is_told(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.credentials.chmod(0o444)
    before = server.credentials.read_bytes()
    assert isinstance(server.chat.accounts, CredentialsFile)
    server.chat.accounts.changed()
    accounts = CredentialsFile(server.credentials, run_inline)
    assert accounts.read_only
    server.chat.accounts = accounts  # as a server started on the read-only file
    connection = server.connect()
    connection.hello()
    reply = connection.send("login", user="jaba")
    assert reply["code"] == "accounts-read-only"  # the code docs/protocol.md gives
    assert reply["text"] == (
        "Error. This server cannot create new accounts now. Log in with an existing one."
    )
    assert server.credentials.read_bytes() == before
    assert server.connect().login("hans")["type"] == "ok"  # existing accounts still work


def test_copies_left_by_a_crashed_rewrite_are_removed_at_start(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "credentials.txt", {"hans": "solo"})
    leftover = tmp_path / ".credentials.txt.abc123.tmp"
    leftover.write_text("hans solo\n")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("keep me")
    CredentialsFile(path, run_inline)
    assert not leftover.exists() and unrelated.exists()


# --- the SQLite state ------------------------------------------------------------------


def test_the_state_file_is_created_for_its_owner_only(tmp_path: Path) -> None:
    from twisted.internet import reactor

    state = SqliteState(tmp_path / "state.sqlite3", 100, reactor)
    try:
        assert stat.S_IMODE((tmp_path / "state.sqlite3").stat().st_mode) == 0o600
    finally:
        state.pool.close()


def crashed_writer(path: Path) -> sqlite3.Connection:
    """A connection to a new state database that commits into the -wal file and never
    checkpoints: what a server killed with -9 leaves behind."""
    open_state(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    return writer


def test_what_a_crash_left_in_the_wal_is_checkpointed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    writer = crashed_writer(path)
    writer.execute(
        "INSERT INTO offline (recipient, sender, text, sent) VALUES ('luke', 'hans', 'hi', 1)"
    )
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0  # committed, but only in the -wal file
    open_state(path)  # a restart while the crashed writer's -wal is still there
    assert wal.stat().st_size == 0
    writer.close()
    wal.unlink(missing_ok=True)
    Path(f"{path}-shm").unlink(missing_ok=True)
    with sqlite3.connect(path) as check:  # the database file alone holds the message
        assert check.execute("SELECT text FROM offline").fetchall() == [("hi",)]


def test_backup_copies_a_consistent_state_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    writer = crashed_writer(path)
    for n in range(20):
        writer.execute(
            "INSERT INTO offline (recipient, sender, text, sent) VALUES ('luke', 'hans', ?, 1)",
            (f"m{n}",),
        )
    copy = tmp_path / "backup.sqlite3"
    assert backup(path, copy) == 20  # the rows still in the -wal file are in the copy
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not Path(f"{copy}-wal").exists()
    with pytest.raises(StateFileError, match="exists"):
        backup(path, copy)
    writer.close()
    counts = open_state(copy).mail_counts
    assert counts == {"luke": 20}


@pytest_twisted.ensureDeferred
async def test_a_clean_stop_leaves_everything_in_the_database_file(tmp_path: Path) -> None:
    from twisted.internet import reactor

    path = tmp_path / "state.sqlite3"
    state = SqliteState(path, 100, reactor)
    await state.mailbox.append("luke", StoredMessage("hans", "kept", 1.0))
    await state.close()
    alone = tmp_path / "alone.sqlite3"
    alone.write_bytes(path.read_bytes())  # the one file an operator might copy
    with sqlite3.connect(alone) as check:
        assert check.execute("SELECT text FROM offline").fetchall() == [("kept",)]
