"""What the server reads off a connection's addresses: the client's IP (what its
private-session partners are given, and what per-address limits count), and where the
connection was accepted (what the metrics label it with)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, ISSLTransport


def ip_of(address: IAddress | None) -> str | None:
    """The IP address of ``address``; None for a UNIX socket or anything else."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return None


def listener_of(transport: Any) -> tuple[str, str]:
    """Where a connection was accepted (the listener's port, or its kind of socket)
    and whether it speaks TLS: what ``chat_connections`` is labelled with."""
    host = transport.getHost()
    port = getattr(host, "port", None)
    where = str(port) if port is not None else type(host).__name__
    return where, "tls" if ISSLTransport.providedBy(transport) else "plain"
