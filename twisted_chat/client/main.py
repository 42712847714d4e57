"""``client.py PORT [--host HOST]``: wiring only. Connects to the server, joins the
console, the session and the peer network, and exits with the session's status:
0 after logout or an idle timeout, 1 when locked out or the server goes away, 2 for
wrong arguments."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from twisted_chat.client.console import PlainConsole, TerminalState
from twisted_chat.client.link import ServerLink
from twisted_chat.client.peer import PeerManager
from twisted_chat.client.session import EXIT_FAILURE, ClientSession
from twisted_chat.client.terminal import TerminalConsole

USAGE = "usage: client.py [--host HOST] [--interactive] PORT"
CONNECT_TIMEOUT = 10
FLUSH_TIMEOUT = 2.0


def usage_error(program: str, reason: str) -> NoReturn:
    print(f"{USAGE.replace('client.py', program)}  ({reason})", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: Sequence[str], program: str) -> tuple[str, int]:
    host, port, _ = parse_options(argv, program)
    return host, port


def parse_options(argv: Sequence[str], program: str) -> tuple[str, int, bool]:
    """(host, port, interactive): ``--interactive`` answers login prompts line by line
    on a pipe too, as on a terminal (for expect-style drivers that read each prompt)."""
    host = "127.0.0.1"
    interactive = False
    positional: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--interactive":
            interactive = True
        elif arg == "--host":
            if not args:
                usage_error(program, "--host needs a value")
            host = args.pop(0)
        elif arg.startswith("--host="):
            host = arg.partition("=")[2]
        elif arg.startswith("-") and arg != "-":
            usage_error(program, f"unknown option {arg}")
        else:
            positional.append(arg)
    if len(positional) != 1:
        usage_error(program, f"expected 1 argument, got {len(positional)}")
    port = positional[0]
    if not port.isdigit() or not 1024 <= int(port) <= 65535:
        usage_error(program, f"PORT must be a number from 1024 to 65535, not {port!r}")
    if not host:
        usage_error(program, "--host needs a value")
    return host, int(port), interactive


def connect_failure(error: Exception) -> str:
    """Why a connection failed, in words (not ``111`` or a traceback)."""
    if isinstance(error, DNSLookupError):
        return "no such host"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running on that port?)"
    if isinstance(error, TCPTimedOutError | TimeoutError):
        return "no answer (timed out)"
    code = getattr(error, "osError", None)
    if isinstance(code, int):
        return os.strerror(code)
    return str(error) or error.__class__.__name__


def start_logging() -> None:
    # No debug output on the client (spec §10): only real errors, to stderr.
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def chat(
    reactor: Any,
    host: str,
    port: int,
    program: str,
    terminal: TerminalState,
    interactive_pipe: bool = False,
) -> None:
    reactor.addSystemEventTrigger("after", "shutdown", terminal.restore)
    interactive = terminal.is_tty and os.isatty(1)
    peers = PeerManager(reactor)
    console: TerminalConsole | PlainConsole
    if interactive:
        console = TerminalConsole(
            colour=not os.environ.get("NO_COLOR"),  # https://no-color.org
            users=lambda: session.known_users,
            columns=terminal.columns(),
        )
    else:
        console = PlainConsole(terminal)
    session = ClientSession(console, peers, scripted=not terminal.is_tty and not interactive_pipe)
    endpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=CONNECT_TIMEOUT)
    try:
        link = await connectProtocol(endpoint, ServerLink(session))
    except (ConnectError, DNSLookupError) as e:
        print(
            f"{program}: cannot reach the chat server at {host}:{port}: {connect_failure(e)}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_FAILURE) from None
    peers.interface = getattr(link.transport.getHost(), "host", "127.0.0.1")
    console.session = session
    if isinstance(console, TerminalConsole):
        terminal.raw()
        StandardIO(ServerProtocol(lambda: console), reactor=reactor)
        resize = console.terminal_size
        signal.signal(
            signal.SIGWINCH, lambda *_: reactor.callFromThread(resize, terminal.columns())
        )
    else:
        StandardIO(console, reactor=reactor)
    status = await console.finished
    peers.close()
    link.transport.loseConnection()
    # Bounded: if nobody reads our output, exit anyway after a moment.
    await console.close().addTimeout(FLUSH_TIMEOUT, reactor, onTimeoutCancel=lambda *_: None)
    terminal.restore()
    raise SystemExit(status)


def run(argv: Sequence[str] | None = None, program: str = "chat-client") -> None:
    host, port, interactive = parse_options(sys.argv[1:] if argv is None else argv, program)
    start_logging()
    terminal = TerminalState(0)
    try:
        react(
            lambda reactor: Deferred.fromCoroutine(
                chat(reactor, host, port, program, terminal, interactive)
            )
        )
    finally:
        terminal.restore()  # whatever happened: echo, line mode, blocking stdio
