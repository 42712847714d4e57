"""Each connection's output, gathered over a reactor turn and sent once at its end.

``transport.write`` registers the socket with epoll for writing, and a later turn's
write event sends the data and unregisters it: two ``epoll_ctl`` calls and a dispatched
event, per connection, per turn. A chat server's turns are fan-outs (a presence notice
or a broadcast to everyone online), so that cost is paid per recipient. Like Redis
(``handleClientsWithPendingWrites``), we instead gather a turn's output per connection
and, once the turn's events are handled, hand it straight to the socket. Only what the
kernel does not take at once (a slow reader) goes through ``transport.write``, and so
through Twisted's buffering, flow control and error handling as before.

The direct send is owned by a transport class of ours, :class:`TurnServer`, which
our TCP listeners build (:func:`turn_listening_reactor`): it knows from Twisted's public
``startWriting``/``stopWriting`` calls whether Twisted still holds bytes for the socket,
and it turns the direct send off for good once the connection starts TLS. Any other
transport (TLS from the start, UNIX sockets, a test's) gets everything through
``write``: slower, never wrong.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger

_log = Logger()


class TurnServer(tcp.Server):
    """A TCP server-side connection that can take a turn's output straight to its
    socket when Twisted holds nothing for it (else our bytes would overtake its)."""

    _queued = False
    """Twisted has bytes waiting for this socket (it is registered for writing)."""
    _sealed = False
    """The connection started TLS: the socket carries only what TLS writes."""

    def startWriting(self) -> None:
        self._queued = True
        super().startWriting()

    def stopWriting(self) -> None:
        # Twisted stops writing once its buffer is empty, or when the connection ends.
        self._queued = False
        super().stopWriting()

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        self._sealed = True
        super().startTLS(ctx, normal)

    def send_turn(self, data: bytes) -> None:
        """Send ``data`` now as far as the kernel takes it; the rest through ``write``."""
        if self._queued or self._sealed or not self.connected or self.disconnecting:
            self.write(data)
            return
        try:
            sent = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # broken: ``write`` lets Twisted find out and clean up
        if sent < len(data):
            self.write(data[sent:])


class TurnPort(tcp.Port):
    """A TCP listening port whose connections are :class:`TurnServer`."""

    transport = TurnServer
    reuse_port = False
    """Set SO_REUSEPORT: several processes listen on one port and the kernel spreads
    the connections over them (``--reuse-port``, docs/scaling.md)."""

    def createInternetSocket(self) -> socket.socket:
        made: socket.socket = super().createInternetSocket()
        if self.reuse_port:
            made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return made


class ReusePort(TurnPort):
    reuse_port = True


class _TurnListeningReactor:
    """The reactor as our listeners' endpoints see it: the same reactor, except that
    ``listenTCP`` makes a :class:`TurnPort` (what ``reactor.listenTCP`` does with
    ``tcp.Port``). So every TCP endpoint description (``tcp:``, ``tcp6:``, a bare
    port) gets the direct send, and every other kind is the reactor's own."""

    def __init__(self, reactor: PosixReactorBase, reuse_port: bool) -> None:
        self._reactor = reactor
        self._port_type = ReusePort if reuse_port else TurnPort

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> TurnPort:
        listening = self._port_type(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def turn_listening_reactor(reactor: Any, reuse_port: bool = False) -> Any:
    """``reactor`` with TCP listeners that build :class:`TurnServer` connections (with
    SO_REUSEPORT set if ``reuse_port``), when it is a POSIX reactor (their sockets are
    what :class:`TurnServer` sends on); any other reactor (IOCP, a test's memory
    reactor) as it is."""
    if isinstance(reactor, PosixReactorBase):
        return _TurnListeningReactor(reactor, reuse_port)
    return reactor


class TurnFlusher:
    """Flushes every :class:`Outbox` written to in this turn, once, right after it."""

    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._pending: list[Outbox] = []
        self._call: IDelayedCall | None = None

    def schedule(self, outbox: Outbox) -> None:
        self._pending.append(outbox)
        if self._call is None:
            # A zero delay runs at the start of the reactor's next iteration: after
            # every event of this one, before it waits for more.
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        self._call = None
        pending, self._pending = self._pending, []
        for outbox in pending:
            try:
                outbox.flush()
            except Exception:
                # One connection's failure must not stall the others' output: its
                # stream lost a turn's bytes, so it cannot go on; the rest do.
                self.log.failure("sending a turn's output failed; closing that connection")
                outbox.abandon()


class Outbox:
    """One connection's output not yet handed to the kernel."""

    __slots__ = ("_chunks", "_direct", "_flusher", "_transport")

    def __init__(self, transport: Any, flusher: TurnFlusher) -> None:
        self._transport = transport
        self._flusher = flusher
        self._chunks: list[bytes] = []
        self._direct = isinstance(transport, TurnServer)

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._flusher.schedule(self)
        self._chunks.append(data)

    def discard(self) -> None:
        """Forget unsent output (the connection is being aborted)."""
        self._chunks = []

    def flush(self) -> None:
        """Send what was gathered, in one piece."""
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._direct:
            self._transport.send_turn(data)
        else:
            self._transport.write(data)

    def abandon(self) -> None:
        """Sending failed: drop this connection at once (its stream has a gap)."""
        self._chunks = []
        try:
            self._transport.abortConnection()
        except Exception:
            _log.failure("aborting a connection whose output failed")
