"""Consent to private sessions, written once: a request, its y/n, its lapse.

A request waits for the target's answer for ``ttl`` seconds. An approval hands both
sides a fresh one-time token and each the other's certificate fingerprint; the
requester also learns where the target's client listens. The requests themselves live
in an :class:`IPrivateRequests` store (this process's memory, or Redis when several
nodes share the chat), whose every change is atomic: of two answers, or an answer and
the lapse, exactly one wins. Notices reach users through ``Chat.tell``, wherever they
are online. The lapse's timer is kept by the node the request was made through.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.errors import (
    BlockedByRecipient,
    NoPeerListener,
    PeerUnsupported,
    PrivateConflict,
    SelfTarget,
    UserOffline,
)
from twisted_chat.interfaces import IPrivateRequests, Now, PeerAddress, PendingRequest

if TYPE_CHECKING:
    from twisted_chat.server.core import Chat
    from twisted_chat.server.session import Session

DEFAULT_PRIVATE_REQUEST_TTL = 60.0
"""Seconds a private-session request waits for a y/n before it lapses."""

T = TypeVar("T")

Pair = tuple[str, str]
"""(requester, target)."""


class PrivateBroker:
    """Pending private-session requests and their consent."""

    log = Logger()

    def __init__(self, chat: Chat, requests: IPrivateRequests, ttl: float) -> None:
        self._chat = chat
        self.requests = requests
        self.ttl = ttl
        self._lapses: dict[Pair, IDelayedCall] = {}
        """Requests made through this node -> the call that lapses each."""

    def request(self, requester: Session, target: str) -> Deferred[None]:
        chat = self._chat
        me = requester.name
        if target == me:
            raise SelfTarget.private()
        chat.require_user(target)
        if not chat.is_online(target):
            raise UserOffline(target)
        if not chat.may_reach(me, target):
            raise BlockedByRecipient.private(target)
        mine = requester.peer
        if mine is None:
            raise NoPeerListener(me, yours=True)
        if not mine.takes_peers:
            raise PeerUnsupported(me, yours=True)
        token = secrets.token_urlsafe(24)

        async def ask() -> None:
            theirs = await _now(chat.peer_of(target))
            if theirs is None:
                raise NoPeerListener(target)
            if not theirs.takes_peers:
                # Nothing to consent to: the requester hears why, and the user in the
                # browser who asked (so that they can answer some other way).
                await _now(chat.tell(target, wire.PrivateUnsupported(me)))
                raise PeerUnsupported(target)
            opened = await self.requests.open(
                me, target, PendingRequest(token, mine.fingerprint), self.ttl
            )
            if not opened:
                raise PrivateConflict.waiting(target)
            if not await _now(chat.tell(target, wire.PrivateRequest(me, self.ttl))):
                await self.requests.take(me, target)  # gone meanwhile: nothing waits
                raise UserOffline(target)
            self._lapse_later((me, target), token)

        return Deferred.fromCoroutine(ask())

    def answer(self, target: Session, requester: str, accept: bool) -> Deferred[None]:
        chat = self._chat
        pair = (requester, target.name)

        async def answer() -> None:
            pending = await self.requests.take(*pair)
            self._cancel_lapse(pair)
            if pending is None:
                raise PrivateConflict.none_from(requester)
            if not accept:
                await _now(chat.tell(requester, wire.PrivateDeclined(target.name)))
                return
            token = secrets.token_urlsafe(24)
            where = target.peer or PeerAddress("", 0, "")
            approval = wire.PrivateAccepted(
                target.name, token, where.host, where.port, where.fingerprint
            )
            if not await _now(chat.tell(requester, approval)):
                raise PrivateConflict.none_from(requester)  # the requester just left
            target.deliver(wire.PrivateAccepted(requester, token, fingerprint=pending.fingerprint))
            self.log.info("private session approved: {a} -> {b}", a=requester, b=target.name)

        return Deferred.fromCoroutine(answer())

    def user_left(self, user: str) -> None:
        """``user`` went offline: the requests they take part in end, and whoever is on
        the other side is told."""

        def ended(pairs: list[Pair]) -> None:
            for pair in pairs:
                self._cancel_lapse(pair)
                requester, target = pair
                other = target if requester == user else requester
                self._tell_anyway(other, wire.PrivateExpired(user, "left"))

        self.requests.drop_user(user).addCallbacks(ended, self._trouble, errbackArgs=(user,))

    def cancel_all(self) -> None:
        """This node stops: none of its timers outlives it (the requests themselves
        lapse where they are kept)."""
        for call in self._lapses.values():
            if call.active():
                call.cancel()
        self._lapses.clear()

    def _lapse_later(self, pair: Pair, token: str) -> None:
        self._cancel_lapse(pair)
        self._lapses[pair] = self._chat.clock.callLater(self.ttl, self._lapse, pair, token)

    def _cancel_lapse(self, pair: Pair) -> None:
        call = self._lapses.pop(pair, None)
        if call is not None and call.active():
            call.cancel()

    def _lapse(self, pair: Pair, token: str) -> None:
        self._lapses.pop(pair, None)
        requester, target = pair

        def lapsed(removed: bool) -> None:
            if removed:  # still unanswered: both are told
                self._tell_anyway(requester, wire.PrivateExpired(target, "unanswered"))
                self._tell_anyway(target, wire.PrivateExpired(requester, "unanswered"))

        self.requests.lapse(requester, target, token).addCallbacks(
            lapsed, self._trouble, errbackArgs=(requester,)
        )

    def _tell_anyway(self, user: str, frame: wire.Frame) -> None:
        told = self._chat.tell(user, frame)
        if isinstance(told, Deferred):
            told.addErrback(self._trouble, user)

    def _trouble(self, failure: Failure, user: str) -> None:
        """Background work (a lapse, a departure) could not reach the shared state:
        the request then lapses where it is kept, without a notice."""
        self.log.warn(
            "a private-chat notice involving {user} was not delivered: {why}",
            user=user,
            why=failure.getErrorMessage(),
        )


async def _now(value: Now[T]) -> T:
    """The value of a result that may still be coming."""
    return await value if isinstance(value, Deferred) else value
