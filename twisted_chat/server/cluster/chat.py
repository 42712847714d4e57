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
    AlreadyBlocked,
    AlreadyOnline,
    BadArgument,
    BlockedByRecipient,
    NoPeerListener,
    NoSuchUser,
    NotBlocked,
    PrivateConflict,
    QueueFull,
    SelfTarget,
    SharedStateUnavailable,
    UserOffline,
)
from twisted_chat.interfaces import IChatClient
from twisted_chat.server.cluster import scripts
from twisted_chat.server.cluster.redis import RedisError
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
        self.lapses: dict[tuple[str, str], IDelayedCall] = {}
        """Private requests made through this node -> the call that lapses them."""
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
        failure.trap(SharedStateUnavailable, RedisError)
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
            failure.trap(SharedStateUnavailable, RedisError)
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
        for call in self.lapses.values():
            if call.active():
                call.cancel()
        self.lapses.clear()
        sessions, self.online = self.online, {}
        for session in sessions.values():
            if session.timer is not None and session.timer.active():
                session.timer.cancel()
            session.timer = None
            session.mind.end_session(reason)
        if sessions:
            self.log.info("ended {count} sessions ({reason})", count=len(sessions), reason=reason)

    def _cancel_lapses(self, user: str) -> None:
        for key in [k for k in self.lapses if k[0] == user]:
            call = self.lapses.pop(key)
            if call.active():
                call.cancel()

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
            sender, text, sent = _text(event[1]), _text(event[2]), float(event[3])
            frame: wire.Frame = wire.Broadcast(sender, text, sent)
            blockers = self.blocks.blockers_of(sender)
            for other, session in self.online.items():
                if other != sender and other not in blockers:
                    session.deliver(frame)
        elif kind == "p":
            user, online = _text(event[1]), bool(event[2])
            frame = wire.Presence(user, online)
            hidden_from = self.blocks.blocked_by(user)
            for other, session in self.online.items():
                if other != user and other not in hidden_from:
                    session.deliver(frame)
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
            self.lapses.pop((_text(event[1]), _text(event[2])), None)
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

    def whoelse(self) -> Deferred[list[str]]:
        self.touch()
        return self._seen(-1)

    def whoelsesince(self, seconds: int) -> Deferred[list[str]]:
        if seconds < 0:
            raise BadArgument("Error. whoelsesince takes a number of seconds, 0 or more.")
        self.touch()
        return self._seen(seconds)

    def _seen(self, seconds: int) -> Deferred[list[str]]:
        d: Deferred[list[str]] = self.server.redis.run(
            scripts.SEEN, self.name, seconds
        ).addCallback(sorted)
        return d

    def accounts(self) -> Deferred[dict[str, object]]:
        names = self.server.accounts.names()
        listed = names[: wire.MAX_ACCOUNT_NAMES]
        blocked = sorted(self.server.blocks.blocked_by(self.name))

        def answer(online: list[str]) -> dict[str, object]:
            return {
                "users": listed,
                "truncated": len(names) > len(listed),
                "online": online,
                "blocked": blocked,
            }

        return self._seen(-1).addCallback(answer)

    def message(self, to: str, text: str) -> Deferred[bool]:
        """Routed by Redis: into the recipient node's inbox, or their mailbox. Fires
        with whether it was stored."""
        check_text(text)
        self.touch()
        server = self.server
        if to == self.name:
            raise SelfTarget("Error. You cannot message yourself.")
        server.require_user(to)
        if server.blocks.is_blocked(to, self.name):
            raise BlockedByRecipient()
        limit = server.mailbox_limit
        d: Deferred[bool] = server.redis.run(scripts.ROUTE, self.name, to, text, limit).addCallback(
            _routed, to, limit
        )
        return d

    def broadcast(self, text: str) -> Deferred[bool]:
        check_text(text)
        self.touch()
        d: Deferred[bool] = self.server.redis.run(scripts.BROADCAST, self.name, text).addCallback(
            bool
        )
        return d

    def block(self, user: str) -> Deferred[None]:
        return self._block(user, True)

    def unblock(self, user: str) -> Deferred[None]:
        return self._block(user, False)

    def _block(self, user: str, on: bool) -> Deferred[None]:
        self.touch()
        if user == self.name:
            raise SelfTarget(f"Error. Cannot {'block' if on else 'unblock'} self.")
        self.server.require_user(user)
        if self.server.blocks.is_blocked(self.name, user) is on:
            raise AlreadyBlocked(user) if on else NotBlocked(user)
        return (
            self.server.blocks.block(self.name, user)
            if on
            else self.server.blocks.unblock(self.name, user)
        )

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
            raise SelfTarget("Error. You cannot start a private session with yourself.")
        server.require_user(user)
        ttl = server.private.ttl
        token = secrets.token_urlsafe(12)

        def asked(answer: str) -> None:
            if answer == "ok":
                key = (me, user)
                old = server.lapses.pop(key, None)
                if old is not None and old.active():
                    old.cancel()
                server.lapses[key] = server.clock.callLater(ttl, self._lapse, user, token)
                return
            if answer == "offline":
                raise UserOffline(user)
            if answer == "blocked":
                raise BlockedByRecipient(
                    f"Error. You cannot start a private session with {user}: "
                    "the user has blocked you."
                )
            if answer == "conflict":
                raise PrivateConflict(
                    f"Error. A private request between you and {user} is "
                    "already waiting for an answer."
                )
            raise NoPeerListener(
                me if answer == "no-peer-yours" else user, yours=answer == "no-peer-yours"
            )

        d: Deferred[None] = server.redis.run(
            scripts.PRIVATE_REQUEST, me, user, round(ttl * 1000), token
        ).addCallback(asked)
        return d

    def _lapse(self, user: str, token: str) -> None:
        self.server.lapses.pop((self.name, user), None)
        self.server.redis.run(scripts.PRIVATE_LAPSE, self.name, user, token).addErrback(
            lambda f: None  # Redis expires the request by itself (its TTL)
        )

    def answer_private(self, user: str, accept: bool) -> Deferred[None]:
        self.touch()

        def answered(answer: str) -> None:
            if answer != "ok":
                raise PrivateConflict(f"Error. There is no private request from {user}.")

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
