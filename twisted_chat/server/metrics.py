"""What operators can watch: the server's counts, as Prometheus metrics
(``--metrics ENDPOINT``; docs/operations.md lists each one).

Counting is kept off the hot path's budget: :class:`Stats` holds plain numbers that
the code bumps where things happen (an attribute or a dict increment, no lock, no
label lookup), and :class:`StatsCollector` turns them into metric families only when
Prometheus scrapes. What is already state (connections open, users online, the hash
queue) is read at scrape time, not counted twice. Histograms are observed only while
metrics are served.

The page is rendered in the reactor thread with ``prometheus_client``'s registry and
text format. Not its ``twisted.MetricsResource``: that runs the exposition in the
reactor's thread pool (a WSGI app), where reading the chat's state, which only the
reactor thread changes, would race with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from twisted.application.service import Service
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from twisted_chat.server.stats import Histogram, Stats


@implementer(ILogObserver)
class SecurityEventCounter:
    """Counts the security events the server logs (each one a structured event with a
    ``security_event`` field), so that nothing is counted in two places."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def __call__(self, event: LogEvent) -> None:
        kind = event.get("security_event")
        if isinstance(kind, str):
            self._stats.security[kind] += 1


class StatsCollector:
    """A Prometheus collector over :class:`Stats` and the state read at scrape time."""

    def __init__(
        self,
        stats: Stats,
        online_here: Callable[[], int],
        online_elsewhere: Callable[[], int],
        hash_queue: Callable[[], int],
    ) -> None:
        self._stats = stats
        self._online_here = online_here
        self._online_elsewhere = online_elsewhere
        self._hash_queue = hash_queue

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield _labelled(
            GaugeMetricFamily,
            "chat_connections",
            "Client connections open now, by listener and whether they use TLS.",
            ["listener", "tls"],
            stats.connections_open,
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_connections_opened",
            "Client connections accepted, by listener and whether they use TLS.",
            ["listener", "tls"],
            stats.connections_opened,
        )
        yield GaugeMetricFamily(
            "chat_users_online", "Users logged in through this node.", self._online_here()
        )
        yield GaugeMetricFamily(
            "chat_users_online_elsewhere",
            "Users logged in through the chat's other nodes, as this node has heard.",
            self._online_elsewhere(),
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_logins",
            "Login attempts, by outcome (ok, new-account, or the refusal's code).",
            ["outcome"],
            stats.logins,
        )
        yield CounterMetricFamily(
            "chat_lockouts", "Usernames locked after wrong passwords.", stats.security["lockout"]
        )
        yield _labelled(
            CounterMetricFamily, "chat_frames", "Frames received, by type.", ["type"], stats.frames
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_messages",
            "Messages accepted, by kind.",
            ["kind"],
            stats.messages,
        )
        yield _histogram(
            stats.delivery,
            "chat_delivery_seconds",
            "From a message's acceptance to its hand-over to a connection on this node.",
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_mailbox_writes",
            "Messages for offline users, by result (stored, full).",
            ["result"],
            stats.mailbox_writes,
        )
        yield _histogram(
            stats.store_writes,
            "chat_store_write_seconds",
            "Durable writes to the state file, each committed.",
        )
        yield CounterMetricFamily(
            "chat_store_errors", "Durable writes that failed.", stats.store_errors
        )
        yield _histogram(
            stats.redis_calls,
            "chat_redis_call_seconds",
            "Calls to Redis, from sending to the reply.",
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_redis_errors",
            "Calls to Redis that failed, by kind (error, unavailable).",
            ["kind"],
            stats.redis_errors,
        )
        yield GaugeMetricFamily(
            "chat_hash_queue", "Password hash checks running or waiting.", self._hash_queue()
        )
        yield CounterMetricFamily(
            "chat_hash_refusals",
            "Password checks refused (busy) because the hash queue was full.",
            stats.hash_refusals,
        )
        yield CounterMetricFamily(
            "chat_flood_throttled",
            "Times a connection sent faster than the flood limit and was slowed.",
            stats.throttled,
        )
        yield _labelled(
            CounterMetricFamily,
            "chat_security_events",
            "Security events logged, by kind (drops: flood, slow-reader, no-response, "
            "line-too-long; refusals; lockouts).",
            ["event"],
            stats.security,
        )


def _labelled(
    kind: Callable[..., Any], name: str, documentation: str, labels: list[str], values: Counter[Any]
) -> Metric:
    family = kind(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    metric: Metric = family
    return metric


def _histogram(histogram: Histogram, name: str, documentation: str) -> Metric:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in histogram.cumulative()
    ]
    family: Metric = HistogramMetricFamily(
        name, documentation, buckets=buckets, sum_value=histogram.total
    )
    return family


def registry_of(collector: StatsCollector) -> CollectorRegistry:
    """A registry of this server's own (never the process-wide default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class MetricsPage(Resource):
    """``/metrics``, in Prometheus's text format, rendered in the reactor thread."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


def metrics_site_root(registry: CollectorRegistry) -> Resource:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    return root


class SecurityEventCounting(Service):
    """While the server runs with metrics: security events are counted, and the
    histograms observed (nobody would read them otherwise)."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._observer = SecurityEventCounter(stats)

    def startService(self) -> None:
        super().startService()
        self._stats.timing = True
        globalLogPublisher.addObserver(self._observer)

    def stopService(self) -> None:
        super().stopService()
        globalLogPublisher.removeObserver(self._observer)
        self._stats.timing = False


def metrics_site(
    stats: Stats,
    online_here: Callable[[], int],
    online_elsewhere: Callable[[], int],
    hash_queue: Callable[[], int] | None,
) -> Site:
    """The web site that serves ``/metrics`` over these counts."""
    collector = StatsCollector(stats, online_here, online_elsewhere, hash_queue or _none)
    return Site(metrics_site_root(registry_of(collector)))


def _none() -> int:
    return 0
