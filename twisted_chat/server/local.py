"""The seams of a chat that is one process: a directory with no elsewhere, private-chat
requests and lockout counts in memory. ``server.cluster`` has the same three over
Redis; the core's rules run unchanged over either.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.interfaces import (
    IDirectory,
    IMailbox,
    IPrivateRequests,
    IStrikeStore,
    PeerAddress,
    PendingRequest,
    Strikes,
)
from twisted_chat.server import events
from twisted_chat.server.lockout import fresh

Pair = tuple[str, str]


@implementer(IDirectory)
class LocalDirectory:
    """Every user online is online here, so there is nobody to reach elsewhere: a
    message for someone not here is for their mailbox, and nothing is published."""

    node = ""

    def __init__(self, mailbox: IMailbox) -> None:
        self._mailbox = mailbox

    def check_ready(self) -> None:
        return None

    def held_elsewhere(self, user: str) -> bool:
        return False

    def claim(self, user: str) -> None:
        return None  # the chat's own table of sessions is the whole truth

    def release(self, user: str, presence: events.Presence) -> None:
        return None

    def publish(self, event: events.Event) -> None:
        return None

    def route(self, message: events.DirectMessage, limit: int) -> Deferred[bool]:
        return self._mailbox.append(message.to, message.stored()).addCallback(_stored)

    def reroute(self, message: events.DirectMessage) -> None:
        # Only another node's message can arrive for someone not here.
        raise AssertionError("one process routes no message through other nodes")

    def tell(self, user: str, frame: wire.Frame) -> bool:
        return False

    def set_peer(self, user: str, peer: PeerAddress) -> None:
        return None

    def peer_of(self, user: str) -> None:
        return None


def _stored(_: object) -> bool:
    return True


@implementer(IPrivateRequests)
class MemoryPrivateRequests:
    """Requests by (requester, target), and by user, so that a logout finds its own in
    O(their requests)."""

    def __init__(self) -> None:
        self._pending: dict[Pair, PendingRequest] = {}
        self._by_user: dict[str, set[Pair]] = {}

    def open(
        self, requester: str, target: str, pending: PendingRequest, ttl: float
    ) -> Deferred[bool]:
        pair = (requester, target)
        if pair in self._pending or (target, requester) in self._pending:
            return succeed(False)
        self._pending[pair] = pending
        for user in pair:
            self._by_user.setdefault(user, set()).add(pair)
        return succeed(True)

    def take(self, requester: str, target: str) -> Deferred[PendingRequest | None]:
        return succeed(self._remove((requester, target)))

    def lapse(self, requester: str, target: str, token: str) -> Deferred[bool]:
        pair = (requester, target)
        pending = self._pending.get(pair)
        if pending is None or pending.token != token:
            return succeed(False)
        self._remove(pair)
        return succeed(True)

    def drop_user(self, user: str) -> Deferred[list[Pair]]:
        pairs = sorted(self._by_user.get(user, ()))
        for pair in pairs:
            self._remove(pair)
        return succeed(pairs)

    def _remove(self, pair: Pair) -> PendingRequest | None:
        pending = self._pending.pop(pair, None)
        if pending is not None:
            for user in pair:
                pairs = self._by_user[user]
                pairs.discard(pair)
                if not pairs:
                    del self._by_user[user]
        return pending


@implementer(IStrikeStore)
class MemoryStrikes:
    """Strike records in a dict, with the injected clock's time. A record exists only
    for a username with recent failures; one that no longer matters is dropped when
    next read."""

    def __init__(self, clock: IReactorTime, block_duration: float) -> None:
        self._clock = clock
        self._block_duration = block_duration
        self._records: dict[str, tuple[Strikes, int]] = {}

    def read(self, user: str) -> Deferred[tuple[Strikes, int, float]]:
        now = self._clock.seconds()
        strikes, version = self._records.get(user, (Strikes(), 0))
        if version and not fresh(strikes, now, self._block_duration):
            del self._records[user]
            strikes, version = Strikes(), 0
        return succeed((strikes, version, now))

    def write(self, user: str, version: int, strikes: Strikes, ttl: float) -> Deferred[bool]:
        _, current = self._records.get(user, (Strikes(), 0))
        if current != version:
            return succeed(False)
        self._records[user] = (strikes, version + 1)
        return succeed(True)

    def clear(self, user: str) -> Deferred[None]:
        self._records.pop(user, None)
        return succeed(None)
