"""The servers under test: ours and the anchors a user would pick instead. Each is
started on 127.0.0.1 in a temporary directory and ended by its PID."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from twisted_chat.bench.clients import CHANNEL
from twisted_chat.server import local


@dataclass
class Target:
    """A server under test: how to start it and which client speaks to it."""

    name: str
    client: str
    """The kind of benchmark client that speaks to it (``clients.CLIENTS``)."""
    process: Any = None
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-bench-")))

    def available(self) -> str | None:
        """None, or why this target cannot run here."""
        return None

    async def start(self, users: list[str]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


class OurServer(Target):
    async def start(self, users: list[str]) -> None:
        (self.workdir / "credentials.txt").write_text("".join(f"{u} pw{u}\n" for u in users))
        self.process, self.port = await local.start(
            self.workdir,
            "--timeout",
            "3600",
            "--flood-burst",
            "1000000",
            "--flood-rate",
            "1000000",
            "--max-connections",
            "100000",
            # Every benchmark client comes from 127.0.0.1: the per-address limit is
            # lifted explicitly, as an operator behind a local proxy would.
            "--max-per-ip",
            "100000",
            "--mailbox-limit",
            "1000",
            # As ngIRCd is configured below (PingTimeout 3600): no liveness pings
            # during a run, so that idle CPU compares like with like.
            "--ping-interval",
            "1800",
            "--ping-timeout",
            "3600",
        )


WORDS_TAC = """\
# What 'twistd words --irc-port ... --auth memory:... --group bench' builds; its --group
# option is broken on Python 3 (Twisted 26.10 calls str.decode), so channels are
# created on first JOIN instead.
from twisted.application import service, strports
from twisted.cred import checkers, portal
from twisted.words import service as words

realm = words.InMemoryWordsRealm("bench.words.local")
realm.createGroupOnRequest = True
# FilePasswordDB compares the bytes it reads with the str username Words passes on
# Python 3, so every login fails; the in-memory checker ('--auth memory:') works.
checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
for line in open("passwd", encoding="utf-8"):
    name, _, password = line.strip().partition(":")
    checker.addUser(name, password)
application = service.Application("twisted-words-bench")
strports.service(
    "tcp:0:interface=127.0.0.1", words.IRCFactory(realm, portal.Portal(realm, [checker]))
).setServiceParent(application)
"""


class TwistedWords(Target):
    async def start(self, users: list[str]) -> None:
        (self.workdir / "passwd").write_text("".join(f"{u}:pw{u}\n" for u in users))
        (self.workdir / "words.tac").write_text(WORDS_TAC)
        twistd = str(Path(sys.executable).parent / "twistd")
        self.process, self.port = await local.launch(
            self.workdir,
            [twistd, "-n", "--pidfile=", "-l", "-", "-y", "words.tac"],
            re.compile(rb"IRCFactory starting on (\d+)"),
        )


class Ngircd(Target):
    def available(self) -> str | None:
        if shutil.which("ngircd") is None and not Path("/usr/sbin/ngircd").exists():
            return "ngIRCd is not installed (Debian package ngircd): skipped"
        return None

    async def start(self, users: list[str]) -> None:
        self.port = local.free_port()
        config = self.workdir / "ngircd.conf"
        config.write_text(
            f"""[Global]
Name = bench.ngircd.local
Info = twisted-chat benchmark anchor
Listen = 127.0.0.1
Ports = {self.port}
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 32
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600
[Options]
PAM = no
DNS = no
Ident = no
[Channel]
Name = {CHANNEL}
Topic = bench
"""
        )
        binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
        self.process = subprocess.Popen(
            [binary, "--nodaemon", "--config", str(config)],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            await deferLater(reactor, 0.1, lambda: None)
        raise SystemExit("ngircd did not start")


TARGETS: dict[str, Callable[[], Target]] = {
    "ours": lambda: OurServer("twisted-chat", "chat"),
    "words": lambda: TwistedWords("Twisted Words", "irc"),
    "ngircd": lambda: Ngircd("ngIRCd", "ngircd"),
}
