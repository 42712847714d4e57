"""``twistd chatserver``: command-line options and ``makeService``, the one place that
builds a server. Both the twistd plugin and ``server.py`` go through here."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from twisted_chat.interfaces import IBlockStore, IMailbox
from twisted_chat.server.accounts import BlockingRunner, CredentialsFile
from twisted_chat.server.auth import LockoutPasswordChecker, LoginThrottle
from twisted_chat.server.core import DEFAULT_PRIVATE_REQUEST_TTL, ChatRealm, ChatServer
from twisted_chat.server.limits import Limits, fit_descriptor_limit
from twisted_chat.server.protocol import ChatServerFactory
from twisted_chat.server.sqlite_store import SqliteState, StateFileError
from twisted_chat.server.stores import DEFAULT_MAILBOX_LIMIT, MemoryBlockStore, MemoryMailbox
from twisted_chat.server.watch import watch_file

DEFAULT_PORT = "5000"
DEFAULT_BLOCK_DURATION = 60
DEFAULT_TIMEOUT = 120
DEFAULT_STATE_NAME = "chat-state.sqlite3"
DEFAULT_LIMITS = Limits()


def _non_negative(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value} is not a non-negative number")
    return number


def _positive(value: str) -> float:
    number = _non_negative(value)
    if number == 0:
        raise ValueError("must be more than 0")
    return number


def port_description(value: str) -> str:
    """A bare port number means TCP on every interface; anything else is a Twisted
    endpoint description such as ``tcp:5000:interface=127.0.0.1``."""
    if value.isdigit():
        number = int(value)
        if not 1024 <= number <= 65535:
            raise usage.UsageError(f"port {number} is outside 1024-65535")
        return f"tcp:{number}"
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
            "port",
            "p",
            DEFAULT_PORT,
            "Port number (1024-65535) or Twisted endpoint description, "
            "e.g. tcp:5000:interface=127.0.0.1.",
        ],
        [
            "block-duration",
            "b",
            DEFAULT_BLOCK_DURATION,
            "Seconds a username stays locked after 3 wrong passwords.",
            _non_negative,
        ],
        [
            "timeout",
            "t",
            DEFAULT_TIMEOUT,
            "Seconds without a valid command before a user is logged out.",
            _positive,
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
            _positive,
        ],
        ["mailbox-limit", None, DEFAULT_MAILBOX_LIMIT, "Offline messages kept per recipient.", int],
        [
            "state",
            "s",
            None,
            "SQLite file for offline messages and block lists "
            f"[default: {DEFAULT_STATE_NAME} next to the credentials file].",
        ],
    ]
    optParameters += [
        [name.replace("_", "-"), None, getattr(DEFAULT_LIMITS, name), help_text, kind]
        for name, help_text, kind in (
            ("flood_burst", "Frames a user may send at once before being slowed.", _positive),
            ("flood_rate", "Frames per second a user may send steadily.", _positive),
            (
                "flood_disconnect",
                "Seconds of continuous throttling before a flooder is disconnected.",
                _positive,
            ),
            (
                "output_cap",
                "Bytes of output a slow reader may leave unread (past the 64 KiB the "
                "transport buffers) before it is dropped.",
                int,
            ),
            ("ping_interval", "Seconds of silence before the server pings a client.", _positive),
            ("ping_timeout", "Seconds of silence after which a client is dropped.", _positive),
            ("login_timeout", "Seconds a connection has to finish logging in.", _positive),
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
            "in-memory",
            None,
            "Keep offline messages and block lists in memory only (lost at exit), "
            "as the handout's server does.",
        ],
    ]

    def postOptions(self) -> None:
        self["port"] = port_description(str(self["port"]))
        credentials = Path(self["credentials"])
        if not credentials.is_file():
            raise usage.UsageError(f"credentials file {credentials} does not exist")
        if self["mailbox-limit"] < 1:
            raise usage.UsageError("--mailbox-limit must be at least 1")
        if self["in-memory"] and self["state"] is not None:
            raise usage.UsageError("--in-memory and --state exclude each other")
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


class ChatService(service.Service):
    """Listens on an endpoint with a :class:`ChatServerFactory`; on stop, stops
    listening and ends every session so no timer outlives it."""

    log = Logger()

    def __init__(self, endpoint_description: str, factory: ChatServerFactory, reactor: Any) -> None:
        self.endpoint_description = endpoint_description
        self.factory = factory
        self._reactor = reactor
        self._stop_watching: Callable[[], None] | None = None
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()
        """Fires with the listening port once bound (tests and launchers wait on it)."""

    def startService(self) -> None:
        super().startService()
        accounts = self.factory.chat.accounts
        if isinstance(accounts, CredentialsFile):
            # With the kernel telling us of hand edits, a login needs no disk access.
            self._stop_watching = watch_file(self._reactor, accounts.path, accounts.changed)
            if self._stop_watching is not None:
                accounts.watched()
        endpoint = serverFromString(self._reactor, with_backlog(self.endpoint_description))
        failures: list[Failure] = []
        endpoint.listen(self.factory).addCallbacks(self._bound, failures.append)
        if failures:
            # TCP endpoints answer synchronously: fail now, so that twistd exits instead
            # of running deaf; in one line (SystemExit), not twistd's 40-line traceback.
            error = failures[0].value
            where, reason = self.endpoint_description, failures[0].getErrorMessage()
            if isinstance(error, CannotListenError):
                reason = getattr(error.socketError, "strerror", None) or reason
                if where.startswith("tcp:"):
                    where = f"port {error.port}"
            raise SystemExit(f"chatserver: cannot listen on {where}: {reason}")

    def _bound(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        self.log.info(
            "chat server listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        self.listening.callback(port)

    def stopService(self) -> Deferred[None]:
        """Stop listening (no new session starts), end every session, then close the
        stores (after the last write a session could make)."""
        super().stopService()
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        port, self.port = self.port, None
        stopped: Deferred[Any] = (
            maybeDeferred(port.stopListening) if port is not None else succeed(None)
        )

        def end_sessions(_: object) -> Deferred[list[Any]]:
            self.factory.chat.stop()
            return gatherResults([maybeDeferred(close) for close in self.factory.closers])

        done: Deferred[None] = stopped.addCallback(end_sessions).addCallback(lambda _: None)
        return done


def buildServer(
    options: usage.Options,
    clock: IReactorTime,
    run_blocking: BlockingRunner = deferToThread,
) -> ChatServerFactory:
    """The domain and its protocol factory, from parsed options; nothing listens.
    ``run_blocking`` runs file writes off the reactor thread (tests run them inline)."""
    try:
        accounts = CredentialsFile(Path(options["credentials"]), run_blocking)
    except OSError as e:
        raise usage.UsageError(f"cannot read credentials: {e}") from e
    closers: list[Callable[[], object]] = []
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
    chat = ChatServer(
        clock,
        accounts,
        blocks,
        mailbox,
        timeout=options["timeout"],
        private_request_ttl=options["private-request-ttl"],
    )
    throttle = LoginThrottle(clock, options["block-duration"])
    portal = Portal(ChatRealm(chat), [LockoutPasswordChecker(accounts, throttle)])
    factory = ChatServerFactory(chat, portal, options["limits"])
    factory.closers = closers
    return factory


def makeService(options: usage.Options, reactor: Any = None) -> ChatService:
    """Build the server's service from parsed :class:`Options`."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    limits = options["limits"]
    fitted, why = fit_descriptor_limit(limits.max_connections)
    if why is not None:
        # A warning when the operator asked for more; fitting the default is routine.
        chosen = limits.max_connections != DEFAULT_LIMITS.max_connections
        Logger().emit(LogLevel.warn if chosen else LogLevel.info, "{why}", why=why)
        options["limits"] = dataclasses.replace(limits, max_connections=fitted)
    try:
        factory = buildServer(options, reactor)
    except usage.UsageError as e:
        # twistd prints a traceback for anything makeService raises; a damaged file is
        # the operator's to fix, so say what and where in one line instead.
        print(f"chatserver: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return ChatService(options["port"], factory, reactor)
