"""What durability changes at the protocol level: hand edits to credentials.txt count
at the next login, and live events never overtake stored mail still being read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from zope.interface import implementer

from tests.harness import Server
from tests.logcapture import formatted, log_events
from twisted_chat.errors import StorageFull
from twisted_chat.interfaces import IMailbox, StoredMessage
from twisted_chat.server.sqlite_writes import TimedWrites
from twisted_chat.server.stats import Stats


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_an_account_added_by_hand_works_at_the_next_login(server: Server) -> None:
    with server.credentials.open("a") as f:
        f.write("\nlando calrissian")
    assert server.connect().login("lando", "calrissian")["type"] == "ok"


def test_a_password_changed_by_hand_counts_at_the_next_login(server: Server) -> None:
    text = server.credentials.read_text().replace("luke =hope+", "luke newhope")
    server.credentials.write_text(text)
    assert server.connect().login("luke", "=hope+")["code"] == "wrong-password"
    assert server.connect().login("luke", "newhope")["type"] == "ok"


def test_a_damaged_hand_edit_is_reported_and_known_accounts_kept(server: Server) -> None:
    with log_events() as events:
        with server.credentials.open("a") as f:
            f.write("\nthis line has four fields")
        assert server.connect().login("hans")["type"] == "ok"
    errors = formatted([e for e in events if e.get("log_level") is LogLevel.error])
    assert any("line 11" in e and str(server.credentials) in e for e in errors), errors
    assert "four fields" in server.credentials.read_text()  # the file is left alone


def test_new_accounts_are_written_after_lines_added_by_hand(server: Server) -> None:
    with server.credentials.open("a") as f:
        f.write("\nlando calrissian")
    connection = server.connect()
    connection.hello()
    connection.send("login", user="jaba")
    connection.send("password", password="hutt")
    assert server.credentials.read_text().endswith("lando calrissian\njaba hutt\n")


@implementer(IMailbox)
class SlowMailbox:
    """A mailbox whose reads wait until the test lets them finish."""

    limit = 10

    def __init__(self, waiting: list[StoredMessage]) -> None:
        self.waiting = waiting
        self.reads: list[Deferred[list[StoredMessage]]] = []
        self.delivered_ones: list[StoredMessage] = []

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        raise AssertionError("not used here")

    def pending(self, recipient: str) -> Deferred[list[StoredMessage]]:
        d: Deferred[list[StoredMessage]] = Deferred()
        self.reads.append(d)
        return d

    def delivered(self, recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        self.delivered_ones += messages
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


def test_live_messages_wait_behind_stored_mail_being_read(server: Server) -> None:
    hans = server.online("hans")
    stored = [StoredMessage("yoda", "old 1", 1.0, 1), StoredMessage("yoda", "old 2", 2.0, 2)]
    slow = SlowMailbox(stored)
    server.chat.mailbox = slow
    luke = server.connect()
    assert luke.login("luke")["type"] == "ok"  # luke is online; his mail is still being read
    assert hans.send("message", to="luke", text="new")["stored"] is False
    assert luke.events() == []  # held back
    slow.reads[0].callback(stored)
    events = luke.events()
    texts = [e["text"] for e in events if e["type"] == "message"]
    assert texts == ["old 1", "old 2", "new"]
    assert slow.delivered_ones == []  # not until luke's client says it has them
    luke.send("received", upto=2)
    assert slow.delivered_ones == stored


def test_mail_for_a_user_who_left_before_it_was_read_stays_stored(server: Server) -> None:
    slow = SlowMailbox([])
    server.chat.mailbox = slow
    luke = server.connect()
    luke.login("luke")
    luke.close()
    slow.reads[0].callback([StoredMessage("yoda", "keep me", 1.0, 1)])
    assert slow.delivered_ones == []


def test_a_write_that_finds_no_room_says_storage_full_and_is_logged_once() -> None:
    clock = Clock()
    timed = TimedWrites(clock, Stats())

    def full() -> sqlite3.OperationalError:
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorname = "SQLITE_FULL"
        return error

    with log_events() as events:
        outcomes: list[object] = []
        for _ in range(3):
            timed(fail(full())).addErrback(lambda f: outcomes.append(f.value))
        timed(fail(ValueError("a bug"))).addErrback(lambda f: outcomes.append(f.value))
        timed(succeed(None))
    assert [type(o) for o in outcomes] == [StorageFull] * 3 + [ValueError]
    said = [formatEvent(e) for e in events]
    assert len([line for line in said if "cannot write to" in line]) == 1
    assert len([line for line in said if "work again" in line]) == 1
