"""The seams between the domain core and the rest.

- :class:`IChatClient` is the *mind*: what the domain can push to a connected user. The
  server protocol implements it; tests use recording fakes.
- The stores hold what outlives a connection. Reads are synchronous, served from memory
  (they sit on hot paths: every message checks a block list); writes return Deferreds
  that fire once the change is as durable as the store makes it, so a durable store can
  replace the in-memory one without touching the domain or the protocols.
- :class:`IDirectory`, :class:`IPrivateRequests` and :class:`IStrikeStore` are what
  differs between one process and several nodes sharing Redis: who is online where and
  how to reach them, the private-chat requests waiting for an answer, the login
  lockout's counters. Each has an in-process implementation (``server.local``) and a
  Redis one (``server.cluster``); the rules over them are the core's, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from twisted_chat.wire import Frame

if TYPE_CHECKING:
    from twisted_chat.errors import ChatError
    from twisted_chat.server.events import DirectMessage, Event, Presence

T = TypeVar("T")
U = TypeVar("U")
Now: TypeAlias = T | Deferred[T]
"""A result at once (in one process, where nothing waits) or once another party has
answered (Redis, for a node of a larger chat). Callers chain on it with :func:`then`,
so the single process's hot path builds no Deferred."""


def then(value: Now[T], f: Callable[[T], U]) -> Now[U]:
    """``f(value)``, now or once ``value`` is known."""
    if isinstance(value, Deferred):
        return value.addCallback(f)
    return f(value)


class IChatClient(Interface):
    """What the domain can push to one logged-in user."""

    def deliver(event: Frame) -> None:
        """Push one event (presence, message, ...) to the user."""

    def end_session(reason: str) -> None:
        """The server ends the session (``timeout``, ...): tell the user and disconnect."""


class IChatUser(Interface):
    """The avatar: what a logged-in user can do. Returned by the realm."""

    name = Attribute("The username.")


class IAccountStore(Interface):
    """Usernames and passwords."""

    def exists(user: str) -> bool:
        """Whether ``user`` has an account."""

    def verify(user: str, password: str, network: str) -> Deferred[bool]:
        """Whether ``password`` is ``user``'s password: a constant-time comparison, or
        a hash check off the reactor thread, in the share of the hash pool that
        belongs to ``network`` (where the attempt came from; it may fail with
        ``ServerBusy``)."""

    def names() -> Sequence[str]:
        """Every account name, sorted (kept so between changes, not sorted per call)."""

    def new_account_problem(user: str) -> ChatError | None:
        """Why no account may be created as ``user`` now, as the error to answer (a
        refused or look-alike name: ``invalid-username``; a read-only store:
        ``accounts-read-only``), or None."""

    def refresh() -> Deferred[None]:
        """Pick up changes made to the accounts outside the server (by hand)."""

    def create(user: str, password: str) -> Deferred[None]:
        """Add an account; fires when it is durable. Fails with ``UsernameTaken`` if the
        name exists or is being created."""

    def learned(user: str, stored: str) -> None:
        """An account that another node created or read from its file: keep it too."""

    watched_path = Attribute(
        "The file to watch for hand edits, calling changed() after each (None: none)."
    )

    def watched() -> None:
        """From now on :meth:`changed` is called after every change to ``watched_path``."""

    def changed() -> None:
        """``watched_path`` may have changed: the next :meth:`refresh` looks."""


@dataclass(frozen=True)
class StoredMessage:
    """A direct message waiting for an offline recipient. ``key`` identifies it in its
    store (0 until stored)."""

    sender: str
    text: str
    sent: float
    key: int = 0
    msgid: int = 0
    """Its place in the two users' history (0: not kept)."""


class IMailbox(Interface):
    """Offline messages, per recipient, in the order they were accepted."""

    limit = Attribute("How many messages one recipient may have waiting.")

    def append(recipient: str, message: StoredMessage) -> Deferred[None]:
        """Queue a message; fires once stored. Fails with ``QueueFull`` at the limit."""

    def pending(recipient: str) -> Deferred[list[StoredMessage]]:
        """Everything waiting for ``recipient``, oldest first (still stored)."""

    def delivered(recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        """Forget ``messages``, which ``recipient``'s client acknowledged. Until then
        they are delivered again at every login: at-least-once, never lost."""


class IBlockStore(Interface):
    """Who blocks whom."""

    def is_blocked(blocker: str, target: str) -> bool:
        """Whether ``blocker`` currently blocks ``target``. O(1)."""

    def blocked_by(blocker: str) -> AbstractSet[str]:
        """Whom ``blocker`` blocks (a live set: do not keep it, do not change it)."""

    def blockers_of(target: str) -> AbstractSet[str]:
        """Who blocks ``target`` (a live set: do not keep it, do not change it)."""

    def block(blocker: str, target: str) -> Deferred[None]:
        """Record a block; fires once stored."""

    def unblock(blocker: str, target: str) -> Deferred[None]:
        """Remove a block; fires once stored."""

    def learned(blocker: str, target: str, blocked: bool) -> None:
        """A block (or unblock) stored through another node: the copy kept here for the
        checks follows it."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a user's client takes private sessions, and the certificate it shows."""

    host: str
    port: int
    fingerprint: str

    @property
    def takes_peers(self) -> bool:
        """False for :data:`IN_BROWSER`: a client that can never take a private session."""
        return self.port != 0


IN_BROWSER = PeerAddress("", 0, "")
"""The peer address of a user whose client is a web page: a browser cannot listen for
the direct connection of a private session. Recorded like any address (in Redis too),
so that every node can tell a requester why, rather than "not now"."""


class IDirectory(Interface):
    """Who holds which user, and the way to users and nodes elsewhere. In one process
    there is no elsewhere; in a chat of several nodes, Redis. It carries and records;
    it decides no chat rule (who may reach whom is the core's)."""

    node = Attribute("This node's key: its id and incarnation ('' in one process).")

    def check_ready() -> None:
        """Raise ``SharedStateUnavailable`` if this node cannot take logins now."""

    def held_elsewhere(user: str) -> Now[bool]:
        """Whether another node holds ``user`` now (asked when this node's roster says
        so, which may be a heartbeat behind)."""

    def claim(user: str) -> Now[None]:
        """``user`` is online through this node from now on; ``AlreadyOnline`` if
        another node holds them."""

    def release(user: str, presence: Presence) -> None:
        """``user`` left this node; the other nodes are given ``presence`` (only if the
        release took effect, so nobody hears of a logout that did not happen)."""

    def publish(event: Event) -> None:
        """``event`` to every other node."""

    def route(message: DirectMessage, limit: int) -> Deferred[bool]:
        """``message`` to the node holding its recipient, or to their mailbox (at most
        ``limit`` waiting; past it ``QueueFull``): whether it was stored."""

    def reroute(message: DirectMessage) -> None:
        """A message that reached this node after its recipient left it: on to where
        they are now, or to their mailbox."""

    def tell(user: str, frame: Frame) -> Now[bool]:
        """``frame`` to ``user`` through the node holding them; False if none does."""

    def set_peer(user: str, peer: PeerAddress) -> Now[None]:
        """Where ``user`` (online here) takes private sessions."""

    def peer_of(user: str) -> Now[PeerAddress | None]:
        """Where ``user``, online through another node, takes private sessions."""


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A private-chat request waiting for its target's answer."""

    token: str
    """Tells this request from a later one between the same two users."""
    fingerprint: str
    """The requester's peer certificate, handed to the target on approval."""


class IPrivateRequests(Interface):
    """Private-chat requests waiting for an answer, by (requester, target). Every
    change is atomic, so that of two answers, or an answer and a lapse, one wins."""

    def open(requester: str, target: str, pending: PendingRequest, ttl: float) -> Deferred[bool]:
        """Record a request unless one waits between the two, either way (False)."""

    def take(requester: str, target: str) -> Deferred[PendingRequest | None]:
        """Remove and return the request (None: there is none, or no longer)."""

    def lapse(requester: str, target: str, token: str) -> Deferred[bool]:
        """Remove the request if it is still the one with ``token``."""

    def drop_user(user: str) -> Deferred[list[tuple[str, str]]]:
        """Remove every request ``user`` takes part in; return their (requester,
        target) pairs."""


@dataclass(frozen=True, slots=True)
class Strikes:
    """A username's recent wrong passwords (see ``server.lockout`` for the rule)."""

    count: int = 0
    last: float = 0.0
    """When the latest wrong password came (Unix seconds)."""
    locked_until: float = 0.0


class IStrikeStore(Interface):
    """Where the login lockout keeps its counts: in this process, or shared by every
    node. Reads come with a version and the store's time; a write succeeds only if the
    version is unchanged (compare-and-set), so strikes from several nodes add up."""

    def read(user: str) -> Deferred[tuple[Strikes, int, float]]:
        """``user``'s strikes, their version, and the time now (Unix seconds)."""

    def write(user: str, version: int, strikes: Strikes, ttl: float) -> Deferred[bool]:
        """Replace the strikes if still at ``version``; kept at least ``ttl`` s."""

    def clear(user: str) -> Deferred[None]:
        """Forget ``user``'s strikes."""


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One message kept in a conversation's history."""

    msgid: int
    """Its place in the conversation: 1, 2, 3... in the order they were kept."""
    sender: str
    text: str
    sent: float
    """When the server accepted it (Unix seconds)."""


class IHistory(Interface):
    """What was said, by conversation: a room (``#name``) or two users
    (``history.conversation_of``). Each conversation's messages are numbered from 1 in
    the order they were kept; the oldest go first when a conversation holds more than
    ``limit`` or when they are older than ``days`` (the operator's bounds)."""

    def append(conversation: str, sender: str, text: str, sent: float) -> Deferred[int]:
        """Keep a message; fires with its msgid once it is durable."""

    def before(conversation: str, before: int, limit: int) -> Deferred[list[HistoryLine]]:
        """The newest ``limit`` messages with msgid < ``before`` (0: no bound), oldest
        first."""

    def after(conversation: str, after: int, limit: int) -> Deferred[list[HistoryLine]]:
        """The oldest ``limit`` messages with msgid > ``after``, oldest first."""

    def last_ids(conversations: Sequence[str]) -> Deferred[dict[str, int]]:
        """Each conversation's newest msgid (0: none yet)."""


class IRoomStore(Interface):
    """Rooms, their members and what each member has seen. Each change is atomic, so
    that two nodes racing to create one room, or to fill its last seat, do not both
    succeed."""

    def create(room: str, look: str, creator: str, when: float) -> Deferred[str | None]:
        """Create ``room`` unless a room has that name or looks the same (``look``);
        None if created, else the existing room's name."""

    def created_since(user: str, since: float) -> Deferred[int]:
        """How many rooms ``user`` created at or after ``since``."""

    def add_member(
        room: str, user: str, joined: int, max_members: int, max_rooms: int
    ) -> Deferred[str]:
        """``user`` joins ``room``, having seen up to msgid ``joined``: ``ok``,
        ``member`` (already), ``no-room``, ``full`` (``max_members`` reached) or
        ``too-many`` (``user`` is in ``max_rooms`` rooms)."""

    def remove_member(room: str, user: str) -> Deferred[bool]:
        """``user`` leaves ``room``; False if they were not in it."""

    def members(room: str) -> Deferred[dict[str, int] | None]:
        """The room's members, each with the msgid they joined after; None: no room."""

    def rooms_of(user: str) -> Deferred[dict[str, int]]:
        """The rooms ``user`` is in, each with the msgid they joined after."""

    def member_counts(rooms: Sequence[str]) -> Deferred[dict[str, int]]:
        """How many members each room has."""

    def positions(user: str) -> Deferred[dict[str, int]]:
        """The newest msgid ``user`` was sent, per room."""

    def save_positions(user: str, positions: dict[str, int]) -> Deferred[None]:
        """Record newer positions (a position only ever moves forward)."""
