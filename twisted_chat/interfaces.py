"""The seams between the domain core and the rest.

- :class:`IChatClient` is the *mind*: what the domain can push to a connected user. The
  server protocol implements it; tests use recording fakes.
- The stores hold what outlives a connection. Reads are synchronous, served from memory
  (they sit on hot paths: every message checks a block list); writes return Deferreds
  that fire once the change is as durable as the store makes it, so a durable store can
  replace the in-memory one without touching the domain or the protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from twisted_chat.wire import Frame


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

    def verify(user: str, password: str) -> Deferred[bool]:
        """Whether ``password`` is ``user``'s password: a constant-time comparison, or
        a hash check off the reactor thread (which may fail with ``ServerBusy``)."""

    def names() -> Sequence[str]:
        """Every account name, sorted (kept so between changes, not sorted per call)."""

    def new_account_problem(user: str) -> str | None:
        """Why no account may be created as ``user`` now (a refused or look-alike
        name, a read-only store), or None."""

    def refresh() -> Deferred[None]:
        """Pick up changes made to the accounts outside the server (by hand)."""

    def create(user: str, password: str) -> Deferred[None]:
        """Add an account; fires when it is durable. Fails with ``UsernameTaken`` if the
        name exists or is being created."""


@dataclass(frozen=True)
class StoredMessage:
    """A direct message waiting for an offline recipient. ``key`` identifies it in its
    store (0 until stored)."""

    sender: str
    text: str
    sent: float
    key: int = 0


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
