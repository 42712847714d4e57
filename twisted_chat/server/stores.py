"""In-memory stores: the handout's forgetful behaviour, and the reference the durable
stores must match (the same interface tests run against both)."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from itertools import islice

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import (
    HistoryLine,
    IBlockStore,
    IHistory,
    IMailbox,
    IRoomStore,
    StoredMessage,
)

DEFAULT_MAILBOX_LIMIT = 100
"""Offline messages one user may have waiting. ejabberd's default is 100 and Ergo keeps
256; 100 messages of at most 1,000 characters bound a user's queue to about 400 KB, and
nobody reads more than that after coming back. Past it the *sender* is told, so nothing
is dropped silently."""


_NOBODY: frozenset[str] = frozenset()


class MailboxQuota:
    """The one rule of every mailbox: at most ``limit`` messages stored, or being
    stored, per recipient; past it the sender is told (:class:`QueueFull`). Counted in
    memory, so the check costs no disk access, and reserved before a write starts, so
    the cap holds while writes are in flight."""

    def __init__(self, limit: int, counts: dict[str, int] | None = None) -> None:
        self.limit = limit
        self._counts: dict[str, int] = counts if counts is not None else {}

    def reserve(self, recipient: str) -> None:
        count = self._counts.get(recipient, 0)
        if count >= self.limit:
            raise QueueFull(recipient, self.limit)
        self._counts[recipient] = count + 1

    def release(self, recipient: str, count: int) -> None:
        """``count`` messages are gone (delivered, or their write failed)."""
        left = self._counts.get(recipient, 0) - count
        if left > 0:
            self._counts[recipient] = left
        else:
            self._counts.pop(recipient, None)

    def holds_mail(self, recipient: str) -> bool:
        return recipient in self._counts


class BlockIndex:
    """Who blocks whom, indexed both ways, so that a fan-out tests each recipient with
    one set lookup: ``blocked_by(u)`` is whom ``u`` blocks (presence skips them),
    ``blockers_of(u)`` who blocks ``u`` (a broadcast skips them)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.reset(pairs)

    def reset(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Hold exactly these (blocker, target) pairs."""
        self._blocks: dict[str, set[str]] = {}
        self._blockers: dict[str, set[str]] = {}
        for blocker, target in pairs:
            self.add(blocker, target)

    def is_blocked(self, blocker: str, target: str) -> bool:
        blocked = self._blocks.get(blocker)
        return blocked is not None and target in blocked

    def blocked_by(self, blocker: str) -> AbstractSet[str]:
        return self._blocks.get(blocker, _NOBODY)

    def blockers_of(self, target: str) -> AbstractSet[str]:
        return self._blockers.get(target, _NOBODY)

    def add(self, blocker: str, target: str) -> None:
        self._blocks.setdefault(blocker, set()).add(target)
        self._blockers.setdefault(target, set()).add(blocker)

    def discard(self, blocker: str, target: str) -> None:
        _discard(self._blocks, blocker, target)
        _discard(self._blockers, target, blocker)

    def learned(self, blocker: str, target: str, blocked: bool) -> None:
        """A change stored through another node (``IBlockStore.learned``)."""
        if blocked:
            self.add(blocker, target)
        else:
            self.discard(blocker, target)


def _discard(index: dict[str, set[str]], key: str, member: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


@implementer(IBlockStore)
class MemoryBlockStore(BlockIndex):
    """Block lists in memory only: every check is O(1)."""

    def block(self, blocker: str, target: str) -> Deferred[None]:
        self.add(blocker, target)
        return succeed(None)

    def unblock(self, blocker: str, target: str) -> Deferred[None]:
        self.discard(blocker, target)
        return succeed(None)


@implementer(IMailbox)
class MemoryMailbox:
    """Offline messages as a deque per recipient: append and take are O(1) per message."""

    def __init__(self, limit: int = DEFAULT_MAILBOX_LIMIT) -> None:
        self.quota = MailboxQuota(limit)
        self._queues: dict[str, deque[StoredMessage]] = {}
        self._next_key = 1

    @property
    def limit(self) -> int:
        return self.quota.limit

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        try:
            self.quota.reserve(recipient)
        except QueueFull as e:
            return fail(e)
        queue = self._queues.setdefault(recipient, deque())
        queue.append(dataclasses.replace(message, key=self._next_key))
        self._next_key += 1
        return succeed(None)

    def pending(self, recipient: str) -> Deferred[list[StoredMessage]]:
        return succeed(list(self._queues.get(recipient, ())))

    def delivered(self, recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        queue = self._queues.get(recipient)
        if queue is not None:
            done = {m.key for m in messages}
            remaining = deque(m for m in queue if m.key not in done)
            self.quota.release(recipient, len(queue) - len(remaining))
            if remaining:
                self._queues[recipient] = remaining
            else:
                del self._queues[recipient]
        return succeed(None)


class RoomTables:
    """Rooms, members and positions as dicts: what the memory store keeps, and what
    the SQLite store keeps in memory beside its file (so that no read waits on the
    disk). Every method is O(1) or O(its answer)."""

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[str, str, float]] = {}
        """room -> (look, creator, created)."""
        self.looks: dict[str, str] = {}
        """look -> room."""
        self.created: dict[str, list[float]] = {}
        """creator -> when each of their rooms was created."""
        self.members: dict[str, dict[str, int]] = {}
        """room -> member -> the msgid they joined after."""
        self.rooms_of: dict[str, dict[str, int]] = {}
        self.positions: dict[str, dict[str, int]] = {}

    def create(self, room: str, look: str, creator: str, when: float) -> str | None:
        existing = room if room in self.rooms else self.looks.get(look)
        if existing is not None:
            return existing
        self.rooms[room] = (look, creator, when)
        self.looks[look] = room
        self.members[room] = {}
        self.created.setdefault(creator, []).append(when)
        return None

    def created_since(self, user: str, since: float) -> int:
        return sum(1 for when in self.created.get(user, ()) if when >= since)

    def add_member(
        self, room: str, user: str, joined: int, max_members: int, max_rooms: int
    ) -> str:
        members = self.members.get(room)
        if members is None:
            return "no-room"
        if user in members:
            return "member"
        if len(members) >= max_members:
            return "full"
        mine = self.rooms_of.setdefault(user, {})
        if len(mine) >= max_rooms:
            return "too-many"
        members[user] = joined
        mine[room] = joined
        return "ok"

    def remove_member(self, room: str, user: str) -> bool:
        members = self.members.get(room)
        if members is None or members.pop(user, None) is None:
            return False
        mine = self.rooms_of.get(user, {})
        mine.pop(room, None)
        if not mine:
            self.rooms_of.pop(user, None)
        return True

    def save_positions(self, user: str, positions: dict[str, int]) -> None:
        mine = self.positions.setdefault(user, {})
        for room, msgid in positions.items():
            if msgid > mine.get(room, 0):
                mine[room] = msgid


class RoomTableReads:
    """The reads of an :class:`IRoomStore` whose rooms are all in memory (a
    :class:`RoomTables`): answered at once, as copies, for the memory store and the
    SQLite store alike. The writes are each store's own."""

    tables: RoomTables

    def created_since(self, user: str, since: float) -> Deferred[int]:
        return succeed(self.tables.created_since(user, since))

    def members(self, room: str) -> Deferred[dict[str, int] | None]:
        members = self.tables.members.get(room)
        return succeed(None if members is None else dict(members))

    def rooms_of(self, user: str) -> Deferred[dict[str, int]]:
        return succeed(dict(self.tables.rooms_of.get(user, {})))

    def member_counts(self, rooms: Sequence[str]) -> Deferred[dict[str, int]]:
        members = self.tables.members
        return succeed({room: len(members.get(room, ())) for room in rooms})

    def positions(self, user: str) -> Deferred[dict[str, int]]:
        return succeed(dict(self.tables.positions.get(user, {})))


@implementer(IRoomStore)
class MemoryRoomStore(RoomTableReads):
    """Rooms in memory only (``--in-memory``): lost at exit, as the rest."""

    def __init__(self) -> None:
        self.tables = RoomTables()

    def create(self, room: str, look: str, creator: str, when: float) -> Deferred[str | None]:
        return succeed(self.tables.create(room, look, creator, when))

    def add_member(
        self, room: str, user: str, joined: int, max_members: int, max_rooms: int
    ) -> Deferred[str]:
        return succeed(self.tables.add_member(room, user, joined, max_members, max_rooms))

    def remove_member(self, room: str, user: str) -> Deferred[bool]:
        return succeed(self.tables.remove_member(room, user))

    def save_positions(self, user: str, positions: dict[str, int]) -> Deferred[None]:
        self.tables.save_positions(user, positions)
        return succeed(None)


@implementer(IHistory)
class MemoryHistory:
    """Each conversation as a deque of its newest ``limit`` messages (``--in-memory``);
    messages older than ``days`` go as new ones come."""

    def __init__(self, clock: IReactorTime, days: float, limit: int) -> None:
        self._clock = clock
        self._days = days
        self._limit = limit
        self._lines: dict[str, deque[HistoryLine]] = {}
        self._last: dict[str, int] = {}

    def append(self, conversation: str, sender: str, text: str, sent: float) -> Deferred[int]:
        msgid = self._last.get(conversation, 0) + 1
        self._last[conversation] = msgid
        lines = self._lines.get(conversation)
        if lines is None:
            lines = self._lines[conversation] = deque(maxlen=self._limit)
        lines.append(HistoryLine(msgid, sender, text, sent))
        cutoff = self._clock.seconds() - self._days * 86400
        while lines and lines[0].sent < cutoff:
            lines.popleft()
        return succeed(msgid)

    # A conversation's msgids are consecutive (appended at the end, dropped from the
    # start), so a msgid's place in its deque is its distance from the first one.

    def before(self, conversation: str, before: int, limit: int) -> Deferred[list[HistoryLine]]:
        lines = self._lines.get(conversation)
        if not lines:
            return succeed([])
        end = len(lines) if not before else max(0, min(len(lines), before - lines[0].msgid))
        return succeed(list(islice(lines, max(0, end - limit), end)))

    def after(self, conversation: str, after: int, limit: int) -> Deferred[list[HistoryLine]]:
        lines = self._lines.get(conversation)
        if not lines:
            return succeed([])
        start = max(0, after + 1 - lines[0].msgid)
        return succeed(list(islice(lines, start, start + limit)))

    def last_ids(self, conversations: Sequence[str]) -> Deferred[dict[str, int]]:
        return succeed({c: self._last.get(c, 0) for c in conversations})
