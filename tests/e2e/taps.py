"""An eavesdropper for end-to-end tests: a TCP relay on 127.0.0.1 that passes every
byte on and keeps a copy, as anyone on the network path could."""

from __future__ import annotations

from typing import cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.protocols import portforward


class _TapServer(portforward.ProxyServer):
    def dataReceived(self, data: bytes) -> None:
        cast(Tap, self.factory).seen.append(data)
        super().dataReceived(data)


class _TapClient(portforward.ProxyClient):
    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        cast(Tap, self.peer.factory).seen.append(data)
        super().dataReceived(data)


class _TapClientFactory(portforward.ProxyClientFactory):
    protocol = _TapClient


_TapServer.clientProtocolFactory = _TapClientFactory


class Tap(portforward.ProxyFactory):
    """Relays to 127.0.0.1:``port``; :attr:`seen` holds what passed, both ways."""

    protocol = _TapServer

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.seen: list[bytes] = []
        self.listening: IListeningPort | None = None

    def start(self) -> int:
        """Listen; the relay's own port."""
        self.listening = reactor.listenTCP(0, self, interface="127.0.0.1")  # type: ignore[arg-type]
        return cast(IPv4Address, self.listening.getHost()).port

    def captured(self) -> bytes:
        return b"".join(self.seen)

    async def stop(self) -> None:
        if self.listening is not None:
            await maybeDeferred(self.listening.stopListening)
