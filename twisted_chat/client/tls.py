"""TLS to the chat server: the client's options, and why a link ended, in words.

``client.py PORT --tls`` checks the server's certificate against the system's trust
store (``--ca FILE``: against that certificate instead, for a self-signed server) and
the name or address it dialled (``optionsForClientTLS``, with ``service_identity``).
Nothing falls back to plain: a certificate that fails, or a server that does not speak
TLS, ends the client with one line.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.python.failure import Failure


class TrustError(Exception):
    """The certificate given with ``--ca`` cannot be used."""


def certificate_problem(ca_file: str) -> str | None:
    """Why ``ca_file`` cannot be the certificate ``--ca`` trusts, in words that say
    what to give instead; None if it can."""
    path = Path(ca_file)
    if path.is_dir():
        return f"--ca {ca_file} is a directory: give the server's certificate file (cert.pem)"
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"--ca {ca_file}: {e.strerror}; give the server's certificate file (cert.pem)"
    if b"PRIVATE KEY-----" in data:
        return (
            f"--ca {ca_file} holds a private key, which must stay on the server: give "
            "its certificate (cert.pem) instead"
        )
    try:
        Certificate.loadPEM(data)
    except (SSL.Error, crypto.Error, ValueError):
        return f"--ca {ca_file} holds no PEM certificate: give the server's cert.pem"
    return None


def client_options(host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
    """TLS options that verify the server as ``host`` (a name or an IP address)."""
    if ca_file is None:
        return optionsForClientTLS(host, trustRoot=platformTrust())
    try:
        authority = Certificate.loadPEM(Path(ca_file).read_bytes())
    except OSError as e:
        raise TrustError(f"cannot read {ca_file}: {e.strerror}") from None
    except (SSL.Error, crypto.Error, ValueError):
        raise TrustError(f"{ca_file} holds no PEM certificate") from None
    return optionsForClientTLS(host, trustRoot=authority)


def why_lost(reason: Failure | None, tls: bool, answered: bool) -> str:
    """One line on why the link to the server ended before or during the session."""
    error = reason.value if reason is not None else None
    if tls and isinstance(error, VerificationError):
        return (
            f"TLS: the server's certificate is not for {_dialled(error)}, the name you "
            "dialled; not connecting"
        )
    if tls and isinstance(error, SSL.Error):
        text = _ssl_reason(error)
        if "certificate verify failed" in text or "certificate" in text:
            return f"TLS: the server's certificate is not trusted ({text}); not connecting"
        if not answered:
            return (
                f"TLS failed ({text}): the server does not seem to speak TLS on that port "
                "(try without --tls)"
            )
        return f"TLS failed: {text}"
    if not answered and isinstance(error, ConnectionClosed):
        if tls:
            return "the server closed the connection during the TLS handshake (is it a TLS port?)"
        return (
            "the server closed the connection before answering (if the port speaks TLS, use --tls)"
        )
    return "The connection to the server was lost."


def _ssl_reason(error: SSL.Error) -> str:
    details = error.args[0] if error.args else []
    if isinstance(details, list) and details and isinstance(details[0], tuple):
        return str(details[0][-1]) or "handshake failed"
    return str(error) or "handshake failed"


def _dialled(error: VerificationError) -> str:
    for mismatch in getattr(error, "errors", ()):
        wanted = getattr(mismatch, "mismatched_id", None)
        name = getattr(wanted, "ip", None) or getattr(wanted, "hostname", None)
        if name is not None:
            return name.decode() if isinstance(name, bytes) else str(name)
    return "the host"
