"""Does a durable write hold up anyone else? Measure it.

Starts its own server (``twistd chatserver``, durable SQLite store, in a temporary
directory) on 127.0.0.1 and three clients speaking the wire protocol:

1. baseline: hans sends yoda (online) ``--count`` messages, one at a time; latency is
   from hans's send to yoda's receipt.
2. under load: the same, while luke keeps ``--depth`` offline messages in flight to
   offline users; each is acknowledged only once committed (WAL, synchronous=FULL).

Prints latency percentiles for both, and the durable writes' throughput and
acknowledgement latency. Bounded in count and time; ends the server by its PID.

    .venv/bin/python scripts/measure_durable_latency.py [--count 2000] [--depth 32]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater, react

from twisted_chat import launch, wire
from twisted_chat.bench.coordinator import percentile
from twisted_chat.client.link import ServerLink

REPO = Path(__file__).resolve().parents[1]
USERS = {"hans": "falcon*solo", "yoda": "wise@!man", "luke": "=hope+"}
OFFLINE = ["vader", "r2d2", "c3p0", "leia", "obiwan", "chewy", "palpatine"]
LIMIT_SECONDS = 120.0


class Listener:
    """Receives a link's events; ``on_message`` sees every direct message."""

    def __init__(self) -> None:
        self.on_message: Callable[[wire.Message], None] = lambda m: None

    def link_made(self, link: ServerLink) -> None:
        pass

    def event_received(self, event: wire.Frame) -> None:
        if isinstance(event, wire.Message):
            self.on_message(event)

    def server_lost(self, why: str = "") -> None:
        pass


async def login(port: int, user: str) -> tuple[ServerLink, Listener]:
    listener = Listener()
    link = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), ServerLink(listener)
    )
    await link.request(wire.Hello(wire.PROTOCOL_VERSION))
    await link.request(wire.Login(user))
    await link.request(wire.Password(USERS[user]))
    return link, listener


def percentiles(samples: list[float]) -> str:
    def at(q: float) -> float:
        return percentile(samples, q) * 1000

    return (
        f"n={len(samples)} p50={at(0.50):.2f} ms p90={at(0.90):.2f} ms "
        f"p99={at(0.99):.2f} ms max={max(samples) * 1000:.2f} ms"
    )


async def ping_pong(hans: ServerLink, yoda: Listener, count: int, deadline: float) -> list[float]:
    """hans -> yoda, one message at a time; the latency of each."""
    latencies: list[float] = []
    for n in range(count):
        if time.monotonic() > deadline:
            break
        arrived: Deferred[None] = Deferred()
        started = time.perf_counter()

        def got(message: wire.Message, n: int = n, arrived: Deferred[None] = arrived) -> None:
            if message.text == f"probe {n}" and not arrived.called:
                arrived.callback(None)

        yoda.on_message = got
        hans.request(wire.SendMessage("yoda", f"probe {n}"))
        await arrived
        latencies.append(time.perf_counter() - started)
    return latencies


class Writer:
    """Keeps ``depth`` durable offline writes in flight until stopped."""

    def __init__(self, link: ServerLink, depth: int) -> None:
        self.link = link
        self.depth = depth
        self.running = True
        self.acks: list[float] = []
        self.sent = 0
        self.done: Deferred[None] = Deferred()
        self._in_flight = 0

    def start(self) -> None:
        for _ in range(self.depth):
            self._send()

    def _send(self) -> None:
        if not self.running:
            if self._in_flight == 0 and not self.done.called:
                self.done.callback(None)
            return
        recipient = OFFLINE[self.sent % len(OFFLINE)]
        self.sent += 1
        self._in_flight += 1
        started = time.perf_counter()

        def acked(result: dict[str, Any]) -> None:
            assert result.get("stored") is True, result
            self.acks.append(time.perf_counter() - started)
            self._in_flight -= 1
            self._send()

        self.link.request(wire.SendMessage(recipient, f"durable {self.sent}")).addCallback(acked)


async def measure(_reactor: Any, count: int, depth: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="twisted-chat-latency-"))
    shutil.copy(REPO / "credentials.txt", workdir / "credentials.txt")
    # A measurement sends as fast as it can: per-user flood limits are raised (and said
    # so in the output), or they would be what is measured.
    server, port = await launch.start_server(
        reactor,
        workdir,
        "--timeout",
        "3600",
        "--mailbox-limit",
        "1000000",
        "--flood-burst",
        "1000000",
        "--flood-rate",
        "1000000",
    )
    deadline = time.monotonic() + LIMIT_SECONDS
    try:
        hans, _ = await login(port, "hans")
        _, yoda = await login(port, "yoda")
        luke, _ = await login(port, "luke")
        await ping_pong(hans, yoda, 50, deadline)  # warm up
        baseline = await ping_pong(hans, yoda, count, deadline)
        writer = Writer(luke, depth)
        started = time.perf_counter()
        writer.start()
        await deferLater(reactor, 0.5, lambda: None)  # let the writes get going
        loaded = await ping_pong(hans, yoda, count, deadline)
        writer.running = False
        await writer.done
        elapsed = time.perf_counter() - started
        print(
            f"server: twistd chatserver, durable store "
            f"(SQLite WAL, synchronous=FULL), flood limits raised, in {workdir}"
        )
        print(f"online delivery, no durable writes : {percentiles(baseline)}")
        print(f"online delivery, durable writes on : {percentiles(loaded)}")
        print(
            f"durable offline writes, {depth} in flight: {len(writer.acks)} acknowledged in "
            f"{elapsed:.1f} s = {len(writer.acks) / elapsed:.0f}/s; "
            f"ack latency {percentiles(writer.acks)}"
        )
    finally:
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="probes per phase")
    parser.add_argument("--depth", type=int, default=32, help="durable writes in flight")
    args = parser.parse_args()
    react(lambda r: Deferred.fromCoroutine(measure(r, args.count, args.depth)))


if __name__ == "__main__":
    main()
