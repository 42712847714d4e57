"""The server's counts for its operators, as plain numbers: bumped where things happen
(an attribute or a dict increment: no lock, no label lookup, nothing imported), and
read only when someone asks (``metrics``, when ``--metrics`` serves them)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: the buckets of every latency histogram (a chat delivers in milliseconds;
past a few seconds something is wrong, and the last bucket says so)."""


class Histogram:
    """Counts per bucket, and the sum: what a Prometheus histogram needs."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound infinite."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Stats:
    """The server's counts, as plain numbers."""

    def __init__(self) -> None:
        self.timing = False
        """Histograms are observed (metrics are served): else nobody reads them."""
        self.connections_open: Counter[tuple[str, str]] = Counter()
        """(listener, "tls" or "plain") -> connections open now."""
        self.connections_opened: Counter[tuple[str, str]] = Counter()
        self.frames: Counter[str] = Counter()
        """Frames received, by type."""
        self.messages: Counter[str] = Counter()
        """Messages accepted, by kind (direct, broadcast)."""
        self.logins: Counter[str] = Counter()
        """Logins by outcome (ok, new-account, or the error code)."""
        self.mailbox_writes: Counter[str] = Counter()
        """Offline mail: stored, or refused for a full mailbox."""
        self.security: Counter[str] = Counter()
        """Security events logged (lockout, flood, slow-reader...), by kind."""
        self.throttled = 0
        """Times a connection's flood bucket ran dry and reading was slowed."""
        self.hash_refusals = 0
        """Password checks refused because the hash pool's queue was full."""
        self.delivery = Histogram()
        """Seconds from a message's acceptance to its hand-over to a connection here."""
        self.store_writes = Histogram()
        """Seconds per durable write (a group commit of offline mail, a block)."""
        self.store_errors = 0
        self.redis_calls = Histogram()
        """Seconds per Redis call, from sending to its reply."""
        self.redis_errors: Counter[str] = Counter()
        """Redis calls that failed: "error" (Redis said no), "unavailable"."""

    def observe_delivery(self, seconds: float) -> None:
        if self.timing:
            self.delivery.observe(seconds)
