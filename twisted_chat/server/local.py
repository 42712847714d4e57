"""A chat server on this machine's loopback, for tests, measurement scripts and the
benchmark: the command that starts ``twistd chatserver`` on an OS-chosen port, and how
to read back the port it chose."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
"""What the server logs once bound; group 1 is the port."""


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
    """The environment for the server: it must run the same ``twisted_chat`` as the
    caller (a checkout run from its root, or an installed copy), not whichever copy
    ``twistd`` would find first; the directory holding it also holds its plugin."""
    import twisted_chat

    root = str(Path(twisted_chat.__file__).resolve().parents[1])
    path = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def listening_port(output: bytes) -> int | None:
    found = LISTENING.search(output)
    return int(found.group(1)) if found else None


def free_port() -> int:
    """A loopback port nothing listens on now (for servers that cannot be told port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_stat(pid: int) -> tuple[int, float]:
    """(RSS in KiB, CPU seconds used) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def launch(
    workdir: Path, argv: list[str], ready: re.Pattern[bytes], wait: float = 30.0
) -> tuple[Any, int]:
    """Run ``argv`` in ``workdir``, logging to ``workdir/server.log``, until its log
    matches ``ready`` (group 1: the port); return the process and the port. For code
    running under the reactor: it waits without blocking it."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=environment()
        )
    for _ in range(int(wait * 10)):
        found = ready.search(log.read_bytes())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            break
        await deferLater(reactor, 0.1, lambda: None)
    process.kill()
    raise SystemExit(f"{argv[0]} did not start:\n{log.read_text()}")


async def start(workdir: Path, *options: str) -> tuple[Any, int]:
    """Start ``twistd chatserver`` in ``workdir`` (whose ``credentials.txt`` it uses);
    return the process and its port once it listens."""
    return await launch(workdir, twistd_command("credentials.txt", *options), LISTENING)
