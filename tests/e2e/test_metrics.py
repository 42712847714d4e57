"""End to end: ``twistd chatserver --metrics`` serves Prometheus metrics from the same
process, and a scrape taken while users talk shows the counts moving."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent

from tests.e2e.processes import ServerProcess, finish, logged_in
from twisted_chat import launch
from twisted_chat.launch import METRICS_LISTENING

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Body(Protocol):
    """Collects a response's body (``readBody`` warns about Agent's own transport)."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._done.callback(b"".join(self._chunks))


async def scrape(port: int) -> tuple[int, str, Samples]:
    """GET /metrics, as curl or Prometheus would: status, content type, samples."""
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    done: Deferred[bytes] = Deferred()
    response.deliverBody(Body(done))
    body = (await done).decode()
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return response.code, kind, samples


@pytest_twisted.ensureDeferred
async def test_metrics_move_with_what_users_do(workdir: Path) -> None:
    server = ServerProcess(
        workdir, 60, 120, "--metrics", "tcp:0:interface=127.0.0.1", "--flood-rate", "1000"
    )
    clients = []
    try:
        await server.started()
        metrics_port = await launch.ready(server.process, METRICS_LISTENING)
        code, kind, before = await scrape(metrics_port)
        assert code == 200 and kind.startswith("text/plain")
        assert before["chat_users_online", ()] == 0
        hans = await logged_in(server, "hans", "falcon*solo")
        yoda = await logged_in(server, "yoda", "wise@!man")
        clients += [hans, yoda]
        guesser = server.client("guesser")
        clients.append(guesser)
        await guesser.expect("Username: ")
        guesser.send("luke", "not-his")
        await guesser.expect("Invalid password")
        count = 200
        hans.send(*(f"message yoda load {n}" for n in range(count)))
        _, _, during = await scrape(metrics_port)  # while the messages flow
        await yoda.expect(f"hans: load {count - 1}")
        _, _, after = await scrape(metrics_port)
        direct = ("chat_messages_total", (("kind", "direct"),))
        assert 0 <= during.get(direct, 0) <= after[direct] == count
        assert after["chat_users_online", ()] == 2
        assert after["chat_logins_total", (("outcome", "ok"),)] == 2
        assert after["chat_logins_total", (("outcome", "wrong-password"),)] == 1
        assert after["chat_frames_total", (("type", "message"),)] == count
        assert after["chat_delivery_seconds_count", ()] >= count
        labels = (("listener", str(server.port)), ("tls", "plain"))
        assert after["chat_connections_opened_total", labels] == 3
        assert after["chat_connections", labels] == 2  # the guesser, on a pipe, gave up
        # Every message is kept in history first: at most one commit each (group commit).
        commits = after["chat_store_write_seconds_count", ()]
        assert 0 < commits <= count
        hans.send("message leia kept for later")
        await hans.expect("leia is offline")
        _, _, last = await scrape(metrics_port)
        assert last["chat_mailbox_writes_total", (("result", "stored"),)] == 1
        assert last["chat_store_write_seconds_count", ()] > commits  # history, then mail
    finally:
        await finish(*clients, server)
