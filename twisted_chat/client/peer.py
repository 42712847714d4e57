"""Private sessions straight between clients.

Every logged-in client listens on an OS-chosen port, with TLS (``peertls``). When the
server approves a session it hands both sides one one-time token and the other side's
certificate fingerprint; the requester connects, pins the listener's certificate, and
presents ``peer-hello`` with its name and the token, inside TLS; the listener admits
the connection only if that user was approved with that token and the certificate the
requester showed has the approved fingerprint, and only once. Anything else (a wrong,
reused or missing token, another certificate, garbage, silence) is refused and the user
is not disturbed.

Each :class:`PeerProtocol` is a small state machine::

    connecting side:  HANDSHAKING --ok--> OPEN --> CLOSED
    listening side:   AUTHENTICATING --valid peer-hello--> OPEN --> CLOSED

The server tells the requester of an approval before the target, and the two hear it on
different connections, so a ``peer-hello`` can arrive before the listening side knows to
expect it. Such a hello waits (within the same handshake deadline) for the approval of
that user, and is checked then.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.client.peertls import PeerTLS, fingerprint_of, make_identity, session_code
from twisted_chat.client.seams import PeerEvents
from twisted_chat.errors import ChatError
from twisted_chat.text import check_text

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a peer connection may take to authenticate before it is dropped."""

TOKEN_LIFETIME = 60.0
"""Seconds an approved token waits for its peer to connect."""

MAX_UNAUTHENTICATED = 16
"""Connections allowed to be mid-handshake at once, in all."""

MAX_UNAUTHENTICATED_PER_ADDRESS = 4
"""Connections mid-handshake from one address. When a share is full, the oldest
connection from there that has not even said hello makes room: a real peer says hello
at once, so idle connections can never crowd it out."""

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
            hello = wire.PeerHello(wire.PROTOCOL_VERSION, self.network.me, self._token)
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
                if frame.version != wire.PROTOCOL_VERSION:
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


class PeerManager:
    """This client's private sessions, its peer listener and the tokens it expects."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        interface: str = "127.0.0.1",
        listen_on: Callable[[str], IStreamServerEndpoint] | None = None,
        connect_to: Callable[[str, int], IStreamClientEndpoint] | None = None,
        tls: PeerTLS | None = None,
    ) -> None:
        self.clock: IReactorTime = reactor
        self.tls = tls or PeerTLS(make_identity())
        """This run's peer identity and the TLS contexts made from it."""
        self._listen_on = listen_on or (
            lambda interface: TCP4ServerEndpoint(reactor, 0, interface=interface)
        )
        self._connect_to = connect_to or (
            lambda host, port: TCP4ClientEndpoint(reactor, host, port, timeout=HANDSHAKE_TIMEOUT)
        )
        self.events: PeerEvents = _Unbound()
        self.interface = interface
        """Where to listen: the local address of the link to the server, so that a peer
        who reaches the server can reach us too."""
        self.me = ""
        self._sessions: dict[str, PeerProtocol] = {}
        self._expected: dict[str, tuple[str, str, IDelayedCall]] = {}
        """Approved users: (token, certificate fingerprint, the call that lapses it)."""
        self._authenticating: dict[PeerProtocol, None] = {}
        """Connections mid-handshake, oldest first (a dict: an ordered set)."""
        self._awaiting: dict[str, list[PeerProtocol]] = {}
        """Hellos that came before the approval of their user, by claimed user."""
        self._port: IListeningPort | None = None

    # --- PeerNetwork ------------------------------------------------------------------

    def bind(self, events: PeerEvents) -> None:
        self.events = events

    def listen(self, me: str) -> Deferred[int]:
        self.me = me
        endpoint = self._listen_on(self.interface)

        def bound(port: IListeningPort) -> int:
            self._port = port
            return int(getattr(port.getHost(), "port", 0))

        factory = _PeerTLSFactory(self.tls.listening(), False, _PeerFactory(self), self.clock)
        listening: Deferred[int] = endpoint.listen(factory).addCallback(bound)
        return listening

    @property
    def fingerprint(self) -> str:
        return self.tls.fingerprint

    @property
    def listening_port(self) -> int | None:
        """The port peers reach us on (None: not listening)."""
        return None if self._port is None else int(getattr(self._port.getHost(), "port", 0))

    def session_code(self, user: str) -> str | None:
        """The code both users of the session with ``user`` see (None: no session)."""
        protocol = self._sessions.get(user)
        if protocol is None or not protocol.fingerprint:
            return None
        return session_code(self.tls.fingerprint, protocol.fingerprint)

    def expect(self, user: str, token: str, fingerprint: str) -> None:
        self._forget_expected(user)
        lapse = self.clock.callLater(TOKEN_LIFETIME, self._forget_expected, user)
        self._expected[user] = (token, fingerprint, lapse)
        for protocol in self._awaiting.pop(user, []):
            protocol.admitted(self._check(protocol))

    def connect(
        self, user: str, host: str, port: int, token: str, fingerprint: str
    ) -> Deferred[None]:
        if user in self._sessions:
            return fail(PeerRefused(f"already in a private session with {user}"))
        # The listener's certificate is pinned in the handshake; the hello (and its
        # token) waits in TLS until the handshake is done.
        endpoint = TLSClientEndpoint(
            self._connect_to(host, port), self.tls.connecting(fingerprint), self.clock
        )
        protocol = PeerProtocol(self, user, token, fingerprint=fingerprint)
        connected: Deferred[None] = connectProtocol(endpoint, protocol).addCallback(
            lambda _: protocol.ready
        )
        return connected

    def has(self, user: str) -> bool:
        return user in self._sessions

    def open_sessions(self) -> list[str]:
        return sorted(self._sessions)

    def send(self, user: str, text: str) -> bool:
        protocol = self._sessions.get(user)
        if protocol is None:
            return False
        if protocol.send_text(text):
            return True
        del self._sessions[user]
        return False

    def stop(self, user: str) -> None:
        protocol = self._sessions.pop(user, None)
        if protocol is not None:
            protocol.stop("stop")

    def stop_all(self, reason: str) -> None:
        for user in list(self._expected):
            self._forget_expected(user)
        sessions, self._sessions = self._sessions, {}
        for protocol in sessions.values():
            protocol.stop(reason)

    def close(self) -> Deferred[None] | None:
        """Stop listening (at exit)."""
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    # --- from PeerProtocol --------------------------------------------------------------

    def incoming(self, host: str) -> PeerProtocol | None:
        """A connection to our peer port. Its address's share of handshakes, and the
        total, are bounded; when full, the oldest connection that has not said hello
        (from that address, else from anywhere) is dropped to make room, so silent
        connections cannot lock real peers out. ``None`` refuses (Twisted closes it)."""
        from_there = [p for p in self._authenticating if p.host == host]
        if len(from_there) >= MAX_UNAUTHENTICATED_PER_ADDRESS and not self._evict_silent(
            from_there
        ):
            return None
        if len(self._authenticating) >= MAX_UNAUTHENTICATED and not self._evict_silent(
            list(self._authenticating)
        ):
            return None
        protocol = PeerProtocol(self, host=host)
        self._authenticating[protocol] = None
        return protocol

    def _evict_silent(self, candidates: list[PeerProtocol]) -> bool:
        """Drop the oldest of ``candidates`` that has not said hello; False if none."""
        for protocol in candidates:  # oldest first: the dict keeps arrival order
            if not protocol.said_hello:
                del self._authenticating[protocol]
                protocol.evicted()
                return True
        return False

    def admit(self, protocol: PeerProtocol) -> None:
        """Decide on a ``peer-hello``: at once if an approval for that user is known,
        else when one arrives (or never: the handshake deadline refuses it)."""
        user = protocol.claimed_user
        if user in self._expected or user in self._sessions:
            protocol.admitted(self._check(protocol))
        else:
            self._awaiting.setdefault(user, []).append(protocol)

    def _check(self, protocol: PeerProtocol) -> bool:
        """Whether the peer's token is the one approved for the user it claims, and its
        certificate the one approved for that user; a token works once."""
        user = protocol.claimed_user
        expected = self._expected.get(user)
        if expected is None or user in self._sessions:
            return False
        token, fingerprint, _ = expected
        if not hmac.compare_digest(token.encode(), protocol.claimed_token.encode()):
            return False
        if not hmac.compare_digest(fingerprint.encode(), protocol.fingerprint.encode()):
            self.log.warn(
                "refused {user}'s peer connection: the right token with another certificate",
                user=user,
                security_event="peer-wrong-certificate",
            )
            return False
        self._forget_expected(user)
        return True

    def opened(self, protocol: PeerProtocol) -> bool:
        self._authenticating.pop(protocol, None)
        if protocol.user in self._sessions:
            return False
        self._sessions[protocol.user] = protocol
        self.events.peer_opened(protocol.user)
        return True

    def lost(self, protocol: PeerProtocol, was_open: bool) -> None:
        self._authenticating.pop(protocol, None)
        waiting = self._awaiting.get(protocol.claimed_user)
        if waiting is not None and protocol in waiting:
            waiting.remove(protocol)
            if not waiting:
                del self._awaiting[protocol.claimed_user]
        if not was_open or self._sessions.get(protocol.user) is not protocol:
            return
        del self._sessions[protocol.user]
        if not protocol.quiet:
            self.events.peer_closed(protocol.user, protocol.stop_reason)

    def _forget_expected(self, user: str) -> None:
        entry = self._expected.pop(user, None)
        if entry is not None and entry[2].active():
            entry[2].cancel()


class _PeerFactory(Factory):
    """Builds listening-side peer protocols; ``None`` refuses when too many handshakes
    are in progress (Twisted then closes the connection at once)."""

    def __init__(self, network: PeerManager) -> None:
        self.network = network

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return self.network.incoming(str(getattr(addr, "host", "?")))


class _PeerTLSFactory(TLSMemoryBIOFactory):
    """TLS around the peer factory, which may refuse a connection (``None``) before
    any handshake work is done."""

    def buildProtocol(self, addr: IAddress | None) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """``wrapClientTLS``, on our clock: TLS gathers small writes until the clock's next
    turn, so it must be the clock this client runs on (a test's, too)."""

    def __init__(
        self, endpoint: IStreamClientEndpoint, creator: IOpenSSLClientConnectionCreator, clock: Any
    ) -> None:
        self._endpoint = endpoint
        self._creator = creator
        self._clock = clock

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        wrapping = TLSMemoryBIOFactory(self._creator, True, protocolFactory, self._clock)

        def unwrapped(protocol: Any) -> IProtocol:
            inner: IProtocol = protocol.wrappedProtocol
            return inner

        return self._endpoint.connect(wrapping).addCallback(unwrapped)


class _Unbound:
    """The events sink until :meth:`PeerManager.bind`: using it is a wiring bug."""

    def peer_opened(self, user: str) -> None:
        raise RuntimeError("PeerManager used before bind()")

    def peer_text(self, user: str, text: str) -> None:
        raise RuntimeError("PeerManager used before bind()")

    def peer_closed(self, user: str, reason: str) -> None:
        raise RuntimeError("PeerManager used before bind()")
