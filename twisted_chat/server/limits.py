"""The limits a chat server must ship, as trusted servers do (ngIRCd, InspIRCd, Ergo,
Prosody, ejabberd): flood control, a cap on output to slow readers, liveness checks,
and connection limits. Configured by :class:`Limits`; every decision uses the
injected clock, so each is tested with ``task.Clock``."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from twisted_chat.server.passwords import SHARE


@dataclass(frozen=True)
class Limits:
    """Defaults and where they come from (``docs/limits.md`` has the reasoning)."""

    flood_burst: float = 10
    """Frames a user may send at once before being slowed (Ergo 5, Synapse 10)."""
    flood_rate: float = 5.0
    """Frames per second a user may send steadily (Ergo 2/s, ngIRCd 3/s)."""
    flood_disconnect: float = 30.0
    """Seconds of continuous throttling (sustained flooding) before a disconnect."""
    output_cap: int = 256 * 1024
    """Bytes a slow reader may leave unread past the transport's own 64 KiB buffer
    before it is dropped (ngIRCd 32 KiB ... Unreal 200 KiB ... InspIRCd 1 MiB)."""
    ping_interval: float = 30.0
    """Seconds of silence from a client before the server pings it."""
    ping_timeout: float = 90.0
    """Seconds of silence after which a client is taken for gone (half-open)."""
    hello_timeout: float = 10.0
    """Seconds a connection has to send its first frame (over TLS, to finish its
    handshake first): a connection that says nothing is dropped without a word."""
    login_timeout: float = 60.0
    """Seconds a connection has to finish logging in (Ergo 60 s)."""
    login_frames: int = 30
    """Frames allowed before login completes: enough for typos, not for guessing."""
    max_connections: int = 20_000
    """Connections at once, in all; lowered at start to fit the open-file limit."""
    max_per_ip: int = 16
    """Connections at once from one network (:attr:`v4_prefix`, :attr:`v6_prefix`),
    loopback included (Ergo 16)."""
    new_accounts_burst: float = 5
    """New accounts one network (/24, /64) may make at once (Synapse's burst is 3)."""
    new_account_interval: float = 60.0
    """Seconds between new accounts from one network after its burst."""
    new_accounts_total_burst: float = 100
    """New accounts the whole server takes at once, from everywhere."""
    new_account_total_interval: float = 1.0
    """Seconds between new accounts in all after that burst."""
    password_checks_per_network: int = SHARE
    """Password checks one network may have under way at once: its share of the hash
    pool (2 threads, 64 waiting), so guesses from a few networks slow only them."""
    v4_prefix: int = 24
    """The IPv4 network (prefix length) the per-network limits count an address under."""
    v6_prefix: int = 64
    """The IPv6 network (prefix length) the per-network limits count an address under."""


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one token per frame."""

    __slots__ = ("_at", "_clock", "_tokens", "burst", "rate")  # one per connection

    def __init__(self, clock: IReactorTime, burst: float, rate: float) -> None:
        self._clock = clock
        self.burst = burst
        self.rate = rate
        self._tokens = burst
        self._at = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """Spend a token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until a token is available."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self.rate)

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self.burst


@implementer(IPushProducer)
class OutputGate:
    """Registered with a transport as its producer: the transport says when its
    buffer is over 64 KiB (pause) and when it drained (resume). While paused, bytes
    written are counted; over ``cap`` the reader is too slow and ``overflow`` runs."""

    __slots__ = ("_overflow", "backlog", "cap", "paused")  # one per connection

    def __init__(self, cap: int, overflow: Callable[[], None]) -> None:
        self.cap = cap
        self._overflow = overflow
        self.paused = False
        self.backlog = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:
        self.paused = True

    def wrote(self, size: int) -> None:
        if self.paused:
            self.backlog += size
            if self.backlog > self.cap:
                self._overflow()


YOUNG_COLLECTION_EVERY = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


def tune_collector() -> None:
    """Let short-lived objects die young. A message the server keeps in its history
    waits, with its reply, for the commit of its batch; at thousands of messages a
    second, Python's default young threshold (700 allocations) collects them several
    times while they wait, promotes them to the oldest generation, and so triggers
    full collections that walk every session and connection. A larger young
    threshold costs a few megabytes and about a quarter of the server's time per
    message (docs/performance.md). Synapse tunes its collector for the same reason."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, oldest)


CLOSE_GRACE = 5.0
"""Seconds a connection the server closes has to go before it is aborted: a TLS close
waits for the peer's answer, which a silent or hostile peer never sends, and until the
connection is gone it counts against its address."""

DESCRIPTORS_KEPT = 64
"""Open files the server needs besides its clients: listeners, the state database and
its journal, the thread pool, inotify, logs."""


def fit_descriptor_limit(wanted: int) -> tuple[int, str | None]:
    """Raise this process's soft open-file limit as far as the hard limit allows (the
    usual soft limit, 1,024, is far below a chat server's needs), and return how many
    connections fit under it, with a line for the log when that is fewer than
    ``wanted``: without this, connections past the limit fail at ``accept`` with
    EMFILE, and the listener spins on it."""
    try:
        import resource
    except ImportError:  # not Unix: nothing to raise, nothing to fit
        return wanted, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + DESCRIPTORS_KEPT)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    room = max(1, soft - DESCRIPTORS_KEPT)
    if wanted <= room:
        return wanted, None
    if wanted - room <= DESCRIPTORS_KEPT:
        # Short only by the descriptors the server keeps for itself (the default
        # --max-connections on a limit of the same number): not worth a word.
        return room, None
    return room, (
        f"--max-connections {wanted} does not fit the open-file limit ({soft}); "
        f"accepting at most {room} connections"
    )


class NewAccountLimit:
    """How fast accounts may be made: a token bucket per network and one in all. The
    per-network buckets are kept only while they matter (a full one is forgotten)."""

    KEPT = 10_000
    """Networks remembered before the full buckets are swept."""

    def __init__(self, clock: IReactorTime, limits: Limits) -> None:
        self._clock = clock
        self._limits = limits
        self._total = TokenBucket(
            clock, limits.new_accounts_total_burst, 1 / limits.new_account_total_interval
        )
        self._networks: dict[str, TokenBucket] = {}

    def take(self, network: str) -> float | None:
        """Count a new account from ``network``; None if allowed, else the seconds to
        wait. A refusal spends nothing."""
        limits = self._limits
        bucket = self._networks.get(network)
        if bucket is None:
            if len(self._networks) >= self.KEPT:
                self._networks = {k: b for k, b in self._networks.items() if not b.full}
            bucket = TokenBucket(
                self._clock, limits.new_accounts_burst, 1 / limits.new_account_interval
            )
            self._networks[network] = bucket
        wait = max(bucket.wait(), self._total.wait())
        if wait > 0:
            return wait
        bucket.take()
        self._total.take()
        return None


class ConnectionCounter:
    """Connections open now, in all and per network."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self._per_network: dict[str, int] = {}

    def admit(self, network: str) -> str | None:
        """Count a new connection, or say why it is refused."""
        if self.total >= self.limits.max_connections:
            return "The server is full. Try again later."
        count = self._per_network.get(network, 0)
        # Loopback too: on a shared machine every local user is 127.0.0.1. A benchmark
        # or a local proxy lifts the limit explicitly (--max-per-ip).
        if count >= self.limits.max_per_ip:
            return f"Too many connections from {network}."
        self.total += 1
        self._per_network[network] = count + 1
        return None

    def release(self, network: str) -> None:
        self.total -= 1
        count = self._per_network.get(network, 0) - 1
        if count > 0:
            self._per_network[network] = count
        else:
            self._per_network.pop(network, None)
