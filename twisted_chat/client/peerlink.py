"""One private-session connection, either side: a small state machine (``peer``
has the whole handshake, and the listener that admits these)::

    connecting side:  HANDSHAKING --ok--> OPEN --> CLOSED
    listening side:   AUTHENTICATING --valid peer-hello--> OPEN --> CLOSED
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.peertls import fingerprint_of
from twisted_chat.errors import ChatError
from twisted_chat.text import check_text

if TYPE_CHECKING:
    from twisted_chat.client.peer import PeerManager

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a peer connection may take to authenticate before it is dropped."""

MAX_TOKEN_CHARS = 64
"""Longest token a peer may present (ours are 32 characters)."""


class PeerRefused(Exception):
    """The other client refused our handshake."""


class PeerState(enum.Enum):
    HANDSHAKING = "handshaking"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class PeerProtocol(LineReceiver):
    """One private-session connection, either side."""

    transport: Any
    """Set by Twisted on connection. ``Any``: ``Protocol`` types it ``ITransport | None``,
    and the TCP/StringTransport providers we use have more (``disconnecting``)."""

    delimiter = wire.DELIMITER
    MAX_LENGTH = wire.MAX_INBOUND_LINE
    log = Logger()

    def __init__(
        self,
        network: PeerManager,
        user: str = "",
        token: str = "",
        host: str = "",
        fingerprint: str = "",
    ) -> None:
        self.network = network
        self.host = host
        """The other side's address (listening side): its share of handshakes."""
        self.user = user
        """The other side's name (known at once when we connect; after auth otherwise)."""
        self._token = token
        self._connecting = bool(user)
        self.state = PeerState.HANDSHAKING if user else PeerState.AUTHENTICATING
        self.ready: Deferred[None] = Deferred()
        self._deadline: IDelayedCall | None = None
        self.stop_reason = "lost"
        self.claimed_user = ""
        self.claimed_token = ""
        """What a connecting peer said in its ``peer-hello`` (listening side)."""
        self.fingerprint = fingerprint
        """The other side's certificate fingerprint: pinned when we connect; seen on
        the connection when we listen."""
        self.said_hello = False
        self.quiet = False
        """Closed by our own user: no 'ended' notice for them."""

    def connectionMade(self) -> None:
        self._deadline = self.network.clock.callLater(HANDSHAKE_TIMEOUT, self._too_slow)
        if self.state is PeerState.HANDSHAKING:
            hello = wire.PeerHello(wire.PEER_PROTOCOL_VERSION, self.network.me, self._token)
            self.transport.write(wire.encode(hello))

    def lineReceived(self, line: bytes) -> None:
        if self.state is PeerState.CLOSED:
            return
        try:
            _, frame = wire.parse(line, wire.PEER_FRAMES)
        except wire.FrameError as e:
            self._refuse(e.code, e.text)
            return
        match self.state, frame:
            case PeerState.AUTHENTICATING, wire.PeerHello() if not self.said_hello:
                self.said_hello = True  # one hello per connection, whatever it holds
                if frame.version != wire.PEER_PROTOCOL_VERSION:
                    self._refuse("refused", f"Protocol version {frame.version} is not spoken.")
                    return
                if not 0 < len(frame.user) <= wire.MAX_NAME_CHARS or not (
                    0 < len(frame.token) <= MAX_TOKEN_CHARS
                ):
                    self._refuse("refused", "A peer-hello needs a user and a token.")
                    return
                self.claimed_user, self.claimed_token = frame.user, frame.token
                self.fingerprint = self._certificate_seen() or ""
                self.network.admit(self)
            case PeerState.HANDSHAKING, wire.Ok():
                self._open()
            case PeerState.HANDSHAKING, wire.Error(text=text):
                self._fail(PeerRefused(text))
            case PeerState.OPEN, wire.PrivateText(text=text):
                # The peer's client may be modified: hold its text to the server's rule.
                try:
                    check_text(text)
                except ChatError as e:
                    self._refuse(e.code, e.text)
                else:
                    self.network.events.peer_text(self.user, text)
            case PeerState.OPEN, wire.Error(text=text):
                # Never answered: two clients must not trade errors forever.
                self.log.warn("peer {user} refused a frame: {why}", user=self.user, why=text)
            case PeerState.OPEN, wire.StopPrivate(reason=reason):
                self.stop_reason = reason
                self.transport.loseConnection()
            case _:
                self._refuse("bad-state", f"A {frame.TYPE} frame is not expected now.")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse("line-too-long", "Line too long.")

    def _certificate_seen(self) -> str | None:
        """The fingerprint of the certificate the other side showed (None: no TLS)."""
        if not ISSLTransport.providedBy(self.transport):
            return None
        return fingerprint_of(self.transport.getPeerCertificate())

    def admitted(self, ok: bool) -> None:
        """The peer network's verdict on our ``peer-hello`` (listening side)."""
        if self.state is not PeerState.AUTHENTICATING:
            return
        if not ok:
            self._refuse("refused", "No private session was approved for you.")
            return
        self.user = self.claimed_user
        self.transport.write(wire.encode(wire.Ok()))
        self._open()

    def send_text(self, text: str) -> bool:
        if self.state is not PeerState.OPEN or self.transport.disconnecting:
            return False
        self.transport.write(wire.encode(wire.PrivateText(text)))
        return True

    def stop(self, reason: str) -> None:
        """Our side ends the session: tell the peer why, then close."""
        self.quiet = True
        if self.state is PeerState.OPEN and not self.transport.disconnecting:
            self.transport.write(wire.encode(wire.StopPrivate(reason)))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        was_open = self.state is PeerState.OPEN
        self.state = PeerState.CLOSED
        self._cancel_deadline()
        if reason is not None and reason.check(SSL.Error) and "certificate" in str(reason.value):
            self._fail(
                PeerRefused(
                    "its certificate is not the one the server approved "
                    "(someone else may have answered)"
                )
            )
        self._fail(PeerRefused("the connection closed during the handshake"))
        self.network.lost(self, was_open)

    def _open(self) -> None:
        self._cancel_deadline()
        if not self.network.opened(self):
            self.transport.loseConnection()
            self._fail(PeerRefused(f"already in a private session with {self.user}"))
            return
        self.state = PeerState.OPEN
        if not self.ready.called:
            self.ready.callback(None)

    def _refuse(self, code: str, text: str) -> None:
        if self.state is not PeerState.OPEN:
            self.log.warn(
                "refused a peer connection from {peer}: {why}",
                peer=self.transport.getPeer(),
                why=text,
                security_event="peer-refused",
            )
            self.transport.write(wire.encode(wire.Error(code, text)))
            self.state = PeerState.CLOSED
            self.transport.loseConnection()
        else:
            # An open session survives one bad frame: the peer is told, our user is not
            # shown it (it may be a modified client's attempt on our terminal).
            self.log.warn("bad frame from peer {user}: {why}", user=self.user, why=text)
            self.transport.write(wire.encode(wire.Error(code, text)))

    def evicted(self) -> None:
        """Dropped to make room for a newer connection (see ``PeerManager.incoming``)."""
        self.log.warn(
            "dropped a silent peer connection from {host} to make room",
            host=self.host,
            security_event="peer-evicted",
        )
        self.state = PeerState.CLOSED
        self.transport.abortConnection()

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse("timeout", "The handshake took too long.")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _fail(self, error: Exception) -> None:
        # Only the connecting side's ``ready`` has a listener (our user's request); a
        # listening side's failure is a refusal already logged, never shown as an
        # "Unhandled error in Deferred" on the user's terminal.
        if self._connecting and not self.ready.called:
            self.ready.errback(error)
