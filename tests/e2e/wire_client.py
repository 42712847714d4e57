"""A bare client of the wire protocol (docs/protocol.md) over TCP, for the tests that
play an outsider: it sends the frames it is told to, from the address it is told to
use, and hands back the replies; it answers pings and nothing else."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

GONE = {"type": "gone"}
"""The reply to a request whose connection closed before it was answered."""


class WireClient(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self._next_id = 1
        self._waiting: dict[int, Deferred[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._watching: list[tuple[dict[str, Any], Deferred[dict[str, Any]]]] = []
        self.gone: Deferred[None] = Deferred()

    def request(self, kind: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """Send one request; its reply (or :data:`GONE`)."""
        request_id = self._next_id
        self._next_id += 1
        answered: Deferred[dict[str, Any]] = Deferred()
        self._waiting[request_id] = answered
        self.sendLine(json.dumps({"type": kind, "id": request_id, **fields}).encode())
        return answered

    async def login(self, user: str, password: str) -> dict[str, Any]:
        """hello, login and password; the first reply that is not ok, or the last."""
        for kind, fields in (
            ("hello", {"version": 3}),
            ("login", {"user": user}),
            ("password", {"password": password}),
        ):
            reply = await self.request(kind, **fields)
            if reply.get("type") != "ok":
                return reply
        return reply

    def next_event(self, kind: str, wait: float = 10, **fields: Any) -> Deferred[dict[str, Any]]:
        """The first event of ``kind`` with ``fields`` (one already here, or when it
        comes); fails after ``wait`` seconds, or with the connection."""
        wanted = {"type": kind, **fields}
        for event in self.events:
            if _matches(event, wanted):
                return succeed(event)
        found: Deferred[dict[str, Any]] = Deferred()
        self._watching.append((wanted, found))
        return found.addTimeout(wait, reactor)

    def texts(self) -> list[str]:
        """The texts of the messages received so far, in order."""
        return [e["text"] for e in self.events if e.get("type") == "message"]

    def lineReceived(self, line: bytes) -> None:
        frame = json.loads(line)
        if frame.get("type") == "ping":  # the server has not heard from us: say something
            self.sendLine(b'{"type":"ping","id":0}')
            return
        if frame.get("id") == 0:
            return
        answered = self._waiting.pop(frame.get("id"), None)
        if answered is not None:
            answered.callback(frame)
            return
        self.events.append(frame)
        for watch in [w for w in self._watching if _matches(frame, w[0])]:
            self._watching.remove(watch)
            if not watch[1].called:
                watch[1].callback(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        waiting, self._waiting = self._waiting, {}
        for answered in waiting.values():
            answered.callback(GONE)
        watching, self._watching = self._watching, []
        for _, found in watching:
            if not found.called:
                found.errback(ConnectionDone(f"closed before the event came: {self.events}"))
        self.gone.callback(None)


def _matches(event: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(event.get(key) == value for key, value in wanted.items())


async def connect(port: int, source: str = "127.0.0.1") -> WireClient:
    """A connection to the server on 127.0.0.1 from ``source`` (any 127.x.y.z: the
    whole of 127/8 is this machine, so each /24 of it is a network of its own)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    client = WireClient()
    await endpoint.connect(Factory.forProtocol(lambda: client))
    return client


class Guesser:
    """Connections from one network that send wrong passwords for accounts of others
    as fast as the server answers, one account after another as each gets locked."""

    def __init__(self, port: int, source: str, users: list[str]) -> None:
        self.port, self.source, self.users = port, source, users
        self.replies: Counter[str] = Counter()
        self.stopped = False
        self.connections: list[WireClient] = []

    async def run(self) -> None:
        while not self.stopped and self.users:
            connection = await connect(self.port, self.source)
            self.connections.append(connection)
            reply = await connection.login(self.users.pop(), "a wrong guess")
            while not self.stopped and reply.get("type") != "gone":
                self.replies[reply.get("code", reply["type"])] += 1
                if reply.get("code") == "locked":
                    break  # that name is spent: the next one
                reply = await connection.request("password", password="another guess")
            connection.close()
            await connection.gone
            self.connections.remove(connection)

    async def stop(self) -> None:
        self.stopped = True
        for connection in list(self.connections):
            connection.close()
