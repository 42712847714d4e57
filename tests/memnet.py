"""Several real clients, their peer networks and the real server, joined in memory with
``twisted.test.iosim`` pumps on one ``Clock``: whole private-chat flows without sockets."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import implementer

from tests.fakes import RecordingDisplay
from tests.harness import HANDOUT_USERS, Server
from twisted_chat.client.link import ServerLink
from twisted_chat.client.peer import PeerManager, TLSClientEndpoint
from twisted_chat.client.peertls import PeerTLS, make_identity
from twisted_chat.client.session import ClientSession


@implementer(IListeningPort)
class _Port:
    def __init__(self, network: MemoryNetwork, port: int) -> None:
        self._network = network
        self._port = port

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> Deferred[None]:
        self._network.listeners.pop(self._port, None)
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self._port)


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)


@implementer(IStreamServerEndpoint)
class _ListenEndpoint:
    def __init__(self, network: MemoryNetwork) -> None:
        self._network = network

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self._network.next_port += 1
        self._network.listeners[self._network.next_port] = factory
        return succeed(_Port(self._network, self._network.next_port))


@implementer(IStreamClientEndpoint)
class _ConnectEndpoint:
    def __init__(self, network: MemoryNetwork, port: int, source: str = "127.0.0.1") -> None:
        self._network = network
        self._port = port
        self._source = source
        """The address the connection comes from, as the listener sees it."""

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        listener = self._network.listeners.get(self._port)
        if listener is None:
            return fail(ConnectionRefusedError())
        address = IPv4Address("TCP", self._source, self._port)
        server_side = listener.buildProtocol(address)
        if server_side is None:
            return fail(ConnectionRefusedError())
        client_side = factory.buildProtocol(address)
        assert client_side is not None
        self._network.join(server_side, client_side)
        return succeed(client_side)


class MemoryNetwork:
    """Listeners by port and the pumps of every connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clock = server.clock
        self.listeners: dict[int, IProtocolFactory] = {}
        self.next_port = 50000
        self.pumps: list[IOPump] = []

    def join(self, server_side: IProtocol, client_side: IProtocol) -> IOPump:
        pump: IOPump = connect(
            server_side,
            # Real IP addresses on both sides: the chat server hands a peer's address
            # to its partner, and only an IP is an address to hand.
            FakeTransport(server_side, True, LOOPBACK, LOOPBACK),
            client_side,
            FakeTransport(client_side, False, LOOPBACK, LOOPBACK),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return pump

    def listen_on(self, interface: str) -> IStreamServerEndpoint:
        return _ListenEndpoint(self)

    def connect_to(self, host: str, port: int, source: str = "127.0.0.1") -> IStreamClientEndpoint:
        return _ConnectEndpoint(self, port, source)

    def flush(self) -> None:
        """Move bytes and disconnections until nothing moves."""
        for _ in range(1000):
            moved = [pump.pump() for pump in list(self.pumps)]
            if not any(moved):
                return
        raise AssertionError("the network never settled")

    def advance(self, seconds: float) -> None:
        """Let time pass a second at a time, moving bytes each second (see
        ``Server.advance``)."""
        whole = int(seconds)
        for _ in range(whole):
            self.clock.advance(1.0)
            self.flush()
        self.clock.advance(seconds - whole)
        self.flush()


class Person:
    """One user at a client: the real session, link and peer network."""

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self.network = network
        self.name = name
        self.display = RecordingDisplay()
        self.peers = PeerManager(
            network.clock, listen_on=network.listen_on, connect_to=network.connect_to
        )
        self.session = ClientSession(self.display, self.peers)
        self.link = ServerLink(self.session)
        self.server_side = network.server.factory.buildProtocol(None)
        self.server_saw: list[bytes] = []
        """Every line the server received from this client."""
        self._record_lines(self.server_side.lineReceived)
        network.join(self.server_side, self.link)
        network.flush()

    def _record_lines(self, original: Callable[[bytes], None]) -> None:
        def recording(line: bytes) -> None:
            self.server_saw.append(line)
            original(line)

        self.server_side.lineReceived = recording  # type: ignore[method-assign]

    def type(self, *lines: str) -> None:
        for line in lines:
            self.session.line_entered(line)
            self.network.flush()

    def log_in(self) -> Person:
        self.type(self.name, HANDOUT_USERS[self.name])
        assert "Welcome to the greatest messaging application ever!" in self.display.lines
        self.display.take()
        return self

    def sees(self) -> list[str]:
        return self.display.take()


def people(server: Server, *names: str) -> tuple[MemoryNetwork, dict[str, Person]]:
    network = MemoryNetwork(server)
    everyone = {name: Person(network, name).log_in() for name in names}
    for person in everyone.values():
        person.sees()
    return network, everyone


class RawPeer(Protocol):
    """Someone connecting to a client's peer port on their own: over TLS (the only way
    in), with a certificate of their own unless given one, saying what the test makes
    them say."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.received = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True

    def send(self, data: bytes) -> list[bytes]:
        """Send ``data``; the lines that came back."""
        before = len(self.received)
        assert self.transport is not None
        self.transport.write(data)
        self.network.flush()
        return self.received[before:].splitlines()

    def hang_up(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
        self.network.flush()


def raw_peer(
    network: MemoryNetwork, target: Person, source: str = "127.0.0.1", tls: PeerTLS | None = None
) -> RawPeer | None:
    """A connection to ``target``'s peer port from ``source`` (None: refused at once).
    It pins ``target``'s certificate (a fingerprint is no secret) and shows ``tls``'s
    own, by default a stranger's."""
    port = target.peers.listening_port
    assert port is not None
    tls = tls or PeerTLS(make_identity())
    endpoint = TLSClientEndpoint(
        network.connect_to("127.0.0.1", port, source),
        tls.connecting(target.peers.fingerprint),
        network.clock,
    )
    peer = RawPeer(network)
    refused: list[object] = []
    connectProtocol(endpoint, peer).addErrback(refused.append)
    if refused:
        return None
    network.flush()
    return peer
