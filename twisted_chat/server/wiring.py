"""Building a server from its options: the one place that chooses between a chat of one
process and a node of a chat on Redis, and the only one that imports either.

:func:`build_parts` makes the seams (``Seams``: the stores, the directory, the
private-chat requests, the lockout's counts), the :class:`Chat` over them, cred in
front of it and the protocol factory; :func:`build_service` adds the listeners and
the services that run it all. Both ``twistd chatserver`` (``tap``) and ``server.py``
(``main``) come through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, LogLevel
from twisted.python import usage

from twisted_chat.interfaces import (
    IAccountStore,
    IBlockStore,
    IDirectory,
    IHistory,
    IMailbox,
    IPrivateRequests,
    IRoomStore,
    IStrikeStore,
)
from twisted_chat.server.accounts import BlockingRunner, CredentialsFile
from twisted_chat.server.auth import LockoutPasswordChecker
from twisted_chat.server.core import Chat
from twisted_chat.server.limits import fit_descriptor_limit, tune_collector
from twisted_chat.server.local import LocalDirectory, MemoryPrivateRequests, MemoryStrikes
from twisted_chat.server.lockout import Lockout
from twisted_chat.server.login import ChatRealm
from twisted_chat.server.options import DEFAULT_LIMITS
from twisted_chat.server.output import turn_listening_reactor
from twisted_chat.server.passwords import HashCheck, HashChecker
from twisted_chat.server.protocol import ChatServerFactory
from twisted_chat.server.rooms import RoomLimits
from twisted_chat.server.service import ChatRunning, ChatService, StoresService
from twisted_chat.server.sqlite_store import SqliteState, StateFileError
from twisted_chat.server.stats import Stats
from twisted_chat.server.stores import (
    MemoryBlockStore,
    MemoryHistory,
    MemoryMailbox,
    MemoryRoomStore,
)


@dataclasses.dataclass
class Seams:
    """What the chat stands on, for one process or for a node of many."""

    accounts: IAccountStore
    blocks: IBlockStore
    mailbox: IMailbox
    directory: IDirectory
    requests: IPrivateRequests
    strikes: IStrikeStore
    rooms: IRoomStore
    history: IHistory
    closers: list[Callable[[], object]] = dataclasses.field(default_factory=list)
    """Called when the server stops, after every session ended (closing stores)."""
    starters: list[Callable[[], object]] = dataclasses.field(default_factory=list)
    """Called when the server starts (the stores' own timers)."""
    membership: Callable[[Chat], IService] | None = None
    """Makes the service that keeps this process a member of a larger chat."""


@dataclasses.dataclass
class ServerParts:
    """What a server is made of, before anything runs."""

    chat: Chat
    factory: ChatServerFactory
    lockout: Lockout
    stats: Stats
    closers: list[Callable[[], object]]
    membership: IService | None = None
    """This process's membership of a chat on Redis (None: a chat of its own)."""
    hash_queue: Callable[[], int] | None = None
    """Password hash checks running or waiting now (for the metrics; None: inline)."""
    starters: list[Callable[[], object]] = dataclasses.field(default_factory=list)


def build_parts(
    options: usage.Options,
    clock: IReactorTime,
    run_blocking: BlockingRunner = deferToThread,
    check_hash: HashCheck | None = None,
) -> ServerParts:
    """The domain, its seams and the protocol factory, from parsed options; nothing
    listens. ``run_blocking`` runs file work off the reactor thread, and
    ``check_hash`` checks password hashes (by default in a pool of its own, stopped
    with the stores); tests run both inline. A file the operator must fix raises
    ``UsageError`` with one line."""
    closers: list[Callable[[], object]] = []
    stats = Stats()
    hash_queue: Callable[[], int] | None = None  # checks given by the caller run inline
    if check_hash is None:
        limits = options["limits"]
        checker = HashChecker(
            clock,
            stats=stats,
            share=limits.password_checks_per_network,
            # A connection has one check under way at most: a network's line is never
            # longer than its connections, and never refused for its length.
            line=limits.max_per_ip,
        )
        check_hash = checker
        closers.append(checker.stop)
        hash_queue = checker.queued
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
        # Only now: a chat of one process loads nothing of the cluster (nor hiredis).
        from twisted_chat.server.cluster.wiring import node_seams

        seams = node_seams(options, clock, accounts, check_hash, stats)
    else:
        seams = local_seams(options, clock, accounts, stats)
    chat = Chat(
        clock,
        seams.accounts,
        seams.blocks,
        seams.mailbox,
        seams.directory,
        seams.requests,
        seams.rooms,
        seams.history,
        timeout=options["timeout"],
        private_request_ttl=options["private-request-ttl"],
        stats=stats,
        room_limits=options["room-limits"],
    )
    lockout = Lockout(seams.strikes, options["block-duration"])
    portal = Portal(ChatRealm(chat), [LockoutPasswordChecker(chat.accounts, lockout)])
    factory = ChatServerFactory(chat, portal, options["limits"], stats)
    membership = seams.membership(chat) if seams.membership is not None else None
    return ServerParts(
        chat,
        factory,
        lockout,
        stats,
        closers + seams.closers,
        membership,
        hash_queue,
        seams.starters,
    )


def local_seams(
    options: usage.Options, clock: IReactorTime, accounts: CredentialsFile, stats: Stats
) -> Seams:
    """A chat that is this one process: SQLite (or memory) for what lasts."""
    blocks: IBlockStore
    mailbox: IMailbox
    rooms: IRoomStore
    history: IHistory
    closers: list[Callable[[], object]] = []
    starters: list[Callable[[], object]] = []
    limits: RoomLimits = options["room-limits"]
    if options["in-memory"]:
        blocks, mailbox = MemoryBlockStore(), MemoryMailbox(options["mailbox-limit"])
        rooms = MemoryRoomStore()
        history = MemoryHistory(clock, limits.history_days, limits.history_max)
    else:
        try:
            state = SqliteState(
                Path(options["state"]),
                options["mailbox-limit"],
                clock,
                stats,
                (limits.history_days, limits.history_max),
                options["accept-damaged-wal"],
            )
        except StateFileError as e:
            raise usage.UsageError(str(e)) from e
        blocks, mailbox, rooms, history = state.blocks, state.mailbox, state.rooms, state.history
        closers.append(state.close)
        starters.append(state.start)
    return Seams(
        accounts,
        blocks,
        mailbox,
        LocalDirectory(mailbox),
        MemoryPrivateRequests(),
        MemoryStrikes(clock, options["block-duration"]),
        rooms,
        history,
        closers,
        starters,
    )


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


def build_service(options: usage.Options, reactor: Any) -> ChatService:
    """The whole server as a service, from parsed ``Options``; raises ``UsageError``
    (one line) for what the operator must fix."""
    limits = options["limits"]
    fitted, why = fit_descriptor_limit(limits.max_connections)
    if why is not None:
        # A warning when the operator asked for more; fitting the default is routine.
        chosen = limits.max_connections != DEFAULT_LIMITS.max_connections
        Logger().emit(LogLevel.warn if chosen else LogLevel.info, "{why}", why=why)
        options["limits"] = dataclasses.replace(limits, max_connections=fitted)
    tune_collector()
    parts = build_parts(options, reactor)
    chat_service = ChatService(parts.factory)
    StoresService(parts.closers, parts.starters).setServiceParent(chat_service)
    if parts.membership is not None:
        # Stopped after the chat (sessions ended), then leaves: one step releases
        # every user of this node in Redis.
        parts.membership.setServiceParent(chat_service)
    ChatRunning(parts.chat, reactor).setServiceParent(chat_service)
    listening_reactor = turn_listening_reactor(reactor, options["reuse-port"])
    for description in options["ports"]:
        endpoint = serverFromString(listening_reactor, with_backlog(description))
        chat_service.add_listener(endpoint, description)
        warn_if_clear(description, "--port ssl:PORT:privateKey=KEY:certKey=CERT")
    if options["web"]:
        # Only now: a server with no web listener loads nothing of autobahn.
        from twisted_chat.server.webpage import web_site

        site = web_site(parts.factory, reactor, frozenset(options["web-origins"]))
        for description in options["web"]:
            endpoint = serverFromString(reactor, with_backlog(description))
            chat_service.add_listener(endpoint, description, site, "web page")
            warn_if_clear(description, "--web ssl:PORT:privateKey=KEY:certKey=CERT (HTTPS)")
    if options["metrics"] is not None:
        # Only now: a server that serves no metrics loads nothing of Prometheus.
        from twisted_chat.server.metrics import SecurityEventCounting, metrics_site

        chat = parts.chat
        site = metrics_site(
            parts.stats, lambda: len(chat.online), lambda: len(chat.roster), parts.hash_queue
        )
        SecurityEventCounting(parts.stats).setServiceParent(chat_service)
        endpoint = serverFromString(reactor, options["metrics"])
        chat_service.add_listener(endpoint, options["metrics"], site, "metrics")
    return chat_service


LOOPBACK_INTERFACES = ("127.", "::1", "localhost")


def warn_if_clear(description: str, with_tls: str) -> None:
    """Warn when a listener takes passwords in clear from other machines."""
    where = clear_on_network(description)
    if where is not None:
        Logger().warn(
            "passwords travel in clear on {where}: listen with TLS ({with_tls}) or on "
            "127.0.0.1 only",
            where=where,
            with_tls=with_tls,
        )


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
