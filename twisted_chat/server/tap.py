"""``twistd chatserver``: command-line options and ``makeService``, the one place that
builds a server. Both the twistd plugin and ``server.py`` go through here."""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, LogLevel
from twisted.python import usage

from twisted_chat.interfaces import IBlockStore, IMailbox
from twisted_chat.server.accounts import BlockingRunner, CredentialsFile
from twisted_chat.server.auth import LockoutPasswordChecker, LoginThrottle, Throttle
from twisted_chat.server.cluster.chat import ClusterChat
from twisted_chat.server.cluster.node import ClusterNode
from twisted_chat.server.cluster.redis import RedisAddress, RedisClient
from twisted_chat.server.cluster.scripts import SOURCES, Scripts
from twisted_chat.server.cluster.stores import (
    ClusterAccounts,
    ClusterBlocks,
    RedisMailbox,
    RedisThrottle,
)
from twisted_chat.server.core import DEFAULT_PRIVATE_REQUEST_TTL, Chat, ChatRealm
from twisted_chat.server.limits import Limits, fit_descriptor_limit
from twisted_chat.server.output import turn_listening_reactor
from twisted_chat.server.passwords import HashCheck, HashChecker
from twisted_chat.server.protocol import ChatServerFactory
from twisted_chat.server.service import ChatRunning, ChatService, StoresService
from twisted_chat.server.sqlite_store import SqliteState, StateFileError
from twisted_chat.server.stores import DEFAULT_MAILBOX_LIMIT, MemoryBlockStore, MemoryMailbox

DEFAULT_PORT = "5000"
DEFAULT_BLOCK_DURATION = 60
DEFAULT_TIMEOUT = 120
DEFAULT_STATE_NAME = "chat-state.sqlite3"
DEFAULT_LIMITS = Limits()


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


LISTEN_BACKLOG = 4096
"""Connections the kernel queues before we accept them (capped by net.core.somaxconn).
Twisted's default, 50, makes a burst of logins (a restart, a network coming back)
wait a whole second for TCP's retry."""


def with_backlog(description: str) -> str:
    """A TCP endpoint description with our listen backlog unless it names its own."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


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
            ("login_timeout", "Seconds a connection has to finish logging in.", positive),
            ("login_frames", "Frames a connection may send before logging in.", int),
            ("max_connections", "Connections at once, in all.", int),
            (
                "max_per_ip",
                "Connections at once from one address, loopback included.",
                int,
            ),
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

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []

    def opt_port(self, value: str) -> None:
        """Where to listen: a port number (1024-65535) or a Twisted endpoint
        description, e.g. tcp:5000:interface=127.0.0.1 or
        ssl:5001:privateKey=key.pem:certKey=cert.pem (TLS). Repeat for several
        listeners. [default: 5000]"""
        self["ports"].append(port_description(value))

    opt_p = opt_port

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
        if self["state"] is None:
            self["state"] = str(credentials.parent / DEFAULT_STATE_NAME)
        for name in ("output-cap", "login-frames", "max-connections", "max-per-ip"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["ping-timeout"] <= self["ping-interval"]:
            raise usage.UsageError("--ping-timeout must be longer than --ping-interval")
        self["limits"] = Limits(
            **{f.name: self[f.name.replace("_", "-")] for f in dataclasses.fields(Limits)}
        )


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


@dataclasses.dataclass
class ServerParts:
    """What a server is made of, before anything runs."""

    chat: Chat
    factory: ChatServerFactory
    closers: list[Callable[[], object]]
    """Called when the server stops (closing the durable store)."""
    node: ClusterNode | None = None
    """This process's membership of a chat on Redis (None: a chat of its own)."""


def build_parts(
    options: usage.Options,
    clock: IReactorTime,
    run_blocking: BlockingRunner = deferToThread,
    check_hash: HashCheck | None = None,
) -> ServerParts:
    """The domain, its stores and the protocol factory, from parsed options; nothing
    listens. ``run_blocking`` runs file work off the reactor thread, and
    ``check_hash`` checks password hashes (by default in a pool of its own, stopped
    with the stores); tests run both inline. A file the operator must fix raises
    ``UsageError`` with one line."""
    closers: list[Callable[[], object]] = []
    if check_hash is None:
        checker = HashChecker(clock)
        check_hash = checker
        closers.append(checker.stop)
    try:
        accounts = CredentialsFile(
            Path(options["credentials"]),
            run_blocking,
            check_hash,
            hash_new=options["hash-new-passwords"],
        )
    except OSError as e:
        raise usage.UsageError(f"cannot read credentials: {e}") from e
    if options["redis"] is not None:
        return _cluster_parts(options, clock, accounts, check_hash, closers)
    blocks: IBlockStore
    mailbox: IMailbox
    if options["in-memory"]:
        blocks, mailbox = MemoryBlockStore(), MemoryMailbox(options["mailbox-limit"])
    else:
        try:
            state = SqliteState(Path(options["state"]), options["mailbox-limit"], clock)
        except StateFileError as e:
            raise usage.UsageError(str(e)) from e
        blocks, mailbox = state.blocks, state.mailbox
        closers.append(state.close)
    chat = Chat(
        clock,
        accounts,
        blocks,
        mailbox,
        timeout=options["timeout"],
        private_request_ttl=options["private-request-ttl"],
    )
    return _served(options, chat, LoginThrottle(clock, options["block-duration"]), closers)


def _served(
    options: usage.Options,
    chat: Chat,
    throttle: Throttle,
    closers: list[Callable[[], object]],
    node: ClusterNode | None = None,
) -> ServerParts:
    """The chat behind cred (its accounts, the lockout) and the protocol factory."""
    portal = Portal(ChatRealm(chat), [LockoutPasswordChecker(chat.accounts, throttle)])
    return ServerParts(chat, ChatServerFactory(chat, portal, options["limits"]), closers, node)


def _cluster_parts(
    options: usage.Options,
    reactor: Any,
    file: CredentialsFile,
    check_hash: HashCheck,
    closers: list[Callable[[], object]],
) -> ServerParts:
    """A node of a chat on Redis: the stores and the domain over Redis, and the node."""
    address = options["redis-address"]
    node_name = options["node-id"]
    commands = RedisClient(reactor, address, name=f"node {node_name}", scripts=SOURCES)
    redis = Scripts(commands)
    accounts = ClusterAccounts(file, redis, node_name, check_hash)
    blocks = ClusterBlocks(redis)
    mailbox = RedisMailbox(redis, options["mailbox-limit"])
    chat = ClusterChat(
        reactor,
        accounts,
        blocks,
        mailbox,
        redis,
        node_name,
        timeout=options["timeout"],
        private_request_ttl=options["private-request-ttl"],
    )
    inbox_reader = RedisClient(reactor, address, name=f"node {node_name} inbox")
    node = ClusterNode(reactor, commands, inbox_reader, chat)
    throttle = RedisThrottle(redis, options["block-duration"])
    return _served(options, chat, throttle, closers, node)


def build_service(options: usage.Options, reactor: Any) -> ChatService:
    """The whole server as a service, from parsed :class:`Options`; raises
    ``UsageError`` (one line) for what the operator must fix."""
    limits = options["limits"]
    fitted, why = fit_descriptor_limit(limits.max_connections)
    if why is not None:
        # A warning when the operator asked for more; fitting the default is routine.
        chosen = limits.max_connections != DEFAULT_LIMITS.max_connections
        Logger().emit(LogLevel.warn if chosen else LogLevel.info, "{why}", why=why)
        options["limits"] = dataclasses.replace(limits, max_connections=fitted)
    parts = build_parts(options, reactor)
    chat_service = ChatService(parts.factory)
    StoresService(parts.closers).setServiceParent(chat_service)
    if parts.node is not None:
        # Stopped after the chat (sessions ended), then leaves: one script releases
        # every user of this node in Redis.
        parts.node.setServiceParent(chat_service)
    ChatRunning(parts.chat, reactor).setServiceParent(chat_service)
    listening_reactor = turn_listening_reactor(reactor, options["reuse-port"])
    for description in options["ports"]:
        endpoint = serverFromString(listening_reactor, with_backlog(description))
        chat_service.add_listener(endpoint, description)
        where = clear_on_network(description)
        if where is not None:
            Logger().warn(
                "passwords travel in clear on {where}: listen with TLS "
                "(--port ssl:PORT:privateKey=KEY:certKey=CERT) or on 127.0.0.1 only",
                where=where,
            )
    return chat_service


LOOPBACK_INTERFACES = ("127.", "::1", "localhost")


def clear_on_network(description: str) -> str | None:
    """Where a listener takes plain (not TLS) connections from other machines, in
    words; None for TLS, loopback-only or UNIX-socket listeners."""
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6"):
        return None
    # An endpoint description escapes the colons of an IPv6 address (interface=\:\:1).
    fields = [f.replace("\0", ":") for f in rest.replace("\\:", "\0").split(":")]
    interface = next((f.partition("=")[2] for f in fields if f.startswith("interface=")), "")
    if interface.startswith(LOOPBACK_INTERFACES):
        return None
    port = next((f.partition("=")[2] for f in fields if f.startswith("port=")), fields[0])
    return f"port {port} ({interface or 'every interface'})"


def makeService(options: usage.Options, reactor: Any = None) -> ChatService:
    """twistd's entry point: the server's service, which ends twistd with one line and
    a non-zero status if it cannot listen, at start or later."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        chat_service = build_service(options, reactor)
    except usage.UsageError as e:
        # twistd prints a traceback for anything else makeService raises.
        raise SystemExit(f"chatserver: {e}") from None
    chat_service.failed.addErrback(lambda _: _stop_twistd_with_status_1(reactor))
    return chat_service


def _stop_twistd_with_status_1(reactor: Any) -> None:
    """twistd has no way to set its exit status: once it has stopped the reactor (our
    services stopping in order) and cleaned up, the process ends with status 1."""
    atexit.register(_exit_status_1)
    reactor.stop()


def _exit_status_1() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
