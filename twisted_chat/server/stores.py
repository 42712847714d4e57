"""In-memory stores: the handout's forgetful behaviour, and the reference the durable
stores must match (the same interface tests run against both)."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import IBlockStore, IMailbox, StoredMessage

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
