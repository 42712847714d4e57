"""Output gathered per reactor turn: one write per connection per turn, in order, and
straight to the socket only when Twisted holds nothing for it."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from twisted_chat.server.output import Outbox, TurnFlusher, TurnServer, turn_listening_reactor


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def test_a_turns_output_is_one_write_at_its_end_in_order() -> None:
    clock = Clock()
    flusher = TurnFlusher(clock)
    a, b = CountingTransport(), CountingTransport()
    to_a, to_b = Outbox(a, flusher), Outbox(b, flusher)
    for n in range(3):
        to_a.write(b"a%d\n" % n)
        to_b.write(b"b%d\n" % n)
    assert a.value() == b"" and b.value() == b""  # nothing before the turn ends
    clock.advance(0)
    assert (a.value(), a.writes) == (b"a0\na1\na2\n", 1)
    assert (b.value(), b.writes) == (b"b0\nb1\nb2\n", 1)
    to_a.write(b"next turn\n")
    clock.advance(0)
    assert (a.value(), a.writes) == (b"a0\na1\na2\nnext turn\n", 2)


def test_flush_now_and_discard() -> None:
    clock = Clock()
    transport = CountingTransport()
    outbox = Outbox(transport, TurnFlusher(clock))
    outbox.write(b"before closing\n")
    outbox.flush()  # what the protocol does before loseConnection
    assert transport.value() == b"before closing\n"
    outbox.write(b"never sent\n")
    outbox.discard()  # what it does before abortConnection
    clock.advance(0)
    assert transport.value() == b"before closing\n"


class BrokenTransport(StringTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("a transport that breaks")

    def abortConnection(self) -> None:
        self.aborted = True


def test_an_outbox_that_raises_does_not_stall_the_others(
    no_logged_failures: list[dict[str, object]],
) -> None:
    clock = Clock()
    flusher = TurnFlusher(clock)
    before, broken, after = CountingTransport(), BrokenTransport(), CountingTransport()
    outboxes = [Outbox(t, flusher) for t in (before, broken, after)]
    for outbox in outboxes:
        outbox.write(b"hello\n")
    clock.advance(0)
    assert before.value() == b"hello\n"
    assert after.value() == b"hello\n"  # flushed although the one before it raised
    assert broken.aborted  # its stream has a gap: it cannot go on
    assert len(no_logged_failures) == 1  # logged for the operator, once
    no_logged_failures.clear()
    outboxes[2].write(b"next turn\n")
    clock.advance(0)
    assert after.value() == b"hello\nnext turn\n"


class Sink(Protocol):
    """The reading side: collects bytes; can stop reading to fill the socket."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.expected = 0
        self.complete: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.complete.called:
            self.complete.callback(None)


class Source(Protocol):
    def __init__(self, ready: Deferred[Source]) -> None:
        self.ready = ready

    def connectionMade(self) -> None:
        self.outbox = Outbox(self.transport, TurnFlusher(reactor))
        self.ready.callback(self)


async def turn() -> None:
    await deferLater(reactor, 0, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_gets_everything_in_order_over_real_tcp() -> None:
    ready: Deferred[Source] = Deferred()
    # Listening as the server does, so that connections are TurnServer transports.
    endpoint = serverFromString(turn_listening_reactor(reactor), "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(lambda: Source(ready)))
    sink = Sink()
    client: Any = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), sink
    )
    source = await ready.addTimeout(10, reactor)
    transport = source.transport
    assert isinstance(transport, TurnServer)
    try:
        client.transport.pauseProducing()  # read nothing: the kernel buffers fill up
        # Small kernel buffers, so that they surely fill (loopback autotunes to MBs).
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        big = b"".join(b"%08d\n" % n for n in range(400_000))  # 3.6 MB, more than fits
        sink.expected = len(big) + len(b"tail\n")
        source.outbox.write(big)
        await turn()
        assert transport.dataBuffer or transport._tempDataBuffer  # partly sent
        # Let the reader empty the kernel's buffers while Twisted keeps the rest: the
        # socket has room now, and a direct send would overtake what Twisted holds.
        # (Taken off the reactor's writers behind the transport's back: Twisted itself
        # stops writing only once its buffer is empty.)
        reactor.removeWriter(transport)
        client.transport.resumeProducing()
        for _ in range(20):
            await turn()
        assert 0 < len(sink.data) < len(big)
        source.outbox.write(b"tail\n")
        await turn()
        reactor.addWriter(transport)
        await sink.complete.addTimeout(10, reactor)
        assert bytes(sink.data) == big + b"tail\n"
    finally:
        client.transport.loseConnection()
        transport.loseConnection()
        await port.stopListening()
