"""Benchmark: twisted-chat side by side with the servers a user would pick instead.

``python -m twisted_chat.bench --users 1000`` starts each server under test on
127.0.0.1, opens ``--users`` client connections, logs them in, and runs the same fixed
workloads against each:

- **login**: every user logs in (and is announced to everyone online: our presence
  notices, the IRC servers' JOIN of one shared channel); logins/s and latency p99.
- **direct messages**: ``--messages`` messages from random senders to random online
  recipients, ``--window`` in flight; delivered/s, end-to-end latency p50/p99 (from a
  timestamp in the text), lost, duplicated and misdelivered counts.
- **broadcast**: one user to all others (our ``broadcast``, a PRIVMSG to the shared
  channel), ``--rounds`` times; the time until the last recipient has it.
- **idle**: all users held; server RSS per connection, server CPU while idle.

The anchors, through an IRC adapter: Twisted Words' IRC service (``twistd words``,
ships with Twisted) and ngIRCd (Debian package ``ngircd``; skipped, saying so, when not
installed). Per-user flood limits are raised on every server that has them (ours:
``--flood-burst``/``--flood-rate``; ngIRCd: ``MaxPenaltyTime = 0``; Twisted Words has
none), and our durable storage stays on. Bounded in count and time; every server is
ended by its PID; only 127.0.0.1 is used. No timing is asserted anywhere: it reports.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater, react
from twisted.protocols.basic import LineReceiver

from twisted_chat import wire
from twisted_chat.server import local

CHANNEL = "#bench"
PHASE_LIMIT = 300.0
"""Seconds any one phase may take before it is cut short (and says so)."""


def now() -> float:
    return time.perf_counter()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fire(d: Deferred[None]) -> None:
    """End a wait that ran out of time (the phase reports what it got)."""
    if not d.called:
        d.callback(None)


# --- clients -----------------------------------------------------------------------------


class BenchClient(LineReceiver):
    """One benchmark user. Subclasses speak a server's protocol; all report direct and
    broadcast messages to ``on_text(sender, recipient, text)``."""

    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024
    transport: Any

    def __init__(self, name: str, password: str, on_text: Callable[[str, str, str], None]):
        self.name = name
        self.password = password
        self.on_text = on_text
        self.logged_in: Deferred[None] = Deferred()
        self.lines = 0

    def send_direct(self, to: str, text: str) -> None:
        raise NotImplementedError

    def send_all(self, text: str) -> None:
        raise NotImplementedError


class ChatBenchClient(BenchClient):
    """Our JSON-lines protocol (docs/protocol.md)."""

    def connectionMade(self) -> None:
        for frame in (wire.Hello(1), wire.Login(self.name), wire.Password(self.password)):
            self.transport.write(wire.encode(frame, "login"))

    def lineReceived(self, line: bytes) -> None:
        self.lines += 1
        if b'"type":"message"' in line or b'"type":"broadcast"' in line:
            frame = json.loads(line)
            self.on_text(frame["sender"], self.name, frame["text"])
        elif b'"user":' in line and b'"id":"login"' in line and not self.logged_in.called:
            self.logged_in.callback(None)
        elif b'"type":"ping"' in line:
            self.transport.write(wire.encode(wire.Ping()))

    def send_direct(self, to: str, text: str) -> None:
        self.transport.write(wire.encode(wire.SendMessage(to, text)))

    def send_all(self, text: str) -> None:
        self.transport.write(wire.encode(wire.SendBroadcast(text)))


class IrcBenchClient(BenchClient):
    """IRC (RFC 2812): PASS/NICK/USER, JOIN the shared channel once registered (001),
    PRIVMSG; logged in when the server echoes our own JOIN."""

    send_pass = True
    """Twisted Words authenticates with PASS; ngIRCd without a server password refuses
    any PASS (and has no per-user accounts)."""

    def connectionMade(self) -> None:
        if self.send_pass:
            self.sendLine(f"PASS {self.password}\r".encode())
        self.sendLine(f"NICK {self.name}\r".encode())
        self.sendLine(f"USER {self.name} 0 * :{self.name}\r".encode())

    def lineReceived(self, line: bytes) -> None:
        self.lines += 1
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if text.startswith("PING"):
            self.sendLine(("PONG" + text[4:] + "\r").encode())
            return
        parts = text.split(" ", 3)
        if len(parts) >= 2 and parts[1] == "001":  # registered (RPL_WELCOME): now JOIN
            self.sendLine(f"JOIN {CHANNEL}\r".encode())
        elif len(parts) >= 3 and parts[1] == "PRIVMSG":
            sender = parts[0][1:].split("!", 1)[0]
            target = parts[2]
            body = parts[3][1:] if len(parts) > 3 else ""
            self.on_text(sender, self.name if target == CHANNEL else target, body)
        elif (
            len(parts) >= 3
            and parts[1] == "JOIN"
            and parts[0][1:].split("!", 1)[0] == self.name
            and not self.logged_in.called
        ):
            self.logged_in.callback(None)

    def send_direct(self, to: str, text: str) -> None:
        self.sendLine(f"PRIVMSG {to} :{text}\r".encode())

    def send_all(self, text: str) -> None:
        self.sendLine(f"PRIVMSG {CHANNEL} :{text}\r".encode())


class NgircdBenchClient(IrcBenchClient):
    send_pass = False


# --- servers under test --------------------------------------------------------------


@dataclass
class Target:
    """A server under test: how to start it and which client speaks to it."""

    name: str
    client: type[BenchClient]
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
            "--mailbox-limit",
            "1000",
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
            await sleep(0.1)
        raise SystemExit("ngircd did not start")


TARGETS: dict[str, Callable[[], Target]] = {
    "ours": lambda: OurServer("twisted-chat", ChatBenchClient),
    "words": lambda: TwistedWords("Twisted Words", IrcBenchClient),
    "ngircd": lambda: Ngircd("ngIRCd", NgircdBenchClient),
}


# --- workloads ---------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    """The workloads against one target."""

    def __init__(self, target: Target, users: int, rng: random.Random, say: Callable[[str], None]):
        self.target = target
        self.names = [f"b{n:05d}" for n in range(users)]
        self.rng = rng
        self.say = say
        self.clients: dict[str, BenchClient] = {}
        self.results: dict[str, float] = {}
        self._inbox: Callable[[str, str, str], None] = lambda s, r, t: None

    def on_text(self, sender: str, recipient: str, text: str) -> None:
        self._inbox(sender, recipient, text)

    async def connect(self, name: str) -> float:
        started = now()
        client = self.target.client(name, f"pw{name}", self.on_text)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.target.port, timeout=30)
        await connectProtocol(endpoint, client)
        await client.logged_in
        self.clients[name] = client
        return now() - started

    async def login(self) -> None:
        rss0, _ = local.proc_stat(self.target.process.pid)
        self.results["rss_empty_kib"] = rss0
        gate = DeferredSemaphore(50)
        latencies: list[float] = []
        started = now()

        async def one(name: str) -> None:
            latencies.append(await self.connect(name))
            if len(latencies) % max(1, len(self.names) // 10) == 0:
                self.say(f"  login: {len(latencies)}/{len(self.names)}")

        await gatherResults([gate.run(one, name) for name in self.names])
        elapsed = now() - started
        self.results["logins_per_s"] = len(latencies) / elapsed
        self.results["login_p99_ms"] = percentile(latencies, 0.99) * 1000
        self.results["login_all_s"] = elapsed

    async def idle(self, seconds: float = 5.0) -> None:
        await sleep(2)  # let presence fan-out settle
        pid = self.target.process.pid
        rss, cpu0 = local.proc_stat(pid)
        await sleep(seconds)
        _, cpu1 = local.proc_stat(pid)
        users = len(self.clients)
        self.results["rss_per_user_kib"] = (rss - self.results["rss_empty_kib"]) / users
        self.results["idle_cpu_pct"] = 100 * (cpu1 - cpu0) / seconds

    async def direct(self, messages: int, window: int) -> None:
        names = list(self.clients)
        sent: dict[int, tuple[str, str, float]] = {}
        seen: set[int] = set()
        latencies: list[float] = []
        counts = {"duplicated": 0, "misdelivered": 0}
        done: Deferred[None] = Deferred()
        in_flight = [0]
        next_seq = [0]

        def send_next() -> None:
            while in_flight[0] < window and next_seq[0] < messages:
                seq = next_seq[0]
                next_seq[0] += 1
                sender, recipient = self.rng.sample(names, 2)
                sent[seq] = (sender, recipient, now())
                in_flight[0] += 1
                self.clients[sender].send_direct(recipient, f"dm {seq} {sent[seq][2]:.6f}")

        def inbox(sender: str, recipient: str, text: str) -> None:
            if not text.startswith("dm "):
                return
            seq = int(text.split(" ", 2)[1])
            if seq in seen:
                counts["duplicated"] += 1
                return
            expected = sent.get(seq)
            if expected is None or expected[:2] != (sender, recipient):
                counts["misdelivered"] += 1
                return
            seen.add(seq)
            latencies.append(now() - expected[2])
            in_flight[0] -= 1
            if len(seen) == messages and not done.called:
                done.callback(None)
            else:
                send_next()

        self._inbox = inbox
        cpu0, started = own_cpu(), now()
        server_cpu0 = local.proc_stat(self.target.process.pid)[1]
        send_next()
        timeout = reactor.callLater(PHASE_LIMIT, _fire, done)
        await done
        if timeout.active():
            timeout.cancel()
        elapsed = now() - started
        self.results["dm_per_s"] = len(seen) / elapsed
        self.results["dm_p50_ms"] = percentile(latencies, 0.5) * 1000
        self.results["dm_p99_ms"] = percentile(latencies, 0.99) * 1000
        self.results["dm_lost"] = messages - len(seen)
        self.results["dm_duplicated"] = counts["duplicated"]
        self.results["dm_misdelivered"] = counts["misdelivered"]
        self.results["generator_cpu_pct"] = 100 * (own_cpu() - cpu0) / elapsed
        self.results["server_cpu_pct"] = (
            100 * (local.proc_stat(self.target.process.pid)[1] - server_cpu0) / elapsed
        )

    async def broadcast(self, rounds: int) -> None:
        times = [
            await self._broadcast_once(f"all {n}", PHASE_LIMIT / rounds) for n in range(rounds)
        ]
        self.results["broadcast_last_ms"] = statistics.median(times) * 1000

    async def _broadcast_once(self, marker: str, limit: float) -> float:
        """One user to all others: seconds until the last one has it (inf if not)."""
        speaker = self.names[0]
        expected = len(self.clients) - 1
        got: set[str] = set()
        finished: Deferred[None] = Deferred()

        def inbox(sender: str, recipient: str, text: str) -> None:
            if text == marker and sender == speaker:
                got.add(recipient)
                if len(got) == expected and not finished.called:
                    finished.callback(None)

        self._inbox = inbox
        started = now()
        self.clients[speaker].send_all(marker)
        timeout = reactor.callLater(limit, _fire, finished)
        await finished
        if timeout.active():
            timeout.cancel()
        await sleep(0.2)
        return now() - started - 0.2 if len(got) == expected else float("inf")

    def close(self) -> None:
        for client in self.clients.values():
            if client.transport is not None:
                client.transport.abortConnection()


METRICS = [
    ("logins_per_s", "login: logins/s", "higher"),
    ("login_p99_ms", "login: latency p99 (ms)", "lower"),
    ("login_all_s", "login: all users in (s)", "lower"),
    ("dm_per_s", "direct: delivered msgs/s", "higher"),
    ("dm_p50_ms", "direct: latency p50 (ms)", "lower"),
    ("dm_p99_ms", "direct: latency p99 (ms)", "lower"),
    ("dm_lost", "direct: lost", "lower"),
    ("dm_duplicated", "direct: duplicated", "lower"),
    ("dm_misdelivered", "direct: misdelivered", "lower"),
    ("broadcast_last_ms", "broadcast: last recipient (ms, median)", "lower"),
    ("rss_per_user_kib", "idle: server RSS per user (KiB)", "lower"),
    ("idle_cpu_pct", "idle: server CPU (%)", "lower"),
    ("server_cpu_pct", "direct: server CPU (%)", ""),
    ("generator_cpu_pct", "direct: load generator CPU (%)", ""),
]


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    header = ["metric", *names] + [f"ours/{n}" for n in names[1:]]
    rows = [header, ["---"] * len(header)]
    for key, label, _ in METRICS:
        values = [results[n].get(key, float("nan")) for n in names]
        ratios = []
        for value in values[1:]:
            ratio = values[0] / value if value not in (0, float("nan")) and value == value else None
            ratios.append(f"{ratio:.2f}" if ratio is not None and ratio == ratio else "-")
        rows.append([label, *(f"{v:,.2f}" if v == v else "-" for v in values), *ratios])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


async def main(_reactor: Any, args: argparse.Namespace) -> None:
    interactive = sys.stdout.isatty()

    def say(text: str) -> None:
        if interactive or not text.startswith("  "):
            print(text, flush=True)

    results: dict[str, dict[str, float]] = {}
    for key in args.targets.split(","):
        target = TARGETS[key]()
        why_not = target.available()
        if why_not:
            print(f"{target.name}: {why_not}")
            continue
        say(f"{target.name}: starting, {args.users} users")
        run = Run(target, args.users, random.Random(args.seed), say)
        try:
            await target.start(run.names)
            await run.login()
            say(f"{target.name}: logged in; idle")
            await run.idle()
            say(f"{target.name}: direct messages")
            await run.direct(args.messages, args.window)
            say(f"{target.name}: broadcast")
            await run.broadcast(args.rounds)
            results[target.name] = run.results
        finally:
            run.close()
            target.stop()
    print()
    print(
        f"users {args.users}, direct messages {args.messages} ({args.window} in flight), "
        f"broadcast rounds {args.rounds}, seed {args.seed}; flood limits raised on every "
        "server that has them; twisted-chat's durable storage on"
    )
    print(table(results))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twisted_chat.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=200, help="messages in flight")
    parser.add_argument("--rounds", type=int, default=5, help="broadcast rounds")
    parser.add_argument("--targets", default="ours,words,ngircd")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 2 <= args.users <= 20000 or not 1 <= args.messages <= 10**6:
        parser.error("--users must be 2..20000 and --messages 1..1000000")
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def run_cli() -> None:
    args = parse()
    react(lambda r: Deferred.fromCoroutine(main(r, args)))


if __name__ == "__main__":
    run_cli()
