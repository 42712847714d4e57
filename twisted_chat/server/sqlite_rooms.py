"""Rooms and history in the SQLite state file (``sqlite_store``'s connection).

- **Rooms, members, positions**: kept in memory (``stores.RoomTables``, loaded at
  start), every change written through, so that no read waits on the disk. A change
  is visible at once; its Deferred fires once it is committed, and a write that fails
  is undone in memory too.
- **History**: the ``history`` table, in the order things were said (a rowid table:
  a message is appended at its end), with an index on (conversation, msgid). Each
  conversation's newest msgid is kept in memory; on disk it is its newest message's,
  and a sweep that removes a conversation's messages records it in
  ``conversations`` first, in the same transaction, so that a msgid is never given
  twice (not even after a conversation's every message went, or a crash). A message
  is appended through the group commit it shares with offline mail, and its Deferred
  fires with its msgid once committed: nothing is sent to anyone before it is
  durable. The oldest messages of a conversation past ``limit`` go in the same
  transaction (its newest stays); those older than ``days`` go once a minute
  (``sweep``), from the start of the table, which is the oldest end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.interfaces import HistoryLine, IHistory, IRoomStore
from twisted_chat.server.sqlite_writes import GroupCommit, TimedWrites
from twisted_chat.server.stores import RoomTableReads, RoomTables

SWEEP_EVERY = 60.0
"""Seconds between removals of messages older than the history's days."""


@implementer(IRoomStore)
class SqliteRoomStore(RoomTableReads):
    """Rooms in memory, written through to the state file (reads: from memory)."""

    log = Logger()

    def __init__(self, pool: adbapi.ConnectionPool, tables: RoomTables, timed: TimedWrites) -> None:
        self._pool = pool
        self.tables = tables
        self._timed = timed

    def _write(
        self, statement: str, args: tuple[Any, ...], undo: Callable[[], None] | None = None
    ) -> Deferred[None]:
        d: Deferred[None] = self._timed(self._pool.runOperation(statement, args))

        def failed(failure: Failure) -> Failure:
            if undo is not None:
                undo()
            return failure

        return d.addErrback(failed)

    def create(self, room: str, look: str, creator: str, when: float) -> Deferred[str | None]:
        tables = self.tables
        existing = tables.create(room, look, creator, when)
        if existing is not None:
            return succeed(existing)

        def undo() -> None:
            del tables.rooms[room]
            del tables.looks[look]
            del tables.members[room]
            tables.created[creator].remove(when)

        return self._write(
            "INSERT INTO rooms (name, look, creator, created) VALUES (?, ?, ?, ?)",
            (room, look, creator, when),
            undo,
        ).addCallback(lambda _: None)

    def add_member(
        self, room: str, user: str, joined: int, max_members: int, max_rooms: int
    ) -> Deferred[str]:
        answer = self.tables.add_member(room, user, joined, max_members, max_rooms)
        if answer != "ok":
            return succeed(answer)

        def undo() -> None:
            self.tables.remove_member(room, user)

        return self._write(
            "INSERT INTO members (room, user, joined) VALUES (?, ?, ?)", (room, user, joined), undo
        ).addCallback(lambda _: "ok")

    def remove_member(self, room: str, user: str) -> Deferred[bool]:
        joined = self.tables.members.get(room, {}).get(user)
        if joined is None or not self.tables.remove_member(room, user):
            return succeed(False)

        def undo() -> None:
            self.tables.members[room][user] = joined
            self.tables.rooms_of.setdefault(user, {})[room] = joined

        return self._write(
            "DELETE FROM members WHERE room = ? AND user = ?", (room, user), undo
        ).addCallback(lambda _: True)

    def save_positions(self, user: str, positions: dict[str, int]) -> Deferred[None]:
        self.tables.save_positions(user, positions)
        rows = [(user, room, seen) for room, seen in positions.items()]

        def upsert(cursor: Any) -> None:
            cursor.executemany(
                "INSERT INTO positions (user, room, seen) VALUES (?, ?, ?) "
                "ON CONFLICT (user, room) DO UPDATE SET seen = max(seen, excluded.seen)",
                rows,
            )

        d: Deferred[None] = self._timed(self._pool.runInteraction(upsert))
        return d


@implementer(IHistory)
class SqliteHistory:
    """Every conversation's history in the state file."""

    log = Logger()

    def __init__(
        self,
        writes: GroupCommit,
        pool: adbapi.ConnectionPool,
        last: dict[str, int],
        clock: IReactorTime,
        days: float,
        limit: int,
    ) -> None:
        self._writes = writes
        self._pool = pool
        self._last = last
        """conversation -> the newest msgid given."""
        self._clock = clock
        self._days = days
        self._limit = limit
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def start(self) -> None:
        self._sweeper.start(SWEEP_EVERY, now=True)

    def stop(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()

    def append(self, conversation: str, sender: str, text: str, sent: float) -> Deferred[int]:
        msgid = self._last.get(conversation, 0) + 1
        self._last[conversation] = msgid  # a failed write leaves a gap, never a repeat
        written: Deferred[int] = self._writes.add(
            self._insert, (conversation, msgid, sender, text, sent)
        )
        return written

    def _insert(self, cursor: Any, rows: list[tuple[str, int, str, str, float]]) -> list[int]:
        """In a batch's transaction: the messages, and whatever no longer fits their
        conversations. Answers each message's msgid."""
        cursor.executemany(
            "INSERT INTO history (conversation, msgid, sender, text, sent) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        limit = self._limit
        newest: dict[str, int] = {}
        for conversation, msgid, *_ in rows:
            if msgid > limit and msgid > newest.get(conversation, 0):
                newest[conversation] = msgid
        if newest:
            cursor.executemany(
                "DELETE FROM history WHERE conversation = ? AND msgid <= ?",
                [(c, last - limit) for c, last in newest.items()],
            )
        return [row[1] for row in rows]

    def sweep(self) -> Deferred[None]:
        """Remove what is older than the history's days. The table is in the order
        things were said, so what is too old is a run at its start, found without an
        index on the time (a clock stepped back may keep a few a sweep longer)."""
        cutoff = self._clock.seconds() - self._days * 86400

        def sweep(cursor: Any) -> None:
            row = cursor.execute(
                "SELECT id FROM history WHERE sent >= ? ORDER BY id LIMIT 1", (cutoff,)
            ).fetchone()
            if row is None:
                row = cursor.execute("SELECT max(id) + 1 FROM history").fetchone()
            bound = row[0]
            if bound is None:
                return  # no history at all
            # A conversation may lose every message: what its newest msgid was stays.
            cursor.execute(
                "INSERT INTO conversations (conversation, last) "
                "SELECT conversation, max(msgid) FROM history WHERE id < ? "
                "GROUP BY conversation "
                "ON CONFLICT (conversation) DO UPDATE SET last = max(last, excluded.last)",
                (bound,),
            )
            cursor.execute("DELETE FROM history WHERE id < ?", (bound,))

        d: Deferred[None] = self._pool.runInteraction(sweep)
        return d.addErrback(
            lambda f: self.log.warn("could not trim the history: {why}", why=f.getErrorMessage())
        )

    def before(self, conversation: str, before: int, limit: int) -> Deferred[list[HistoryLine]]:
        d: Deferred[list[Any]] = self._pool.runQuery(
            "SELECT msgid, sender, text, sent FROM history WHERE conversation = ? AND msgid < ? "
            "ORDER BY msgid DESC LIMIT ?",
            (conversation, before or 2**62, limit),
        )
        return d.addCallback(lambda rows: [HistoryLine(*row) for row in reversed(rows)])

    def after(self, conversation: str, after: int, limit: int) -> Deferred[list[HistoryLine]]:
        if after >= self._last.get(conversation, 0):
            return succeed([])  # nothing newer: no query
        d: Deferred[list[Any]] = self._pool.runQuery(
            "SELECT msgid, sender, text, sent FROM history WHERE conversation = ? AND msgid > ? "
            "ORDER BY msgid LIMIT ?",
            (conversation, after, limit),
        )
        return d.addCallback(lambda rows: [HistoryLine(*row) for row in rows])

    def last_ids(self, conversations: Sequence[str]) -> Deferred[dict[str, int]]:
        return succeed({c: self._last.get(c, 0) for c in conversations})
