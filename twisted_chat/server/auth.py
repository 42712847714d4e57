"""Authentication: a ``twisted.cred`` checker over the account store, with the
handout's lockout (three consecutive wrong passwords lock a username for
``block_duration`` seconds, from every client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_chat.errors import AccountLocked, WrongPassword
from twisted_chat.interfaces import IAccountStore

MAX_FAILURES = 3
"""Consecutive wrong passwords that lock a username (the handout's number)."""


class Throttle(Protocol):
    """The lockout as the checker sees it: asynchronous, so that the count can live in
    this process (:class:`LoginThrottle`, answering at once) or be shared by several
    (``cluster.stores.RedisThrottle``)."""

    def lock_left(self, user: str) -> Deferred[float]:
        """Seconds ``user``'s lock still lasts (0: not locked)."""

    def strike(self, user: str) -> Deferred[tuple[int, float]]:
        """A wrong password: (tries left, seconds locked); 0 tries left is locked now."""

    def clear(self, user: str) -> Deferred[None]:
        """A right password: the count starts again."""


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    """When the latest wrong password came."""
    locked_until: float = 0.0


class LoginThrottle:
    """Consecutive password failures per username, and the lock they lead to.

    Stored as counts and timestamps compared with the injected clock, not as timers:
    nothing to cancel, nothing to leak (as synapse does). An entry exists only for a
    username with failures, and goes on its first success or once its lock has expired.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, block_duration: float) -> None:
        self._clock = clock
        self.block_duration = block_duration
        self._failures: dict[str, _Failures] = {}

    def is_locked(self, user: str) -> bool:
        entry = self._failures.get(user)
        if entry is None or entry.locked_until == 0.0:
            return False
        if self._clock.seconds() < entry.locked_until:
            return True
        # The lock has expired: the count starts again from zero (spec §15).
        del self._failures[user]
        return False

    def failed(self, user: str) -> int:
        """Record a wrong password; return the tries left (0 means now locked).

        Strikes are forgotten once ``block_duration`` has passed since the latest one:
        "three in a row" means within a lock's length of each other, so an attacker
        cannot pre-load two strikes on every account and lock each with one more try
        whenever they like."""
        now = self._clock.seconds()
        entry = self._failures.setdefault(user, _Failures())
        if entry.count and now - entry.last > self.block_duration:
            entry.count = 0
        entry.count += 1
        entry.last = now
        remaining = MAX_FAILURES - entry.count
        if remaining <= 0:
            entry.locked_until = now + self.block_duration
            self.log.warn(
                "username {user} locked for {seconds}s after {count} failed passwords",
                user=user,
                seconds=self.block_duration,
                count=entry.count,
                security_event="lockout",
            )
            return 0
        return remaining

    def seconds_left(self, user: str) -> float:
        """How long ``user``'s lock still lasts (0 if not locked)."""
        entry = self._failures.get(user)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until - self._clock.seconds())

    def succeeded(self, user: str) -> None:
        self._failures.pop(user, None)

    # --- Throttle: the same, answered at once --------------------------------------------

    def lock_left(self, user: str) -> Deferred[float]:
        return succeed(self.seconds_left(user) if self.is_locked(user) else 0.0)

    def strike(self, user: str) -> Deferred[tuple[int, float]]:
        remaining = self.failed(user)
        return succeed((remaining, self.seconds_left(user)))

    def clear(self, user: str) -> Deferred[None]:
        self.succeeded(user)
        return succeed(None)


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
        throttle = self._throttle

        # The lock is checked before the password: a locked name costs no hash check,
        # so guessing costs the guesser, not the server.
        def unless_locked(left: float) -> Deferred[Any]:
            if left > 0:
                raise AccountLocked(False, left)
            if not self._accounts.exists(user):
                raise UnauthorizedLogin(f"no account {user}")
            return self._accounts.verify(user, password).addCallback(checked)

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
