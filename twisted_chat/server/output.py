"""Each connection's output, gathered over a reactor turn and sent once at its end.

``transport.write`` registers the socket with epoll for writing, and a later turn's
write event sends the data and unregisters it: two ``epoll_ctl`` calls and a dispatched
event, per connection, per turn. A chat server's turns are fan-outs (a presence notice
or a broadcast to everyone online), so that cost is paid per recipient. Like Redis
(``handleClientsWithPendingWrites``), we instead gather a turn's output per connection
and, once the turn's events are handled, hand it straight to the socket. Only what the
kernel does not take at once (a slow reader) goes through ``transport.write``, and so
through Twisted's buffering, flow control and error handling as before.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class TurnFlusher:
    """Flushes every :class:`Outbox` written to in this turn, once, right after it."""

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
            outbox.flush()


class Outbox:
    """One connection's output not yet handed to the kernel."""

    __slots__ = ("_chunks", "_direct", "_flusher", "_transport")

    def __init__(self, transport: Any, flusher: TurnFlusher) -> None:
        self._transport = transport
        self._flusher = flusher
        self._chunks: list[bytes] = []
        # Only a plain TCP connection may be written to through its socket: TLS or a
        # test's transport take everything through ``write``.
        self._direct = type(transport) is tcp.Server

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._flusher.schedule(self)
        self._chunks.append(data)

    def discard(self) -> None:
        """Forget unsent output (the connection is being aborted)."""
        self._chunks = []

    def flush(self) -> None:
        """Send what was gathered: straight to the socket when Twisted holds nothing
        for it (else our bytes would overtake its), the rest through ``write``."""
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        transport = self._transport
        if (
            self._direct
            and transport.connected
            and not transport.dataBuffer
            and not transport._tempDataBuffer
        ):
            try:
                sent = transport.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # broken: ``write`` lets Twisted find out and clean up
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)
