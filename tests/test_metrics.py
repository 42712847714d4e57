"""What an operator's scrape shows: the counts move with what users do, through the
real protocols (the harness), and the page is Prometheus's text format."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.logger import Logger
from twisted.web.test.requesthelper import DummyRequest

from tests.harness import Server
from twisted_chat.server.metrics import (
    MetricsPage,
    SecurityEventCounter,
    StatsCollector,
    registry_of,
)
from twisted_chat.server.stats import Histogram, Stats


def scrape(
    server: Server, stats: Stats | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, labels)."""
    chat = server.chat
    collector = StatsCollector(
        stats or chat.stats, lambda: len(chat.online), lambda: len(chat.roster), lambda: 3
    )
    request = DummyRequest([b"metrics"])
    page = MetricsPage(registry_of(collector)).render_GET(request)  # type: ignore[arg-type]
    kinds = request.responseHeaders.getRawHeaders(b"content-type") or [b""]
    assert kinds[0].startswith(b"text/plain")
    samples = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_a_scrape_follows_logins_messages_and_connections(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.chat.stats.timing = True
    hans, yoda = server.online("hans"), server.online("yoda")
    refused = server.connect()
    refused.hello()
    refused.send("login", user="luke")
    refused.send("password", password="wrong")
    hans.send("message", to="yoda", text="one")
    hans.send("message", to="yoda", text="two")
    hans.send("message", to="luke", text="later")
    yoda.send("broadcast", text="all")
    before = scrape(server)
    assert before["chat_users_online", ()] == 2
    assert before["chat_logins_total", (("outcome", "ok"),)] == 2
    assert before["chat_logins_total", (("outcome", "wrong-password"),)] == 1
    assert before["chat_messages_total", (("kind", "direct"),)] == 3
    assert before["chat_messages_total", (("kind", "broadcast"),)] == 1
    assert before["chat_mailbox_writes_total", (("result", "stored"),)] == 1
    assert before["chat_frames_total", (("type", "message"),)] == 3
    assert before["chat_connections", (("listener", "5000"), ("tls", "plain"))] == 3
    # Handed over here: the two messages to yoda and the broadcast (the stored one waits).
    assert before["chat_delivery_seconds_count", ()] == 3
    assert before["chat_hash_queue", ()] == 3
    hans.send("message", to="yoda", text="three")
    hans.close()
    after = scrape(server)
    assert after["chat_messages_total", (("kind", "direct"),)] == 4
    assert after["chat_connections", (("listener", "5000"), ("tls", "plain"))] == 2
    assert after["chat_connections_opened_total", (("listener", "5000"), ("tls", "plain"))] == 3
    assert after["chat_users_online", ()] == 1


def test_security_events_are_counted_from_the_log() -> None:
    stats = Stats()
    counter = SecurityEventCounter(stats)
    log = Logger(observer=counter)
    log.warn("username {user} locked", user="yoda", security_event="lockout")
    log.warn("slow", security_event="slow-reader")
    log.warn("slow", security_event="slow-reader")
    log.info("nothing to count")
    assert stats.security == {"lockout": 1, "slow-reader": 2}


def test_a_histogram_is_cumulative_with_an_infinite_last_bucket() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert histogram.total == 3.65


def test_nothing_is_timed_unless_metrics_are_served(tmp_path: Path) -> None:
    server = Server(tmp_path)
    hans, _yoda = server.online("hans"), server.online("yoda")
    hans.send("message", to="yoda", text="one")
    assert server.chat.stats.delivery.counts == [0] * len(server.chat.stats.delivery.counts)
    assert server.chat.stats.messages["direct"] == 1  # counting costs an increment: always


def test_the_page_is_text_even_with_no_traffic(tmp_path: Path) -> None:
    server = Server(tmp_path)
    samples = scrape(server)
    assert samples["chat_users_online", ()] == 0
    assert samples["chat_delivery_seconds_count", ()] == 0
