"""Rooms and history in Redis, for the nodes of one chat.

- **History**: a stream per conversation (``chat:hist:<conversation>``) whose entry
  ids are ``0-<msgid>``. A stream, not a sorted set: appends with a length cap are one
  command (``XADD ... MAXLEN``), ranges before or after a msgid are one command
  (``XREVRANGE``/``XRANGE`` with exclusive bounds), and a stream of short entries
  takes far less memory than a sorted set's skip list and hash. The msgid comes from a
  counter per conversation (``chat:hlast``) that outlives the stream (which expires
  when a conversation has been quiet for the history's days), so no msgid is given
  twice. Messages older than the days go from the start of the stream as new ones
  come (``primitives.HISTORY_APPEND``). The messages of one reactor turn are appended
  in one call, as SQLite's are committed in one transaction: a round trip and a
  script run per turn rather than per message.
- **Rooms**: a hash per room, an index of what room names look like, members and each
  member's rooms in two hashes changed together (``primitives.ROOM_ADD_MEMBER``, with
  both caps), and each user's positions in a hash that only moves forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.interfaces import HistoryLine, IHistory, IRoomStore
from twisted_chat.server.cluster import primitives
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.redis import pairs


@implementer(IHistory)
class RedisHistory:
    """Every conversation's history, in Redis."""

    def __init__(self, redis: Primitives, clock: Any, days: float, limit: int) -> None:
        self._redis = redis
        self._clock = clock
        self._days = days
        self._limit = limit
        self._waiting: list[tuple[str, str, str, str]] = []
        """This turn's messages, in order."""
        self._answers: list[Deferred[int]] = []
        self._flush: IDelayedCall | None = None

    def append(self, conversation: str, sender: str, text: str, sent: float) -> Deferred[int]:
        if self._flush is None:
            self._flush = self._clock.callLater(0, self._send)
        self._waiting.append((conversation, sender, text, repr(sent)))
        answer: Deferred[int] = Deferred()
        self._answers.append(answer)
        return answer

    def _send(self) -> None:
        """Append this turn's messages in one call; each answer gets its msgid."""
        messages, answers = self._waiting, self._answers
        self._waiting, self._answers, self._flush = [], [], None
        seconds = self._days * 86400
        sent = self._redis.run(
            primitives.HISTORY_APPEND,
            self._limit,
            repr(self._clock.seconds() - seconds),
            round(seconds * 1000),
            *[field for message in messages for field in message],
        )

        def kept(msgids: Any) -> None:
            for answer, msgid in zip(answers, msgids, strict=True):
                answer.callback(int(msgid))

        def failed(failure: Failure) -> None:
            for answer in answers:
                answer.errback(failure)

        sent.addCallbacks(kept, failed)

    def before(self, conversation: str, before: int, limit: int) -> Deferred[list[HistoryLine]]:
        newest = f"(0-{before}" if before else "+"
        d: Deferred[list[HistoryLine]] = self._redis.call(
            "XREVRANGE", f"chat:hist:{conversation}", newest, "-", "COUNT", limit
        ).addCallback(lambda entries: list(reversed(_lines(entries))))
        return d

    def after(self, conversation: str, after: int, limit: int) -> Deferred[list[HistoryLine]]:
        d: Deferred[list[HistoryLine]] = self._redis.call(
            "XRANGE", f"chat:hist:{conversation}", f"(0-{after}", "+", "COUNT", limit
        ).addCallback(_lines)
        return d

    def last_ids(self, conversations: Sequence[str]) -> Deferred[dict[str, int]]:
        if not conversations:
            return succeed({})

        def parsed(values: list[str | None]) -> dict[str, int]:
            return {c: int(v or 0) for c, v in zip(conversations, values, strict=True)}

        d: Deferred[dict[str, int]] = self._redis.call(
            "HMGET", "chat:hlast", *conversations
        ).addCallback(parsed)
        return d


def _lines(entries: list[Any]) -> list[HistoryLine]:
    lines = []
    for entry_id, flat in entries:
        fields = dict(pairs(flat))
        lines.append(
            HistoryLine(
                int(entry_id.partition("-")[2]), fields["s"], fields["t"], float(fields["w"])
            )
        )
    return lines


@implementer(IRoomStore)
class RedisRoomStore:
    """Rooms, members and positions, in Redis."""

    def __init__(self, redis: Primitives) -> None:
        self._redis = redis

    def create(self, room: str, look: str, creator: str, when: float) -> Deferred[str | None]:
        d: Deferred[str | None] = self._redis.run(
            primitives.ROOM_CREATE, room, look, creator, repr(when)
        ).addCallback(lambda existing: existing or None)
        return d

    def created_since(self, user: str, since: float) -> Deferred[int]:
        d: Deferred[int] = self._redis.call(
            "ZCOUNT", f"chat:created:{user}", repr(since), "+inf"
        ).addCallback(int)
        return d

    def add_member(
        self, room: str, user: str, joined: int, max_members: int, max_rooms: int
    ) -> Deferred[str]:
        d: Deferred[str] = self._redis.run(
            primitives.ROOM_ADD_MEMBER, room, user, joined, max_members, max_rooms
        )
        return d

    def remove_member(self, room: str, user: str) -> Deferred[bool]:
        d: Deferred[bool] = self._redis.run(primitives.ROOM_REMOVE_MEMBER, room, user).addCallback(
            bool
        )
        return d

    def members(self, room: str) -> Deferred[dict[str, int] | None]:
        def parsed(flat: list[str] | None) -> dict[str, int] | None:
            if flat is None:
                return None
            return {user: int(joined) for user, joined in pairs(flat)}

        d: Deferred[dict[str, int] | None] = self._redis.run(
            primitives.ROOM_MEMBERS, room
        ).addCallback(parsed)
        return d

    def rooms_of(self, user: str) -> Deferred[dict[str, int]]:
        return self._map(f"chat:roomsof:{user}")

    def member_counts(self, rooms: Sequence[str]) -> Deferred[dict[str, int]]:
        if not rooms:
            return succeed({})
        d: Deferred[dict[str, int]] = self._redis.run(primitives.ROOM_COUNTS, *rooms).addCallback(
            lambda counts: dict(zip(rooms, map(int, counts), strict=True))
        )
        return d

    def positions(self, user: str) -> Deferred[dict[str, int]]:
        return self._map(f"chat:seen:{user}")

    def save_positions(self, user: str, positions: dict[str, int]) -> Deferred[None]:
        if not positions:
            return succeed(None)
        flat = [item for pair in positions.items() for item in pair]
        d: Deferred[None] = self._redis.run(primitives.SAVE_POSITIONS, user, *flat).addCallback(
            lambda _: None
        )
        return d

    def _map(self, key: str) -> Deferred[dict[str, int]]:
        d: Deferred[dict[str, int]] = self._redis.call("HGETALL", key).addCallback(
            lambda flat: {name: int(value) for name, value in pairs(flat)}
        )
        return d
