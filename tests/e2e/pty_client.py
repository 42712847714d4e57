"""The real client in a real pseudo-terminal, its screen rendered by a terminal
emulator (pyte), next to a real server. Synchronous and bounded: every wait has a
deadline, every process is ended by PID."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pyte

from tests.e2e.processes import REPO, environment
from twisted_chat.launch import LISTENING, twistd_command

COLUMNS, ROWS = 80, 24
WAIT = 15.0


class SyncServer:
    """``twistd chatserver`` on a loopback port the OS chose.

    Its log comes through a pipe that is read until the server says where it listens;
    after that, what these tests make it log (a few lines a login) stays far below the
    64 KiB a pipe holds, so it never blocks."""

    def __init__(self, workdir: Path, *options: str, port: int = 0) -> None:
        argv = twistd_command("credentials.txt", *options)
        if port:  # a port of the test's choosing: a restarted server comes back on it
            at = argv.index("--port")
            argv[at + 1] = f"tcp:{port}:interface=127.0.0.1"
        self.process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment(),
        )
        assert self.process.stdout is not None
        # Raw reads, not readline(): a buffered readline can swallow several lines at
        # once and leave select() with nothing to report for the one we wait for.
        fd = self.process.stdout.fileno()
        self.output = b""
        self.port = 0
        deadline = time.monotonic() + WAIT
        while not self.port and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                break  # the server exited
            self.output += chunk
            found = LISTENING.search(self.output.decode(errors="replace"))
            self.port = int(found.group(1)) if found else 0
        assert self.port, f"the server did not start:\n{self.output.decode(errors='replace')}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)


class PtyClient:
    """``client.py`` with a pseudo-terminal as its standard input, output and error."""

    def __init__(
        self,
        port: int,
        env: dict[str, str] | None = None,
        stdout_to_pipe: bool = False,
        args: tuple[str, ...] = (),
    ) -> None:
        """``stdout_to_pipe``: keys from the terminal, output to a file (as with
        ``client.py PORT | tee log``); read it with :meth:`piped_output`."""
        self.master, self.slave = os.openpty()
        self._output = tempfile.TemporaryFile() if stdout_to_pipe else None  # noqa: SIM115 (closed in close)
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.settings_before = termios.tcgetattr(self.slave)
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "client.py"), *args, str(port)],
            stdin=self.slave,
            stdout=self._output if self._output is not None else self.slave,
            stderr=self.slave,
            cwd=REPO,
            env={**environment(TERM="xterm"), **(env or {})},
            close_fds=True,
        )

    def pump(self, seconds: float = 0.05) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, left))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                self.raw += data
                self.stream.feed(data)
            elif left <= 0:
                return

    def resize(self, columns: int, rows: int) -> None:
        """The window changes size: the pty learns it, the client gets SIGWINCH."""
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.screen.resize(rows, columns)
        os.kill(self.process.pid, signal.SIGWINCH)
        self.pump(0.3)

    def piped_output(self) -> bytes:
        assert self._output is not None
        self._output.seek(0)
        return self._output.read()

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, text: str, wait: float = WAIT) -> None:
        deadline = time.monotonic() + wait
        while text not in self.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on the screen:\n{self.text()}")
            self.pump(0.05)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode("utf-8"))
        self.pump(0.05)

    def log_in(self, user: str, password: str) -> None:
        self.wait_for("Username:")
        self.type(user + "\r")
        self.wait_for("Password:")
        self.type(password + "\r")
        self.wait_for("Welcome")

    def exit_status(self, wait: float = WAIT) -> int:
        deadline = time.monotonic() + wait
        while self.process.poll() is None and time.monotonic() < deadline:
            self.pump(0.05)
        if self.process.poll() is None:
            self.process.kill()
        status = self.process.wait(WAIT)
        self.pump(0.1)
        return status

    def terminal_restored(self) -> bool:
        """The pseudo-terminal's settings are as before, and blocking mode too."""
        same = termios.tcgetattr(self.slave) == self.settings_before
        blocking = not fcntl.fcntl(self.slave, fcntl.F_GETFL) & os.O_NONBLOCK
        return same and blocking

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        os.close(self.master)
        os.close(self.slave)
        if self._output is not None:
            self._output.close()


class PipeClient:
    """Another user, scripted through a pipe."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "client.py"), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            env=environment(),
        )
        self.send(user, password)

    def send(self, *lines: str) -> None:
        assert self.process.stdin is not None
        for line in lines:
            self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
