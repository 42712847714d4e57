"""What one connection is allowed: one :class:`ConnectionPolicy` per connection.

It decides, from the limits and the injected clock, whether the connection is
admitted, when a line may be handled (flood control holds it back and stops reading),
when reading pauses (a login step waiting on the disk), whether the client is alive
and logging in on time, and whether it reads its output fast enough. It enforces
nothing on the wire itself: the protocol it governs (:class:`Governed`) is told to
``handle`` a line, to ``refuse`` with a code, or to ``drop`` the connection, and keeps
the phases, the dispatch and the replies.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger

from twisted_chat import wire
from twisted_chat.server.limits import (
    CLOSE_GRACE,
    ConnectionCounter,
    Limits,
    OutputGate,
    TokenBucket,
)
from twisted_chat.server.output import Outbox, TurnFlusher
from twisted_chat.server.stats import Stats

_NOT_PAUSED: frozenset[str] = frozenset()


class Governed(Protocol):
    """The protocol side of a policy: what the policy asks of its connection."""

    paused: bool
    """Reading is paused (``LineReceiver``'s own flag)."""

    def handle(self, line: bytes) -> None:
        """Handle a line that the limits let through."""

    def refuse(self, code: str, text: str, request_id: wire.RequestId = None) -> None:
        """Say why (an error, or ``logged-out`` when online), then close."""

    def drop(self) -> None:
        """Close now, without a word: the client does not read, or is gone."""

    def ping(self) -> None:
        """Ask a quiet client whether it is still there."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def is_closed(self) -> bool: ...

    def who(self) -> str:
        """The user, or the address before login, for the log."""


class ConnectionPolicy:
    """One connection's limits and the state they need."""

    __slots__ = (
        "_bucket",
        "_clock",
        "_closing",
        "_connected_at",
        "_connections",
        "_counted",
        "_frames_before_login",
        "_gate",
        "_greeted",
        "_heard",
        "_held_line",
        "_limits",
        "_owner",
        "_pauses",
        "_resume",
        "_stats",
        "_throttled_since",
        "_watchdog",
        "network",
        "online",
        "outbox",
    )

    log = Logger()

    def __init__(
        self,
        owner: Governed,
        clock: IReactorTime,
        limits: Limits,
        connections: ConnectionCounter,
        network: str,
        stats: Stats,
    ) -> None:
        self._owner = owner
        self._stats = stats
        self._clock = clock
        self._limits = limits
        self._connections = connections
        self.network = network
        """What the per-network limits count this connection under (``addresses``)."""
        self._counted = False
        """Admission counts the connection now (released once, when it is gone)."""
        self.online = False
        """Logged in: the login deadline and the frames-before-login cap no longer apply."""
        self._bucket = TokenBucket(clock, limits.flood_burst, limits.flood_rate)
        self._held_line: bytes | None = None
        """A line that found the flood bucket empty; handled when a token is due."""
        self._throttled_since: float | None = None
        self._resume: IDelayedCall | None = None
        self._gate = OutputGate(limits.output_cap, self._too_slow)
        self._heard = self._connected_at = clock.seconds()
        self._watchdog: IDelayedCall | None = None
        self._frames_before_login = 0
        self._greeted = False
        """A first frame came (before it, the hello deadline applies)."""
        self._closing: IDelayedCall | None = None
        """Drops the connection if it is still open a grace after it was closed."""
        self._pauses = _NOT_PAUSED
        """Why reading is paused ("flood", "login"); it resumes when none is left. A
        frozenset: the empty one is shared, so an unpaused connection (nearly all of
        them) keeps no set of its own."""
        self.outbox: Outbox

    # --- admission and the end ---------------------------------------------------------

    def admit(self, transport: Any, flusher: TurnFlusher) -> str | None:
        """Count the connection and start watching it, or say why it is refused."""
        self.outbox = Outbox(transport, flusher)
        refusal = self._connections.admit(self.network)
        if refusal is not None:
            self.log.warn(
                "refused a connection from {host}: {why}",
                host=self.network,
                why=refusal,
                security_event="connection-refused",
            )
            return refusal
        self._counted = True
        if ITCPTransport.providedBy(transport):
            # Writes are already gathered per reactor turn; Nagle would only add delay
            # to the small frames a chat server sends.
            transport.setTcpNoDelay(True)
        transport.registerProducer(self._gate, True)
        # One timer per connection watches both liveness and the login deadline: a
        # cancelled DelayedCall stays in the reactor's heap until its time comes.
        limits = self._limits
        first = min(limits.ping_interval, limits.login_timeout, limits.hello_timeout)
        self._watchdog = self._clock.callLater(first, self._check_alive)
        return None

    def lost(self) -> None:
        """The connection is gone: no timer of ours outlives it; admission forgets it."""
        for call in (self._resume, self._watchdog, self._closing):
            if call is not None and call.active():
                call.cancel()
        self._resume = self._watchdog = self._closing = None
        if self._counted:
            self._connections.release(self.network)
            self._counted = False

    def closing(self) -> None:
        """The protocol asked its transport to close. A TLS close waits for the peer's
        answer, which a silent or hostile peer never sends, and until the connection
        is gone it counts against its address: drop it if it is still open a grace
        later, whatever the peer does."""
        if self._closing is None:
            self._closing = self._clock.callLater(CLOSE_GRACE, self._close_overdue)

    def _close_overdue(self) -> None:
        self._closing = None
        self.log.info(
            "dropping {who}: closed {grace:.0f}s ago", who=self._owner.who(), grace=CLOSE_GRACE
        )
        self._owner.drop()

    # --- input: flood control and pauses -------------------------------------------------

    def received(self, line: bytes) -> None:
        """A line came in: handle it now if a token is free, else hold it."""
        self._heard = self._clock.seconds()
        self._greeted = True
        if self._throttled_since is not None and self._bucket.full:
            self._throttled_since = None  # calm for a whole burst's worth of time
        if self._bucket.take():
            self._let_through(line)
        else:
            self._throttle(line)

    def _let_through(self, line: bytes) -> None:
        if not self.online:
            self._frames_before_login += 1
            if self._frames_before_login > self._limits.login_frames:
                self._owner.refuse(
                    "too-many-attempts", "Too many attempts to log in.", _request_id(line)
                )
                return
        self._owner.handle(line)

    def _throttle(self, line: bytes) -> None:
        """No token for this line: hold it and stop reading (TCP pushes back on the
        flooder, and only on the flooder) until a token is due. Sustained flooding,
        throttled for ``flood_disconnect`` seconds without a break, disconnects."""
        now = self._clock.seconds()
        if self._throttled_since is None:
            self._throttled_since = now
            self._stats.throttled += 1
        elif now - self._throttled_since > self._limits.flood_disconnect:
            self.log.warn(
                "disconnecting {who} for flooding",
                who=self._owner.who(),
                security_event="flood",
            )
            self._owner.refuse("flood", "Disconnected for sending too fast for too long.")
            return
        self._held_line = line
        self._pause("flood")
        self._resume = self._clock.callLater(self._bucket.wait(), self._release_held)

    def _release_held(self) -> None:
        """A token is due: handle the held line, then read on (LineReceiver delivers
        the lines it buffered meanwhile, each through the bucket again)."""
        self._resume = None
        line, self._held_line = self._held_line, None
        if line is None or self._owner.is_closed():
            return
        if not self._bucket.take():
            self._throttle(line)  # not quite due (rounding): wait a little more
            return
        self._let_through(line)
        if not self._owner.is_closed() and self._held_line is None:
            self._unpause("flood")

    def hold_reading(self) -> None:
        """A login step waits (on the disk, on cred): read no further line until it is
        answered (:meth:`read_after`), so that a client pipelining hello, login and
        password is served in order."""
        self._pause("login")

    def read_after(self, answered: Deferred[Any]) -> None:
        """Read on once ``answered`` has fired (its reply written), if a login step
        held reading."""
        if "login" in self._pauses:
            answered.addBoth(self._read_on_after_login)

    def _read_on_after_login(self, result: object) -> object:
        self._unpause("login")
        return result

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            self._owner.pauseProducing()
        self._pauses |= {reason}

    def _unpause(self, reason: str) -> None:
        # An empty result is a new frozenset; keep the shared one instead.
        self._pauses = (self._pauses - {reason}) or _NOT_PAUSED
        owner = self._owner
        if not self._pauses and owner.paused and not owner.is_closed():
            # LineReceiver then delivers the lines it buffered meanwhile, in order.
            owner.resumeProducing()

    # --- output -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """A reply or a notice of the connection's own."""
        self.outbox.write(data)
        self._gate.wrote(len(data))

    def send_event(self, data: bytes) -> None:
        """An event of a fan-out: runs once per recipient, so kept to the bare minimum."""
        self.outbox.write(data)
        if self._gate.paused:
            self._gate.wrote(len(data))

    def _too_slow(self) -> None:
        """Our output to this client went past the cap: it does not read. Drop it at
        once (its buffered output with it); it is logged out as for a lost connection."""
        if self._owner.is_closed():
            return
        self.log.warn(
            "dropping {who}: over {cap} bytes of output unread",
            who=self._owner.who(),
            cap=self._limits.output_cap,
            security_event="slow-reader",
        )
        self._owner.drop()

    # --- liveness and the login deadline -------------------------------------------------

    def _check_alive(self) -> None:
        """Refuse a connection still not logged in at its deadline; ping a quiet
        client; drop one that stayed silent past the timeout (a peer that vanished
        without closing: a half-open connection)."""
        limits = self._limits
        now = self._clock.seconds()
        self._watchdog = None
        logging_in = not self.online
        if not self._greeted and now - self._connected_at >= limits.hello_timeout:
            # Nothing at all, not even a TLS handshake: no frame would reach it.
            self.log.warn(
                "dropping {who}: no first frame in {seconds:.0f}s",
                who=self._owner.who(),
                seconds=limits.hello_timeout,
                security_event="no-hello",
            )
            self._owner.drop()
            return
        if logging_in and now - self._connected_at >= limits.login_timeout:
            self._owner.refuse("login-timeout", "Took too long to log in.")
            return
        quiet = now - self._heard
        if quiet >= limits.ping_timeout:
            self.log.warn(
                "dropping {who}: silent for {quiet:.0f}s",
                who=self._owner.who(),
                quiet=quiet,
                security_event="no-response",
            )
            self._owner.drop()
            return
        if quiet >= limits.ping_interval:
            self._owner.ping()
            wait = min(limits.ping_interval, limits.ping_timeout - quiet)
        else:
            wait = limits.ping_interval - quiet
        if logging_in:
            wait = min(wait, limits.login_timeout - (now - self._connected_at))
        if not self._greeted:
            wait = min(wait, limits.hello_timeout - (now - self._connected_at))
        self._watchdog = self._clock.callLater(wait, self._check_alive)


def _request_id(line: bytes) -> wire.RequestId:
    """The id of a request that will not be handled, so its refusal can answer it."""
    try:
        request_id: wire.RequestId = wire.decode_object(line).get("id")
    except wire.FrameError:
        return None
    return request_id
