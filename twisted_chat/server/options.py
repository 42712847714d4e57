"""The server's command line: ``twistd chatserver``'s options (``server.py`` turns the
handout's arguments into the same), each checked where it is parsed, so that a bad
value is one line naming the option."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import socket
from pathlib import Path

from twisted.python import usage

from twisted_chat.cli import print_help
from twisted_chat.server.limits import Limits
from twisted_chat.server.private import DEFAULT_PRIVATE_REQUEST_TTL
from twisted_chat.server.rooms import RoomLimits
from twisted_chat.server.stores import DEFAULT_MAILBOX_LIMIT

DEFAULT_PORT = "5000"
DEFAULT_BLOCK_DURATION = 60
DEFAULT_TIMEOUT = 120
DEFAULT_STATE_NAME = "chat-state.sqlite3"
DEFAULT_LIMITS = Limits()
DEFAULT_ROOM_LIMITS = RoomLimits()


def non_negative(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value} is not a non-negative number")
    return number


def positive(value: str) -> float:
    """A finite number of seconds, more than 0."""
    number = non_negative(value)
    if number == 0:
        raise ValueError("must be more than 0")
    return number


def port_number(value: str) -> int:
    """A port a server may listen on without privileges."""
    if not value.isdigit():
        raise usage.UsageError(f"{value!r} is not a port number")
    number = int(value)
    if not 1024 <= number <= 65535:
        raise usage.UsageError(f"port {number} is outside 1024-65535")
    return number


def port_description(value: str) -> str:
    """A bare port number means TCP on every interface; anything else is a Twisted
    endpoint description such as ``tcp:5000:interface=127.0.0.1``."""
    if value.isdigit():
        return f"tcp:{port_number(value)}"
    if ":" not in value:
        raise usage.UsageError(f"{value!r} is neither a port number nor an endpoint")
    return value


class Options(usage.Options):
    """Options of ``twistd chatserver``."""

    synopsis = "[options]"
    longdesc = "Run the twisted-chat instant-messaging server."
    optParameters = [
        [
            "block-duration",
            "b",
            DEFAULT_BLOCK_DURATION,
            "Seconds a username stays locked after 3 wrong passwords.",
            non_negative,
        ],
        [
            "timeout",
            "t",
            DEFAULT_TIMEOUT,
            "Seconds without a valid command before a user is logged out.",
            positive,
        ],
        [
            "credentials",
            "c",
            "credentials.txt",
            "Accounts file: one 'username password' a line; new accounts are appended.",
        ],
        [
            "private-request-ttl",
            None,
            DEFAULT_PRIVATE_REQUEST_TTL,
            "Seconds a private-chat request waits for an answer.",
            positive,
        ],
        ["mailbox-limit", None, DEFAULT_MAILBOX_LIMIT, "Offline messages kept per recipient.", int],
        [
            "history-days",
            None,
            DEFAULT_ROOM_LIMITS.history_days,
            "Days what is said (in rooms, and between two users) is kept; 0 keeps no "
            "history at all.",
            non_negative,
        ],
        [
            "history-max",
            None,
            DEFAULT_ROOM_LIMITS.history_max,
            "Messages kept per conversation (a room, or two users); the oldest go first.",
            int,
        ],
        [
            "max-rooms-per-user",
            None,
            DEFAULT_ROOM_LIMITS.max_rooms_per_user,
            "Rooms one user may be in at once.",
            int,
        ],
        [
            "max-room-members",
            None,
            DEFAULT_ROOM_LIMITS.max_room_members,
            "Members one room may have.",
            int,
        ],
        [
            "max-rooms-created-per-hour",
            None,
            DEFAULT_ROOM_LIMITS.max_rooms_created_per_hour,
            "Rooms one user may create in an hour.",
            int,
        ],
        [
            "state",
            "s",
            None,
            "SQLite file for offline messages and block lists "
            f"[default: {DEFAULT_STATE_NAME} next to the credentials file].",
        ],
        [
            "redis",
            None,
            None,
            "Be one node of a chat shared through Redis: redis://HOST:PORT/DB or "
            "unix:///path/to/redis.sock (docs/scaling.md). Offline messages, block lists "
            "and who is online then live in Redis, not in --state.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 (off unless given; docs/operations.md).",
        ],
        [
            "node-id",
            None,
            None,
            "This node's name in the chat, unique among the nodes (letters, digits, "
            "'.', '_', '-'; at most 64) [default: HOST-PID-RANDOM, new each run].",
        ],
    ]
    optParameters += [
        [name.replace("_", "-"), None, getattr(DEFAULT_LIMITS, name), help_text, kind]
        for name, help_text, kind in (
            ("flood_burst", "Frames a user may send at once before being slowed.", positive),
            ("flood_rate", "Frames per second a user may send steadily.", positive),
            (
                "flood_disconnect",
                "Seconds of continuous throttling before a flooder is disconnected.",
                positive,
            ),
            (
                "output_cap",
                "Bytes of output a slow reader may leave unread (past the 64 KiB the "
                "transport buffers) before it is dropped.",
                int,
            ),
            ("ping_interval", "Seconds of silence before the server pings a client.", positive),
            ("ping_timeout", "Seconds of silence after which a client is dropped.", positive),
            (
                "hello_timeout",
                "Seconds a connection has to send its first frame (over TLS, to finish "
                "its handshake first).",
                positive,
            ),
            ("login_timeout", "Seconds a connection has to finish logging in.", positive),
            ("login_frames", "Frames a connection may send before logging in.", int),
            ("max_connections", "Connections at once, in all.", int),
            (
                "max_per_ip",
                "Connections at once from one network (IPv4 /24, IPv6 /64: --v4-prefix, "
                "--v6-prefix), loopback included.",
                int,
            ),
            (
                "password_checks_per_network",
                "Password checks one network may have under way at once (its share of "
                "the hash pool).",
                int,
            ),
            (
                "new_accounts_burst",
                "New accounts one network (IPv4 /24, IPv6 /64) may make at once.",
                positive,
            ),
            (
                "new_account_interval",
                "Seconds between new accounts from one network after its burst.",
                positive,
            ),
            ("new_accounts_total_burst", "New accounts the server takes at once.", positive),
            (
                "new_account_total_interval",
                "Seconds between new accounts in all after that burst.",
                positive,
            ),
            ("v4_prefix", "IPv4 prefix length of a network, for per-network limits.", int),
            ("v6_prefix", "IPv6 prefix length of a network, for per-network limits.", int),
        )
    ]
    optFlags = [
        [
            "hash-new-passwords",
            None,
            "Write accounts created from now on with an argon2id hash of the password "
            "instead of the password (existing lines keep working; chat-server "
            "hash-credentials FILE converts a whole file).",
        ],
        [
            "accept-damaged-wal",
            None,
            "Start even though the state file's write-ahead log is damaged, keeping "
            "only what precedes the damage (the server refuses to start otherwise: "
            "acknowledged messages behind it would be lost without a word).",
        ],
        [
            "in-memory",
            None,
            "Keep offline messages and block lists in memory only (lost at exit), "
            "as the handout's server does.",
        ],
        [
            "reuse-port",
            None,
            "Set SO_REUSEPORT on TCP listeners, so that several nodes on one machine "
            "share one port and the kernel spreads connections over them.",
        ],
    ]

    def opt_help(self) -> None:
        """Display this help and exit."""
        print_help(str(self))  # quietly, to a reader that stops early (| head -1)

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["web"] = []
        self["web-origins"] = []

    def opt_port(self, value: str) -> None:
        """Where to listen: a port number (1024-65535) or a Twisted endpoint
        description, e.g. tcp:5000:interface=127.0.0.1, or
        ssl:5001:privateKey=KEY:certKey=CERT for TLS. Repeat for several listeners.
        [default: 5000]"""
        self["ports"].append(port_description(value))

    opt_p = opt_port

    def opt_web(self, value: str) -> None:
        """Serve the chat's web page at / and its WebSocket at /ws: a port number or a
        Twisted endpoint, e.g. tcp:8080:interface=127.0.0.1, or
        ssl:8443:privateKey=KEY:certKey=CERT for HTTPS. Repeat for several.
        [default: none]"""
        self["web"].append(port_description(value))

    def opt_web_origin(self, value: str) -> None:
        """Another origin whose pages may open the WebSocket, besides the page's own,
        e.g. https://chat.example.org when a proxy serves the page there. Repeat for
        several."""
        if not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise usage.UsageError(
                f"--web-origin {value!r}: give scheme://host[:port], e.g. https://chat.example.org"
            )
        self["web-origins"].append(value)

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"].append(port_description(DEFAULT_PORT))
        self["port"] = self["ports"][0]
        credentials = Path(self["credentials"])
        if not credentials.is_file():
            raise usage.UsageError(f"credentials file {credentials} does not exist")
        if self["mailbox-limit"] < 1:
            raise usage.UsageError("--mailbox-limit must be at least 1")
        if self["in-memory"] and self["state"] is not None:
            raise usage.UsageError("--in-memory and --state exclude each other")
        if self["redis"] is not None:
            # Only here: a chat of one process imports nothing of the cluster.
            from twisted_chat.server.cluster.address import RedisAddress

            try:
                self["redis-address"] = RedisAddress.parse(self["redis"])
            except ValueError as e:
                raise usage.UsageError(f"--redis: {e}") from None
            if self["in-memory"] or self["state"] is not None:
                raise usage.UsageError(
                    "with --redis, Redis holds the state: no --state or --in-memory"
                )
            self["node-id"] = node_id(self["node-id"])
        elif self["node-id"] is not None:
            raise usage.UsageError("--node-id is for a node of a chat on Redis: give --redis too")
        if self["web-origins"] and not self["web"]:
            raise usage.UsageError("--web-origin is for the web listener: give --web too")
        if self["state"] is None:
            self["state"] = str(credentials.parent / DEFAULT_STATE_NAME)
        for name in (
            "output-cap",
            "login-frames",
            "max-connections",
            "max-per-ip",
            "password-checks-per-network",
            "history-max",
            "max-rooms-per-user",
            "max-room-members",
            "max-rooms-created-per-hour",
        ):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        self["room-limits"] = RoomLimits(
            history_days=self["history-days"],
            history_max=self["history-max"],
            max_rooms_per_user=self["max-rooms-per-user"],
            max_room_members=self["max-room-members"],
            max_rooms_created_per_hour=self["max-rooms-created-per-hour"],
        )
        if not 8 <= self["v4-prefix"] <= 32 or not 16 <= self["v6-prefix"] <= 128:
            raise usage.UsageError("--v4-prefix must be 8..32 and --v6-prefix 16..128")
        if self["ping-timeout"] <= self["ping-interval"]:
            raise usage.UsageError("--ping-timeout must be longer than --ping-interval")
        self["limits"] = Limits(
            **{f.name: self[f.name.replace("_", "-")] for f in dataclasses.fields(Limits)}
        )


# twistd prints an opt_ method's docstring as it is written, the indentation of its
# lines included: one space between words instead.
for _handler in (Options.opt_port, Options.opt_web, Options.opt_web_origin):
    _handler.__doc__ = " ".join((_handler.__doc__ or "").split())


NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def node_id(given: str | None) -> str:
    """The node id given, checked; or one made of the host name, the process id and a
    random part, so that no two processes ever share one."""
    if given is None:
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:32] or "node"
        return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
    if not NODE_ID.fullmatch(given):
        raise usage.UsageError(f"--node-id {given!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return given
