"""Coming back by itself: when the server goes away from under a logged-in user
(a restart, a node killed, a network drop) who did not log out or time out, the
client says so once, keeps the screen and what is being typed, and connects again
with backoff, logging in with the name and password it holds in memory (never
written anywhere), until it is back.

The waits are 1 s, doubling, at most 30 s, each with up to a fifth of jitter either
way (so that the clients of a restarted server do not all come back in the same
instant). Only a person at a terminal gets this: a script on a pipe ends, as it did.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.link import server_error
from twisted_chat.client.seams import EXIT_FAILURE
from twisted_chat.client.stages import Stage

if TYPE_CHECKING:
    from twisted_chat.client.session import ClientSession

FIRST_WAIT = 1.0
LONGEST_WAIT = 30.0
JITTER = 0.2
"""A wait is its nominal length times 1 +/- this, at random."""

COME_BACK_FROM = frozenset({"shutdown", "unavailable", "no-response", "slow-reader"})
"""The server's reasons for ending a session after which the client connects again
(it restarted, its node lost Redis, or the link stalled); never after ``timeout`` (the
user was idle), ``flood`` or another login elsewhere."""

RETRY_LOGIN = frozenset({"already-online", "unavailable", "busy"})
"""Login answers that mean "not yet": the server still holds the old session (it has
not noticed the link died), or cannot check now. The next try may succeed."""


def wait_before(attempt: int, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before try ``attempt`` (0: the first): 1, 2, 4 ... 30, with jitter."""
    nominal = min(LONGEST_WAIT, FIRST_WAIT * 2 ** min(attempt, 16))
    return float(nominal * (1 + JITTER * (2 * jitter() - 1)))


class Reconnector:
    """Connects again and logs in again for one session, with backoff."""

    def __init__(
        self,
        session: ClientSession,
        clock: IReactorTime,
        connect: Callable[[], Deferred[Any]],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._clock = clock
        self._connect = connect
        self._jitter = jitter
        self._attempt = 0
        self._next: IDelayedCall | None = None
        self.password: str | None = None
        """The password the user logged in with, in memory only: to log in again."""

    @property
    def active(self) -> bool:
        return self._session.stage is Stage.RECONNECTING

    def begin(self, why: str) -> None:
        """The server went away: say so once, and start trying."""
        session = self._session
        if not session.move(Stage.RECONNECTING):
            return
        self._attempt = 0
        session.display.show(f"{why} Connecting again in the background; keep typing.", "error")
        session.update_status()
        self._schedule()

    def link_lost(self) -> None:
        """A link made while trying was lost before the login was done: try again."""
        if self.active and self._next is None:
            self._schedule()

    def next_try_note(self) -> None:
        """A key was pressed while away: when the next try comes."""
        if self.active and self._next is not None and self._next.active():
            self._say_next_in(self._next.getTime() - self._clock.seconds())

    def _say_next_in(self, seconds: float) -> None:
        self._session.display.show_status(
            f"[{self._session.user}]  not connected: next try in {max(0.0, seconds):.0f} s"
        )

    def stop(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def _schedule(self) -> None:
        wait = wait_before(self._attempt, self._jitter)
        self._attempt += 1
        self._next = self._clock.callLater(wait, self._try)
        self._say_next_in(wait)

    def _try(self) -> None:
        self._next = None
        if not self.active:
            return
        self._connect().addErrback(lambda _: self._schedule() if self.active else None)

    def greeted(self) -> None:
        """A new link said hello: log in again as the same user."""
        session = self._session
        if self.password is None:  # cannot happen once online; said plainly if it does
            self._give_up("Cannot log in again: the password is not known.")
            return

        def named(_: dict[str, Any]) -> Deferred[Any]:
            assert self.password is not None
            return session.request(wire.Password(self.password))

        session.request(wire.Login(session.user)).addCallback(named).addCallbacks(
            self._back, self._refused
        )

    def _back(self, _: dict[str, Any]) -> None:
        session = self._session
        if not session.move(Stage.ONLINE):
            return
        self._attempt = 0
        session.display.show("reconnected", "presence")
        session.back_online()

    def _refused(self, failure: Failure) -> None:
        if not self.active:
            return
        error = server_error(failure)
        if error.code in RETRY_LOGIN:
            self._session.close_link()  # this try is over; the next one in a while
            return
        self._give_up(f"{error.text} Not connecting again.")

    def _give_up(self, why: str) -> None:
        self.stop()
        self._session.display.show(why, "error")
        self._session.finish(EXIT_FAILURE)
