"""The benchmark's users: one connection each, speaking a server's protocol.

They are built to cost the load generator as little as possible, so that it measures
the server and not itself: a login floods every user with presence notices (O(N^2) in
all), and only a few kinds of line matter to the benchmark. Each chunk of bytes is
therefore searched for the markers that matter, and only a chunk holding one is split
into lines and parsed; everything else is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

from twisted_chat import wire

CHANNEL = "#bench"
"""The IRC channel every IRC user joins: joining it is "logging in with presence"."""

TextHandler = Callable[[str, str, str], None]
"""``(sender, recipient, text)`` of a direct or broadcast message a user received."""


class BenchClient(Protocol):
    """One benchmark user. Subclasses speak a server's protocol."""

    transport: Any
    markers: tuple[bytes, ...] = ()
    """Byte strings whose presence in a chunk means it must be read line by line."""

    def __init__(self, name: str, password: str, on_text: TextHandler) -> None:
        self.name = name
        self.password = password
        self.on_text = on_text
        self.logged_in: Deferred[None] = Deferred()
        self.problems: list[str] = []
        """What went wrong after login (error frames): reported, never raised."""
        self._partial = b""

    def makeConnection(self, transport: Any) -> None:
        transport.setTcpNoDelay(True)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        buffered = self._partial + data if self._partial else data
        end = buffered.rfind(b"\n")
        if end < 0:
            self._partial = buffered
            return
        self._partial = buffered[end + 1 :]
        complete = buffered[: end + 1]
        if any(marker in complete for marker in self.markers) or not self.logged_in.called:
            for line in complete.split(b"\n")[:-1]:
                self.line_received(line.rstrip(b"\r"))

    def line_received(self, line: bytes) -> None:
        raise NotImplementedError

    def send_direct(self, to: str, text: str) -> None:
        raise NotImplementedError

    def send_all(self, text: str) -> None:
        raise NotImplementedError

    def _logged_in(self) -> None:
        if not self.logged_in.called:
            self.logged_in.callback(None)

    def _problem(self, what: str) -> None:
        if not self.logged_in.called:
            self.logged_in.errback(RuntimeError(f"{self.name} could not log in: {what}"))
        else:
            self.problems.append(what)

    def connectionLost(self, reason: object = None) -> None:
        self._problem("connection lost")


class ChatBenchClient(BenchClient):
    """Our JSON-lines protocol (docs/protocol.md). Messages carry no ``id``: like IRC's
    PRIVMSG they are fire-and-forget, with no receipt to read."""

    markers = (
        b'"type":"message"',
        b'"type":"broadcast"',
        b'"type":"room-message"',
        b'"type":"ping"',
        b'"type":"error"',
        b'"stored":true',
        b'"id":"block"',
        b'"id":"join"',
        b'"id":"h',
    )
    on_ack: Callable[[int], None] = staticmethod(lambda request_id: None)
    """Called with the id of each message the server acknowledged as stored (durable)."""
    on_ok: Callable[[int], None] = staticmethod(lambda request_id: None)
    """Called when the server confirms a block, or a join."""
    on_history: Callable[[str], None] = staticmethod(lambda request_id: None)
    """Called with the id of each history request (or room message sent with an id)
    the server answered."""

    def connectionMade(self) -> None:
        self.transport.write(
            wire.encode(wire.Hello(wire.PROTOCOL_VERSION), "hello")
            + json.dumps({"type": "login", "user": self.name, "id": "login"}).encode()
            + b"\n"
            + json.dumps({"type": "password", "password": self.password, "id": "pw"}).encode()
            + b"\n"
        )

    def line_received(self, line: bytes) -> None:
        if (
            b'"type":"message"' in line
            or b'"type":"broadcast"' in line
            or b'"type":"room-message"' in line
        ):
            frame = json.loads(line)
            self.on_text(frame["sender"], self.name, frame["text"])
        elif b'"type":"ping"' in line:
            self.transport.write(b'{"type":"ping"}\n')
        elif b'"type":"ok"' in line and b'"id":"pw"' in line:
            self._logged_in()
        elif b'"type":"ok"' in line and b'"stored":true' in line:
            self.on_ack(int(json.loads(line)["id"]))
        elif b'"type":"ok"' in line and (b'"id":"block"' in line or b'"id":"join"' in line):
            self.on_ok(0)
        elif b'"type":"ok"' in line and b'"id":"h' in line:
            self.on_history(str(json.loads(line)["id"]))
        elif b'"type":"error"' in line:
            self._problem(line.decode("utf-8", "replace"))

    # The benchmark's texts are ASCII without quotes or backslashes ("dm 12 3.5"), so
    # a template is valid JSON; it spares the generator an encoder call per message.
    def send_direct(self, to: str, text: str) -> None:
        self.transport.write(
            b'{"type":"message","to":"%s","text":"%s"}\n' % (to.encode(), text.encode())
        )

    def send_all(self, text: str) -> None:
        self.transport.write(b'{"type":"broadcast","text":"%s"}\n' % text.encode())

    def send_block(self, user: str) -> None:
        self.transport.write(b'{"type":"block","user":"%s","id":"block"}\n' % user.encode())

    def send_join(self, room: str) -> None:
        self.transport.write(b'{"type":"join","room":"%s","id":"join"}\n' % room.encode())

    def send_room(self, room: str, text: str, request_id: str | None = None) -> None:
        """A message to a room; with ``request_id`` (``h...``), answered once kept."""
        with_id = b',"id":"%s"' % request_id.encode() if request_id else b""
        self.transport.write(
            b'{"type":"message","to":"%s","text":"%s"%s}\n'
            % (room.encode(), text.encode(), with_id)
        )

    def send_history(self, target: str, limit: int, request_id: str) -> None:
        self.transport.write(
            b'{"type":"history","target":"%s","limit":%d,"id":"%s"}\n'
            % (target.encode(), limit, request_id.encode())
        )

    def send_stored(self, to: str, text: str, request_id: int) -> None:
        """A message to an offline user, with an id: acknowledged once durable."""
        self.transport.write(
            b'{"type":"message","to":"%s","text":"%s","id":%d}\n'
            % (to.encode(), text.encode(), request_id)
        )


class IrcBenchClient(BenchClient):
    """IRC (RFC 2812): PASS/NICK/USER, JOIN the shared channel once registered (001),
    PRIVMSG; logged in when the server echoes our own JOIN."""

    markers = (b" PRIVMSG ", b"PING ")
    send_pass = True
    """Twisted Words authenticates with PASS; ngIRCd without a server password refuses
    any PASS (and has no per-user accounts)."""

    def connectionMade(self) -> None:
        login = f"NICK {self.name}\r\nUSER {self.name} 0 * :{self.name}\r\n"
        if self.send_pass:
            login = f"PASS {self.password}\r\n" + login
        self.transport.write(login.encode())

    def line_received(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if text.startswith("PING"):
            self.transport.write(("PONG" + text[4:] + "\r\n").encode())
            return
        parts = text.split(" ", 3)
        if len(parts) < 3:
            return
        if parts[1] == "PRIVMSG":
            sender = parts[0][1:].split("!", 1)[0]
            target = parts[2]
            body = parts[3][1:] if len(parts) > 3 else ""
            self.on_text(sender, self.name if target == CHANNEL else target, body)
        elif parts[1] == "001":  # registered (RPL_WELCOME): now JOIN
            self.transport.write(f"JOIN {CHANNEL}\r\n".encode())
        elif parts[1] == "JOIN" and parts[0][1:].split("!", 1)[0] == self.name:
            self._logged_in()
        elif parts[1] in ("432", "433", "464", "465") or parts[0] == "ERROR":
            self._problem(text)

    def send_direct(self, to: str, text: str) -> None:
        self.transport.write(f"PRIVMSG {to} :{text}\r\n".encode())

    def send_all(self, text: str) -> None:
        self.transport.write(f"PRIVMSG {CHANNEL} :{text}\r\n".encode())


class NgircdBenchClient(IrcBenchClient):
    send_pass = False


CLIENTS: dict[str, type[BenchClient]] = {
    "chat": ChatBenchClient,
    "irc": IrcBenchClient,
    "ngircd": NgircdBenchClient,
}
"""Client kinds by the name the coordinator passes to its workers."""
