"""The servers under test: ours and the anchors a user would pick instead. Each is
started on 127.0.0.1 in a temporary directory and ended by its PID."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from twisted_chat import launch
from twisted_chat.bench.clients import CHANNEL
from twisted_chat.server import passwords


@dataclass
class Target:
    """A server under test: how to start it and which client speaks to it."""

    name: str
    client: str
    """The kind of benchmark client that speaks to it (``clients.CLIENTS``)."""
    reactor: Any
    process: launch.Process | None = None
    port: int = 0
    ports: list[int] = field(default_factory=list)
    """Several ports (one per node), or none: then every client uses ``port``."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-bench-")))

    durable = False
    """Keeps messages for offline users (the offline-mail workload runs against it)."""

    rooms = False
    """Has rooms and history (the room and history workloads run against it). For the
    IRC servers a room is their channel, whose message is the broadcast workload."""

    def available(self) -> str | None:
        """None, or why this target cannot run here."""
        return None

    async def start(self, users: list[str]) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """Every process of the server under test (its CPU and memory are the sum)."""
        return [self.pid]

    @property
    def redis_pid(self) -> int | None:
        """Redis's process, when the server has one (its CPU is also given alone)."""
        return None

    async def stop(self) -> None:
        """End the server (TERM, then KILL after 30 s) and remove its directory."""
        if self.process is not None:
            await self.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class OurServer(Target):
    durable = True
    rooms = True
    hashed = False
    """Accounts stored as argon2id hashes (``--hashed``): logins then cost a hash check."""
    extra_options: tuple[str, ...] = ()
    """Options given with ``--our-option`` (e.g. ``--history-days 0``), after ours."""

    @property
    def keeps_history(self) -> bool:
        """Whether the history phase applies: not with ``--history-days 0``."""
        options = self.extra_options
        days = [options[i + 1] for i, o in enumerate(options[:-1]) if o == "--history-days"]
        return not days or float(days[-1]) != 0

    async def start(self, users: list[str]) -> None:
        await self.write_credentials(users)
        self.process, self.port = await launch.start_server(
            self.reactor, self.workdir, *OUR_OPTIONS, *self.extra_options
        )

    async def write_credentials(self, users: list[str]) -> None:
        if self.hashed:
            # Made in threads (argon2 releases the GIL): about 30 ms of a core each.
            fields = await gatherResults(
                [deferToThread(passwords.make_hash, f"pw{u}") for u in users]
            )
        else:
            fields = [f"pw{u}" for u in users]
        lines = "".join(f"{u} {f}\n" for u, f in zip(users, fields, strict=True))
        (self.workdir / "credentials.txt").write_text(lines)


OUR_OPTIONS = (
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
    # The history workload keeps 100,000 messages in one room: all of them are kept.
    "--history-max",
    "200000",
    # As ngIRCd is configured below (PingTimeout 3600): no liveness pings
    # during a run, so that idle CPU compares like with like.
    "--ping-interval",
    "1800",
    "--ping-timeout",
    "3600",
)
"""Our server's options in every run: limits lifted for one machine's load."""


class OurCluster(OurServer):
    """Our server as ``nodes`` nodes on a ``redis-server`` of its own (AOF, fsync
    always, as docs/scaling.md requires). The server's CPU is the nodes' and Redis's;
    users log in through the nodes in turn (``ports``)."""

    nodes = 1
    redis: launch.Process | None = None
    node_processes: list[launch.Process]

    def available(self) -> str | None:
        try:
            launch.redis_server()
        except RuntimeError as e:
            return str(e)
        return None

    async def start(self, users: list[str]) -> None:
        await self.write_credentials(users)
        directory = self.workdir / "redis"
        directory.mkdir()
        self.redis, redis_port = await launch.start_redis(self.reactor, directory)
        self.node_processes = []
        self.ports = []
        for k in range(self.nodes):
            node, port = await launch.start_server(
                self.reactor,
                self.workdir,
                *OUR_OPTIONS,
                *self.extra_options,
                "--redis",
                f"redis://127.0.0.1:{redis_port}/0",
                "--node-id",
                f"bench{k}",
            )
            await node.seen(f"node bench{k} joined the chat")
            self.node_processes.append(node)
            self.ports.append(port)
        self.process, self.port = self.node_processes[0], self.ports[0]

    @property
    def pids(self) -> list[int]:
        processes = [*self.node_processes, self.redis]
        return [p.pid for p in processes if p is not None and p.pid is not None]

    @property
    def redis_pid(self) -> int | None:
        return self.redis.pid if self.redis is not None else None

    async def stop(self) -> None:
        for node in self.node_processes[1:]:
            await node.stop()
        await super().stop()  # the first node, and the directory
        if self.redis is not None:
            await self.redis.stop()


class TwoNodes(OurCluster):
    nodes = 2


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


class BareRelay(Target):
    """The ceiling: a minimal Twisted relay of our wire format (``bench.relay``)."""

    async def start(self, users: list[str]) -> None:
        argv = [sys.executable, "-m", "twisted_chat.bench.relay"]
        self.process = launch.spawn(self.reactor, self.name, argv, self.workdir)
        self.port = await launch.ready(
            self.process, re.compile(r"relay listening on 127\.0\.0\.1:(\d+)")
        )


class TwistedWords(Target):
    async def start(self, users: list[str]) -> None:
        (self.workdir / "passwd").write_text("".join(f"{u}:pw{u}\n" for u in users))
        (self.workdir / "words.tac").write_text(WORDS_TAC)
        twistd = str(Path(sys.executable).parent / "twistd")
        argv = [twistd, "-n", "--pidfile=", "-l", "-", "-y", "words.tac"]
        self.process = launch.spawn(self.reactor, self.name, argv, self.workdir)
        self.port = await launch.ready(self.process, re.compile(r"IRCFactory starting on (\d+)"))


class Ngircd(Target):
    def available(self) -> str | None:
        if shutil.which("ngircd") is None and not Path("/usr/sbin/ngircd").exists():
            return "ngIRCd is not installed (Debian package ngircd): skipped"
        return None

    async def start(self, users: list[str]) -> None:
        self.port = launch.free_port()
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
        argv = [binary, "--nodaemon", "--config", str(config)]
        self.process = launch.spawn(self.reactor, self.name, argv, self.workdir)
        await launch.wait_for_port(self.reactor, self.port)


TARGETS: dict[str, Callable[[Any], Target]] = {
    "ours": lambda reactor: OurServer("twisted-chat", "chat", reactor),
    "words": lambda reactor: TwistedWords("Twisted Words", "irc", reactor),
    "relay": lambda reactor: BareRelay("bare Twisted relay", "chat", reactor),
    "ngircd": lambda reactor: Ngircd("ngIRCd", "ngircd", reactor),
    "redis": lambda reactor: OurCluster("twisted-chat, 1 node on Redis", "chat", reactor),
    "redis2": lambda reactor: TwoNodes("twisted-chat, 2 nodes on Redis", "chat", reactor),
}
"""Each server under test, by its ``--targets`` name, made for a reactor."""
