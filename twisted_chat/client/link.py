"""The client's link to the server: frames out with request ids, replies matched back
to the Deferred of their request, events handed to the session."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.tls import why_lost


class ServerError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class ServerGone(Exception):
    """The connection closed before the reply came."""


def server_error(failure: Failure) -> ServerError:
    """The server's error in ``failure``; anything else passes on down the errbacks."""
    failure.trap(ServerError)
    assert isinstance(failure.value, ServerError)
    return failure.value


class LinkListener(Protocol):
    """What the link tells the session."""

    def link_made(self, link: ServerLink) -> None: ...
    def event_received(self, event: wire.Frame) -> None: ...
    def server_lost(self, why: str) -> None:
        """The link ended; ``why`` says so in one line for the user."""


class ServerLink(LineReceiver):
    """One connection to the chat server."""

    transport: Any
    """Set by Twisted on connection. ``Any``: ``Protocol`` types it ``ITransport | None``,
    and the TCP/StringTransport providers we use have more (``disconnecting``)."""

    delimiter = wire.DELIMITER
    MAX_LENGTH = wire.MAX_SERVER_LINE
    log = Logger()

    def __init__(self, listener: LinkListener, tls: bool = False) -> None:
        self._listener = listener
        self.tls = tls
        """The link runs over TLS (what a lost connection means depends on it)."""
        self._answered = False
        """The server has sent something: it speaks our protocol on this port."""
        self._next_id = 1
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}

    def connectionMade(self) -> None:
        self._listener.link_made(self)

    def request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]:
        """Send a request; the Deferred fires with the ``ok`` fields or fails with
        :class:`ServerError` / :class:`ServerGone`."""
        request_id = self._next_id
        self._next_id += 1
        d: Deferred[dict[str, Any]] = Deferred()
        if self.transport is None or self.transport.disconnecting:
            d.errback(ServerGone())
            return d
        self._pending[request_id] = d
        self.transport.write(wire.encode(frame, request_id))
        return d

    def lineReceived(self, line: bytes) -> None:
        self._answered = True
        try:
            request_id, frame = wire.parse(line, wire.SERVER_FRAMES)
        except wire.FrameError as e:
            self.log.warn("unreadable frame from the server: {error}", error=e.text)
            return
        if isinstance(frame, wire.Ping):
            # The server checks we are alive; any frame answers. Not user activity.
            self.request(wire.Ping()).addErrback(lambda f: f.trap(ServerError, ServerGone))
            return
        if isinstance(frame, wire.Ok | wire.Error) and isinstance(request_id, int):
            waiting = self._pending.pop(request_id, None)
            if waiting is not None:
                if isinstance(frame, wire.Ok):
                    waiting.callback(frame.result)
                else:
                    waiting.errback(ServerError(frame.code, frame.text))
                return
        self._listener.event_received(frame)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn("the server sent a line over {limit} bytes", limit=self.MAX_LENGTH)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ServerGone())
        self._listener.server_lost(why_lost(reason, self.tls, self._answered))
