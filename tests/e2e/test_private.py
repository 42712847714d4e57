"""End to end: private chat between real client processes on 127.0.0.1 (sample E7,
decline, blocked, stop from either side, logout and timeout, two sessions, a forged
peer connection), with every client's traffic to the server recorded by a proxy."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols import portforward
from twisted.python.failure import Failure

from tests.e2e.processes import REPO, Process, ServerProcess, finish, sleep, spawn, start
from tests.e2e.taps import Tap
from twisted_chat.client.peer import TLSClientEndpoint
from twisted_chat.client.peertls import PeerTLS, make_identity
from twisted_chat.launch import free_port

pytestmark = pytest.mark.e2e

PASSWORDS = {"hans": "falcon*solo", "yoda": "wise@!man", "luke": "=hope+"}


class RewritingProxyClient(portforward.ProxyClient):
    """The server's side of the proxy: what the server sends, line by line, through
    the factory's ``rewrite`` (a test playing a man in the middle of the server link)."""

    def connectionMade(self) -> None:
        self._partial = b""
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        rewrite = self.peer.factory.rewrite  # type: ignore[union-attr]
        if lines:
            super().dataReceived(b"".join(rewrite(line) + b"\n" for line in lines))


class RewritingProxyClientFactory(portforward.ProxyClientFactory):
    protocol = RewritingProxyClient


class RecordingProxyServer(portforward.ProxyServer):
    """Forwards one client's bytes to the chat server, keeping a copy."""

    clientProtocolFactory = RewritingProxyClientFactory

    def connectionMade(self) -> None:
        self.upstream = b""
        self.factory.connections.append(self)  # type: ignore[attr-defined]
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.upstream += data
        super().dataReceived(data)

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.upstream.splitlines()]


class RecordingProxy(portforward.ProxyFactory):
    """A TCP proxy in front of the chat server that records what each client sends."""

    protocol = RecordingProxyServer

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.connections: list[RecordingProxyServer] = []
        self.rewrite: Callable[[bytes], bytes] = lambda line: line
        """What the server's lines become on their way to the clients."""

    def sent_to_server(self) -> bytes:
        return b"".join(c.upstream for c in self.connections)

    def peer_port_of(self, user: str) -> int:
        """The peer port ``user``'s client announced to the server."""
        return int(self.listening_of(user)["port"])

    def listening_of(self, user: str) -> dict[str, Any]:
        """The ``listening`` frame ``user``'s client sent (port and fingerprint)."""
        for connection in self.connections:
            frames = connection.frames()
            if {"type": "login", "user": user} in [
                {k: v for k, v in f.items() if k != "id"} for f in frames
            ]:
                return next(f for f in frames if f["type"] == "listening")
        raise AssertionError(f"{user} announced no peer port")


class Room:
    """A server, a recording proxy in front of it, and logged-in clients."""

    def __init__(self, server: ServerProcess, proxy: RecordingProxy, port: int) -> None:
        self.server = server
        self.proxy = proxy
        self.proxy_port = port
        self.clients: dict[str, Process] = {}

    async def join(self, user: str) -> Process:
        client = spawn(user, [sys.executable, str(REPO / "client.py"), str(self.proxy_port)], REPO)
        self.clients[user] = client
        await client.expect("Username: ")
        client.send(user, PASSWORDS[user])
        await client.expect("Welcome")
        return client


async def room(workdir: Path, *users: str, timeout: float = 120) -> Room:
    server = await start(workdir, timeout=timeout)
    proxy = RecordingProxy("127.0.0.1", server.port)
    listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
    result = Room(server, proxy, listening.getHost().port)
    result.listening = listening  # type: ignore[attr-defined]
    for user in users:
        await result.join(user)
    return result


async def close(r: Room) -> None:
    await finish(*r.clients.values(), r.server)
    await r.listening.stopListening()  # type: ignore[attr-defined]


async def open_private(a: Process, b: Process, a_name: str, b_name: str) -> None:
    a.send(f"startprivate {b_name}")
    await b.expect(f"{a_name} would like to private message, enter y or n:")
    b.send("y")
    await a.expect(f"Private messaging with {b_name} started")
    await b.expect(f"Private messaging with {a_name} started")


@pytest_twisted.ensureDeferred
async def test_sample_e7_and_nothing_private_reaches_the_server(workdir: Path) -> None:
    r = await room(workdir, "hans", "yoda", "luke")
    hans, yoda, luke = r.clients["hans"], r.clients["yoda"], r.clients["luke"]
    try:
        hans.send("private luke hey dude")
        await hans.expect("Error. Private messaging to luke not enabled.")
        hans.send("startprivate luke")
        await hans.expect("Start private messaging with luke")
        await luke.expect("hans would like to private message, enter y or n:")
        luke.send("y")
        await hans.expect("luke accepts private messaging.")
        await hans.expect("Private messaging with luke started")
        hans.send("private luke hey dude")
        await luke.expect("hans(private): hey dude")
        luke.send("private hans hello man")
        await hans.expect("luke(private): hello man")
        hans.send("message yoda force is strong")
        await yoda.expect("hans: force is strong")
        hans.send("message luke now via server")
        await luke.expect("hans: now via server")
        hans.send("logout")
        await yoda.expect("hans logged out")
        await luke.seen("hans logged out; private messaging with hans ended.")
        assert await hans.exit_status() == 0
        to_server = r.proxy.sent_to_server()
        assert b"hey dude" not in to_server and b"hello man" not in to_server
        assert b"now via server" in to_server  # the proxy does see what goes via the server
        assert b'"type":"activity"' in to_server
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_decline_and_blocked(workdir: Path) -> None:
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    try:
        hans.send("startprivate luke")
        await luke.expect("hans would like to private message")
        luke.send("n")
        await hans.expect("luke declined private messaging.")
        luke.send("block hans")
        await luke.expect("hans is blocked")
        hans.send("startprivate luke")
        await hans.expect("the user has blocked you.")
        luke.send("whoelse")  # a marker: luke was never asked a second time
        await luke.expect("hans")
        assert luke.output.count("would like to private message") == 1
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_stop_from_either_side_and_two_sessions_at_once(workdir: Path) -> None:
    r = await room(workdir, "hans", "yoda", "luke")
    hans, yoda, luke = r.clients["hans"], r.clients["yoda"], r.clients["luke"]
    try:
        await open_private(hans, luke, "hans", "luke")
        await open_private(yoda, hans, "yoda", "hans")
        hans.send("private luke one", "private yoda two")
        await luke.expect("hans(private): one")
        await yoda.expect("hans(private): two")
        luke.send("stopprivate hans")
        await luke.expect("Private messaging with hans stopped.")
        await hans.expect("luke stopped private messaging.")
        hans.send("private luke gone?")
        await hans.expect("Error. Private messaging to luke not enabled.")
        hans.send("stopprivate yoda")
        await yoda.expect("hans stopped private messaging.")
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_private_chat_keeps_users_in_and_a_timeout_ends_it(workdir: Path) -> None:
    r = await room(workdir, "yoda", "hans", "luke", timeout=3)
    yoda, hans, luke = r.clients["yoda"], r.clients["hans"], r.clients["luke"]
    try:
        await open_private(hans, luke, "hans", "luke")
        for n in range(5):  # 5 s of private chat only, well past the 3 s timeout
            hans.send(f"private luke ping {n}")
            luke.send(f"private hans pong {n}")
            await sleep(1)
        await yoda.expect("You have been logged out due to inactivity.")  # idle yoda
        hans.send("whoelse")
        await hans.expect("\nluke\n")  # the reply: hans and luke were kept in by private chat
        await sleep(1.5)
        luke.send("whoelse")  # luke stays active; hans is idle from here on
        await hans.expect("You have been logged out due to inactivity.")
        await luke.seen("hans logged out; private messaging with hans ended.")
        assert await hans.exit_status() == 0
    finally:
        await close(r)


class Probe(Protocol):
    """A raw client that records what it receives until the other side closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(self.received)


async def forge(port: int, fingerprint: str | None, frame: Mapping[str, object]) -> bytes:
    """Connect to a peer port, send one frame, return all that comes back before close:
    over TLS with a stranger's certificate, pinning ``fingerprint`` (a fingerprint is
    no secret), or in clear (None)."""
    probe = Probe()
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if fingerprint is not None:
        stranger = PeerTLS(make_identity()).connecting(fingerprint)
        endpoint = TLSClientEndpoint(endpoint, stranger, reactor)
    await connectProtocol(endpoint, probe)
    probe.transport.write(json.dumps(frame).encode() + b"\n")  # type: ignore[union-attr]
    return await probe.closed.addTimeout(15, reactor)


@pytest_twisted.ensureDeferred
async def test_a_forged_peer_connection_is_refused(workdir: Path) -> None:
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    try:
        await open_private(hans, luke, "hans", "luke")
        luke_port = r.proxy.peer_port_of("luke")
        luke_fingerprint = r.proxy.listening_of("luke")["fingerprint"]
        # Someone who learned luke's port pretends to be hans, without the token.
        wrong = {"type": "peer-hello", "version": 2, "user": "hans", "token": "guess"}
        assert b'"code":"refused"' in await forge(luke_port, luke_fingerprint, wrong)
        # Or sends private text straight away, with no handshake at all.
        boo = {"type": "private", "text": "boo"}
        assert b'"type":"error"' in await forge(luke_port, luke_fingerprint, boo)
        # In clear, nothing is even read: the TLS handshake fails, no frame comes back.
        assert b'"type"' not in await forge(luke_port, None, wrong)
        hans.send("private luke still fine")
        await luke.expect("hans(private): still fine")
        assert "guess" not in luke.output and "boo" not in luke.output
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_a_crashed_client_ends_its_private_sessions(workdir: Path) -> None:
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    try:
        await open_private(hans, luke, "hans", "luke")
        luke.kill()  # SIGKILL: no goodbye frame to anyone
        await luke.ended
        # One line or two, as the two connections' news comes: "luke logged out;
        # private messaging with luke ended." or the end first, then the logout.
        await hans.seen("luke logged out")
        await hans.seen("rivate messaging with luke ended")
        hans.send("private luke are you there")
        await hans.expect("Error. luke is offline.")
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_an_eavesdropper_on_the_peer_path_sees_neither_text_nor_token(
    workdir: Path,
) -> None:
    """The server link is rewritten so that hans reaches luke through a recording relay
    (as anyone on the network path could): the private chat still works, and the
    relay's copy holds no text, no token, no frame."""
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    tap = Tap(r.proxy.peer_port_of("luke"))
    relay_port = tap.start()
    tokens: list[str] = []

    def through_the_tap(line: bytes) -> bytes:
        frame = json.loads(line)
        if frame.get("type") == "private-accepted" and frame.get("port"):
            tokens.append(frame["token"])
            frame["port"] = relay_port
            return json.dumps(frame).encode()
        return line

    r.proxy.rewrite = through_the_tap
    try:
        await open_private(hans, luke, "hans", "luke")
        hans.send("private luke the plans are in the droid")
        await luke.expect("hans(private): the plans are in the droid")
        luke.send("private hans understood")
        await hans.expect("luke(private): understood")
        codes = [re.findall(r"session code ([0-9a-f ]{24})", c.output) for c in (hans, luke)]
        assert len(codes[0]) == 1
        assert codes[0] == codes[1]  # the relay only relays: the code shows no one between
        captured = tap.captured()
        assert len(captured) > 500 and tokens
        for secret in (b"the plans", b"understood", tokens[0].encode(), b'"type"', b"hans"):
            assert secret not in captured
    finally:
        await close(r)
        await tap.stop()


@pytest_twisted.ensureDeferred
async def test_a_stolen_token_is_refused_without_the_approved_certificate(
    workdir: Path,
) -> None:
    """A thief who reads hans's approval (token, luke's port and fingerprint) and gets
    to luke first still cannot be hans: luke's client expects hans's certificate."""
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    stolen: list[str] = []

    def divert(line: bytes) -> bytes:
        frame = json.loads(line)
        if frame.get("type") == "private-accepted" and frame.get("port"):
            stolen.append(frame["token"])
            frame["port"] = free_port()  # hans's own client connects nowhere
            return json.dumps(frame).encode()
        return line

    r.proxy.rewrite = divert
    try:
        hans.send("startprivate luke")
        await luke.expect("hans would like to private message, enter y or n:")
        luke.send("y")
        await hans.expect("Could not open private messaging with luke")
        hello = {"type": "peer-hello", "version": 2, "user": "hans", "token": stolen[0]}
        listening = r.proxy.listening_of("luke")
        reply = await forge(int(listening["port"]), str(listening["fingerprint"]), hello)
        assert b'"code":"refused"' in reply
        assert "Private messaging with hans started" not in luke.output
    finally:
        await close(r)


@pytest_twisted.ensureDeferred
async def test_fifty_fake_hellos_leave_room_for_a_real_private_chat(workdir: Path) -> None:
    """Four TLS connections sending peer-hello for users luke never said yes to held
    his handshake places, and no private chat could start. Each is now refused at
    once, and a real chat starts while fifty are tried."""
    r = await room(workdir, "hans", "luke")
    hans, luke = r.clients["hans"], r.clients["luke"]
    try:
        luke_port = r.proxy.peer_port_of("luke")
        fingerprint = r.proxy.listening_of("luke")["fingerprint"]
        fake = {"type": "peer-hello", "version": 2, "user": "vader", "token": "forged"}

        async def try_one() -> bytes:
            try:
                return await forge(luke_port, fingerprint, fake)
            except ConnectError:
                return b""  # reset before the handshake: refused at the door

        fakes = [ensureDeferred(try_one()) for _ in range(25)]
        await open_private(hans, luke, "hans", "luke")
        fakes += [ensureDeferred(try_one()) for _ in range(25)]
        answers = [await answer for answer in fakes]
        # Each was refused (or, past the 4 a single address may hold at once, closed
        # before a word): none is left holding a place.
        assert all(a == b"" or b'"code":"refused"' in a for a in answers)
        assert sum(b'"code":"refused"' in a for a in answers) >= 4
        hans.send("private luke through the crowd")
        await luke.expect("hans(private): through the crowd")
    finally:
        await close(r)
