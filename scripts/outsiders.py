"""Play an outsider with nothing but sockets against a real server on 127.0.0.1, and
print what the people who use it meanwhile see (docs/security.md gives the figures).

    PYTHONPATH=. .venv/bin/python scripts/outsiders.py [--connections 1000]

Four runs, each on a server of its own, in a temporary directory:

1. silent TLS: ``--connections`` TCP connections to a TLS port from one address that
   never start their handshake; how long until the server has ended every one, and
   whether a real login from the same address gets in after the close grace;
2. guesses: wrong passwords for hashed accounts as fast as the server answers, from 8
   networks (16 connections each), while 20 real logins come one after another from
   a ninth; how long each login takes;
3. new accounts: ``--connections`` account creations from one address while 20
   existing users log in from another; how many creations got through, and how long
   the logins took;
4. memory: RSS of the server per connection that has not logged in, for 2,000
   connections in each state (idle after hello, holding a 16 KiB unfinished line,
   over TLS after hello, TLS without a handshake).

Sources are addresses of 127/8 (all of it is this machine), one /24 per network. Every
process it starts is ended by its PID; nothing else is touched.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

from tests.e2e.wire_client import Guesser, WireClient, connect  # noqa: E402
from twisted_chat import launch  # noqa: E402
from twisted_chat.certs import self_signed, write_identity  # noqa: E402
from twisted_chat.client.tls import client_options  # noqa: E402
from twisted_chat.launch import LISTENING, proc_stat, twistd_command  # noqa: E402
from twisted_chat.server.passwords import make_hash  # noqa: E402

TLS_PORT = "ssl:0:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1"


class Silent(Protocol):
    """A connection that sends nothing, and notes when the server ends it."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.opened_at = reactor.seconds()
        self.ended_at: float | None = None

    def connectionLost(self, reason: object = None) -> None:
        self.ended_at = self.reactor.seconds()


@dataclass
class Server:
    process: launch.Process
    port: int

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


async def server_in(reactor: Any, workdir: Path, *options: str, tls: bool = False) -> Server:
    argv = twistd_command("credentials.txt", *options)
    if tls:
        at = argv.index("--port")
        argv[at : at + 2] = ["--port", TLS_PORT]
    process = launch.spawn(reactor, "server", argv, workdir)
    return Server(process, await launch.ready(process, LISTENING, 30))


async def stop(server: Server) -> None:
    server.process.terminate()
    await server.process.ended


def make_identity(workdir: Path) -> None:
    """A self-signed key and certificate for the server's TLS port, in ``workdir``."""
    write_identity(
        self_signed(["127.0.0.1", "localhost"]), workdir / "key.pem", workdir / "cert.pem"
    )


async def tls_client(reactor: Any, workdir: Path, port: int) -> WireClient:
    """A wire client over TLS, trusting ``workdir``'s certificate."""
    endpoint = wrapClientTLS(
        client_options("127.0.0.1", str(workdir / "cert.pem")),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
    )
    client = WireClient()
    await endpoint.connect(Factory.forProtocol(lambda: client))
    return client


async def silent_connection(reactor: Any, port: int) -> Silent:
    """A connection that sends nothing, not even a TLS hello."""
    connection = Silent(reactor)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: connection))
    return connection


async def timed_login(
    reactor: Any, port: int, source: str, user: str, password: str
) -> tuple[str, float]:
    """Log in from ``source`` and out again: the answer's type, and the seconds the
    login took (from connecting to the welcome)."""
    started = reactor.seconds()
    person = await connect(port, source)
    outcome = (await person.login(user, password))["type"]
    took = reactor.seconds() - started
    await person.request("logout")
    await person.gone
    return outcome, took


async def silent_tls(reactor: Any, workdir: Path, count: int) -> None:
    make_identity(workdir)
    (workdir / "credentials.txt").write_text("hans falcon*solo\n")
    server = await server_in(reactor, workdir, tls=True)
    try:
        rss_before = proc_stat(server.pid)[0]
        opened = reactor.seconds()
        silent = []
        for _ in range(count):
            silent.append(await silent_connection(reactor, server.port))
        opening = reactor.seconds() - opened
        await task.deferLater(reactor, 0.5, lambda: None)
        rss_during = proc_stat(server.pid)[0]
        while any(c.ended_at is None for c in silent) and reactor.seconds() - opened < 60:
            await task.deferLater(reactor, 0.2, lambda: None)
        lived = [c.ended_at - c.opened_at for c in silent if c.ended_at is not None]
        counted, refused = sorted(lived)[-16:], sorted(lived)[:-16]
        started = reactor.seconds()
        hans = await tls_client(reactor, workdir, server.port)
        reply = await hans.login("hans", "falcon*solo")
        hans.close()
        took = reactor.seconds() - started
        print(
            f"silent TLS: {count} connections from 127.0.0.1 (opened in {opening:.1f} s); "
            f"the server ended {len(lived)} of them: the longest-lived 16 (counted "
            f"against the address) after {min(counted):.1f}-{max(counted):.1f} s "
            f"(--hello-timeout 10 s), the others, refused, after "
            f"{statistics.median(refused):.1f} s (median; at most {max(refused):.1f} s); "
            f"server RSS "
            f"{rss_before / 1024:.0f} -> "
            f"{rss_during / 1024:.0f} MiB while they were open; then a real login "
            f"from 127.0.0.1: {reply['type']} in {took * 1000:.0f} ms"
        )
    finally:
        await stop(server)


async def guesses(reactor: Any, workdir: Path) -> None:
    hashed = make_hash("falcon*solo")
    victims = [f"victim{n}" for n in range(1600)]
    (workdir / "credentials.txt").write_text(
        "".join(f"{user} {hashed}\n" for user in [*victims, "hans"])
    )
    server = await server_in(reactor, workdir)
    guessers = [
        Guesser(server.port, f"127.0.{n + 1}.1", victims[n * 200 : (n + 1) * 200]) for n in range(8)
    ]
    floods = [
        defer.ensureDeferred(guesser.run()) for guesser in guessers for _ in range(16)
    ]  # 16 connections from each of 8 networks, sharing its list of names
    try:
        await task.deferLater(reactor, 1.5, lambda: None)
        waits, outcomes = [], []
        for _ in range(20):
            outcome, took = await timed_login(
                reactor, server.port, "127.0.9.1", "hans", "falcon*solo"
            )
            outcomes.append(outcome)
            waits.append(took)
        cpu = proc_stat(server.pid)[1]
        answers = sum((guesser.replies for guesser in guessers), Counter[str]())
        print(
            f"guesses: 8 networks x 16 connections sending wrong passwords for hashed "
            f"accounts (answered meanwhile: {dict(answers)}); 20 real logins from "
            f"a ninth: {outcomes.count('ok')} of 20 in, median "
            f"{statistics.median(waits) * 1000:.0f} ms, slowest {max(waits) * 1000:.0f} ms "
            f"(server CPU {cpu:.1f} s in all)"
        )
    finally:
        for guesser in guessers:
            await guesser.stop()
        await stop(server)
        for flood in floods:
            await flood


async def new_accounts(reactor: Any, workdir: Path, count: int) -> None:
    users = {f"user{n}": f"pass-{n}-word" for n in range(20)}
    (workdir / "credentials.txt").write_text("".join(f"{u} {p}\n" for u, p in users.items()))
    server = await server_in(reactor, workdir, "--hash-new-passwords")
    answers: dict[str, int] = {}
    done = False

    async def create(n: int) -> None:
        connection = await connect(server.port, "127.0.1.1")
        reply = await connection.login(f"bot{n}", "bot-password-1")
        code = reply.get("code", reply["type"])
        answers[code] = answers.get(code, 0) + 1
        connection.close()
        await connection.gone

    async def flood() -> None:
        for start in range(0, count, 16):  # as many at once as one network may open
            await defer.gatherResults(
                [defer.ensureDeferred(create(n)) for n in range(start, min(count, start + 16))]
            )
        nonlocal done
        done = True

    flooding = defer.ensureDeferred(flood())
    try:
        waits: list[float] = []
        while not done or len(waits) < 20:
            user = f"user{len(waits) % 20}"
            outcome, took = await timed_login(reactor, server.port, "127.0.9.1", user, users[user])
            assert outcome == "ok", outcome
            waits.append(took)
        await flooding
        print(
            f"new accounts: {count} creations from one address with hashing on: "
            f"{answers}; meanwhile {len(waits)} logins of existing users from another: "
            f"median {statistics.median(waits) * 1000:.1f} ms, slowest "
            f"{max(waits) * 1000:.1f} ms"
        )
    finally:
        await stop(server)


async def memory(reactor: Any, workdir: Path) -> None:
    make_identity(workdir)
    (workdir / "credentials.txt").write_text("hans falcon*solo\n")
    n = 2000
    limits = ("--max-per-ip", "100000", "--max-connections", "20000", "--login-timeout", "600")

    async def measure(name: str, tls: bool, make: Callable[[int], Any]) -> None:
        server = await server_in(reactor, workdir, *limits, "--hello-timeout", "600", tls=tls)
        try:
            await task.deferLater(reactor, 0.5, lambda: None)
            before = proc_stat(server.pid)[0]
            held = []
            for _ in range(n):
                held.append(await make(server.port))
            await task.deferLater(reactor, 1.0, lambda: None)
            after = proc_stat(server.pid)[0]
            print(f"memory: {name}: {(after - before) / n:.1f} KiB of server RSS each ({n})")
            for connection in held:
                connection.transport.abortConnection()
        finally:
            await stop(server)

    async def after_hello(port: int) -> WireClient:
        client = await connect(port, "127.0.0.1")
        await client.request("hello", version=3)
        return client

    async def unfinished_line(port: int) -> WireClient:
        client = await after_hello(port)
        assert client.transport is not None
        client.transport.write(b'{"type":"login","user":"' + b"x" * (16 * 1024 - 40))
        return client

    async def tls_after_hello(port: int) -> WireClient:
        client = await tls_client(reactor, workdir, port)
        await client.request("hello", version=3)
        return client

    async def tls_silent(port: int) -> Silent:
        return await silent_connection(reactor, port)

    await measure("plain TCP, after hello", False, after_hello)
    await measure("plain TCP, holding a 16 KiB unfinished line", False, unfinished_line)
    await measure("TLS, after the handshake and hello", True, tls_after_hello)
    await measure("TLS, no handshake started", True, tls_silent)


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--only", choices=("silent", "guesses", "accounts", "memory"))
    args = parser.parse_args(argv)
    runs = {
        "silent": lambda d: silent_tls(reactor, d, args.connections),
        "guesses": lambda d: guesses(reactor, d),
        "accounts": lambda d: new_accounts(reactor, d, args.connections),
        "memory": lambda d: memory(reactor, d),
    }
    for name, run in runs.items():
        if args.only in (None, name):
            with tempfile.TemporaryDirectory(prefix="chat-outsider-") as directory:
                await run(Path(directory))


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
