"""The handout's login lockout, written once: three wrong passwords in a row lock a
username for ``block_duration`` seconds, from every client (and, in a chat of several
nodes, through every node).

The rule is two pure functions over a :class:`Strikes` record and the time;
:class:`Lockout` applies them to whichever :class:`IStrikeStore` keeps the records:
this process's memory (``server.local.MemoryStrikes``) or Redis
(``server.cluster.stores.RedisStrikes``), where a compare-and-set makes strikes from
several nodes add up. Records are counts and timestamps, never timers: nothing to
cancel or leak (as Synapse keeps its rate limits).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_chat.interfaces import IStrikeStore, Strikes

MAX_FAILURES = 3
"""Consecutive wrong passwords that lock a username (the handout's number)."""

MAX_WRITE_ATTEMPTS = 20
"""Compare-and-set rounds before a strike gives up (only many nodes striking one name
at the same instant could need more than two)."""


def lock_left(strikes: Strikes, now: float) -> float:
    """Seconds the lock in ``strikes`` still lasts at ``now`` (0: not locked)."""
    return max(0.0, strikes.locked_until - now)


def after_wrong_password(strikes: Strikes, now: float, block_duration: float) -> Strikes:
    """The record after one more wrong password at ``now``.

    - During a lock nothing changes: attempts then neither count nor extend it.
    - After a lock ended, or once ``block_duration`` passed since the latest strike,
      counting starts again: "three in a row" means within a lock's length of each
      other, so nobody can pre-load two strikes on every account and lock any of them
      with one more try whenever they like.
    - The third strike locks for ``block_duration``.
    """
    if lock_left(strikes, now) > 0:
        return strikes
    count = strikes.count
    if strikes.locked_until or (count and now - strikes.last > block_duration):
        count = 0
    count += 1
    locked_until = now + block_duration if count >= MAX_FAILURES else 0.0
    return Strikes(count, now, locked_until)


def tries_left(strikes: Strikes) -> int:
    return max(0, MAX_FAILURES - strikes.count) if not strikes.locked_until else 0


class StrikeConflict(Exception):
    """A strike could not be recorded: the record kept changing under it."""


class Lockout:
    """The lockout over a store of strike records: what the cred checker asks."""

    log = Logger()

    def __init__(self, store: IStrikeStore, block_duration: float) -> None:
        self.store = store
        self.block_duration = block_duration

    def _keep_for(self) -> float:
        """How long a record must outlive its latest strike to still count."""
        return self.block_duration + 1.0

    def lock_left(self, user: str) -> Deferred[float]:
        """Seconds ``user``'s lock still lasts (0: not locked)."""

        def left(read: tuple[Strikes, int, float]) -> float:
            strikes, _, now = read
            return lock_left(strikes, now)

        return self.store.read(user).addCallback(left)

    def strike(self, user: str) -> Deferred[tuple[int, float]]:
        """A wrong password: (tries left, seconds locked); 0 tries left is locked."""

        async def strike() -> tuple[int, float]:
            for _ in range(MAX_WRITE_ATTEMPTS):
                strikes, version, now = await self.store.read(user)
                if lock_left(strikes, now) > 0:
                    return 0, lock_left(strikes, now)
                after = after_wrong_password(strikes, now, self.block_duration)
                if await self.store.write(user, version, after, self._keep_for()):
                    if after.locked_until:
                        self.log.warn(
                            "username {user} locked for {seconds}s after {count} failed passwords",
                            user=user,
                            seconds=self.block_duration,
                            count=after.count,
                            security_event="lockout",
                        )
                    return tries_left(after), lock_left(after, now)
            raise StrikeConflict(f"the strikes of {user} kept changing")

        return Deferred.fromCoroutine(strike())

    def clear(self, user: str) -> Deferred[None]:
        """A right password: the count starts again."""
        return self.store.clear(user)


def fresh(strikes: Strikes, now: float, block_duration: float) -> bool:
    """Whether ``strikes`` still matter at ``now`` (a store may forget those that do
    not: no lock, and the latest strike older than a lock's length)."""
    return lock_left(strikes, now) > 0 or now - strikes.last <= block_duration
