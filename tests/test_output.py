"""Output gathered per reactor turn: one write per connection per turn, in order, and
straight to the socket only when Twisted holds nothing for it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from twisted_chat.certs import self_signed, write_identity
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


@pytest.fixture
def identity(tmp_path: Path) -> tuple[Path, Path, CertificateOptions]:
    """A server certificate and the client options that trust it."""
    made = self_signed(["127.0.0.1"])
    write_identity(made, tmp_path / "key.pem", tmp_path / "cert.pem")
    trust = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(made.cert_pem))
    return tmp_path / "key.pem", tmp_path / "cert.pem", trust  # type: ignore[return-value]


def escaped(path: Path) -> str:
    return str(path).replace(":", "\\:")


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_over_tls_gets_everything_in_order(
    identity: tuple[Path, Path, Any],
) -> None:
    """A TLS listener's connections are not TurnServer: everything goes through the TLS
    transport's write, in order, however slowly the client reads."""
    key, cert, trust = identity
    ready: Deferred[Source] = Deferred()
    description = f"ssl:0:privateKey={escaped(key)}:certKey={escaped(cert)}:interface=127.0.0.1"
    endpoint = serverFromString(turn_listening_reactor(reactor), description)
    port = await endpoint.listen(Factory.forProtocol(lambda: Source(ready)))
    sink = Sink()
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client: Any = await connectProtocol(wrapClientTLS(trust, tcp), sink)
    source = await ready.addTimeout(10, reactor)
    assert not isinstance(source.transport, TurnServer)
    try:
        client.transport.pauseProducing()
        big = b"".join(b"%08d\n" % n for n in range(200_000))  # 1.8 MB
        sink.expected = len(big) + len(b"tail\n")
        source.outbox.write(big)
        await turn()
        source.outbox.write(b"tail\n")
        await turn()
        client.transport.resumeProducing()
        await sink.complete.addTimeout(20, reactor)
        assert bytes(sink.data) == big + b"tail\n"
    finally:
        client.transport.loseConnection()
        assert source.transport is not None
        source.transport.loseConnection()
        await port.stopListening()


class Upgrading(Source):
    """The server side of a connection that starts TLS after it connected."""

    def dataReceived(self, data: bytes) -> None:
        if data == b"STARTTLS\n":
            assert isinstance(self.transport, TurnServer)
            self.transport.write(b"GO\n")  # the last plain bytes; TLS from here on
            self.transport.startTLS(self.context)


@pytest_twisted.ensureDeferred
async def test_a_connection_that_starts_tls_never_gets_plaintext_under_it(
    identity: tuple[Path, Path, Any],
) -> None:
    key, cert, trust = identity
    ready: Deferred[Source] = Deferred()
    context = PrivateCertificate.loadPEM(key.read_bytes() + cert.read_bytes()).options()

    def upgrading() -> Upgrading:
        protocol = Upgrading(ready)
        protocol.context = context  # type: ignore[attr-defined]
        return protocol

    endpoint = serverFromString(turn_listening_reactor(reactor), "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(upgrading))
    sink = Sink()
    client: Any = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        sink,
    )
    source = await ready.addTimeout(10, reactor)
    try:
        sink.expected = len(b"GO\n")
        client.transport.write(b"STARTTLS\n")
        await sink.complete.addTimeout(10, reactor)
        client.transport.startTLS(trust)
        sink.data.clear()
        sink.complete = Deferred()
        sink.expected = len(b"sealed\n")
        source.outbox.write(b"sealed\n")  # once TLS is on, this must go through TLS
        await sink.complete.addTimeout(10, reactor)
        assert bytes(sink.data) == b"sealed\n"
    finally:
        client.transport.loseConnection()
        assert source.transport is not None
        source.transport.loseConnection()
        await port.stopListening()
