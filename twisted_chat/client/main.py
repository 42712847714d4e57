"""``client.py PORT [--host HOST] [--tls [--ca CERT]]``: wiring only. Connects to the
server (over TLS with ``--tls``), joins the console, the session and the peer network,
and exits with the session's status:
0 after logout or an idle timeout, 1 when locked out or the server goes away, 2 for
wrong arguments."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from twisted_chat.cli import print_help
from twisted_chat.client import history, tls
from twisted_chat.client.console import PlainConsole, TerminalState, output_columns
from twisted_chat.client.link import ServerLink
from twisted_chat.client.peer import PeerManager
from twisted_chat.client.reconnect import Reconnector
from twisted_chat.client.session import EXIT_FAILURE, ClientSession
from twisted_chat.client.terminal import TerminalConsole

USAGE = (
    "usage: client.py [--host HOST] [--tls [--ca CERT]] [--interactive] "
    "[--keep-private-history] [--no-timestamps] [--no-reconnect] PORT"
)
HELP = f"""{USAGE}

Connect to the twisted-chat server on PORT and chat. Type help once logged in.

  --host HOST     the server's host name or address [default: 127.0.0.1]
  --tls           speak TLS to the server, checking its certificate and name
  --ca CERT       with --tls: trust this certificate (a self-signed server)
  --interactive   on a pipe, prompt again after a refused login step
  --keep-private-history
                  keep private messages in the history file too (by default they
                  are not written there)
  --no-timestamps no [HH:MM] before each line (nor a line when the day changes)
  --no-reconnect  end when the server goes away, instead of connecting again (a
                  script on a pipe never connects again)
  -h, --help      show this and exit

Exit status: 0 after logout or an idle timeout, 1 when locked out, refused or the
server goes away, 2 for wrong arguments, 130 after Ctrl-C at a login prompt."""
FLAGS = (
    "--interactive",
    "--tls",
    "--keep-private-history",
    "--no-timestamps",
    "--no-reconnect",
)
CONNECT_TIMEOUT = 10
FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class ClientOptions:
    host: str = "127.0.0.1"
    port: int = 0
    interactive: bool = False
    """Answer login prompts line by line on a pipe too, as on a terminal (for
    expect-style drivers that read each prompt)."""
    tls: bool = False
    ca: str | None = None
    """A certificate to trust instead of the system's store (a self-signed server)."""
    keep_private_history: bool = False
    """``private`` lines are kept in the history file too."""
    timestamps: bool = True
    """Each line starts with the local time (``--no-timestamps``: none)."""
    reconnect: bool = True
    """Connect again when the server goes away (``--no-reconnect``: end)."""


def usage_error(program: str, reason: str) -> NoReturn:
    print(f"{USAGE.replace('client.py', program)}  ({reason})", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: Sequence[str], program: str) -> tuple[str, int]:
    options = parse_options(argv, program)
    return options.host, options.port


def parse_options(argv: Sequence[str], program: str) -> ClientOptions:
    """The command line, checked; usage errors exit 2."""
    values: dict[str, str] = {}
    flags: set[str] = set()
    positional: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print_help(HELP.replace("client.py", program))
        if arg in FLAGS:
            flags.add(arg)
        elif name in ("--host", "--ca"):
            if not has_value:
                if not args:
                    usage_error(program, f"{name} needs a value")
                value = args.pop(0)
            values[name] = value
        elif arg.startswith("-") and arg != "-":
            usage_error(program, f"unknown option {arg}")
        else:
            positional.append(arg)
    if len(positional) != 1:
        usage_error(program, f"expected 1 argument, got {len(positional)}")
    port = positional[0]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        usage_error(program, f"PORT must be a number from 1 to 65535, not {port!r}")
    host = values.get("--host", "127.0.0.1")
    problem = host_problem(host)
    if problem is not None:
        usage_error(program, problem)
    if "--ca" in values and "--tls" not in flags:
        usage_error(program, "--ca is for --tls")
    if "--ca" in values:
        problem = tls.certificate_problem(values["--ca"])
        if problem is not None:
            usage_error(program, problem)
    return ClientOptions(
        host,
        int(port),
        "--interactive" in flags,
        "--tls" in flags,
        values.get("--ca"),
        "--keep-private-history" in flags,
        "--no-timestamps" not in flags,
        "--no-reconnect" not in flags,
    )


HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
"""One label of a host name (RFC 1123): letters, digits and inner hyphens."""


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither a host name nor an IP address, in words that say what to
    give instead; None if it is one."""
    if not host:
        return "--host is empty: give a host name or an address, e.g. --host chat.example.org"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host.startswith("[") and host.endswith("]"):
        return f"--host {host}: write an IPv6 address without brackets, e.g. --host ::1"
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    labels = name.removesuffix(".").split(".")
    if not name or len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        return (
            f"--host {host!r} is not a host name or an address: use letters, digits, "
            "'-' and '.', e.g. --host chat.example.org or --host 192.0.2.7"
        )
    return None


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


def capable_terminal(fd: int) -> bool:
    """Whether ``fd`` is a terminal that understands cursor and colour codes."""
    return os.isatty(fd) and os.environ.get("TERM", "") not in ("", "dumb")


def start_logging() -> None:
    # No debug output on the client (spec §10): only real errors, to stderr.
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def chat(reactor: Any, options: ClientOptions, program: str, terminal: TerminalState) -> None:
    host, port = options.host, options.port
    reactor.addSystemEventTrigger("after", "shutdown", terminal.restore)
    # The line editor only where it can draw: typed keys from a terminal, output to a
    # terminal that knows cursor codes. Anywhere else, plain lines (no escape byte).
    interactive = terminal.is_tty and capable_terminal(1)
    peers = PeerManager(reactor)
    console: TerminalConsole | PlainConsole
    if interactive:
        console = TerminalConsole(
            colour=not os.environ.get("NO_COLOR"),  # https://no-color.org
            names_for=lambda command: session.names_for(command),
            history_file=lambda user: history.history_path(host, port, user),
            keep_private=options.keep_private_history,
            columns=terminal.columns(),
            timestamps=options.timestamps,
        )
    else:
        console = PlainConsole(
            terminal, redraw=False, columns=output_columns(), timestamps=options.timestamps
        )
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, host.encode("idna"), port, timeout=CONNECT_TIMEOUT
    )
    if options.tls:
        try:
            endpoint = wrapClientTLS(tls.client_options(host, options.ca), endpoint)
        except tls.TrustError as e:
            print(f"{program}: {e}", file=sys.stderr)
            raise SystemExit(EXIT_FAILURE) from None

    def reconnector(session: ClientSession) -> Reconnector:
        def connect_again() -> Deferred[ServerLink]:
            link: Deferred[ServerLink] = connectProtocol(
                endpoint, ServerLink(session, tls=options.tls)
            )
            return link

        return Reconnector(session, reactor, connect_again)

    # Only a person at a terminal is brought back: a script on a pipe ends, as it did.
    comes_back = terminal.is_tty and options.reconnect
    session = ClientSession(
        console,
        peers,
        scripted=not terminal.is_tty and not options.interactive,
        reconnect=reconnector if comes_back else None,
    )
    try:
        link = await connectProtocol(endpoint, ServerLink(session, tls=options.tls))
    except (ConnectError, DNSLookupError) as e:
        print(
            f"{program}: cannot reach the chat server at {host}:{port}: {connect_failure(e)}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_FAILURE) from None
    peers.interface = getattr(link.transport.getHost(), "host", "127.0.0.1")
    console.session = session
    if isinstance(console, TerminalConsole):
        console.rows = terminal.rows()
        terminal.raw()
        StandardIO(ServerProtocol(lambda: console), reactor=reactor)
        resize = console.terminal_size
        signal.signal(
            signal.SIGWINCH,
            lambda *_: reactor.callFromThread(resize, terminal.columns(), terminal.rows()),
        )
    else:
        StandardIO(console, reactor=reactor)
    status = await console.finished
    peers.close()
    session.close_link()
    # Bounded: if nobody reads our output, exit anyway after a moment.
    await console.close().addTimeout(FLUSH_TIMEOUT, reactor, onTimeoutCancel=lambda *_: None)
    terminal.restore()
    raise SystemExit(status)


def run(argv: Sequence[str] | None = None, program: str = "chat-client") -> None:
    options = parse_options(sys.argv[1:] if argv is None else argv, program)
    start_logging()
    terminal = TerminalState(0)
    try:
        react(lambda reactor: Deferred.fromCoroutine(chat(reactor, options, program, terminal)))
    finally:
        terminal.restore()  # whatever happened: echo, line mode, blocking stdio
