"""The domain core: the chat's rules, written once for one process and for a node of
a chat shared through Redis.

:class:`Chat` holds this node's sessions and decides everything that involves more than
one user: presence and who is told, who may reach whom, where a message goes, who a
broadcast skips, ``whoelse`` and ``whoelsesince``. What differs between one process and
many sits behind the seams in ``twisted_chat.interfaces`` (the directory, the stores,
the private-chat requests, the lockout's counts), which ``wiring`` chooses; nothing
here knows which it was given.

A change that concerns users elsewhere is an event (``events``): :meth:`Chat.emit`
applies it here and the directory publishes it to the other nodes, which apply it
with the same handler (:meth:`Chat.apply`). In one process there is nowhere to publish.

No sockets and no global reactor: time comes from an injected ``IReactorTime`` and
users are reached through their mind (:class:`IChatClient`). A message is O(1); a
broadcast or a presence notice is O(users on this node), with one shared frame that
the protocol encodes once.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_chat import wire
from twisted_chat.errors import AlreadyOnline, NoSuchUser, QueueFull
from twisted_chat.interfaces import (
    IAccountStore,
    IBlockStore,
    IChatClient,
    IDirectory,
    IHistory,
    IMailbox,
    IPrivateRequests,
    IRoomStore,
    Now,
    PeerAddress,
    then,
)
from twisted_chat.server import events
from twisted_chat.server.presence import PresenceHistory, Roster
from twisted_chat.server.private import DEFAULT_PRIVATE_REQUEST_TTL, PrivateBroker
from twisted_chat.server.rooms import RoomLimits, Rooms, conversation_of
from twisted_chat.server.session import Session
from twisted_chat.server.stats import Stats

__all__ = ["DEFAULT_PRIVATE_REQUEST_TTL", "Chat", "Sent", "Session"]

Sent = tuple[bool, int]
"""A message's outcome: whether it was stored for later (its recipient offline), and
its msgid in the two users' history (0: not kept)."""

_SENT_HERE: Sent = (False, 0)
"""Delivered here at once, and not kept: the common case without history."""


class Chat:
    """The shared state of a chat, as this node holds it, and the rules over it."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        accounts: IAccountStore,
        blocks: IBlockStore,
        mailbox: IMailbox,
        directory: IDirectory,
        requests: IPrivateRequests,
        room_store: IRoomStore,
        history: IHistory,
        timeout: float,
        private_request_ttl: float = DEFAULT_PRIVATE_REQUEST_TTL,
        stats: Stats | None = None,
        room_limits: RoomLimits | None = None,
    ) -> None:
        self.clock = clock
        self.stats = stats or Stats()
        self.accounts = accounts
        self.blocks = blocks
        self.mailbox = mailbox
        self.directory = directory
        self.timeout = timeout
        self.online: dict[str, Session] = {}
        """Users logged in through this node, by name: the routing table."""
        self.roster = Roster()
        """Users logged in through other nodes (none in one process)."""
        self.logouts = PresenceHistory()
        """When each user last went offline (``whoelsesince``)."""
        self.private = PrivateBroker(self, requests, private_request_ttl)
        self.history = history
        self.rooms = Rooms(self, room_store, history, room_limits or RoomLimits())
        self._appliers: dict[type[events.Event], Callable[[Any], None]] = {
            events.DirectMessage: self._on_direct_message,
            events.Broadcast: self._on_broadcast,
            events.Presence: self._on_presence,
            events.ForUser: self._on_for_user,
            events.BlockChanged: self._on_block_changed,
            events.AccountAdded: self._on_account_added,
            events.RoomSaid: self.rooms.on_said,
            events.RoomJoined: self.rooms.on_joined,
        }

    # --- events -------------------------------------------------------------------------

    def emit(self, event: events.Event) -> None:
        """``event`` happens: to this node's users now, and to every other node's."""
        self.apply(event)
        self.directory.publish(event)

    def apply(self, event: events.Event) -> None:
        """What ``event`` means for this node's users (made here, or on another node)."""
        self._appliers[type(event)](event)

    # --- sessions -------------------------------------------------------------------

    def require_offline(self, user: str) -> Now[None]:
        """Raise (or fail with) :class:`AlreadyOnline` if ``user`` is logged in
        anywhere: asked at the username, so that nobody types a password for nothing.
        The login's claim (:meth:`login`) decides; this only asks early, and asks the
        directory only when the roster says another node has them (the roster may be
        a heartbeat behind a node that left)."""
        self.directory.check_ready()
        if user in self.online:
            raise AlreadyOnline(user)
        if user not in self.roster:
            return None

        def held(elsewhere: bool) -> None:
            if elsewhere:
                raise AlreadyOnline(user)

        return then(self.directory.held_elsewhere(user), held)

    def login(self, user: str, mind: IChatClient) -> Now[Session]:
        """The realm's half of logging in: ``user`` is online through this node from
        now on. The session exists here from the start, holding its events, so that
        none that is routed here while the claim is made is lost."""
        session = self.attach(user, mind)
        try:
            claimed = self.directory.claim(user)
        except Exception:
            self._forget(session)
            raise
        if not isinstance(claimed, Deferred):
            return session

        def refused(failure: Any) -> Any:
            self._forget(session)
            return failure

        return claimed.addCallbacks(lambda _: session, refused)

    def attach(self, user: str, mind: IChatClient) -> Session:
        """Register ``user`` as online here; events for them wait until :meth:`begin`
        has delivered their offline mail."""
        if user in self.online:
            raise AlreadyOnline(user)
        session = Session(self, user, mind)
        session.hold()
        self.online[user] = session
        if self.roster.discard(user):
            # Their session through another node ended, and its notice has not come
            # (that node left the chat): said now, before their login here.
            self.logouts.went_offline(user, self.clock.seconds())
            self._announce(user, online=False)
        return session

    def begin(self, session: Session) -> Deferred[None]:
        """Side effects of a login, once the client has its welcome: tell everyone,
        start the idle timer, deliver offline mail (in the order it was sent).

        Reading the mail may wait on the disk or Redis; events for this user that come
        meanwhile are held and follow the mail, so nothing overtakes an older one."""
        self.emit(events.Presence(session.name, self.directory.node, True, self.clock.seconds()))
        session.start_timer()
        self.log.info("{user} logged in", user=session.name)
        user = session.name

        def deliver(stored: list[Any]) -> None:
            if self.online.get(user) is not session or not stored:
                return  # gone before the mail came, or none: nothing to do
            for item in stored:
                session.mind.deliver(
                    wire.Message(item.sender, item.text, item.sent, True, item.key, item.msgid)
                )
            # Kept until the client says it has them (``received``): written to a socket
            # is not received, and a client may drop right after logging in.
            session.unacknowledged = stored
            session.mind.deliver(wire.StoredDone(stored[-1].key, len(stored)))

        def rooms(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(self.rooms.session_began(session))

        def release(result: object) -> object:
            session.release()
            return result

        return self.mailbox.pending(user).addCallback(deliver).addCallback(rooms).addBoth(release)

    def detach(self, session: Session, reason: str) -> None:
        """The user is gone (logout, timeout, lost connection). Idempotent."""
        if not self._forget(session):
            return
        user = session.name
        self.rooms.session_ended(session)
        presence = events.Presence(user, self.directory.node, False, self.clock.seconds())
        self.directory.release(user, presence)
        self.private.user_left(user)
        self.apply(presence)
        self.log.info("{user} logged out ({reason})", user=user, reason=reason)

    def _forget(self, session: Session) -> bool:
        """Take ``session`` out of this node; False if it was not in it."""
        if self.online.get(session.name) is not session:
            return False
        del self.online[session.name]
        session.stop_timer()
        return True

    def end_all(self, reason: str) -> None:
        """End every session here, telling each user ``reason`` and nothing else: at
        shutdown everyone here is leaving (a notice per pair would be O(N²) frames to
        sockets about to close), and a node that lost Redis leaves it to the others to
        tell theirs. No timer outlives this."""
        self.private.cancel_all()
        now = self.clock.seconds()
        sessions, self.online = self.online, {}
        for session in sessions.values():
            self.rooms.session_ended(session)
            session.stop_timer()
            self.logouts.went_offline(session.name, now)
            session.mind.end_session(reason)
        if sessions:
            self.log.info("ended {count} sessions ({reason})", count=len(sessions), reason=reason)

    def start(self) -> None:
        self.rooms.start()

    def stop(self) -> Deferred[None]:
        """Server shutdown: every session ends with ``shutdown``; fires once what the
        rooms' members were sent is saved."""
        self.end_all("shutdown")
        return self.rooms.stop()

    def node_gone(self, node: str, when: float) -> None:
        """Node ``node`` left the chat (it stopped, or stopped beating): its users are
        offline, and this node's users are told as for a logout."""
        for user in self.roster.drop_node(node):
            self.logouts.went_offline(user, when)
            self.private.user_left(user)
            self._announce(user, online=False)

    # --- presence -------------------------------------------------------------------

    def _on_presence(self, event: events.Presence) -> None:
        user = event.user
        if event.node != self.directory.node:
            if event.online:
                self.roster.add(user, event.node)
            elif not self.roster.discard(user, event.node):
                # Already back online somewhere (here, or through another node):
                # this notice is old news.
                self.logouts.went_offline(user, event.when)
                return
        if not event.online:
            self.logouts.went_offline(user, event.when)
        self._announce(user, event.online)

    def _announce(self, user: str, online: bool) -> None:
        """Presence to everyone here except ``user`` and those ``user`` blocks."""
        frame = wire.Presence(user, online)
        hidden_from = self.blocks.blocked_by(user)
        for other, session in self.online.items():
            if other != user and other not in hidden_from:
                session.deliver(frame)

    def is_online(self, user: str) -> bool:
        """Online through any node (as far as this node has heard)."""
        return user in self.online or user in self.roster

    def others_online(self, me: str) -> list[str]:
        """``whoelse``: everyone online but ``me`` and those who block ``me``, sorted."""
        is_blocked = self.blocks.is_blocked
        return sorted(
            u for u in chain(self.online, self.roster) if u != me and not is_blocked(u, me)
        )

    def seen_since(self, me: str, seconds: float) -> list[str]:
        """``whoelsesince``: everyone online now or logged out at most ``seconds`` ago,
        but ``me`` and those who block ``me``, sorted."""
        cutoff = self.clock.seconds() - seconds
        names = set(self.online)
        names.update(self.roster)
        names.update(self.logouts.offline_since(cutoff))
        names.discard(me)
        is_blocked = self.blocks.is_blocked
        return sorted(u for u in names if not is_blocked(u, me))

    # --- who may reach whom, and how ------------------------------------------------

    def require_user(self, user: str) -> None:
        if not self.accounts.exists(user):
            raise NoSuchUser(user)

    def may_reach(self, sender: str, recipient: str) -> bool:
        """Whether ``recipient`` takes messages and requests from ``sender``: not if
        ``recipient`` blocks ``sender`` (whoever blocks the other does not matter the
        other way round)."""
        return not self.blocks.is_blocked(recipient, sender)

    def blocked_by_someone_online(self, user: str) -> bool:
        """Whether a broadcast from ``user`` skips anyone now (never who)."""
        return any(self.is_online(blocker) for blocker in self.blocks.blockers_of(user))

    def send_message(self, sender: str, to: str, text: str) -> Deferred[Sent] | None:
        """A message that passed every check: kept in the two users' history first
        (when the server keeps history), then delivered to a user here, or routed to
        the node holding them or to their mailbox. Fires with whether it was stored
        for later and its msgid; without history, a message to a user here is done at
        once (None), without the Deferred."""
        now = self.clock.seconds()
        self.stats.messages["direct"] += 1
        if self.rooms.keeps_history:
            kept = self.history.append(conversation_of(sender, to), sender, text, now)
            return kept.addCallback(self._deliver_message, sender, to, text, now)
        sent = self._deliver_message(0, sender, to, text, now)
        return None if sent is _SENT_HERE else sent  # type: ignore[return-value]

    def _deliver_message(
        self, msgid: int, sender: str, to: str, text: str, now: float
    ) -> Sent | Deferred[Sent]:
        recipient = self.online.get(to)
        stats = self.stats
        if recipient is not None:
            recipient.deliver(wire.Message(sender, text, now, msgid=msgid))
            if stats.timing:
                stats.delivery.observe(self.clock.seconds() - now)
            return _SENT_HERE if not msgid else (False, msgid)
        routed = self.directory.route(
            events.DirectMessage(to, sender, text, now, msgid), self.mailbox.limit
        )
        return routed.addCallbacks(self._routed, self._not_routed, callbackArgs=(msgid,))

    def _routed(self, stored: bool, msgid: int) -> Sent:
        if stored:
            self.stats.mailbox_writes["stored"] += 1
        return stored, msgid

    def _not_routed(self, failure: Any) -> Any:
        if failure.check(QueueFull):
            self.stats.mailbox_writes["full"] += 1
        return failure

    def _on_direct_message(self, event: events.DirectMessage) -> None:
        recipient = self.online.get(event.to)
        if recipient is None:
            self.directory.reroute(event)  # they left this node after it was sent here
        elif not self.may_reach(event.sender, event.to):
            # Blocked while it crossed between nodes: blocks hold as of delivery too.
            self.log.info(
                "a message from {sender} to {to} was not delivered: blocked meanwhile",
                sender=event.sender,
                to=event.to,
            )
        else:
            recipient.deliver(event.frame())
            self.stats.observe_delivery(self.clock.seconds() - event.sent)

    def broadcast(self, sender: str, text: str) -> bool:
        """``text`` to everyone online but ``sender`` and those who block ``sender``;
        whether anyone was skipped for that reason."""
        self.stats.messages["broadcast"] += 1
        self.emit(events.Broadcast(sender, text, self.clock.seconds()))
        return self.blocked_by_someone_online(sender)

    def _on_broadcast(self, event: events.Broadcast) -> None:
        sender = event.sender
        frame = wire.Broadcast(sender, event.text, event.sent)
        blockers = self.blocks.blockers_of(sender)
        for other, session in self.online.items():
            if other != sender and other not in blockers:
                session.deliver(frame)
        self.stats.observe_delivery(self.clock.seconds() - event.sent)

    def tell(self, user: str, frame: wire.Frame) -> Now[bool]:
        """``frame`` to ``user`` wherever they are online; False if nowhere."""
        session = self.online.get(user)
        if session is not None:
            session.deliver(frame)
            return True
        if user in self.roster:
            return self.directory.tell(user, frame)
        return False

    def _on_for_user(self, event: events.ForUser) -> None:
        session = self.online.get(event.to)
        if session is not None:
            session.deliver(event.frame)

    def peer_of(self, user: str) -> Now[PeerAddress | None]:
        """Where ``user``'s client takes private sessions (None: nowhere, or offline)."""
        session = self.online.get(user)
        if session is not None:
            return session.peer
        if user in self.roster:
            return self.directory.peer_of(user)
        return None

    # --- what other nodes stored ----------------------------------------------------

    def _on_block_changed(self, event: events.BlockChanged) -> None:
        self.blocks.learned(event.blocker, event.target, event.blocked)

    def _on_account_added(self, event: events.AccountAdded) -> None:
        self.accounts.learned(event.user, event.stored)
