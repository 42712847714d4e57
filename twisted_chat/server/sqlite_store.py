"""Durable state in SQLite: block lists and offline messages survive restarts and crashes.

Why SQLite: it ships with Python, needs no server, gives atomic durable transactions
(WAL journal + ``synchronous=FULL``: a committed transaction survives a power cut), and
its file is one thing to back up. It is reached through ``twisted.enterprise.adbapi``
with exactly ONE connection (several connections to one SQLite file give ``database is
locked``), so writes run off the reactor thread, one at a time, in the order submitted.

Reads on hot paths never touch the disk: block lists and per-recipient queue lengths
are loaded into memory at start and kept in step with every committed write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import IBlockStore, IMailbox, StoredMessage
from twisted_chat.server.stats import Stats
from twisted_chat.server.stores import BlockIndex, MailboxQuota

SCHEMA_VERSION = 1

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first schema.
    [
        """CREATE TABLE blocks (
               blocker TEXT NOT NULL,
               target  TEXT NOT NULL,
               PRIMARY KEY (blocker, target)
           ) WITHOUT ROWID""",
        """CREATE TABLE offline (
               id        INTEGER PRIMARY KEY AUTOINCREMENT,
               recipient TEXT NOT NULL,
               sender    TEXT NOT NULL,
               text      TEXT NOT NULL,
               sent      REAL NOT NULL
           )""",
        "CREATE INDEX offline_by_recipient ON offline (recipient, id)",
    ],
]
"""MIGRATIONS[n] takes a database from schema version n to n + 1 (``PRAGMA
user_version``). A new version appends a list; existing ones are never edited."""

assert len(MIGRATIONS) == SCHEMA_VERSION


class StateFileError(Exception):
    """The state file cannot be used: damaged, not SQLite, or from a newer version."""


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=5000")


def open_state(path: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Create or migrate the database at ``path`` and load what must be in memory:
    block lists and queue lengths. Synchronous: called once, before the reactor runs.
    Raises :class:`StateFileError` with the file's name for anything unusable."""
    try:
        _create_private(path)
        connection = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as e:
        raise StateFileError(f"cannot open the state file {path}: {e}") from e
    try:
        _configure(connection)
        # Fold whatever a crash left in the -wal file into the database now, so that
        # the one file an operator copies holds every acknowledged message.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateFileError(
                f"the state file {path} has schema version {version}; this server "
                f"knows versions up to {SCHEMA_VERSION} (it was written by a newer one)"
            )
        for target in range(version, SCHEMA_VERSION):
            connection.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {target + 1}")
            connection.execute("COMMIT")
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StateFileError(f"the state file {path} is damaged: {check}")
        blocks: dict[str, set[str]] = defaultdict(set)
        for blocker, target_user in connection.execute("SELECT blocker, target FROM blocks"):
            blocks[blocker].add(target_user)
        counts = dict(
            connection.execute("SELECT recipient, COUNT(*) FROM offline GROUP BY recipient")
        )
        return dict(blocks), counts
    except sqlite3.DatabaseError as e:
        raise StateFileError(f"the state file {path} is damaged or not a database: {e}") from e
    finally:
        connection.close()


def _create_private(path: Path) -> None:
    """Create the state file readable by its owner only (it holds everyone's offline
    mail); SQLite gives its ``-wal`` and ``-shm`` files the same mode. An existing file
    keeps the mode its operator gave it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def backup(source: Path, destination: Path) -> int:
    """Copy the state database at ``source`` to ``destination`` consistently, even while
    a server is writing to it (SQLite's online backup API: a copy of one committed
    state, whatever the ``-wal`` file holds). Returns the number of offline messages
    in the copy. Blocking: for the command line, never for the reactor thread."""
    if not source.is_file():
        raise StateFileError(f"there is no state file at {source}")
    if destination.exists():
        raise StateFileError(f"{destination} exists; choose a new file for the backup")
    _create_private(destination)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
            src.execute("PRAGMA busy_timeout=5000")
            with contextlib.closing(sqlite3.connect(destination)) as dst:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    raise StateFileError(f"the copy in {destination} is damaged: {check}")
                return int(dst.execute("SELECT COUNT(*) FROM offline").fetchone()[0])
    except sqlite3.Error as e:
        destination.unlink(missing_ok=True)
        raise StateFileError(f"cannot back up {source}: {e}") from e


class SqliteState:
    """The durable stores over one SQLite file and their single-connection pool."""

    log = Logger()

    def __init__(
        self,
        path: Path,
        mailbox_limit: int,
        reactor: Any,
        stats: Stats | None = None,
    ) -> None:
        self.path = path
        stats = stats or Stats()
        blocks, counts = open_state(path)
        self.pool = adbapi.ConnectionPool(
            "sqlite3",
            str(path),
            isolation_level="",
            check_same_thread=False,  # adbapi closes from another thread at shutdown
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_noisy=False,
            cp_reactor=reactor,
        )
        timed = TimedWrites(reactor, stats)
        self.blocks = SqliteBlockStore(self.pool, blocks, timed)
        self.mailbox = SqliteMailbox(self.pool, counts, mailbox_limit, timed)

    def close(self) -> Deferred[None]:
        """Checkpoint (the database file alone then holds everything, and the -wal file
        is emptied) and close. Fires when done; a failed checkpoint is logged, and the
        data stays safe in the -wal file, which the next start folds in."""

        def checkpoint(cursor: Any) -> None:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def failed(failure: Any) -> None:
            self.log.failure("checkpointing {path} at stop", failure, path=str(self.path))

        def close(_: object) -> None:
            self.pool.close()

        # Appends still being written go in first: an acknowledged message is durable.
        d: Deferred[None] = self.mailbox.drained().addCallback(
            lambda _: self.pool.runInteraction(checkpoint)
        )
        return d.addErrback(failed).addCallback(close)


class TimedWrites:
    """Times each durable write and counts the ones that fail (``metrics``)."""

    def __init__(self, clock: IReactorTime, stats: Stats) -> None:
        self._clock = clock
        self._stats = stats

    def __call__(self, write: Deferred[Any]) -> Deferred[Any]:
        started = self._clock.seconds()
        stats = self._stats

        def done(result: object) -> object:
            if isinstance(result, Failure):
                stats.store_errors += 1
            elif stats.timing:
                stats.store_writes.observe(self._clock.seconds() - started)
            return result

        return write.addBoth(done)


@implementer(IBlockStore)
class SqliteBlockStore(BlockIndex):
    """Block lists: indexed in memory, every change written through.

    A change is visible at once (a block protects from the next message, not the one
    after the disk write); the returned Deferred fires once it is committed, and a
    failed write is undone in memory too."""

    def __init__(
        self, pool: adbapi.ConnectionPool, loaded: dict[str, set[str]], timed: TimedWrites
    ) -> None:
        super().__init__((b, t) for b, targets in loaded.items() for t in targets)
        self._pool = pool
        self._timed = timed

    def block(self, blocker: str, target: str) -> Deferred[None]:
        self.add(blocker, target)
        d: Deferred[None] = self._timed(
            self._pool.runOperation(
                "INSERT OR IGNORE INTO blocks (blocker, target) VALUES (?, ?)", (blocker, target)
            )
        )
        return d.addErrback(self._undo, lambda: self.discard(blocker, target))

    def unblock(self, blocker: str, target: str) -> Deferred[None]:
        self.discard(blocker, target)
        d: Deferred[None] = self._timed(
            self._pool.runOperation(
                "DELETE FROM blocks WHERE blocker = ? AND target = ?", (blocker, target)
            )
        )
        return d.addErrback(self._undo, lambda: self.add(blocker, target))

    @staticmethod
    def _undo(failure: Any, undo: Callable[[], None]) -> Any:
        undo()
        return failure


@implementer(IMailbox)
class SqliteMailbox:
    """Offline messages in the ``offline`` table, in the order they were accepted."""

    def __init__(
        self, pool: adbapi.ConnectionPool, counts: dict[str, int], limit: int, timed: TimedWrites
    ) -> None:
        self._pool = pool
        self._timed = timed
        self.quota = MailboxQuota(limit, counts)
        """Messages stored or being stored per recipient (loaded at start)."""
        self._waiting: list[tuple[str, StoredMessage, Deferred[None]]] = []
        """Appends that came while a batch was being written: the next batch."""
        self._writing: Deferred[None] | None = None
        """The batch being written (None: none)."""
        self._drain_waiters: list[Deferred[None]] = []

    @property
    def limit(self) -> int:
        return self.quota.limit

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        try:
            self.quota.reserve(recipient)
        except QueueFull as e:
            return fail(e)

        stored: Deferred[None] = Deferred()
        self._waiting.append((recipient, message, stored))
        if self._writing is None:
            self._write_batch()
        return stored

    def _write_batch(self) -> None:
        """Group commit: every append that came while the last batch was written goes
        in one transaction, so one fsync; each is acknowledged once its batch is
        committed (durable), in the order they came."""
        batch, self._waiting = self._waiting, []
        rows = [(r, m.sender, m.text, m.sent) for r, m, _ in batch]

        def insert(cursor: Any) -> None:
            cursor.executemany(
                "INSERT INTO offline (recipient, sender, text, sent) VALUES (?, ?, ?, ?)", rows
            )

        def done(result: object) -> None:
            self._writing = None
            for recipient, _, stored in batch:
                if isinstance(result, Failure):
                    self.quota.release(recipient, 1)  # never stored: the cap frees
                    stored.errback(result)
                else:
                    stored.callback(None)
            if self._waiting:
                self._write_batch()
                return
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        self._writing = self._timed(self._pool.runInteraction(insert))
        self._writing.addBoth(done)

    def drained(self) -> Deferred[None]:
        """Fires once every append made so far is written (or has failed)."""
        if self._writing is None and not self._waiting:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drain_waiters.append(done)
        return done

    def pending(self, recipient: str) -> Deferred[list[StoredMessage]]:
        if not self.quota.holds_mail(recipient):
            return succeed([])
        d: Deferred[list[Any]] = self._pool.runQuery(
            "SELECT sender, text, sent, id FROM offline WHERE recipient = ? ORDER BY id",
            (recipient,),
        )
        return d.addCallback(lambda rows: [StoredMessage(*row) for row in rows])

    def delivered(self, recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        rows = [(recipient, m.key) for m in messages]

        def remove(cursor: Any) -> int:
            cursor.executemany("DELETE FROM offline WHERE recipient = ? AND id = ?", rows)
            # What was really deleted: a message acknowledged twice is counted once.
            return int(cursor.rowcount)

        d: Deferred[int] = self._pool.runInteraction(remove)
        return d.addCallback(lambda deleted: self.quota.release(recipient, deleted))
