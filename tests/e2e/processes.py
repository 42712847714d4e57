"""Real server and client processes for end-to-end tests, on 127.0.0.1 only.

Every wait is bounded; every process is ended by the test that started it, by PID."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from twisted_chat.server.local import LISTENING, twistd_command

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WAIT = 15.0
"""Seconds any one expectation may take before the test fails with the output so far."""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NO_COLOR")}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


class Process(ProcessProtocol):
    """A child process whose output we can wait for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = ""
        self.errors = ""
        self._cursor = 0
        self._waiting: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self.ended: Deferred[int | None] = Deferred()
        self.status: int | None = None
        self.signal: int | None = None
        """The signal that ended the process, if one did."""

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

    async def seen(self, text: str, wait: float = WAIT) -> None:
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

    async def expect(self, text: str, regex: bool = False, wait: float = WAIT) -> re.Match[str]:
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
        timer = reactor.callLater(wait, self._time_out, pattern, d)
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
        for line in lines:
            self.transport.write(line.encode("utf-8") + b"\n")

    async def exit_status(self, wait: float = WAIT) -> int | None:
        timer = reactor.callLater(wait, self.kill)
        try:
            return await self.ended
        finally:
            if timer.active():
                timer.cancel()

    def kill(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("KILL")

    def terminate(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("TERM")

    def describe(self) -> str:
        return f"--- {self.name} stdout:\n{self.output}\n--- stderr:\n{self.errors}"


def spawn(name: str, argv: list[str], cwd: Path, use_pty: bool = False, **env: str) -> Process:
    process = Process(name)
    reactor.spawnProcess(
        process, argv[0], argv, env=environment(**env), path=str(cwd), usePTY=use_pty
    )
    return process


class ServerProcess:
    """``twistd -n chatserver`` on an OS-chosen loopback port."""

    def __init__(
        self, workdir: Path, block_duration: float = 60, timeout: float = 120, *extra: str
    ) -> None:
        self.workdir = workdir
        self.credentials = workdir / "credentials.txt"
        argv = twistd_command(
            self.credentials,
            "--block-duration",
            str(block_duration),
            "--timeout",
            str(timeout),
            *extra,
        )
        self.process = spawn("server", argv, workdir)
        self.port = 0

    async def started(self) -> ServerProcess:
        match = await self.process.expect(LISTENING.pattern.decode(), regex=True)
        self.port = int(match.group(1))
        return self

    def client(self, name: str, use_pty: bool = False, interactive: bool = False) -> Process:
        return client(name, self.port, use_pty, interactive)

    async def stop(self) -> None:
        self.process.terminate()
        await self.process.exit_status()


def client(name: str, port: int, use_pty: bool = False, interactive: bool = False) -> Process:
    """``client.py PORT`` on a pipe (or a pty). ``interactive``: answer login prompts
    line by line as a person would (``--interactive``), retrying after a refusal;
    without it a piped client ends at the first refused login step."""
    argv = [sys.executable, str(REPO / "client.py"), str(port)]
    if interactive:
        argv.append("--interactive")
    return spawn(name, argv, REPO, use_pty=use_pty)


def server_py(workdir: Path, port: int) -> Process:
    """The handout's launcher, ``server.py PORT 60 120``, run from ``workdir``."""
    shutil.copy(REPO / "server.py", workdir / "server.py")
    return spawn("server.py", [sys.executable, "server.py", str(port), "60", "120"], workdir)


def sleep(seconds: float) -> Deferred[None]:
    """Real time passing, for end-to-end tests of real timers only."""
    return deferLater(reactor, seconds, lambda: None)


async def start(workdir: Path, block_duration: float = 60, timeout: float = 120) -> ServerProcess:
    return await ServerProcess(workdir, block_duration, timeout).started()


async def logged_in(server: ServerProcess, user: str, password: str) -> Process:
    client = server.client(user)
    await client.expect("Username: ")
    client.send(user)
    await client.expect("Password: ")
    client.send(password)
    await client.expect("Welcome")
    return client


async def finish(*processes: Any) -> None:
    """End whatever is still running (by PID, through its transport) and reap it."""
    for process in processes:
        if isinstance(process, ServerProcess):
            process = process.process
        process.kill()
        await process.ended
