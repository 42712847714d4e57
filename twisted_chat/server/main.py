"""``server.py PORT BLOCK_DURATION TIMEOUT [-d]``: the handout's way to start the server.

Wiring only: it parses the handout's positional arguments, builds the same service as
``twistd chatserver`` (through :func:`twisted_chat.server.wiring.build_service`) and runs it.
Quiet unless ``-d``: without it only warnings (security events among them) and errors
reach the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from twisted_chat.cli import print_help
from twisted_chat.server import hashfile
from twisted_chat.server.options import Options, non_negative, port_number, positive
from twisted_chat.server.wiring import build_service

USAGE = (
    "usage: server.py [-d] [--tls-cert CERT --tls-key KEY] [--listen ENDPOINT]... "
    "[--hash-new-passwords] PORT BLOCK_DURATION TIMEOUT   (or: server.py hash-credentials FILE)"
)
HELP = f"""{USAGE}

Start the twisted-chat server on PORT (the handout's way), with the accounts in
credentials.txt in the current directory and the state beside it.

  PORT              the TCP port to listen on, 1-65535
  BLOCK_DURATION    seconds a username is locked after 3 wrong passwords
  TIMEOUT           seconds of silence after which a user is logged out
  -d                log everything (by default only warnings and errors)
  --tls-cert CERT   with --tls-key KEY: PORT speaks TLS (clients: client.py PORT --tls)
  --tls-key KEY
  --listen ENDPOINT another listener, any Twisted endpoint (repeatable)
  --hash-new-passwords
                    write new accounts with an argon2id hash of the password
  -h, --help        show this and exit

  server.py hash-credentials FILE
                    hash every password in clear in FILE (while no server runs)

Every other option (limits, Redis, the web page, metrics) is an option of
twistd -n chatserver: twistd chatserver --help lists them."""
VALUED = ("--tls-cert", "--tls-key", "--listen")
"""Options that take a value (the next argument, or after ``=``)."""


def usage_error(program: str, reason: str) -> NoReturn:
    print(f"{USAGE.replace('server.py', program)}  ({reason})", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: Sequence[str], program: str) -> tuple[Options, bool]:
    """The handout's arguments as :class:`Options` (whose checks are the only ones);
    usage errors exit 2 with the argument they are about named."""
    debug = False
    values: dict[str, list[str]] = {name: [] for name in VALUED}
    flags: list[str] = []
    positional: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print_help(HELP.replace("server.py", program))
        if arg == "-d":
            debug = True
        elif arg == "--hash-new-passwords":
            flags.append(arg)
        elif name in VALUED:
            if not has_value:
                if not args:
                    usage_error(program, f"{name} needs a value")
                value = args.pop(0)
            values[name].append(value)
        elif arg.startswith("-") and not _is_number(arg):
            usage_error(program, f"unknown option {arg}")
        else:
            positional.append(arg)
    if len(positional) != 3:
        usage_error(program, f"expected 3 arguments, got {len(positional)}")
    cert, key = values["--tls-cert"], values["--tls-key"]
    if len(cert) > 1 or len(key) > 1 or len(cert) != len(key):
        usage_error(program, "--tls-cert and --tls-key go together, once each")
    port, block, timeout = positional
    checks = (("PORT", port_number, port), ("BLOCK_DURATION", non_negative, block))
    for name, check, value in (*checks, ("TIMEOUT", positive, timeout)):
        try:
            check(value)  # the very checks Options applies, named by argument
        except (ValueError, usage.UsageError) as e:
            usage_error(program, f"{name}: {e}")
    # With a certificate, the handout's PORT speaks TLS (the client: client.py PORT --tls).
    listen = (
        f"ssl:{port}:privateKey={_escaped(key[0])}:certKey={_escaped(cert[0])}" if cert else port
    )
    ports = [arg for endpoint in (listen, *values["--listen"]) for arg in ("--port", endpoint)]
    options = Options()
    try:
        options.parseOptions(
            [
                *ports,
                *("--block-duration", block, "--timeout", timeout),
                *("--credentials", "credentials.txt"),
                *flags,
            ]
        )
    except usage.UsageError as e:
        usage_error(program, str(e))
    return options, debug


def _escaped(path: str) -> str:
    """A file name inside an endpoint description, whose separators are colons."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def _is_number(text: str) -> bool:
    """``-1`` is an argument (a bad one, said as such), not an unknown option."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def start_logging(debug: bool) -> None:
    # Quiet is warnings and up: security events (lockouts, floods, refused
    # connections, oversized lines) are warnings, and an operator must see them.
    level = LogLevel.debug if debug else LogLevel.warn
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def serve(reactor: Any, options: Options) -> None:
    try:
        service = build_service(options, reactor)
    except usage.UsageError as e:
        raise SystemExit(f"chatserver: {e}") from None
    service.startService()  # a port in use: SystemExit with one line
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    port = getattr((await service.listening).getHost(), "port", "?")
    print(f"twisted-chat server listening on port {port}; Ctrl-C stops it.", flush=True)
    # Serve until the reactor stops (Ctrl-C, SIGTERM), or a listener fails later on:
    # then react() ends the process with that one line and status 1.
    await service.failed


def run(argv: Sequence[str] | None = None, program: str = "chat-server") -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hash-credentials"]:
        hashfile.run(args[1:], program)
        return
    options, debug = parse_args(args, program)
    start_logging(debug)
    react(lambda reactor: Deferred.fromCoroutine(serve(reactor, options)))
