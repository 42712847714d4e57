"""The domain when several nodes are one chat: :class:`ClusterChat` holds this node's
sessions, as :class:`Chat` does, and asks Redis for every decision that involves
anyone else (``scripts``). Events for this node's users (messages, broadcasts,
presence, private-session answers) all come through its inbox (``node``), this node's
own included, so each user sees them in the one order Redis gave them.

Idle timeouts stay per node: they are about a connection, which lives here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.errors import (
    AlreadyOnline,
    BlockedByRecipient,
    NoPeerListener,
    NoSuchUser,
    PrivateConflict,
    QueueFull,
    SelfTarget,
    SharedStateUnavailable,
    UserOffline,
)
from twisted_chat.interfaces import IChatClient
from twisted_chat.server.cluster import scripts
from twisted_chat.server.cluster.redis import REDIS_TROUBLE
from twisted_chat.server.cluster.scripts import Scripts
from twisted_chat.server.cluster.stores import ClusterAccounts, ClusterBlocks, RedisMailbox
from twisted_chat.server.core import Chat, Session
from twisted_chat.text import check_text


class ClusterChat(Chat):
    """This node's part of a chat shared through Redis."""

    log = Logger()
    accounts: ClusterAccounts
    blocks: ClusterBlocks

    def __init__(
        self,
        clock: IReactorTime,
        accounts: ClusterAccounts,
        blocks: ClusterBlocks,
        mailbox: RedisMailbox,
        redis: Scripts,
        node_id: str,
        timeout: float,
        private_request_ttl: float,
    ) -> None:
        super().__init__(clock, accounts, blocks, mailbox, timeout, private_request_ttl)
        self.redis = redis
        self.node_id = node_id
        self.mailbox_limit = mailbox.limit
        self.unreleased: set[str] = set()
        """Users who left this node while Redis could not be told: retried on each
        heartbeat (the node's heartbeat calls :meth:`retry_releases`)."""
        self.lapses: dict[str, dict[str, IDelayedCall]] = {}
        """Private requests made through this node: requester -> target -> the call
        that lapses the request (by requester, so a logout finds its own at once)."""
        self.announced: set[str] = set()
        """Users claimed back whose login the others never saw end: no new notice."""
        self.serving = False
        """The node has joined and loaded its replicas (``node.ClusterNode``): until
        then, and after it lost Redis, logins are refused as ``unavailable``."""

    # --- sessions -------------------------------------------------------------------

    def login(self, user: str, mind: IChatClient) -> Deferred[Session]:
        """Claim ``user`` in Redis for this node. The session exists here from the start,
        holding its events, so that none that Redis routes here meanwhile is lost."""
        try:
            session = self.attach(user, mind)
        except AlreadyOnline as e:
            return fail(e)
        session.hold()

        def claimed(answer: str) -> Session:
            if answer in ("ok", "back"):
                self.unreleased.discard(user)
                if answer == "back":  # the others never saw this user leave
                    self.announced.add(user)
                return session
            self._forget(session)
            if answer == "online":
                raise AlreadyOnline(user)
            raise SharedStateUnavailable()  # this node is not a member (yet, or now)

        def failed(failure: Failure) -> Failure:
            self._forget(session)
            return failure

        return self.redis.run(scripts.CLAIM, user, self.node_id).addCallbacks(claimed, failed)

    def require_offline(self, user: str) -> Deferred[None]:
        if not self.serving:
            return fail(SharedStateUnavailable())
        if user in self.online:
            return fail(AlreadyOnline(user))

        def holder(node: str | None) -> None:
            # Held through this node but not online here: a release still to reach
            # Redis, which the claim takes back.
            if node is not None and node != self.node_id:
                raise AlreadyOnline(user)

        d: Deferred[None] = self.redis.call("HGET", "chat:online", user).addCallback(holder)
        return d

    def begin(self, session: Session) -> Deferred[None]:
        """The session begins: everyone is told (through their inboxes, as every event
        is), then the idle timer and offline mail. Events have been held since the
        claim."""
        if session.name in self.announced:
            self.announced.discard(session.name)
        else:
            self.redis.run(scripts.ANNOUNCE, session.name, self.node_id).addErrback(
                self._not_announced, session.name
            )
        return self._welcome(session)

    def _not_announced(self, failure: Failure, user: str) -> None:
        failure.trap(*REDIS_TROUBLE)
        self.log.warn(
            "could not tell the others {user} logged in: {why}",
            user=user,
            why=failure.getErrorMessage(),
        )

    def detach(self, session: Session, reason: str) -> None:
        if not self._forget(session):
            return
        self._cancel_lapses(session.name)
        self.log.info("{user} logged out ({reason})", user=session.name, reason=reason)
        self._release(session.name)

    def _release(self, user: str) -> None:
        def failed(failure: Failure) -> None:
            failure.trap(*REDIS_TROUBLE)
            self.unreleased.add(user)

        self.redis.run(scripts.RELEASE, user, self.node_id).addErrback(failed)

    def retry_releases(self) -> None:
        """Tell Redis again of the users who left while it could not hear (a user back
        online through this node meanwhile is not: the claim took the name back)."""
        for user in list(self.unreleased):
            self.unreleased.discard(user)
            if user not in self.online:
                self._release(user)

    def stop(self) -> None:
        """End every session here ("shutdown"); the node's leaving releases them all
        in Redis in one script (``node.ClusterNode.stopService``)."""
        self.end_all("shutdown")

    def end_all(self, reason: str) -> None:
        """End every session here, telling each user ``reason``."""
        for user in list(self.lapses):
            self._cancel_lapses(user)
        sessions, self.online = self.online, {}
        for session in sessions.values():
            session.stop_timer()
            session.mind.end_session(reason)
        if sessions:
            self.log.info("ended {count} sessions ({reason})", count=len(sessions), reason=reason)

    def _cancel_lapses(self, user: str) -> None:
        for call in self.lapses.pop(user, {}).values():
            if call.active():
                call.cancel()

    def lapse_later(self, requester: str, target: str, call: IDelayedCall) -> None:
        """``call`` lapses ``requester``'s request to ``target`` (replacing one before)."""
        calls = self.lapses.setdefault(requester, {})
        old = calls.pop(target, None)
        if old is not None and old.active():
            old.cancel()
        calls[target] = call

    def lapse_forgotten(self, requester: str, target: str) -> None:
        """The request ended (answered, lapsed, a side left): no call lapses it now."""
        calls = self.lapses.get(requester)
        if calls is not None:
            calls.pop(target, None)
            if not calls:
                del self.lapses[requester]

    # --- events from this node's inbox ----------------------------------------------

    def on_event(self, event: Sequence[Any]) -> None:
        """One event from the inbox (see ``scripts``: a JSON array, kind first).
        Raises ``ValueError``/``TypeError``/``IndexError`` for one that is malformed."""
        kind = event[0]
        if kind == "m":
            to, sender, text, sent = _text(event[1]), _text(event[2]), _text(event[3]), event[4]
            recipient = self.online.get(to)
            if recipient is None:  # left this node after Redis routed it here
                self.redis.run(
                    scripts.REDELIVER, to, sender, text, float(sent), self.node_id
                ).addErrback(
                    lambda f: self.log.failure("redelivering a message for {user}", f, user=to)
                )
                return
            recipient.deliver(wire.Message(sender, text, float(sent)))
        elif kind == "b":
            self.deliver_broadcast(
                wire.Broadcast(_text(event[1]), _text(event[2]), float(event[3]))
            )
        elif kind == "p":
            self._announce(_text(event[1]), bool(event[2]))
        elif kind == "k":
            self.blocks.changed(_text(event[1]), _text(event[2]), bool(event[3]))
        elif kind == "a":
            self.accounts.learned(_text(event[1]), _text(event[2]))
        elif kind == "pr":
            self._to(event[1], wire.PrivateRequest(_text(event[2]), float(event[3])))
        elif kind == "pa":
            host, port = _text(event[4]), int(event[5])
            self._to(
                event[1],
                wire.PrivateAccepted(_text(event[2]), _text(event[3]), host, port, _text(event[6])),
            )
        elif kind == "pd":
            self._to(event[1], wire.PrivateDeclined(_text(event[2])))
        elif kind == "px":
            self._to(event[1], wire.PrivateExpired(_text(event[2]), _text(event[3])))
            self.lapse_forgotten(_text(event[1]), _text(event[2]))
        else:
            raise ValueError(f"unknown event kind {kind!r}")

    def _to(self, user: object, frame: wire.Frame) -> None:
        session = self.online.get(_text(user))
        if session is not None:
            session.deliver(frame)


def _routed(answer: str, to: str, limit: int) -> bool:
    """The route script's answer: whether the message was stored, or why not sent."""
    if answer == "sent":
        return False
    if answer == "stored":
        return True
    if answer == "full":
        raise QueueFull(to, limit)
    if answer == "blocked":
        raise BlockedByRecipient()
    raise NoSuchUser(to)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


class ClusterSession(Session):
    """A user online through this node: each command that involves others is one
    script in Redis. Argument errors come first and do not count as activity, as in
    :class:`Session`."""

    __slots__ = ()
    server: ClusterChat

    def _others_online(self) -> Deferred[list[str]]:
        return self._seen_since(-1)

    def _seen_since(self, seconds: int) -> Deferred[list[str]]:
        """From Redis (``scripts.SEEN``); -1: online now only."""
        d: Deferred[list[str]] = self.server.redis.run(
            scripts.SEEN, self.name, seconds
        ).addCallback(sorted)
        return d

    def _send(self, to: str, text: str) -> Deferred[bool]:
        """Routed by Redis: into the recipient node's inbox, or their mailbox. Fires
        with whether it was stored."""
        limit = self.server.mailbox_limit
        d: Deferred[bool] = self.server.redis.run(
            scripts.ROUTE, self.name, to, text, limit
        ).addCallback(_routed, to, limit)
        return d

    def broadcast(self, text: str) -> Deferred[bool]:
        check_text(text)
        self.touch()
        d: Deferred[bool] = self.server.redis.run(scripts.BROADCAST, self.name, text).addCallback(
            bool
        )
        return d

    def listening(self, host: str, port: int, fingerprint: str) -> Deferred[None]:
        super().listening(host, port, fingerprint)  # checks and keeps them
        d: Deferred[None] = self.server.redis.run(
            scripts.LISTENING, self.name, self.server.node_id, wire_peer(host, port, fingerprint)
        ).addCallback(lambda _: None)
        return d

    def start_private(self, user: str) -> Deferred[None]:
        self.touch()
        server = self.server
        me = self.name
        if user == me:
            raise SelfTarget.private()
        server.require_user(user)
        ttl = server.private.ttl
        token = secrets.token_urlsafe(12)

        def asked(answer: str) -> None:
            if answer == "ok":
                call = server.clock.callLater(ttl, self._lapse, user, token)
                server.lapse_later(me, user, call)
                return
            if answer == "offline":
                raise UserOffline(user)
            if answer == "blocked":
                raise BlockedByRecipient.private(user)
            if answer == "conflict":
                raise PrivateConflict.waiting(user)
            raise NoPeerListener(
                me if answer == "no-peer-yours" else user, yours=answer == "no-peer-yours"
            )

        d: Deferred[None] = server.redis.run(
            scripts.PRIVATE_REQUEST, me, user, round(ttl * 1000), token
        ).addCallback(asked)
        return d

    def _lapse(self, user: str, token: str) -> None:
        self.server.lapse_forgotten(self.name, user)
        self.server.redis.run(scripts.PRIVATE_LAPSE, self.name, user, token).addErrback(
            lambda f: None  # Redis expires the request by itself (its TTL)
        )

    def answer_private(self, user: str, accept: bool) -> Deferred[None]:
        self.touch()

        def answered(answer: str) -> None:
            if answer != "ok":
                raise PrivateConflict.none_from(user)

        d: Deferred[None] = self.server.redis.run(
            scripts.PRIVATE_ANSWER,
            self.name,
            user,
            "1" if accept else "0",
            secrets.token_urlsafe(24),
        ).addCallback(answered)
        return d


ClusterChat.session_type = ClusterSession


def wire_peer(host: str, port: int, fingerprint: str) -> str:
    """Where a client takes private sessions, as the ``peer`` hash holds it."""
    return json.dumps([host, port, fingerprint])
