"""Where Redis is, from the one line an operator gives (``--redis``): parsed without
importing the Redis connection, so that checking the options of a chat of one
process loads nothing of the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is and how to sign in: from ``redis://[user:password@]host[:port][/db]``
    or ``unix:///path/to/redis.sock[?db=N]``."""

    endpoint_kind: str
    host: str
    port: int
    path: str
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Raise ``ValueError`` with one line for anything but the two forms."""
        parts = urlsplit(url)
        if parts.scheme == "redis":
            if not parts.hostname:
                raise ValueError(f"{url!r} names no host (redis://HOST:PORT/DB)")
            db_text = parts.path.strip("/") or "0"
            try:
                port = parts.port or 6379
            except ValueError as e:
                raise ValueError(f"{url!r}: {e}") from None
            return cls(
                "tcp",
                parts.hostname,
                port,
                "",
                _db_number(db_text, url),
                unquote(parts.username) if parts.username else None,
                unquote(parts.password) if parts.password is not None else None,
            )
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"{url!r} names no socket (unix:///path/to/redis.sock)")
            query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
            return cls("unix", "", 0, parts.path, _db_number(query.get("db", "0"), url), None, None)
        raise ValueError(f"{url!r} is not a redis:// or unix:// address")

    def endpoint(self, reactor: Any) -> IStreamClientEndpoint:
        if self.endpoint_kind == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=5)
        return HostnameEndpoint(reactor, self.host, self.port, timeout=5)

    def __str__(self) -> str:
        where = self.path if self.endpoint_kind == "unix" else f"{self.host}:{self.port}"
        return f"{where} db {self.db}"


def _db_number(text: str, url: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{url!r}: the database is a number, not {text!r}")
    return int(text)
