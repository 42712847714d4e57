"""What the server reads off a connection's addresses: the client's IP (what its
private-session partners are given, and what per-address limits count), and where the
connection was accepted (what the metrics label it with)."""

from __future__ import annotations

import ipaddress
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


def group_of(ip: str | None, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The network an address counts under for the per-address limits: IPv4 by /24
    and IPv6 by /64 (as Ergo and Synapse group), since one attacker holds a whole
    such network as easily as one address. "local" for a UNIX socket."""
    if ip is None:
        return "local"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = v4_prefix if address.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
