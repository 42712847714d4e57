"""How the SQLite state is written: every write on the one connection, timed for the
metrics (:class:`TimedWrites`), and the writes that come together committed together
(:class:`GroupCommit`): offline mail and history share one transaction, so one fsync,
per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat.errors import NO_ROOM, StorageFull
from twisted_chat.server.stats import Stats


def no_room(failure: Failure) -> bool:
    """Whether a write failed for want of room (or of a disk that takes writes): SQLite
    says SQLITE_FULL for a full disk, and an I/O error for a file that may not grow."""
    error = failure.value
    if isinstance(error, sqlite3.OperationalError):
        name = getattr(error, "sqlite_errorname", "")
        return name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR")
    return isinstance(error, OSError) and error.errno in NO_ROOM


class TimedWrites:
    """Times each durable write and counts the ones that fail (``metrics``). A write
    that finds no room fails with :class:`StorageFull`, which the user is told in
    words, and is logged once for each time the disk fills, not once per write; the
    first write that works again is logged too."""

    log = Logger()

    def __init__(self, clock: IReactorTime, stats: Stats, where: str = "the state file") -> None:
        self._clock = clock
        self._stats = stats
        self._where = where
        self._full = False
        """Writes are failing for want of room (since the last one that worked)."""

    def __call__(self, write: Deferred[Any]) -> Deferred[Any]:
        started = self._clock.seconds()
        stats = self._stats

        def done(result: object) -> object:
            if isinstance(result, Failure):
                stats.store_errors += 1
                if no_room(result):
                    self.failed_for_want_of_room(result)
                    return Failure(StorageFull())
                return result
            if self._full:
                self._full = False
                self.log.warn("writes to {where} work again", where=self._where)
            if stats.timing:
                stats.store_writes.observe(self._clock.seconds() - started)
            return result

        return write.addBoth(done)

    def failed_for_want_of_room(self, failure: Failure) -> None:
        if not self._full:
            self._full = True
            self.log.error(
                "cannot write to {where}: {why}; refusing what needs storing "
                "(storage-full) until there is room",
                where=self._where,
                why=failure.getErrorMessage(),
            )


class GroupCommit:
    """Group commit over the one connection: every write that comes while a batch is
    being written goes in the next batch, one transaction and so one fsync for all of
    them, each acknowledged once its batch is committed (durable), in the order they
    came. Writes of one kind in a batch are written together (``executemany``), each
    kind by its own function, so offline mail and history share the fsyncs."""

    def __init__(self, pool: adbapi.ConnectionPool, timed: TimedWrites) -> None:
        self._pool = pool
        self._timed = timed
        self._waiting: list[tuple[BatchWriter, Any, Deferred[Any]]] = []
        """Writes that came while a batch was being written: the next batch."""
        self._writing: Deferred[None] | None = None
        self._drain_waiters: list[Deferred[None]] = []

    def add(self, writer: BatchWriter, row: Any) -> Deferred[Any]:
        """Write ``row`` with ``writer`` in the next batch; fires with what ``writer``
        answered for it (None if nothing) once committed."""
        written: Deferred[Any] = Deferred()
        self._waiting.append((writer, row, written))
        if self._writing is None:
            self._write_batch()
        return written

    def _write_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        kinds: dict[BatchWriter, list[Any]] = {}
        for writer, row, _ in batch:
            kinds.setdefault(writer, []).append(row)

        def write(cursor: Any) -> dict[BatchWriter, list[Any] | None]:
            return {writer: writer(cursor, rows) for writer, rows in kinds.items()}

        def done(result: object) -> None:
            self._writing = None
            place: dict[BatchWriter, int] = {}
            for writer, _, written in batch:
                if isinstance(result, Failure):
                    written.errback(result)
                    continue
                assert isinstance(result, dict)
                index = place.get(writer, 0)
                place[writer] = index + 1
                answers = result[writer]
                written.callback(answers[index] if answers else None)
            if self._waiting:
                self._write_batch()
                return
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        self._writing = self._timed(self._pool.runInteraction(write))
        self._writing.addBoth(done)

    def drained(self) -> Deferred[None]:
        """Fires once every write added so far is committed (or has failed)."""
        if self._writing is None and not self._waiting:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drain_waiters.append(done)
        return done


BatchWriter = Callable[[Any, list[Any]], list[Any] | None]
"""Writes rows of one kind with a cursor, inside a batch's transaction; may answer one
value per row (in order)."""
