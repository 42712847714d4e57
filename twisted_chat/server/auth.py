"""Authentication: a ``twisted.cred`` checker over the account store, with the
handout's lockout (three consecutive wrong passwords lock a username for
``block_duration`` seconds, from every client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_chat.errors import AccountLocked, WrongPassword
from twisted_chat.interfaces import IAccountStore

MAX_FAILURES = 3
"""Consecutive wrong passwords that lock a username (the handout's number)."""


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


@implementer(ICredentialsChecker)
class LockoutPasswordChecker:
    """Checks username/password pairs against an :class:`IAccountStore`.

    A locked username fails with :class:`AccountLocked` whatever the password, and such
    attempts neither count nor extend the lock. Otherwise a wrong password fails with
    :class:`WrongPassword` (or :class:`AccountLocked` on the failure that locks).
    Both are ``UnauthorizedLogin``, as cred expects.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, accounts: IAccountStore, throttle: LoginThrottle) -> None:
        self._accounts = accounts
        self._throttle = throttle

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[Any]:
        user = _text(credentials.username)
        password = _text(credentials.password)
        # The lock is checked before the password: a locked name costs no hash check,
        # so guessing costs the guesser, not the server.
        if self._throttle.is_locked(user):
            return fail(AccountLocked(False, self._throttle.seconds_left(user)))
        if not self._accounts.exists(user):
            return fail(UnauthorizedLogin(f"no account {user}"))

        def checked(right: bool) -> str:
            if self._throttle.is_locked(user):
                # Locked while this check waited (guesses in parallel): even the right
                # password does not get in now.
                raise AccountLocked(False, self._throttle.seconds_left(user))
            if right:
                self._throttle.succeeded(user)
                return user
            remaining = self._throttle.failed(user)
            if remaining == 0:
                raise AccountLocked(True, self._throttle.seconds_left(user))
            raise WrongPassword(remaining)

        verified: Deferred[Any] = self._accounts.verify(user, password).addCallback(checked)
        return verified


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
