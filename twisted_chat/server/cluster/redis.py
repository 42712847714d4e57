"""The connection to Redis: RESP2 over a Twisted protocol, replies parsed by hiredis.

Why not txredisapi (report.md §7): while it is disconnected it queues commands and
sends them once Redis is back, so a ``block`` the user was told had failed would be
applied late; its default ``convertNumbers`` turns a stored password such as ``0123``
into an integer; and it ships no type hints. What a chat node needs is small: pipelined
calls whose replies come back in order, a bound on every call, and failing at once,
never queueing, while Redis is away. The parsing is the part worth a library:
``hiredis`` is maintained by the Redis project and parses in C.

Every call is bounded: a reply later than ``timeout`` seconds aborts the connection
(replies are positional, so one cannot be skipped), every call waiting on it fails with
:class:`SharedStateUnavailable`, and ``ClientService`` connects again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import hiredis
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from twisted_chat.errors import SharedStateUnavailable
from twisted_chat.server.cluster.address import RedisAddress
from twisted_chat.server.stats import Stats

DEFAULT_CALL_TIMEOUT = 2.0
"""Seconds a call may wait for its reply; a blocking read adds its own block time."""

Reply = Any
"""What hiredis makes of a reply: str, int, None, or a list of those."""


class RedisError(Exception):
    """Redis answered with an error (a script's ``error_reply``, a wrong type, ...)."""


REDIS_TROUBLE = (SharedStateUnavailable, RedisError)
"""What a call to Redis may fail with that is Redis's doing, not a bug of ours: what
background work (heartbeat, reaping, releases) traps, says, and tries again."""


def pairs(flat: Sequence[str]) -> Iterable[tuple[str, str]]:
    """A flat reply (``HGETALL``'s: key, value, key, value ...) as (key, value) pairs;
    ``ValueError`` for an odd count."""
    return zip(flat[::2], flat[1::2], strict=True)


def encode_command(args: Sequence[str | int | float | bytes]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        else:
            data = repr(arg).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisProtocol(Protocol):
    """One connection: calls go out at once (pipelined), replies come back in order."""

    transport: Any
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        address: RedisAddress,
        timeout: float,
        on_ready: Callable[[RedisProtocol], None],
        scripts: Sequence[str] = (),
        stats: Stats | None = None,
    ) -> None:
        """``on_ready`` gets the protocol once it is signed in, the database selected
        and the scripts loaded; a connection whose sign-in fails is dropped."""
        self._clock = clock
        self._address = address
        self._timeout = timeout
        self._on_ready = on_ready
        self._scripts = scripts
        self._stats = stats or Stats()
        # Everything we write is UTF-8; bytes that are not (another tool's) become
        # U+FFFD rather than an exception in the middle of the reply stream.
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._waiting: deque[tuple[Deferred[Reply], float, float]] = deque()
        """(the call's Deferred, its deadline, when it was sent), oldest first."""
        self._watchdog: IDelayedCall | None = None
        self._hello_over = False
        """Signed in, or given up on: the sign-in's outcome is acted on once."""
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True
        address = self._address
        hello: list[Deferred[Reply]] = []
        if address.password is not None:
            sign_in = [address.username, address.password] if address.username else []
            hello.append(self.call("AUTH", *(sign_in or [address.password])))
        if address.db:
            hello.append(self.call("SELECT", address.db))
        # Every script, before any call: EVALSHA then never meets a Redis that lacks
        # one (a restarted Redis has an empty script cache; this is a new connection).
        hello.extend(self.call("SCRIPT", "LOAD", source) for source in self._scripts)
        hello.append(self.call("PING"))
        hello[-1].addCallbacks(self._signed_in, self._hello_failed)
        for d in hello[:-1]:
            d.addErrback(self._hello_failed)

    def _signed_in(self, _: object) -> None:
        if not self._hello_over:
            self._hello_over = True
            self._on_ready(self)

    def _hello_failed(self, failure: Failure) -> None:
        if self._hello_over:
            return
        self._hello_over = True
        if failure.check(RedisError):
            # LOADING: Redis restarted and is reading its AOF; the next try will do.
            loading = str(failure.value).startswith("LOADING")
            self.log.emit(
                LogLevel.info if loading else LogLevel.error,
                "Redis refused us: {why}",
                why=failure.getErrorMessage(),
            )
        # ClientService then sees a lost connection and tries again after its backoff.
        if self.connected:
            self.transport.abortConnection()

    def call(self, *args: str | int | float | bytes, extra_time: float = 0.0) -> Deferred[Reply]:
        """Send one command; the Deferred fires with its reply, or fails with
        :class:`RedisError` (Redis said no) or :class:`SharedStateUnavailable`
        (no reply within the timeout plus ``extra_time``, or the connection ended)."""
        if not self.connected:
            return fail(SharedStateUnavailable())
        d: Deferred[Reply] = Deferred()
        now = self._clock.seconds()
        self._waiting.append((d, now + self._timeout + extra_time, now))
        self.transport.write(encode_command(args))
        if self._watchdog is None:
            self._watchdog = self._clock.callLater(self._timeout / 4, self._watch)
        return d

    def _watch(self) -> None:
        """One timer per connection, not one per call: checks the oldest call."""
        self._watchdog = None
        if not self._waiting:
            return
        if self._clock.seconds() > self._waiting[0][1]:
            self.log.warn("Redis did not answer in time; reconnecting")
            self.transport.abortConnection()
            return
        self._watchdog = self._clock.callLater(self._timeout / 4, self._watch)

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                self.log.error("Redis sent something that is not RESP; reconnecting")
                self.transport.abortConnection()
                return
            if reply is False:
                return
            if not self._waiting:
                self.log.error("Redis sent a reply nobody asked for; reconnecting")
                self.transport.abortConnection()
                return
            d, _, sent = self._waiting.popleft()
            stats = self._stats
            if stats.timing:
                stats.redis_calls.observe(self._clock.seconds() - sent)
            if not isinstance(reply, hiredis.ReplyError):
                d.callback(reply)
            elif str(reply).startswith("NOSCRIPT"):
                # Someone flushed Redis's scripts: a new connection loads them again.
                self.log.warn("Redis has lost our scripts; reconnecting to load them")
                stats.redis_errors["unavailable"] += 1
                d.errback(SharedStateUnavailable())
                self.transport.abortConnection()
            else:
                stats.redis_errors["error"] += 1
                d.errback(RedisError(str(reply)))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        self._stats.redis_errors["unavailable"] += len(waiting)
        for d, _, _ in waiting:
            d.errback(SharedStateUnavailable())


class _RedisFactory(Factory):
    """Makes each new connection's protocol, with the client's settings."""

    def __init__(self, make: Callable[[], RedisProtocol]) -> None:
        self._make = make

    def buildProtocol(self, addr: object) -> RedisProtocol:
        return self._make()


def _backoff(attempt: int) -> float:
    """Reconnect soon: Redis restarts in well under a second, and a node without it
    serves no one. 0.1, 0.2, 0.4 ... at most 1 s between tries."""
    return float(min(1.0, 0.1 * 2 ** min(attempt, 4)))


class RedisClient:
    """A connection to Redis that comes back by itself. Calls made while it is away fail
    at once with :class:`SharedStateUnavailable`: none waits, none is sent late."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        name: str = "redis",
        scripts: Sequence[str] = (),
        stats: Stats | None = None,
    ) -> None:
        """``scripts``: Lua sources loaded on every new connection before it is used."""
        self.address = address
        self._protocol: RedisProtocol | None = None
        # Not ClientService's prepareConnection for the sign-in: a connection that
        # closes while being prepared has no move in its state machine (NoTransition).
        # The protocol signs in by itself and says when it is ready; until then, and
        # after it is lost, calls fail at once.
        self._service = ClientService(
            address.endpoint(reactor),
            _RedisFactory(
                partial(RedisProtocol, reactor, address, timeout, self._ready, scripts, stats)
            ),
            retryPolicy=_backoff,
            clock=reactor,
        )
        self._name = name
        self._was_up = False
        self._stats = stats or Stats()

    def _ready(self, protocol: RedisProtocol) -> None:
        self._protocol = protocol
        if not self._was_up:
            self.log.info(
                "{name}: connected to Redis at {where}", name=self._name, where=str(self.address)
            )
        self._was_up = True

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred[None]:
        self._protocol = None
        stopped: Deferred[None] = self._service.stopService()
        return stopped

    def call(self, *args: str | int | float | bytes, extra_time: float = 0.0) -> Deferred[Reply]:
        protocol = self._protocol
        if protocol is None or not protocol.connected:
            self._stats.redis_errors["unavailable"] += 1
            return fail(SharedStateUnavailable())
        return protocol.call(*args, extra_time=extra_time)
