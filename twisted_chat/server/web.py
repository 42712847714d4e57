"""The chat over WebSocket: one frame of the wire protocol per WebSocket text message.

A browser cannot open a TCP connection, so the page (``twisted_chat/web``) reaches the
chat through a WebSocket at ``/ws``. Behind it stands the same
:class:`ChatServerProtocol` as behind a TCP connection, with the same policy (flood
control, frame size, login deadline, per-address caps, slow readers) and the same
dispatch: the bridge only turns each message into a line for it, and each line it
writes into a message. So the domain does not know a browser from a terminal, except
that a browser cannot take a private session (``Session.in_browser``).

autobahn does the WebSocket protocol (RFC 6455: the handshake, framing, masking, close
codes, UTF-8 checks): it is Twisted-native, maintained by the people who wrote the
WAMP specification, and its Twisted resource sits in ``twisted.web`` beside our page,
so one port serves both. Writing the framing ourselves would be less code to import
and more to get wrong.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IReactorTime, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from twisted_chat import wire
from twisted_chat.server.protocol import ChatServerFactory, ChatServerProtocol

WEBSOCKET_PATH = b"ws"
"""The WebSocket's path under the page: ``/ws``."""

MAX_MESSAGE = 4 * wire.MAX_INBOUND_LINE
"""The biggest WebSocket message autobahn gathers; past it the connection is closed
(1009). Above the frame limit on purpose: a message between the two is refused by the
chat protocol with our own ``line-too-long`` error, which says what the limit is."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds from the TCP connection to a finished WebSocket handshake."""


class WebSocketLines:
    """The transport a :class:`ChatServerProtocol` writes to when its client is a
    WebSocket: each line becomes one text message. Everything else (pausing, the
    producer that watches for slow readers, addresses, closing) goes to the
    connection under the WebSocket."""

    def __init__(self, socket: ChatWebSocket) -> None:
        self._socket = socket
        self.disconnecting = False
        if ISSLTransport.providedBy(socket.transport):
            directlyProvides(self, ISSLTransport)  # the metrics' tls label reads this

    def write(self, data: bytes) -> None:
        # The chat protocol hands over a turn's output at once: whole lines, each
        # ending in the delimiter.
        socket = self._socket
        if socket.state != WebSocketProtocol.STATE_OPEN:
            return  # closing: the frames have nowhere to go (as after a TCP close)
        for line in data.split(wire.DELIMITER):
            if line:
                socket.sendMessage(line, isBinary=False)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Close after what was written (a WebSocket close, 1000: normal)."""
        if not self.disconnecting:
            self.disconnecting = True
            self._socket.sendClose(WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._socket.dropConnection(abort=True)

    def getPeer(self) -> IAddress:
        address: IAddress = self._inner().getPeer()
        return address

    def getHost(self) -> IAddress:
        address: IAddress = self._inner().getHost()
        return address

    def pauseProducing(self) -> None:
        self._inner().pauseProducing()

    def resumeProducing(self) -> None:
        self._inner().resumeProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        # twisted.web's channel registered itself with the connection for its request;
        # autobahn took the connection over, so the producer slot is ours now.
        inner = self._inner()
        if getattr(inner, "producer", None) is not None:
            inner.unregisterProducer()
        inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._inner().unregisterProducer()

    def _inner(self) -> Any:
        return self._socket.transport


class ChatWebSocket(WebSocketServerProtocol):
    """One browser's WebSocket, carrying a :class:`ChatServerProtocol`'s frames."""

    factory: ChatWebSocketFactory
    chat_log = Logger()
    """Ours; ``log`` is autobahn's (txaio's, which leaves out its debug chatter)."""

    def __init__(self) -> None:
        super().__init__()
        self.chat: ChatServerProtocol | None = None
        """The chat protocol behind this WebSocket, once it is open."""

    def onConnect(self, request: ConnectionRequest) -> None:
        """Refuse a handshake from a page of another origin: without this check, any
        site the user visits could open the chat in their name (cross-site WebSocket
        hijacking). A client that is not a browser sends no ``Origin``, and is let in
        as a TCP client would be."""
        origin = request.headers.get("origin")
        if origin is None:
            return None
        own = own_origin(request.headers.get("host", ""), self._secure())
        if normalised_origin(origin) not in self.factory.allowed_origins | {own}:
            self.chat_log.warn(
                "refused a WebSocket from {peer}: origin {origin} is not {own}",
                peer=request.peer,
                origin=origin[:200],
                own=own,
                security_event="foreign-origin",
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "This origin may not use the chat.")
        return None

    def onOpen(self) -> None:
        chat = self.factory.chat_factory.buildProtocol(None)
        chat.in_browser = True
        self.chat = chat
        chat.makeConnection(WebSocketLines(self))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        chat = self.chat
        if chat is None or chat.is_closed():
            return
        if isBinary or wire.DELIMITER in payload:
            # Each text message is exactly one frame; anything else would let one
            # message smuggle several past the flood control's count.
            error = wire.Error("bad-frame", "Send one frame per WebSocket text message.")
            self.sendMessage(wire.encode(error).rstrip(wire.DELIMITER), isBinary=False)
            return
        chat.dataReceived(payload + wire.DELIMITER)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        chat, self.chat = self.chat, None
        if chat is not None:
            chat.connectionLost(Failure(ConnectionDone()))

    def _secure(self) -> bool:
        return bool(ISSLTransport.providedBy(self.transport))


class ChatWebSocketFactory(WebSocketServerFactory):
    """Makes a :class:`ChatWebSocket` per connection, for the chat of ``chat_factory``
    (the TCP listeners' factory: one chat, one set of per-address counts)."""

    # autobahn's classes are untyped: to mypy this is no Twisted protocol class.
    protocol = ChatWebSocket  # type: ignore[assignment]

    def __init__(
        self,
        chat_factory: ChatServerFactory,
        clock: IReactorTime,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(server="twisted-chat", reactor=clock)
        self.chat_factory = chat_factory
        self.allowed_origins = frozenset(normalised_origin(o) for o in allowed_origins)
        """Origins besides the page's own whose pages may use the chat (--web-origin)."""
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE,
            maxFramePayloadSize=MAX_MESSAGE,
            openHandshakeTimeout=HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=1.0,
            # The chat protocol has its own pings (liveness, with the same limits as
            # over TCP): no second set of timers per connection.
            autoPingInterval=0,
            webStatus=False,  # no autobahn status page at /ws for a plain GET
        )
        # Compression stays off (autobahn's default): frames are small, and compressing
        # text an attacker partly chooses beside secrets is how CRIME-style leaks start.
        # autobahn's timers run on txaio's global loop; ours run on the injected clock
        # (a task.Clock in the unit tests), through the same one-method interface.
        self._batched_timer = _ClockTimer(clock)


class _ClockTimer:
    """txaio's ``IBatchedTimer``, on a Twisted clock: what autobahn schedules its
    handshake deadlines with."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(delay, func, *args, **kwargs)


DEFAULT_PORTS = {"http": "80", "https": "443"}


def own_origin(host_header: str, secure: bool) -> str:
    """The origin of the page a browser loaded from this server as ``host_header``."""
    scheme = "https" if secure else "http"
    return normalised_origin(f"{scheme}://{host_header.strip()}")


def normalised_origin(origin: str) -> str:
    """An origin as browsers compare them: lower case, without the scheme's default
    port, without a trailing slash (``--web-origin https://Chat.Example:443/``)."""
    origin = origin.strip().lower().rstrip("/")
    scheme, _, rest = origin.partition("://")
    host, _, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if host and port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return origin
