"""Private sessions straight between clients.

Every logged-in client listens on an OS-chosen port, with TLS (``peertls``). When the
server approves a session it hands both sides one one-time token and the other side's
certificate fingerprint; the requester connects, pins the listener's certificate, and
presents ``peer-hello`` with its name and the token, inside TLS; the listener admits
the connection only if that user was approved with that token and the certificate the
requester showed has the approved fingerprint, and only once. Anything else (a wrong,
reused or missing token, another certificate, garbage, silence) is refused and the user
is not disturbed.

Each connection is a :class:`PeerProtocol` (``peerlink``: a small state machine);
this module has the listener that admits them and :class:`PeerManager`, which holds
the sessions and the tokens it expects.

The server tells the requester of an approval before the target, and the two hear it on
different connections, so a ``peer-hello`` can arrive before the listening side knows to
expect it. Such a hello waits (within the same handshake deadline) for the approval of
that user, and is checked then: but only from a user whose request we said yes to. A
hello from anyone else is refused at once, so that fake hellos cannot hold the
listener's few handshake places.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

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
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from twisted_chat.client.peerlink import HANDSHAKE_TIMEOUT, PeerProtocol, PeerRefused
from twisted_chat.client.peertls import PeerTLS, make_identity, session_code
from twisted_chat.client.seams import PeerEvents

TOKEN_LIFETIME = 60.0
"""Seconds an approved token waits for its peer to connect."""

MAX_UNAUTHENTICATED = 16
"""Connections allowed to be mid-handshake at once, in all."""

MAX_UNAUTHENTICATED_PER_ADDRESS = 4
"""Connections mid-handshake from one address. When a share is full, the oldest
connection from there that has not even said hello makes room: a real peer says hello
at once, so idle connections can never crowd it out."""


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
        self._consented: set[str] = set()
        """Users whose request we said yes to, whose approval has not come yet."""
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

    def consented(self, user: str) -> None:
        """We said yes to ``user``'s request: their hello may come before the approval."""
        self._consented.add(user)

    def withdrawn(self, user: str) -> None:
        """The request with ``user`` ended unapproved: a hello from them is a stranger's."""
        self._consented.discard(user)
        for protocol in self._awaiting.pop(user, []):
            protocol.admitted(False)

    def expect(self, user: str, token: str, fingerprint: str) -> None:
        self._consented.discard(user)
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
        """Decide on a ``peer-hello``: at once if an approval for that user is known;
        when one arrives if we said yes to that user (or never: the handshake deadline
        refuses it); refused at once for anyone else."""
        user = protocol.claimed_user
        if user in self._expected or user in self._sessions:
            protocol.admitted(self._check(protocol))
        elif user in self._consented:
            self._awaiting.setdefault(user, []).append(protocol)
        else:
            self.log.info(
                "refused a peer hello from {host} for {user}, whom we said no yes to",
                host=protocol.host,
                user=user[:32],
                security_event="peer-unexpected",
            )
            protocol.admitted(False)

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
