"""In-memory server harness: real protocols over ``StringTransport``, a ``Clock``,
and the same wiring as production (``wiring.build_parts``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisted_chat.server.options import Options
from twisted_chat.server.passwords import check_inline
from twisted_chat.server.protocol import ChatServerFactory, ChatServerProtocol
from twisted_chat.server.wiring import build_parts

HANDOUT_USERS = {
    "hans": "falcon*solo",
    "yoda": "wise@!man",
    "vader": "sithlord**",
    "r2d2": "do*!@#dedo",
    "c3p0": "droid#gold",
    "leia": "$blasterpistol$",
    "obiwan": "(jedimaster)",
    "luke": "=hope+",
    "chewy": "wookie+aaaaahhhh",
    "palpatine": "sithlord**",
}


def run_inline(f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A ``run_blocking`` that runs the call at once: deterministic unit tests."""
    return maybeDeferred(f, *args, **kwargs)


def verified(accounts: Any, user: str, password: str) -> bool:
    """What ``accounts.verify`` answers, once it has (inline in these tests)."""
    results: list[object] = []
    accounts.verify(user, password).addBoth(results.append)
    (result,) = results
    assert isinstance(result, bool), result
    return result


def write_credentials(path: Path, users: dict[str, str] = HANDOUT_USERS) -> Path:
    # Like the handout's file: no newline after the last line.
    path.write_text("\n".join(f"{u} {p}" for u, p in users.items()), encoding="utf-8")
    return path


AUTO_PING = b'{"type":"ping","id":"auto-ping"}\n'


class AnsweringTransport(StringTransport):
    """A StringTransport whose client answers the server's liveness pings at once, as
    the real client does (tests of liveness itself turn this off)."""

    answer_pings = True
    protocol: ChatServerProtocol | None = None
    """The server's protocol on this transport, which the answers go to."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.answer_pings and b'{"type":"ping"}\n' in data and self.protocol is not None:
            self.protocol.dataReceived(AUTO_PING)


class Connection:
    """One client connection to the harness server."""

    def __init__(self, server: Server, port: int, host: str = "127.0.0.1") -> None:
        self.server = server
        self.transport = AnsweringTransport(
            peerAddress=IPv4Address("TCP", host, port),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5000),
        )
        self.protocol: ChatServerProtocol = server.factory.buildProtocol(None)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self.lost = False
        self._next_id = 1
        self.pending_events: list[dict[str, Any]] = []

    def gate(self) -> IPushProducer:
        """What the transport pauses when its buffer is full (the output gate)."""
        producer = self.transport.producer
        assert IPushProducer.providedBy(producer)
        return producer

    def send_raw(self, data: bytes) -> list[dict[str, Any]]:
        self.protocol.dataReceived(data)
        return self.received()

    def send(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one request with a fresh id and return its reply (events pushed in
        between are kept for :meth:`received`)."""
        request_id = self._next_id
        self._next_id += 1
        frame = {"type": kind, "id": request_id, **fields}
        self.protocol.dataReceived(json.dumps(frame).encode() + b"\n")
        self.server.clock.advance(0)
        frames = self.received()
        replies = [f for f in frames if f.get("id") == request_id]
        self.pending_events.extend(f for f in frames if f.get("id") != request_id)
        assert len(replies) == 1, f"expected one reply to {frame}, got {frames}"
        return replies[0]

    def received(self) -> list[dict[str, Any]]:
        """Frames written since the last call; closes the connection like a reactor
        would once the protocol asked to lose it."""
        self.server.clock.advance(0)  # the end of the reactor turn: output is flushed
        data = self.transport.value()
        self.transport.clear()
        frames = [json.loads(line) for line in data.split(b"\n") if line]
        # The liveness chatter between the server and the answering client.
        frames = [f for f in frames if f != {"type": "ping"} and f.get("id") != "auto-ping"]
        if self.transport.disconnecting and not self.lost:
            self.close()
        return frames

    def events(self) -> list[dict[str, Any]]:
        """Events pushed to this user so far (and not yet read)."""
        events = self.pending_events + self.received()
        self.pending_events = []
        return events

    def close(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def hello(self, version: int = 2) -> dict[str, Any]:
        """Version 2 by default: the handout's frames, as today's tests expect them;
        rooms and history need 3."""
        return self.send("hello", version=version)

    def login(self, user: str, password: str | None = None, version: int = 2) -> dict[str, Any]:
        """hello + login + password; return the password reply."""
        assert self.hello(version)["type"] == "ok"
        reply = self.send("login", user=user)
        assert reply["type"] == "ok", reply
        if password is None:
            password = HANDOUT_USERS[user]
        return self.send("password", password=password)


class Server:
    """A chat server wired as in production, on a Clock, with no sockets."""

    def __init__(self, tmp_path: Path, *options: str, durable: bool = False) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)  # a plausible wall-clock time, not 0
        self.credentials = write_credentials(tmp_path / "credentials.txt")
        parsed = Options()
        stores = [] if durable else ["--in-memory"]
        parsed.parseOptions(["--credentials", str(self.credentials), *stores, *options])
        self.factory: ChatServerFactory = build_parts(
            parsed, self.clock, run_inline, check_inline
        ).factory
        self.chat = self.factory.chat
        self._ports = 40000

    def advance(self, seconds: float) -> None:
        """Let time pass a second at a time, as it does for real: ``Clock.advance``
        jumps to the end before running what was due, so one long jump would look like
        silence to the liveness checks, which clients answer as time goes."""
        whole = int(seconds)
        self.clock.pump([1.0] * whole)
        self.clock.advance(seconds - whole)

    def connect(self, host: str = "127.0.0.1") -> Connection:
        self._ports += 1
        return Connection(self, self._ports, host)

    def online(self, user: str, version: int = 2) -> Connection:
        connection = self.connect()
        reply = connection.login(user, version=version)
        assert reply["type"] == "ok", reply
        return connection

    def everyone(self, *users: str, version: int = 2) -> dict[str, Connection]:
        """Log users in one after the other, then drop the presence events so far."""
        connections = {user: self.online(user, version) for user in users}
        for connection in connections.values():
            connection.events()
        return connections
