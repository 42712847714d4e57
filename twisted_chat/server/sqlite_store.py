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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import IBlockStore, IMailbox, StoredMessage
from twisted_chat.server.sqlite_rooms import SqliteHistory, SqliteRoomStore
from twisted_chat.server.sqlite_writes import GroupCommit, TimedWrites
from twisted_chat.server.stats import Stats
from twisted_chat.server.stores import BlockIndex, MailboxQuota, RoomTables
from twisted_chat.server.walcheck import wal_damage

SCHEMA_VERSION = 3

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
    # 1 -> 2: rooms and history (what an offline message is in its history, too).
    [
        "ALTER TABLE offline ADD COLUMN msgid INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE rooms (
               name    TEXT PRIMARY KEY,
               look    TEXT NOT NULL UNIQUE,
               creator TEXT NOT NULL,
               created REAL NOT NULL
           ) WITHOUT ROWID""",
        "CREATE INDEX rooms_by_creator ON rooms (creator, created)",
        """CREATE TABLE members (
               room   TEXT NOT NULL,
               user   TEXT NOT NULL,
               joined INTEGER NOT NULL,
               PRIMARY KEY (room, user)
           ) WITHOUT ROWID""",
        """CREATE TABLE positions (
               user TEXT NOT NULL,
               room TEXT NOT NULL,
               seen INTEGER NOT NULL,
               PRIMARY KEY (user, room)
           ) WITHOUT ROWID""",
        """CREATE TABLE conversations (
               conversation TEXT PRIMARY KEY,
               last         INTEGER NOT NULL
           ) WITHOUT ROWID""",
        """CREATE TABLE history (
               conversation TEXT NOT NULL,
               msgid        INTEGER NOT NULL,
               sender       TEXT NOT NULL,
               text         TEXT NOT NULL,
               sent         REAL NOT NULL,
               PRIMARY KEY (conversation, msgid)
           ) WITHOUT ROWID""",
        "CREATE INDEX history_by_time ON history (sent)",
    ],
    # 2 -> 3: the history in the order it was said (a rowid table, so that a message
    # is appended at its end, and a small index finds a conversation's), and each
    # conversation's newest msgid kept in ``conversations`` only once its messages
    # are removed (writing it with every message cost as much as the message).
    [
        """CREATE TABLE said (
               id           INTEGER PRIMARY KEY,
               conversation TEXT NOT NULL,
               msgid        INTEGER NOT NULL,
               sender       TEXT NOT NULL,
               text         TEXT NOT NULL,
               sent         REAL NOT NULL
           )""",
        "INSERT INTO said (conversation, msgid, sender, text, sent) "
        "SELECT conversation, msgid, sender, text, sent FROM history ORDER BY sent, msgid",
        "DROP TABLE history",
        "ALTER TABLE said RENAME TO history",
        "CREATE UNIQUE INDEX history_by_conversation ON history (conversation, msgid)",
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


@dataclass
class Loaded:
    """What the state file holds that is kept in memory beside it (loaded at start)."""

    blocks: dict[str, set[str]]
    mail_counts: dict[str, int]
    rooms: RoomTables
    last_msgids: dict[str, int]
    """Each conversation's newest msgid ever given (known even when its history was
    removed, so that no msgid is given twice)."""


def refuse_a_damaged_log(path: Path) -> None:
    """:class:`StateFileError` if the state file's ``-wal`` lost acknowledged writes
    (``walcheck``): SQLite would drop them without a word, and then empty the log."""
    wal = Path(f"{path}-wal")
    damage = wal_damage(wal)
    if damage is not None:
        raise StateFileError(
            f"the write-ahead log {wal} is damaged at frame {damage.frame} of "
            f"{damage.frames}: SQLite would silently drop {damage.lost_commits} "
            f"acknowledged write(s) behind it. Keep a copy of {path.name} and "
            f"{wal.name}; then restore both from a backup (chat-backup), or start once "
            "with --accept-damaged-wal to keep only what precedes the damage"
        )


def open_state(path: Path, accept_damaged_wal: bool = False) -> Loaded:
    """Create or migrate the database at ``path`` and load what must be in memory:
    block lists, queue lengths, rooms and their members, and each conversation's
    newest msgid. Synchronous: called once, before the reactor runs. Raises
    :class:`StateFileError` with the file's name for anything unusable, a log that
    lost acknowledged writes among them (unless ``accept_damaged_wal``)."""
    if not accept_damaged_wal:
        refuse_a_damaged_log(path)
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
        return Loaded(dict(blocks), counts, _load_rooms(connection), _load_last(connection))
    except sqlite3.DatabaseError as e:
        raise StateFileError(f"the state file {path} is damaged or not a database: {e}") from e
    finally:
        connection.close()


def _load_rooms(connection: sqlite3.Connection) -> RoomTables:
    tables = RoomTables()
    for name, look, creator, created in connection.execute(
        "SELECT name, look, creator, created FROM rooms"
    ):
        tables.rooms[name] = (look, creator, created)
        tables.looks[look] = name
        tables.members[name] = {}
        tables.created.setdefault(creator, []).append(created)
    for room, user, joined in connection.execute("SELECT room, user, joined FROM members"):
        tables.members.setdefault(room, {})[user] = joined
        tables.rooms_of.setdefault(user, {})[room] = joined
    for user, room, seen in connection.execute("SELECT user, room, seen FROM positions"):
        tables.positions.setdefault(user, {})[room] = seen
    return tables


def _load_last(connection: sqlite3.Connection) -> dict[str, int]:
    """Each conversation's newest msgid: its newest message's, or, for one whose
    messages were all removed, what ``conversations`` recorded as they went. One pass
    over the conversation index (about a third of a second a million messages)."""
    last = dict(connection.execute("SELECT conversation, last FROM conversations"))
    query = "SELECT conversation, max(msgid) FROM history GROUP BY conversation"
    for conversation, newest in connection.execute(query):
        last[conversation] = max(newest, last.get(conversation, 0))
    return last


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
    refuse_a_damaged_log(source)  # a copy without what the damage hides is no backup
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
        history_limits: tuple[float, int] = (30.0, 10_000),
        accept_damaged_wal: bool = False,
    ) -> None:
        """``history_limits``: (days, messages per conversation) kept."""
        self.path = path
        stats = stats or Stats()
        loaded = open_state(path, accept_damaged_wal)
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
        self.writes = GroupCommit(self.pool, timed)
        self.blocks = SqliteBlockStore(self.pool, loaded.blocks, timed)
        self.mailbox = SqliteMailbox(
            self.writes, self.pool, loaded.mail_counts, mailbox_limit, timed
        )
        days, kept = history_limits
        self.rooms = SqliteRoomStore(self.pool, loaded.rooms, timed)
        self.history = SqliteHistory(
            self.writes, self.pool, loaded.last_msgids, reactor, days, kept
        )

    def start(self) -> None:
        """The history's sweep of what is older than its days, once a minute."""
        self.history.start()

    def close(self) -> Deferred[None]:
        """Checkpoint (the database file alone then holds everything, and the -wal file
        is emptied) and close. Fires when done; a failed checkpoint is logged, and the
        data stays safe in the -wal file, which the next start folds in."""

        def checkpoint(cursor: Any) -> None:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def failed(failure: Any) -> None:
            self.log.failure("checkpointing {path} at stop", failure, path=str(self.path))

        def close(_: object) -> None:
            self.history.stop()
            self.pool.close()

        # Writes still under way go in first: an acknowledged message is durable.
        d: Deferred[None] = self.writes.drained().addCallback(
            lambda _: self.pool.runInteraction(checkpoint)
        )
        return d.addErrback(failed).addCallback(close)


def _insert_offline(cursor: Any, rows: list[tuple[str, str, str, float, int]]) -> None:
    cursor.executemany(
        "INSERT INTO offline (recipient, sender, text, sent, msgid) VALUES (?, ?, ?, ?, ?)", rows
    )


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
@implementer(IMailbox)
class SqliteMailbox:
    """Offline messages in the ``offline`` table, in the order they were accepted."""

    def __init__(
        self,
        writes: GroupCommit,
        pool: adbapi.ConnectionPool,
        counts: dict[str, int],
        limit: int,
        timed: TimedWrites,
    ) -> None:
        self._writes = writes
        self._pool = pool
        self._timed = timed
        self.quota = MailboxQuota(limit, counts)
        """Messages stored or being stored per recipient (loaded at start)."""

    @property
    def limit(self) -> int:
        return self.quota.limit

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        try:
            self.quota.reserve(recipient)
        except QueueFull as e:
            return fail(e)
        row = (recipient, message.sender, message.text, message.sent, message.msgid)

        def not_stored(failure: Failure) -> Failure:
            self.quota.release(recipient, 1)  # never stored: the cap frees
            return failure

        return self._writes.add(_insert_offline, row).addCallbacks(lambda _: None, not_stored)

    def drained(self) -> Deferred[None]:
        """Fires once every append made so far is written (or has failed)."""
        return self._writes.drained()

    def pending(self, recipient: str) -> Deferred[list[StoredMessage]]:
        if not self.quota.holds_mail(recipient):
            return succeed([])
        d: Deferred[list[Any]] = self._pool.runQuery(
            "SELECT sender, text, sent, id, msgid FROM offline WHERE recipient = ? ORDER BY id",
            (recipient,),
        )
        return d.addCallback(lambda rows: [StoredMessage(*row) for row in rows])

    def delivered(self, recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        rows = [(recipient, m.key) for m in messages]

        def remove(cursor: Any) -> int:
            cursor.executemany("DELETE FROM offline WHERE recipient = ? AND id = ?", rows)
            # What was really deleted: a message acknowledged twice is counted once.
            return int(cursor.rowcount)

        d: Deferred[int] = self._timed(self._pool.runInteraction(remove))
        return d.addCallback(lambda deleted: self.quota.release(recipient, deleted))
