"""A logged-in user: the avatar the protocol calls, one method per command.

Argument errors come before :meth:`Session.touch`, so that malformed commands do not
count as activity; domain errors (unknown user, blocked...) after it. The rules that
involve other users are the chat's (``core.Chat``); a session checks its own
arguments, counts its own activity and holds its own connection's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.certs import is_fingerprint
from twisted_chat.errors import (
    AlreadyBlocked,
    BadArgument,
    BlockedByRecipient,
    HistoryOff,
    NotBlocked,
    SelfTarget,
)
from twisted_chat.interfaces import (
    IN_BROWSER,
    IChatClient,
    IChatUser,
    Now,
    PeerAddress,
    StoredMessage,
)
from twisted_chat.text import check_text

if TYPE_CHECKING:
    from twisted_chat.server.core import Chat, Sent

IDLE_WARNING = 10.0
"""Seconds before an idle logout that the user is warned (when the timeout is at
least twice that: a warning at once would be noise)."""


@implementer(IChatUser)
class Session:
    """One user online through this node."""

    log = Logger()

    # One per online user: slots keep the idle cost per user down (docs/performance.md).
    __slots__ = (
        "_held",
        "chat",
        "mind",
        "name",
        "peer",
        "rooms",
        "seen",
        "timer",
        "unacknowledged",
        "warned",
    )

    def __init__(self, chat: Chat, name: str, mind: IChatClient) -> None:
        self.chat = chat
        self.name = name
        self.mind = mind
        self.timer: IDelayedCall | None = None
        self.warned = False
        """The user was told the idle logout is near; the timer then runs to it."""
        self.peer: PeerAddress | None = None
        """Where this user's client takes private sessions (None: nowhere yet)."""
        self._held: list[wire.Frame] | None = None
        """Events waiting while offline mail is read (see Chat.begin)."""
        self.unacknowledged: Sequence[StoredMessage] = ()
        """Stored messages sent at login and not yet acknowledged by the client."""
        self.rooms: dict[str, int] = {}
        """The rooms this user is in, each with the msgid they joined after."""
        self.seen: dict[str, int] = {}
        """Per room, the newest msgid this user was sent (their position)."""

    # --- the connection's side ------------------------------------------------------

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

    def received(self, upto: int) -> Deferred[None]:
        """The client has the stored messages up to key ``upto``: forget them. Sent by
        the client itself, so not user activity."""
        done = [m for m in self.unacknowledged if m.key <= upto]
        self.unacknowledged = [m for m in self.unacknowledged if m.key > upto]
        if not done:
            return succeed(None)
        return self.chat.mailbox.delivered(self.name, done)

    # --- idle timeout ----------------------------------------------------------------

    def _quiet_before_warning(self) -> float:
        """Idle seconds before the warning (or, with a short timeout, the logout)."""
        timeout = self.chat.timeout
        return timeout - IDLE_WARNING if timeout >= 2 * IDLE_WARNING else timeout

    def start_timer(self) -> None:
        self.timer = self.chat.clock.callLater(self._quiet_before_warning(), self._idle)

    def _idle(self) -> None:
        """The idle timer fired: warn first, when there is room; log out after."""
        chat = self.chat
        if not self.warned and chat.timeout >= 2 * IDLE_WARNING:
            self.warned = True
            self.timer = chat.clock.callLater(IDLE_WARNING, self._idle)
            self.deliver(wire.IdleWarning(IDLE_WARNING))
            return
        self.timer = None
        self.mind.end_session("timeout")
        chat.detach(self, "timeout")

    def stop_timer(self) -> None:
        """The session is ending: its idle timer goes."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def touch(self) -> None:
        """The user did something: restart the idle timer (reset, not recreated)."""
        if self.timer is not None and self.timer.active():
            self.timer.reset(self._quiet_before_warning())
            self.warned = False

    def logout(self) -> None:
        """cred's logout callable; also the ``logout`` command."""
        self.chat.detach(self, "logout")

    def lost(self) -> None:
        self.chat.detach(self, "connection lost")

    # --- presence queries -----------------------------------------------------------

    def whoelse(self) -> list[str]:
        self.touch()
        return self.chat.others_online(self.name)

    def whoelsesince(self, seconds: int) -> list[str]:
        if seconds < 0:
            raise BadArgument("Error. whoelsesince takes a number of seconds, 0 or more.")
        self.touch()
        return self.chat.seen_since(self.name, seconds)

    def accounts(self) -> dict[str, object]:
        """The account names (sorted, at most ``wire.MAX_ACCOUNT_NAMES``), who else is
        online (as ``whoelse``), whom we block and the rooms we are in: what a client
        needs to complete names and to say "not a user" or "offline" without asking
        each time. The names are the store's, kept sorted between changes."""
        chat = self.chat
        names = chat.accounts.names()
        listed = names[: wire.MAX_ACCOUNT_NAMES]
        return {
            "users": listed,
            "truncated": len(names) > len(listed),
            "online": chat.others_online(self.name),
            "blocked": sorted(chat.blocks.blocked_by(self.name)),
            "rooms": sorted(self.rooms),
        }

    # --- messaging --------------------------------------------------------------------

    def message(self, to: str, text: str) -> Deferred[Sent] | None:
        """Send to a user: kept in history, then delivered or routed (``Chat.
        send_message``); None: delivered at once, and nothing was kept."""
        check_text(text)
        self.touch()
        chat = self.chat
        if to == self.name:
            raise SelfTarget("Error. You cannot message yourself.")
        chat.require_user(to)
        if not chat.may_reach(self.name, to):
            raise BlockedByRecipient()
        return chat.send_message(self.name, to, text)

    def say(self, room: str, text: str) -> Deferred[dict[str, Any]]:
        """Send to a room's members."""
        check_text(text)
        self.touch()
        return self.chat.rooms.say(self, room, text)

    # --- rooms and history --------------------------------------------------------------

    def join(self, room: str) -> Deferred[dict[str, Any]]:
        self.touch()
        return Deferred.fromCoroutine(self.chat.rooms.join(self, room))

    def leave(self, room: str) -> Deferred[dict[str, Any]]:
        self.touch()
        return Deferred.fromCoroutine(self.chat.rooms.leave(self, room))

    def list_rooms(self) -> Deferred[list[dict[str, Any]]]:
        self.touch()
        return Deferred.fromCoroutine(self.chat.rooms.rooms(self))

    def members(self, room: str) -> Deferred[list[dict[str, Any]]]:
        self.touch()
        return Deferred.fromCoroutine(self.chat.rooms.members(self, room))

    def history(self, target: str, limit: int, before: int) -> Deferred[dict[str, Any]]:
        if limit < 1 or before < 0:
            raise BadArgument("Error. history takes a number of messages, 1 or more.")
        self.touch()
        if not self.chat.rooms.keeps_history:
            raise HistoryOff()
        return Deferred.fromCoroutine(self.chat.rooms.history_of(self, target, limit, before))

    def broadcast(self, text: str) -> bool:
        """Send to every other online user who has not blocked us; return whether
        anyone was skipped for that reason."""
        check_text(text)
        self.touch()
        return self.chat.broadcast(self.name, text)

    # --- block lists ----------------------------------------------------------------

    def block(self, user: str) -> Deferred[None]:
        self.touch()
        if user == self.name:
            raise SelfTarget("Error. Cannot block self.")
        self.chat.require_user(user)
        if self.chat.blocks.is_blocked(self.name, user):
            raise AlreadyBlocked(user)
        return self.chat.blocks.block(self.name, user)

    def unblock(self, user: str) -> Deferred[None]:
        self.touch()
        if user == self.name:
            raise SelfTarget("Error. Cannot unblock self.")
        self.chat.require_user(user)
        if not self.chat.blocks.is_blocked(self.name, user):
            raise NotBlocked(user)
        return self.chat.blocks.unblock(self.name, user)

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
        self.peer = PeerAddress(host, port, fingerprint)
        return self.chat.directory.set_peer(self.name, self.peer)

    def in_browser(self) -> None:
        """This user's client is a web page, which cannot take private sessions: record
        it where every node looks for peer addresses, so that a request for one is
        answered ``peer-unsupported`` and the user is told who asked."""
        self.peer = IN_BROWSER
        recorded = self.chat.directory.set_peer(self.name, IN_BROWSER)
        if isinstance(recorded, Deferred):
            recorded.addErrback(
                lambda f: self.log.failure("recording {user} as in a browser", f, user=self.name)
            )

    def start_private(self, user: str) -> Deferred[None]:
        self.touch()
        return self.chat.private.request(self, user)

    def answer_private(self, user: str, accept: bool) -> Deferred[None]:
        self.touch()
        return self.chat.private.answer(self, user, accept)

    def activity(self) -> None:
        """Our client did something the server cannot see (a private message)."""
        self.touch()
