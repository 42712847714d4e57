"""Authentication: a ``twisted.cred`` checker over the account store, with the
handout's lockout (``lockout``: three consecutive wrong passwords lock a username for
``block_duration`` seconds, from every client)."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import implementer

from twisted_chat.errors import AccountLocked, WrongPassword
from twisted_chat.interfaces import IAccountStore
from twisted_chat.server.passwords import LOCAL


class Throttle(Protocol):
    """The lockout as the checker sees it (``lockout.Lockout``, over whichever store
    keeps the counts)."""

    def lock_left(self, user: str) -> Deferred[float]:
        """Seconds ``user``'s lock still lasts (0: not locked)."""

    def strike(self, user: str) -> Deferred[tuple[int, float]]:
        """A wrong password: (tries left, seconds locked); 0 tries left is locked now."""

    def clear(self, user: str) -> Deferred[None]:
        """A right password: the count starts again."""


class FromNetwork(UsernamePassword):
    """A username and password, and the network they came from: a password check
    takes a share of the hash pool that belongs to that network."""

    def __init__(self, username: bytes, password: bytes, network: str = LOCAL) -> None:
        super().__init__(username, password)
        self.network = network


@implementer(ICredentialsChecker)
class LockoutPasswordChecker:
    """Checks username/password pairs against an :class:`IAccountStore`.

    A locked username fails with :class:`AccountLocked` whatever the password, and such
    attempts neither count nor extend the lock. Otherwise a wrong password fails with
    :class:`WrongPassword` (or :class:`AccountLocked` on the failure that locks).
    Both are ``UnauthorizedLogin``, as cred expects.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, accounts: IAccountStore, throttle: Throttle) -> None:
        self._accounts = accounts
        self._throttle = throttle

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[Any]:
        user = _text(credentials.username)
        password = _text(credentials.password)
        network = getattr(credentials, "network", LOCAL)
        throttle = self._throttle

        # The lock is checked before the password: a locked name costs no hash check,
        # so guessing costs the guesser, not the server.
        def unless_locked(left: float) -> Deferred[Any]:
            if left > 0:
                raise AccountLocked(False, left)
            if not self._accounts.exists(user):
                raise UnauthorizedLogin(f"no account {user}")
            return self._accounts.verify(user, password, network).addCallback(checked)

        def checked(right: bool) -> Deferred[Any]:
            return throttle.lock_left(user).addCallback(decided, right)

        def decided(left: float, right: bool) -> Deferred[Any]:
            if left > 0:
                # Locked while this check waited (guesses in parallel): even the right
                # password does not get in now.
                raise AccountLocked(False, left)
            if right:
                return throttle.clear(user).addCallback(lambda _: user)
            return throttle.strike(user).addCallback(struck)

        def struck(result: tuple[int, float]) -> None:
            remaining, locked_for = result
            if remaining == 0:
                raise AccountLocked(True, locked_for)
            raise WrongPassword(remaining)

        return throttle.lock_left(user).addCallback(unless_locked)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
