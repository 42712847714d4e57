"""Starting and ending local processes from inside a running reactor: the one launcher
of the benchmark, the soak and measurement scripts, and the end-to-end tests.

Every child is a :class:`Process` (a ``ProcessProtocol``) started with
``reactor.spawnProcess``; nothing here blocks the reactor: output is read as it comes,
every wait is a bounded Deferred, and a process is ended by its PID (TERM, then KILL
if it does not end in time). Not part of the server: the server never starts processes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTCP, IReactorTime
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

LISTENING = re.compile(r"chat server listening on 127\.0\.0\.1:(\d+)")
"""What the chat server logs once bound; group 1 is the port."""
METRICS_LISTENING = re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")
"""What it logs once its metrics listener (``--metrics``) is bound."""

DEFAULT_WAIT = 30.0
"""Seconds a process may take to be ready, or to end once told to."""


class Process(ProcessProtocol):
    """A child process whose output can be waited for."""

    def __init__(self, name: str, reactor: IReactorTime, wait: float = DEFAULT_WAIT) -> None:
        self.name = name
        self._reactor = reactor
        self.wait = wait
        """Seconds any one expectation may take by default before it fails, showing
        the output so far."""
        self.output = ""
        self.errors = ""
        self._cursor = 0
        self._waiting: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self.ended: Deferred[int | None] = Deferred()
        self.status: int | None = None
        self.signal: int | None = None
        """The signal that ended the process, if one did."""
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid if self.transport is not None else None

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", errors="replace")
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.errors += data.decode("utf-8", errors="replace")

    def processEnded(self, reason: Failure) -> None:
        if isinstance(reason.value, ProcessDone | ProcessTerminated):
            self.status = reason.value.exitCode
            self.signal = getattr(reason.value, "signal", None)
        self.ended.callback(self.status)
        for _, d in self._waiting:
            if not d.called:
                d.errback(
                    AssertionError(
                        f"{self.name} ended before the expected output\n{self.describe()}"
                    )
                )
        self._waiting = []

    def _check(self) -> None:
        still = []
        for pattern, d in self._waiting:
            match = pattern.search(self.output, self._cursor)
            if match:
                self._cursor = match.end()
                d.callback(match)
            else:
                still.append((pattern, d))
        self._waiting = still

    async def seen(self, text: str, wait: float | None = None) -> None:
        """Wait until ``text`` appears anywhere in the output, in whatever order it came
        relative to other lines (lines from different connections have no order)."""
        if text in self.output:
            return
        cursor = self._cursor
        self._cursor = 0
        try:
            await self.expect(text, wait=wait)
        finally:
            self._cursor = cursor

    async def expect(
        self, text: str, regex: bool = False, wait: float | None = None
    ) -> re.Match[str]:
        """Wait until ``text`` appears after what earlier expectations matched."""
        pattern = re.compile(text if regex else re.escape(text))
        match = pattern.search(self.output, self._cursor)
        if match:
            self._cursor = match.end()
            return match
        if self.ended.called:
            raise AssertionError(f"{self.name} ended without {text!r}\n{self.describe()}")
        d: Deferred[re.Match[str]] = Deferred()
        self._waiting.append((pattern, d))
        timer = self._reactor.callLater(
            self.wait if wait is None else wait, self._time_out, pattern, d
        )
        try:
            return await d
        finally:
            if timer.active():
                timer.cancel()

    def _time_out(self, pattern: re.Pattern[str], d: Deferred[re.Match[str]]) -> None:
        self._waiting = [(p, w) for p, w in self._waiting if w is not d]
        d.errback(
            AssertionError(
                f"{self.name}: no {pattern.pattern!r} within the wait\n{self.describe()}"
            )
        )

    def mark(self) -> int:
        """A position in the output, for :meth:`since`."""
        return len(self.output)

    def since(self, mark: int) -> str:
        return self.output[mark:]

    def send(self, *lines: str) -> None:
        assert self.transport is not None
        for line in lines:
            self.transport.write(line.encode("utf-8") + b"\n")

    async def exit_status(self, wait: float | None = None) -> int | None:
        """The exit status once the process ends by itself (killed after ``wait``)."""
        timer = self._reactor.callLater(self.wait if wait is None else wait, self.kill)
        try:
            return await self.ended
        finally:
            if timer.active():
                timer.cancel()

    async def stop(self, wait: float | None = None) -> int | None:
        """Ask the process to end (SIGTERM), kill it if it has not after ``wait``."""
        self.terminate()
        return await self.exit_status(wait)

    def kill(self) -> None:
        if not self.ended.called and self.transport is not None:
            self.transport.signalProcess("KILL")

    def terminate(self) -> None:
        if not self.ended.called and self.transport is not None:
            self.transport.signalProcess("TERM")

    def describe(self) -> str:
        return f"--- {self.name} stdout:\n{self.output}\n--- stderr:\n{self.errors}"


def spawn(
    reactor: IReactorProcess,
    name: str,
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    use_pty: bool = False,
    wait: float = DEFAULT_WAIT,
) -> Process:
    """Start ``argv`` in ``cwd`` (with ``env``, by default :func:`environment`)."""
    process = Process(name, reactor, wait)  # type: ignore[arg-type]
    reactor.spawnProcess(
        process,
        argv[0],
        list(argv),
        env=environment() if env is None else env,
        path=str(cwd),
        usePTY=use_pty,
    )
    return process


def twistd_command(credentials: str | Path, *options: str) -> list[str]:
    """``twistd chatserver`` in the foreground on 127.0.0.1, port chosen by the OS,
    logging to standard output, with no pid file (several may run at once)."""
    twistd = Path(sys.executable).parent / "twistd"
    return [
        str(twistd),
        "-n",
        "--pidfile=",
        "-l",
        "-",
        "chatserver",
        "--port",
        "tcp:0:interface=127.0.0.1",
        "--credentials",
        str(credentials),
        *options,
    ]


def environment() -> dict[str, str]:
    """The environment for a child: it must run the same ``twisted_chat`` as the
    caller (a checkout run from its root, or an installed copy), not whichever copy
    ``twistd`` would find first; the directory holding it also holds its plugin."""
    import twisted_chat

    root = str(Path(twisted_chat.__file__).resolve().parents[1])
    path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


async def start_server(
    reactor: Any, workdir: Path, *options: str, wait: float = DEFAULT_WAIT
) -> tuple[Process, int]:
    """``twistd chatserver`` in ``workdir`` (whose ``credentials.txt`` it uses); the
    process and its port once it listens."""
    server = spawn(reactor, "chat server", twistd_command("credentials.txt", *options), workdir)
    return server, await ready(server, LISTENING, wait)


async def ready(process: Process, pattern: re.Pattern[str], wait: float = DEFAULT_WAIT) -> int:
    """The port in group 1 of ``pattern`` once ``process`` prints it; a process that
    does not within ``wait`` is killed, and the error shows what it printed."""
    try:
        match = await process.expect(pattern.pattern, regex=True, wait=wait)
    except AssertionError:
        process.kill()
        raise
    return int(match.group(1))


async def wait_for_port(reactor: Any, port: int, wait: float = DEFAULT_WAIT) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (for a server that
    says nothing when ready): a connection attempt every 0.1 s, for ``wait`` seconds."""
    tcp: IReactorTCP = reactor
    for _ in range(int(wait * 10)):
        try:
            probe = await connectProtocol(
                TCP4ClientEndpoint(tcp, "127.0.0.1", port, timeout=1), Protocol()
            )
        except Exception:
            await deferLater(reactor, 0.1, lambda: None)
            continue
        assert probe.transport is not None
        probe.transport.loseConnection()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {wait:.0f} s")


REDIS_SETTINGS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
"""What a chat's Redis must run with (docs/scaling.md): every write in the append-only
file, fsync'ed before Redis answers, so an acknowledged change survives ``kill -9``."""


def redis_server() -> str:
    """The ``redis-server`` program, or a ``RuntimeError`` saying how to get it."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install redis-server "
            "(scripts/test.sh installs it when run as root)"
        )
    return found


async def start_redis(
    reactor: Any,
    directory: Path,
    port: int = 0,
    wait: float = DEFAULT_WAIT,
    unix_socket: Path | None = None,
) -> tuple[Process, int]:
    """A ``redis-server`` of our own on 127.0.0.1 (``port``, or a free one), and on
    ``unix_socket`` if given, keeping its data in ``directory`` with
    :data:`REDIS_SETTINGS`; the process and its port once it accepts connections.
    Started again on the same directory, it has the same data."""
    port = port or free_port()
    socket_options = (
        ["--unixsocket", str(unix_socket), "--unixsocketperm", "700"] if unix_socket else []
    )
    argv = [
        redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        *REDIS_SETTINGS,
        "--daemonize", "no",
        "--logfile", "",
        *socket_options,
    ]  # fmt: skip
    process = spawn(reactor, "redis-server", argv, directory, wait=wait)
    try:
        await process.expect("Ready to accept connections", wait=wait)
    except AssertionError:
        process.kill()
        raise
    return process, port


def free_port() -> int:
    """A loopback port nothing listens on now (for servers that cannot be told port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine_busy() -> tuple[float, float]:
    """(seconds all cores were busy, seconds all cores existed) since boot, from
    /proc/stat: busy counts the kernel's own work too (loopback TCP, softirqs), which
    no process's CPU time includes."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def proc_stat(pid: int) -> tuple[int, float]:
    """(RSS in KiB, CPU seconds used) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
