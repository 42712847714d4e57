"""``python -m twisted_chat.bench.relay``: the ceiling for the benchmark, a minimal
Twisted line relay speaking our wire format with no semantics: no accounts, no
presence, no flood control, no durability, no checks beyond finding the recipient.
Whatever the chat server costs above it is the price of its semantics.

It answers ``hello``, ``login`` and ``password`` at once (the password makes the name
online), relays ``message`` to the named user and ``broadcast`` to everyone else,
and ignores everything else. Listens on 127.0.0.1 only, on a port the OS chooses,
and prints ``relay listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver


class RelayProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024

    def __init__(self, online: dict[str, RelayProtocol]) -> None:
        self.online = online
        self.name = ""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def lineReceived(self, line: bytes) -> None:
        frame: dict[str, Any] = orjson.loads(line)
        kind = frame.get("type")
        if kind == "message":
            recipient = self.online.get(frame["to"])
            if recipient is not None:
                recipient.transport.write(  # type: ignore[union-attr]
                    orjson.dumps(
                        {"type": "message", "sender": self.name, "text": frame["text"]},
                        option=orjson.OPT_APPEND_NEWLINE,
                    )
                )
        elif kind == "broadcast":
            data = orjson.dumps(
                {"type": "broadcast", "sender": self.name, "text": frame["text"]},
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for name, other in self.online.items():
                if name != self.name:
                    other.transport.write(data)  # type: ignore[union-attr]
        elif kind == "login":
            self.name = str(frame["user"])
            self._ok(frame)
        elif kind == "password":
            self.online[self.name] = self
            self._ok(frame)
        elif kind in ("hello", "ping"):
            self._ok(frame)

    def _ok(self, frame: dict[str, Any]) -> None:
        if "id" in frame:
            reply = {"type": "ok", "id": frame["id"]}
            self.transport.write(orjson.dumps(reply, option=orjson.OPT_APPEND_NEWLINE))  # type: ignore[union-attr]

    def connectionLost(self, reason: object = None) -> None:
        if self.online.get(self.name) is self:
            del self.online[self.name]


async def main(reactor: Any) -> None:
    online: dict[str, RelayProtocol] = {}
    factory = Factory.forProtocol(lambda: RelayProtocol(online))
    port = await TCP4ServerEndpoint(reactor, 0, backlog=4096, interface="127.0.0.1").listen(factory)
    print(f"relay listening on 127.0.0.1:{port.getHost().port}", flush=True)
    await Deferred()  # until SIGTERM


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
