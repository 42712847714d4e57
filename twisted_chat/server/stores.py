"""In-memory stores: the handout's forgetful behaviour, and the reference the durable
stores must match (the same interface tests run against both)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import IBlockStore, IMailbox, StoredMessage

DEFAULT_MAILBOX_LIMIT = 100
"""Offline messages one user may have waiting. ejabberd's default is 100 and Ergo keeps
256; 100 messages of at most 1,000 characters bound a user's queue to about 400 KB, and
nobody reads more than that after coming back. Past it the *sender* is told, so nothing
is dropped silently."""


@implementer(IBlockStore)
class MemoryBlockStore:
    """Block lists as a dict of sets: every check is O(1)."""

    def __init__(self) -> None:
        self._blocked: defaultdict[str, set[str]] = defaultdict(set)

    def is_blocked(self, blocker: str, target: str) -> bool:
        blocked = self._blocked.get(blocker)
        return blocked is not None and target in blocked

    def block(self, blocker: str, target: str) -> Deferred[None]:
        self._blocked[blocker].add(target)
        return succeed(None)

    def unblock(self, blocker: str, target: str) -> Deferred[None]:
        blocked = self._blocked.get(blocker)
        if blocked is not None:
            blocked.discard(target)
            if not blocked:
                del self._blocked[blocker]
        return succeed(None)


@implementer(IMailbox)
class MemoryMailbox:
    """Offline messages as a deque per recipient: append and take are O(1) per message."""

    def __init__(self, limit: int = DEFAULT_MAILBOX_LIMIT) -> None:
        self.limit = limit
        self._queues: dict[str, deque[StoredMessage]] = {}
        self._next_key = 1

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        queue = self._queues.setdefault(recipient, deque())
        if len(queue) >= self.limit:
            return fail(QueueFull(recipient, self.limit))
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
            if remaining:
                self._queues[recipient] = remaining
            else:
                del self._queues[recipient]
        return succeed(None)
