"""Self-signed certificates: for a server on a LAN or in a test (``chat-make-cert``),
and the throwaway identity each client's peer listener makes at start (never written
to disk). Built with ``cryptography``, which pyOpenSSL (Twisted's TLS) stands on.

A certificate is named by its **fingerprint**: the SHA-256 of its DER encoding, in
lowercase hex. That is what the server hands out for private chats and what the peers
pin, as SSH pins host keys.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twisted_chat.cli import reader_left

FINGERPRINT_HEX = 64
"""Characters of a fingerprint: SHA-256 in hex."""


@dataclass(frozen=True)
class Identity:
    """A private key and its self-signed certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_pem(self.cert_pem)


def fingerprint_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(cert_pem: bytes) -> str:
    certificate = x509.load_pem_x509_certificate(cert_pem)
    return fingerprint_of_der(certificate.public_bytes(serialization.Encoding.DER))


def is_fingerprint(text: str) -> bool:
    return len(text) == FINGERPRINT_HEX and all(c in "0123456789abcdef" for c in text)


def self_signed(
    names: Sequence[str],
    days: float = 365,
    common_name: str = "twisted-chat",
    starting: datetime.datetime | None = None,
) -> Identity:
    """A P-256 key and a certificate for ``names`` (host names or IP addresses), valid
    for ``days`` from ``starting`` (by default a minute ago)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    start = starting or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if alternatives:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Identity(key_pem, certificate.public_bytes(serialization.Encoding.PEM))


def write_identity(identity: Identity, key_path: Path, cert_path: Path) -> None:
    """The key readable by its owner only (0600), created so from the start."""
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(identity.key_pem)
    cert_path.write_bytes(identity.cert_pem)


def run(argv: Sequence[str] | None = None) -> None:
    """``chat-make-cert``: a self-signed certificate for a test or a LAN server."""
    parser = argparse.ArgumentParser(
        prog="chat-make-cert",
        description="Make a self-signed certificate and key for twistd chatserver's TLS "
        "port; clients trust it with client.py PORT --tls --ca CERT.",
    )
    parser.add_argument(
        "--name",
        action="append",
        help="a host name or IP address clients dial (repeatable) [default: localhost "
        "and 127.0.0.1]",
    )
    parser.add_argument("--days", type=float, default=365, help="validity [default: 365]")
    parser.add_argument("--key", default="key.pem", help="key file [default: key.pem]")
    parser.add_argument("--cert", default="cert.pem", help="certificate [default: cert.pem]")
    parser.add_argument(
        "--force", action="store_true", help="replace a key or certificate that exists"
    )
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        if e.code == 0:  # --help: written, but maybe not yet through the pipe
            try:
                sys.stdout.flush()
            except BrokenPipeError:  # --help | head -1
                reader_left()
        raise
    if not 0 < args.days <= 3650:
        parser.error("--days must be more than 0 and at most 3650")
    existing = [name for name in (args.key, args.cert) if Path(name).exists()]
    if existing and not args.force:
        which = " and ".join(existing) + (" exist" if len(existing) > 1 else " exists")
        parser.error(
            f"{which}: a server or its clients may depend on it; give --force to "
            "replace, or --key/--cert for new files"
        )
    identity = self_signed(args.name or ["localhost", "127.0.0.1"], args.days)
    write_identity(identity, Path(args.key), Path(args.cert))
    print(f"wrote {args.key} (0600) and {args.cert}; fingerprint sha256:{identity.fingerprint}")
