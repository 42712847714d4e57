"""Who is online through which node, and the way to them, when several nodes share one
chat through Redis (``IDirectory``).

It carries and records; the rules are the core's. A user is claimed for a node when
they log in and released when they leave (the release publishes their logout to the
other nodes in the same step, so nobody hears of a logout that did not happen). A
message for a user on another node, or offline, is routed by Redis: into the inbox of
the node holding them, or their mailbox. Events go to every other node's inbox.

A release Redis could not take (it was away) is kept and tried again on every
heartbeat: until it lands, Redis would keep the user online through this node.
"""

from __future__ import annotations

import json
from collections.abc import Container

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.errors import AlreadyOnline, QueueFull, SharedStateUnavailable
from twisted_chat.interfaces import IDirectory, PeerAddress
from twisted_chat.server import events
from twisted_chat.server.cluster import primitives
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.redis import REDIS_TROUBLE


def node_key(node_id: str, incarnation: int) -> str:
    """A node as presence names it: its id and the incarnation it joined as (a node
    that rejoins is a new incarnation, whose users are not its old ones)."""
    return f"{node_id}#{incarnation}"


def incarnation_of(key: str) -> int:
    """The incarnation in a node key (0 if it holds none)."""
    _, _, number = key.rpartition("#")
    return int(number) if number.isdigit() else 0


@implementer(IDirectory)
class RedisDirectory:
    """The directory of one node of a chat on Redis."""

    log = Logger()

    def __init__(self, redis: Primitives, node_id: str) -> None:
        self._redis = redis
        self.node_id = node_id
        self.node = ""
        """This node's key (``node_key``) once it has joined; '' before."""
        self.ready = False
        """Joined, and its copies of the shared state loaded: logins are taken. Not
        before, and not after it lost Redis, until it has joined again."""
        self._unreleased: dict[str, events.Presence] = {}
        """Users who left while Redis could not be told, and their logout notice."""
        self._unrouted: list[events.DirectMessage] = []
        """Messages that reached this node for a user who had left it, and that Redis
        could not take back then: accepted already (their senders were told), so kept
        here and routed again when Redis answers, never dropped."""

    def joined(self, incarnation: int) -> None:
        self.node = node_key(self.node_id, incarnation)

    # --- IDirectory -------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready:
            raise SharedStateUnavailable()

    def held_elsewhere(self, user: str) -> Deferred[bool]:
        d: Deferred[bool] = self._redis.call("HGET", "chat:online", user).addCallback(
            lambda node: node is not None and node != self.node_id
        )
        return d

    def claim(self, user: str) -> Deferred[None]:
        if not self.ready:
            return fail(SharedStateUnavailable())
        self._unreleased.pop(user, None)  # the claim takes the name back (it is ours)

        def claimed(answer: str) -> None:
            if answer == "online":
                raise AlreadyOnline(user)
            if answer != "ok":
                raise SharedStateUnavailable()  # this node is not a member (yet, or now)

        d: Deferred[None] = self._redis.run(primitives.CLAIM, user, self.node_id).addCallback(
            claimed
        )
        return d

    def release(self, user: str, presence: events.Presence) -> None:
        def failed(failure: Failure) -> None:
            failure.trap(*REDIS_TROUBLE)
            self._unreleased[user] = presence

        self._redis.run(
            primitives.RELEASE, user, self.node_id, presence.when, events.encode(presence)
        ).addErrback(failed)

    def retry_pending(self, online_here: Container[str]) -> None:
        """Redis answers again: tell it of users who left while it could not hear (not
        of one back online through this node meanwhile: their claim took the name
        back), and route again the messages it could not take."""
        waiting, self._unreleased = self._unreleased, {}
        for user, presence in waiting.items():
            if user not in online_here:
                self.release(user, presence)
        unrouted, self._unrouted = self._unrouted, []
        for message in unrouted:
            self.reroute(message)

    def publish(self, event: events.Event) -> None:
        self._redis.run(primitives.PUBLISH, events.encode(event), self.node_id).addErrback(
            self._lost, event.KIND
        )

    def route(self, message: events.DirectMessage, limit: int) -> Deferred[bool]:
        def routed(answer: str) -> bool:
            if answer == "full":
                raise QueueFull(message.to, limit)
            return answer == "stored"

        d: Deferred[bool] = self._redis.run(
            primitives.ROUTE, message.to, events.encode(message), limit, self.node_id
        ).addCallback(routed)
        return d

    def reroute(self, message: events.DirectMessage) -> None:
        # Accepted already (its sender was told): past any cap, never lost, and never
        # back here, where Redis may not yet have heard that the user left.
        def failed(failure: Failure) -> None:
            failure.trap(*REDIS_TROUBLE)
            self._unrouted.append(message)

        self._redis.run(
            primitives.ROUTE, message.to, events.encode(message), 0, self.node_id
        ).addErrback(failed)

    def tell(self, user: str, frame: wire.Frame) -> Deferred[bool]:
        d: Deferred[bool] = self._redis.run(
            primitives.TELL, user, events.encode(events.ForUser(user, frame))
        ).addCallback(bool)
        return d

    def set_peer(self, user: str, peer: PeerAddress) -> Deferred[None]:
        where = json.dumps([peer.host, peer.port, peer.fingerprint])
        d: Deferred[None] = self._redis.run(
            primitives.SET_PEER, user, self.node_id, where
        ).addCallback(lambda _: None)
        return d

    def peer_of(self, user: str) -> Deferred[PeerAddress | None]:
        def parsed(value: str | None) -> PeerAddress | None:
            if value is None:
                return None
            try:
                host, port, fingerprint = json.loads(value)
                return PeerAddress(str(host), int(port), str(fingerprint))
            except (ValueError, TypeError):
                self.log.error("the peer address Redis holds for {user} does not parse", user=user)
                return None

        d: Deferred[PeerAddress | None] = self._redis.call("HGET", "chat:peer", user).addCallback(
            parsed
        )
        return d

    def _lost(self, failure: Failure, kind: str) -> None:
        failure.trap(*REDIS_TROUBLE)
        self.log.warn(
            "an event of kind {kind} did not reach the other nodes: {why}",
            kind=kind,
            why=failure.getErrorMessage(),
        )
