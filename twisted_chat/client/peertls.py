"""TLS between two clients, pinned by certificate fingerprints the server brokers.

Each client makes a key pair and a self-signed certificate at start, in memory only
(:func:`make_identity`); its fingerprint goes to the server with ``listening``. When a
private session is approved, each side learns the other's fingerprint:

- the connecting side pins the listener's certificate **during the handshake**: a
  certificate with another fingerprint fails the handshake, before the token (held back
  by TLS until the handshake is done) ever leaves;
- the listening side requires a client certificate, and admits a ``peer-hello`` only if
  the certificate shown matches the fingerprint approved for that user, together with
  the one-time token. It cannot pin during the handshake: the hello may come before the
  server's approval reaches it (see ``peer``).

Both sides show a short **session code** made from the two certificates actually used
on the connection (:func:`session_code`): if a server lied about a fingerprint to put
itself in the middle, the two users' codes differ, and saying them aloud shows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from zope.interface import implementer

from twisted_chat.certs import Identity, fingerprint_of_der, self_signed

SESSION_CODE_GROUPS = 5
"""Groups of four hex digits in a session code: 80 bits, enough that a server in the
middle cannot make two codes match by trying keys."""


def make_identity() -> Identity:
    """This run's peer identity: never written anywhere."""
    return self_signed([], days=7, common_name="twisted-chat peer")


def fingerprint_of(certificate: object) -> str | None:
    """The SHA-256 fingerprint of a certificate seen on a connection (None: none)."""
    if isinstance(certificate, crypto.X509):
        certificate = certificate.to_cryptography()
    if not isinstance(certificate, x509.Certificate):
        return None
    return fingerprint_of_der(certificate.public_bytes(serialization.Encoding.DER))


def session_code(one: str, other: str) -> str:
    """The same short code on both sides of a session: the two fingerprints, in a fixed
    order, hashed, in groups of four hex digits."""
    digest = hashlib.sha256("".join(sorted((one, other))).encode()).hexdigest()
    return " ".join(digest[4 * n : 4 * n + 4] for n in range(SESSION_CODE_GROUPS))


class PeerTLS:
    """The TLS contexts of one client's private sessions, both directions."""

    def __init__(self, identity: Identity) -> None:
        self.fingerprint = identity.fingerprint
        self._certificate = x509.load_pem_x509_certificate(identity.cert_pem)
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # what make_identity makes
        self._key = key

    def _context(self, verify: Callable[..., bool]) -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.use_certificate(self._certificate)
        context.use_privatekey(self._key)
        context.check_privatekey()
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return context

    def listening(self) -> _ServerContext:
        """For the listener: a client certificate is required (any one: it is checked
        against the approved fingerprint once the peer says who it is)."""
        return _ServerContext(self._context(_any_certificate))

    def connecting(self, expected: str) -> IOpenSSLClientConnectionCreator:
        """For a connection to a listener whose certificate must have ``expected`` as
        its fingerprint."""

        def pinned(
            connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
        ) -> bool:
            # A self-signed leaf is never "ok" to OpenSSL; its fingerprint is the test.
            return depth != 0 or fingerprint_of(certificate) == expected

        return _PinnedClient(self._context(pinned))


def _any_certificate(
    connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
) -> bool:
    return True


@implementer(IOpenSSLContextFactory)
class _ServerContext:
    """What ``TLSMemoryBIOFactory`` takes for a server: ``getContext()``."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedClient:
    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection
