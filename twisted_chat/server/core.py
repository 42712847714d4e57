"""The domain core: who is online, presence, routing, block effects, offline mail, idle
timeouts and private-session brokering.

No sockets and no global reactor: time comes from an injected ``IReactorTime`` and
users are reached through their mind (:class:`IChatClient`). Every per-message operation
is O(1) per recipient; a broadcast or a presence notice is O(online users) with one
shared event object (encoded once by the protocol layer).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TypeAlias, TypeVar

from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twisted_chat import wire
from twisted_chat.certs import is_fingerprint
from twisted_chat.errors import (
    AlreadyBlocked,
    AlreadyOnline,
    BadArgument,
    BlockedByRecipient,
    NoPeerListener,
    NoSuchUser,
    NotBlocked,
    PrivateConflict,
    SelfTarget,
    UserOffline,
)
from twisted_chat.interfaces import (
    IAccountStore,
    IBlockStore,
    IChatClient,
    IChatUser,
    IMailbox,
    StoredMessage,
)
from twisted_chat.text import check_text

IDLE_WARNING = 10.0
"""Seconds before an idle logout that the user is warned (when the timeout is at
least twice that: a warning at once would be noise)."""

DEFAULT_PRIVATE_REQUEST_TTL = 60.0
"""Seconds a private-session request waits for a y/n before it lapses."""

T = TypeVar("T")
U = TypeVar("U")
Now: TypeAlias = T | Deferred[T]
"""A command's result: at once in one process, once Redis has answered in a cluster
(``cluster.chat``); the protocol answers either way."""


def then(value: Now[T], f: Callable[[T], U]) -> Now[U]:
    """``f(value)``, now or once ``value`` is known."""
    if isinstance(value, Deferred):
        return value.addCallback(f)
    return f(value)


class PresenceHistory:
    """When each user who has been online this run last went offline.

    Kept in logout order (most recent last), so ``offline_since(cutoff)`` walks back
    only over the users it returns: O(result), never a scan of every user.
    """

    def __init__(self) -> None:
        self._last_logout: OrderedDict[str, float] = OrderedDict()

    def went_offline(self, user: str, when: float) -> None:
        self._last_logout.pop(user, None)
        self._last_logout[user] = when

    def offline_since(self, cutoff: float) -> Iterator[str]:
        """Users whose last logout was at or after ``cutoff``."""
        for user in reversed(self._last_logout):
            if self._last_logout[user] < cutoff:
                return
            yield user


class Chat:
    """The shared state of one chat server and the rules over it."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        accounts: IAccountStore,
        blocks: IBlockStore,
        mailbox: IMailbox,
        timeout: float,
        private_request_ttl: float = DEFAULT_PRIVATE_REQUEST_TTL,
    ) -> None:
        self.clock = clock
        self.accounts = accounts
        self.blocks = blocks
        self.mailbox = mailbox
        self.timeout = timeout
        self.started = clock.seconds()
        self.history = PresenceHistory()
        self.online: dict[str, Session] = {}
        """Logged-in users by name: the routing table."""
        self.private = PrivateBroker(self, private_request_ttl)

    session_type: type[Session]
    """What :meth:`attach` makes (set below, once ``Session`` exists)."""

    # --- sessions -------------------------------------------------------------------

    def is_online(self, user: str) -> bool:
        return user in self.online

    def require_offline(self, user: str) -> Now[None]:
        """Raise (or fail with) :class:`AlreadyOnline` if ``user`` is logged in: asked
        at the username, so that nobody types a password for nothing. The login's
        claim (:meth:`login`) decides; this only asks early."""
        if user in self.online:
            raise AlreadyOnline(user)
        return None

    def login(self, user: str, mind: IChatClient) -> Now[Session]:
        """The realm's half of logging in: ``user`` is online from now on."""
        return self.attach(user, mind)

    def attach(self, user: str, mind: IChatClient) -> Session:
        """Register ``user`` as online in this process."""
        if user in self.online:
            raise AlreadyOnline(user)
        session = self.session_type(self, user, mind)
        self.online[user] = session
        return session

    def begin(self, session: Session) -> Deferred[None]:
        """Side effects of a login, once the client has its welcome: tell the others,
        start the idle timer, deliver offline mail (in the order it was sent).

        Reading the mail may wait on the disk; events for this user that come meanwhile
        are held and follow the mail, so nothing overtakes an older message."""
        session.hold()
        self._announce(session.name, online=True)
        return self._welcome(session)

    def _welcome(self, session: Session) -> Deferred[None]:
        """The idle timer, and the offline mail; events held meanwhile follow it."""
        session.timer = self.clock.callLater(self.quiet_before_warning, self._idle, session)
        self.log.info("{user} logged in", user=session.name)
        user = session.name

        def deliver(stored: list[StoredMessage]) -> None:
            if self.online.get(user) is not session or not stored:
                return  # gone before the mail came, or none: nothing to do
            for item in stored:
                session.mind.deliver(
                    wire.Message(item.sender, item.text, item.sent, True, item.key)
                )
            # Kept until the client says it has them (``received``): written to a socket
            # is not received, and a client may drop right after logging in.
            session.unacknowledged = stored
            session.mind.deliver(wire.StoredDone(stored[-1].key, len(stored)))

        def release(result: object) -> object:
            session.release()
            return result

        return self.mailbox.pending(user).addCallback(deliver).addBoth(release)

    def detach(self, session: Session, reason: str) -> None:
        """The user is gone (logout, timeout, lost connection). Idempotent."""
        if not self._forget(session):
            return
        self.history.went_offline(session.name, self.clock.seconds())
        self.private.user_left(session.name)
        self._announce(session.name, online=False)
        self.log.info("{user} logged out ({reason})", user=session.name, reason=reason)

    def _forget(self, session: Session) -> bool:
        """Take ``session`` out of this process; False if it was not in it."""
        if self.online.get(session.name) is not session:
            return False
        del self.online[session.name]
        session.stop_timer()
        return True

    def stop(self) -> None:
        """End every session (server shutdown): each user gets one ``shutdown`` event
        and nothing else, since everyone is leaving, no presence notice is due to
        anyone (one per pair would be O(N²) frames to sockets about to close). No timer
        outlives the service."""
        self.private.cancel_all()
        now = self.clock.seconds()
        sessions, self.online = self.online, {}
        for session in sessions.values():
            session.stop_timer()
            self.history.went_offline(session.name, now)
            session.mind.end_session("shutdown")
        self.log.info("server stopping: ended {count} sessions", count=len(sessions))

    @property
    def quiet_before_warning(self) -> float:
        """Idle seconds before the warning (or, with a short timeout, the logout)."""
        return self.timeout - IDLE_WARNING if self.timeout >= 2 * IDLE_WARNING else self.timeout

    def _idle(self, session: Session) -> None:
        """The idle timer fired: warn first, when there is room; log out after."""
        if not session.warned and self.timeout >= 2 * IDLE_WARNING:
            session.warned = True
            session.timer = self.clock.callLater(IDLE_WARNING, self._idle, session)
            session.deliver(wire.IdleWarning(IDLE_WARNING))
            return
        session.timer = None
        session.mind.end_session("timeout")
        self.detach(session, "timeout")

    def deliver_broadcast(self, event: wire.Broadcast) -> bool:
        """``event`` to everyone online here but its sender and those who block the
        sender; return whether anyone was skipped for that reason."""
        sender = event.sender
        blockers = self.blocks.blockers_of(sender)
        skipped = False
        for other, session in self.online.items():
            if other == sender:
                continue
            if other in blockers:
                skipped = True
            else:
                session.deliver(event)
        return skipped

    def _announce(self, user: str, online: bool) -> None:
        """Presence to everyone online except ``user`` and those ``user`` blocks."""
        event = wire.Presence(user, online)
        hidden_from = self.blocks.blocked_by(user)
        for other, session in self.online.items():
            if other != user and other not in hidden_from:
                session.deliver(event)

    # --- checks shared by commands ----------------------------------------------------

    def require_user(self, user: str) -> None:
        if not self.accounts.exists(user):
            raise NoSuchUser(user)


@implementer(IChatUser)
class Session:
    """A logged-in user: the avatar the protocol calls. Each public method is one
    command; argument errors come before :meth:`touch` so that malformed commands do
    not count as activity, domain errors (unknown user, ...) after it."""

    # One per online user: slots keep the idle cost per user down (docs/performance.md).
    __slots__ = (
        "_held",
        "mind",
        "name",
        "peer_fingerprint",
        "peer_host",
        "peer_port",
        "server",
        "timer",
        "unacknowledged",
        "warned",
    )

    def __init__(self, server: Chat, name: str, mind: IChatClient) -> None:
        self.server = server
        self.name = name
        self.mind = mind
        self.timer: IDelayedCall | None = None
        self.warned = False
        """The user was told the idle logout is near; the timer then runs to it."""
        self.peer_host = ""
        self.peer_port = 0
        """Where this user's client accepts private-session connections (0: nowhere)."""
        self.peer_fingerprint = ""
        """The certificate this user's client shows its peers (SHA-256, hex)."""
        self._held: list[wire.Frame] | None = None
        """Events waiting while offline mail is read (see Chat.begin)."""
        self.unacknowledged: Sequence[StoredMessage] = ()
        """Stored messages sent at login and not yet acknowledged by the client."""

    def received(self, upto: int) -> Deferred[None]:
        """The client has the stored messages up to key ``upto``: forget them. Sent by
        the client itself, so not user activity."""
        done = [m for m in self.unacknowledged if m.key <= upto]
        self.unacknowledged = [m for m in self.unacknowledged if m.key > upto]
        if not done:
            return succeed(None)
        return self.server.mailbox.delivered(self.name, done)

    def deliver(self, event: wire.Frame) -> None:
        """Push an event to this user, after any offline mail still being read."""
        if self._held is None:
            self.mind.deliver(event)
        else:
            self._held.append(event)

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for event in held:
            self.mind.deliver(event)

    def stop_timer(self) -> None:
        """The session is ending: its idle timer goes."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def touch(self) -> None:
        """The user did something: restart the idle timer (reset, not recreated)."""
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.server.quiet_before_warning)
            self.warned = False

    def logout(self) -> None:
        """cred's logout callable; also the ``logout`` command."""
        self.server.detach(self, "logout")

    def lost(self) -> None:
        self.server.detach(self, "connection lost")

    # --- presence queries -----------------------------------------------------------

    def whoelse(self) -> Now[list[str]]:
        self.touch()
        return self._others_online()

    def _others_online(self) -> Now[list[str]]:
        """Who else is online, less those who block us, sorted (the cluster asks
        Redis)."""
        me = self.name
        is_blocked = self.server.blocks.is_blocked
        return sorted(u for u in self.server.online if u != me and not is_blocked(u, me))

    def whoelsesince(self, seconds: int) -> Now[list[str]]:
        if seconds < 0:
            raise BadArgument("Error. whoelsesince takes a number of seconds, 0 or more.")
        self.touch()
        return self._seen_since(seconds)

    def _seen_since(self, seconds: int) -> Now[list[str]]:
        """Who is online or logged out at most ``seconds`` ago, less us and those who
        block us, sorted (the cluster asks Redis)."""
        server = self.server
        cutoff = server.clock.seconds() - seconds
        names = set(server.online)
        names.update(server.history.offline_since(cutoff))
        names.discard(self.name)
        is_blocked = server.blocks.is_blocked
        return sorted(u for u in names if not is_blocked(u, self.name))

    def accounts(self) -> Now[dict[str, object]]:
        """The account names (sorted, at most ``wire.MAX_ACCOUNT_NAMES``), who else is
        online (as ``whoelse``), and whom we block: what a client needs to complete
        names and to say "not a user" or "offline" without asking each time. The
        names are the store's, kept sorted between changes: no sort per call."""
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

        return then(self._others_online(), answer)

    # --- messaging --------------------------------------------------------------------

    def message(self, to: str, text: str) -> Deferred[bool] | None:
        """Deliver now if ``to`` is online (and return None: done), else queue it for
        later (and return a Deferred that fires with whether it was stored, once it
        is). The common case answers synchronously, without the Deferred machinery."""
        check_text(text)
        self.touch()
        server = self.server
        if to == self.name:
            raise SelfTarget("Error. You cannot message yourself.")
        server.require_user(to)
        if server.blocks.is_blocked(to, self.name):
            raise BlockedByRecipient()
        return self._send(to, text)

    def _send(self, to: str, text: str) -> Deferred[bool] | None:
        """A message that passed every check: delivered here, or stored (the cluster
        routes it through Redis)."""
        server = self.server
        now = server.clock.seconds()
        recipient = server.online.get(to)
        if recipient is not None:
            recipient.deliver(wire.Message(self.name, text, now))
            return None
        return server.mailbox.append(to, StoredMessage(self.name, text, now)).addCallback(_stored)

    def broadcast(self, text: str) -> Now[bool]:
        """Send to every other online user who has not blocked us; return whether
        anyone was skipped for that reason."""
        check_text(text)
        self.touch()
        server = self.server
        return server.deliver_broadcast(wire.Broadcast(self.name, text, server.clock.seconds()))

    # --- block lists ----------------------------------------------------------------

    def block(self, user: str) -> Deferred[None]:
        self.touch()
        if user == self.name:
            raise SelfTarget("Error. Cannot block self.")
        self.server.require_user(user)
        if self.server.blocks.is_blocked(self.name, user):
            raise AlreadyBlocked(user)
        return self.server.blocks.block(self.name, user)

    def unblock(self, user: str) -> Deferred[None]:
        self.touch()
        if user == self.name:
            raise SelfTarget("Error. Cannot unblock self.")
        self.server.require_user(user)
        if not self.server.blocks.is_blocked(self.name, user):
            raise NotBlocked(user)
        return self.server.blocks.unblock(self.name, user)

    # --- private sessions -----------------------------------------------------------

    def listening(self, host: str, port: int, fingerprint: str) -> Now[None]:
        """Record where our client accepts peers, and the certificate it shows them.
        Not user activity."""
        # Never a privileged port: the server hands this address to other users'
        # clients, which connect to it (an ssh or mail port would make them a weapon).
        if not 1024 <= port <= 65535:
            raise BadArgument("Error. A peer port is a number from 1024 to 65535.")
        if not is_fingerprint(fingerprint):
            raise BadArgument("Error. A peer fingerprint is 64 lowercase hex digits (SHA-256).")
        self.peer_host = host
        self.peer_port = port
        self.peer_fingerprint = fingerprint
        return None

    def start_private(self, user: str) -> Now[None]:
        self.touch()
        self.server.private.request(self, user)
        return None

    def answer_private(self, user: str, accept: bool) -> Now[None]:
        self.touch()
        self.server.private.answer(self, user, accept)
        return None

    def activity(self) -> None:
        """Our client did something the server cannot see (a private message)."""
        self.touch()


def _stored(_: object) -> bool:
    return True


Chat.session_type = Session


class PrivateBroker:
    """Pending private-session requests and their consent.

    A request waits for the target's y/n for ``ttl`` seconds; an approval hands both
    sides the same one-time token, which the connecting side must present to the
    listening side. Requests are indexed by both users so that a logout cancels that
    user's requests in O(their requests).
    """

    log = Logger()

    def __init__(self, server: Chat, ttl: float) -> None:
        self._server = server
        self.ttl = ttl
        self._pending: dict[tuple[str, str], IDelayedCall] = {}
        """(requester, target) -> the call that lapses the request."""
        self._by_user: dict[str, set[tuple[str, str]]] = {}

    def request(self, requester: Session, target: str) -> None:
        server = self._server
        me = requester.name
        if target == me:
            raise SelfTarget.private()
        server.require_user(target)
        peer = server.online.get(target)
        if peer is None:
            raise UserOffline(target)
        if server.blocks.is_blocked(target, me):
            raise BlockedByRecipient.private(target)
        if (me, target) in self._pending or (target, me) in self._pending:
            raise PrivateConflict.waiting(target)
        if not peer.peer_port:
            raise NoPeerListener(target)
        if not requester.peer_fingerprint:
            raise NoPeerListener(me, yours=True)
        key = (me, target)
        self._pending[key] = server.clock.callLater(self.ttl, self._lapse, key)
        self._by_user.setdefault(me, set()).add(key)
        self._by_user.setdefault(target, set()).add(key)
        peer.deliver(wire.PrivateRequest(me, self.ttl))

    def answer(self, target: Session, requester: str, accept: bool) -> None:
        key = (requester, target.name)
        if key not in self._pending:
            raise PrivateConflict.none_from(requester)
        self._forget(key).cancel()
        server = self._server
        asker = server.online[requester]  # a requester who left has no pending request
        if not accept:
            asker.deliver(wire.PrivateDeclined(target.name))
            return
        token = secrets.token_urlsafe(24)
        asker.deliver(
            wire.PrivateAccepted(
                target.name, token, target.peer_host, target.peer_port, target.peer_fingerprint
            )
        )
        target.deliver(wire.PrivateAccepted(requester, token, fingerprint=asker.peer_fingerprint))
        self.log.info("private session approved: {a} -> {b}", a=requester, b=target.name)

    def user_left(self, user: str) -> None:
        for key in list(self._by_user.get(user, ())):
            self._forget(key).cancel()
            requester, target = key
            other = target if requester == user else requester
            session = self._server.online.get(other)
            if session is not None:
                session.deliver(wire.PrivateExpired(user, "left"))

    def cancel_all(self) -> None:
        for key in list(self._pending):
            self._forget(key).cancel()

    def _lapse(self, key: tuple[str, str]) -> None:
        self._forget(key)
        requester, target = key
        for user, other in ((requester, target), (target, requester)):
            session = self._server.online.get(user)
            if session is not None:
                session.deliver(wire.PrivateExpired(other, "unanswered"))

    def _forget(self, key: tuple[str, str]) -> IDelayedCall:
        call = self._pending.pop(key)
        for user in key:
            keys = self._by_user.get(user)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[user]
        return call


@implementer(IRealm)
class ChatRealm:
    """cred realm: a checked username becomes an online :class:`Session`."""

    def __init__(self, server: Chat) -> None:
        self._server = server

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> tuple[type[Interface], object, Callable[[], None]]:
        if IChatUser not in interfaces:
            raise NotImplementedError("twisted-chat only provides IChatUser")
        # Our checker returns the username as str; cred's stubs say bytes.
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        session = self._server.login(user, IChatClient(mind))
        if isinstance(session, Deferred):
            return session.addCallback(_avatar)  # type: ignore[return-value]  # cred takes a Deferred
        return _avatar(session)


def _avatar(session: Session) -> tuple[type[Interface], object, Callable[[], None]]:
    return IChatUser, session, session.logout
