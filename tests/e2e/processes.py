"""Real server and client processes for end-to-end tests, on 127.0.0.1 only, through
the project's one launcher (``twisted_chat.launch``).

Every wait is bounded; every process is ended by the test that started it, by PID."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from twisted_chat import launch
from twisted_chat.launch import LISTENING, Process, twistd_command

__all__ = [
    "BIN",
    "HOME",
    "REPO",
    "WAIT",
    "Process",
    "ServerProcess",
    "client",
    "environment",
    "finish",
    "logged_in",
    "server_py",
    "sleep",
    "spawn",
    "start",
]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WAIT = 15.0
"""Seconds any one expectation may take before the test fails with the output so far."""


HOME = Path(tempfile.mkdtemp(prefix="chat-e2e-home-"))
"""The home of every process the tests start: a client keeps its history under
``$XDG_STATE_HOME``, and a test never writes into the real home. Removed at exit."""
atexit.register(shutil.rmtree, HOME, True)


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NO_COLOR")}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    env.update(
        {
            "HOME": str(HOME),
            "XDG_STATE_HOME": str(HOME / "state"),
            "XDG_CONFIG_HOME": str(HOME / "config"),
            "XDG_CACHE_HOME": str(HOME / "cache"),
        }
    )
    env.update(extra)
    return env


def spawn(name: str, argv: list[str], cwd: Path, use_pty: bool = False, **env: str) -> Process:
    return launch.spawn(reactor, name, argv, cwd, environment(**env), use_pty, WAIT)


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
        self.port = await launch.ready(self.process, LISTENING, WAIT)
        return self

    def client(self, name: str, use_pty: bool = False, interactive: bool = False) -> Process:
        return client(name, self.port, use_pty, interactive)

    async def stop(self) -> None:
        self.process.terminate()
        await self.process.exit_status()


def client(
    name: str, port: int, use_pty: bool = False, interactive: bool = False, *extra: str
) -> Process:
    """``client.py PORT`` on a pipe (or a pty). ``interactive``: answer login prompts
    line by line as a person would (``--interactive``), retrying after a refusal;
    without it a piped client ends at the first refused login step. ``extra``: more
    options (``--tls``, ``--ca CERT``)."""
    argv = [sys.executable, str(REPO / "client.py"), str(port), *extra]
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
