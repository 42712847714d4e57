"""``server.py PORT BLOCK_DURATION TIMEOUT [-d]``: the handout's way to start the server.

Wiring only: it parses the handout's positional arguments, builds the same service as
``twistd chatserver`` (through :func:`twisted_chat.server.tap.makeService`) and runs it.
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

from twisted_chat.server.tap import Options, makeService

USAGE = "usage: server.py [-d] PORT BLOCK_DURATION TIMEOUT"


def usage_error(program: str, reason: str) -> NoReturn:
    print(f"{USAGE.replace('server.py', program)}  ({reason})", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: Sequence[str], program: str) -> tuple[Options, bool]:
    """Validate the handout's arguments into :class:`Options`; usage errors exit 2."""
    debug = "-d" in argv
    positional = [arg for arg in argv if arg != "-d"]
    if any(arg.startswith("-") and not _is_number(arg) for arg in positional):
        usage_error(program, f"unknown option {next(a for a in positional if a[0] == '-')}")
    if len(positional) != 3:
        usage_error(program, f"expected 3 arguments, got {len(positional)}")
    port, block, timeout = positional
    if not port.isdigit() or not 1024 <= int(port) <= 65535:
        usage_error(program, f"PORT must be a number from 1024 to 65535, not {port!r}")
    if not _is_number(block) or float(block) < 0:
        usage_error(program, f"BLOCK_DURATION must be a number of seconds >= 0, not {block!r}")
    if not _is_number(timeout) or float(timeout) <= 0:
        usage_error(program, f"TIMEOUT must be a number of seconds > 0, not {timeout!r}")
    options = Options()
    try:
        options.parseOptions(
            [
                "--port",
                port,
                "--block-duration",
                block,
                "--timeout",
                timeout,
                "--credentials",
                "credentials.txt",
            ]
        )
    except usage.UsageError as e:
        usage_error(program, str(e))
    return options, debug


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and value not in (float("inf"), float("-inf"))


def start_logging(debug: bool) -> None:
    # Quiet is warnings and up: security events (lockouts, floods, refused
    # connections, oversized lines) are warnings, and an operator must see them.
    level = LogLevel.debug if debug else LogLevel.warn
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def serve(reactor: Any, options: Options) -> None:
    service = makeService(options, reactor)
    service.startService()  # a port in use: SystemExit with one line
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    port = getattr((await service.listening).getHost(), "port", "?")
    print(f"twisted-chat server listening on port {port}; Ctrl-C stops it.", flush=True)
    await Deferred()  # serve until the reactor stops (Ctrl-C, SIGTERM)


def run(argv: Sequence[str] | None = None, program: str = "chat-server") -> None:
    options, debug = parse_args(sys.argv[1:] if argv is None else argv, program)
    start_logging(debug)
    react(lambda reactor: Deferred.fromCoroutine(serve(reactor, options)))
