"""What a stranger with nothing but sockets can do to everyone else, against the real
server on 127.0.0.1 (docs/security.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests.e2e.processes import ServerProcess, client, finish, sleep, spawn
from tests.e2e.wire_client import Guesser, connect
from twisted_chat import launch
from twisted_chat.certs import self_signed, write_identity
from twisted_chat.launch import LISTENING, twistd_command
from twisted_chat.server.passwords import make_hash

TLS = "ssl:0:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "credentials.txt").write_text("hans falcon*solo\n")
    write_identity(
        self_signed(["127.0.0.1", "localhost"]), tmp_path / "key.pem", tmp_path / "cert.pem"
    )
    return tmp_path


class Silent(Protocol):
    """A connection that never says a word, not even a TLS hello."""

    def __init__(self) -> None:
        self.gone: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone.callback(None)


async def silent_connection(port: int) -> Silent:
    silent = Silent()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: silent))
    return silent


@pytest_twisted.ensureDeferred
async def test_silent_tls_connections_end_and_free_their_address(workdir: Path) -> None:
    """16 connections that never start their TLS handshake used to lock their address
    out for good (at most 16 from one address, and a TLS close waits for the peer).
    Now each ends within the hello deadline, or the close grace for those refused
    outright, and a real login from the same address gets in."""
    argv = twistd_command("credentials.txt", "--hello-timeout", "1")
    at = argv.index("--port")
    argv[at : at + 2] = ["--port", TLS]
    server = spawn("twistd", argv, workdir)
    hans = None
    try:
        port = await launch.ready(server, LISTENING)
        silent = [await silent_connection(port) for _ in range(20)]
        await sleep(2)  # past the hello deadline: the 16 counted ones are gone
        ca = ("--tls", "--ca", str(workdir / "cert.pem"))
        hans = client("hans", port, False, True, *ca)
        await hans.expect("Username: ")
        hans.send("hans")
        await hans.expect("Password: ")
        hans.send("falcon*solo")
        await hans.expect("Welcome")
        for connection in silent:  # the 4 refused outright end after the close grace
            await connection.gone
        await server.seen("no first frame in 1s")
    finally:
        await finish(server, *([hans] if hans else []))


@pytest_twisted.ensureDeferred
async def test_guesses_from_eight_networks_leave_logins_from_a_ninth_fast(
    tmp_path: Path,
) -> None:
    """With hashed passwords, guesses sent from 8 addresses filled the hash pool and 19
    of 20 real logins from a ninth got ``busy``. Each network now has its share of the
    pool: all 20 get in, each within 2 s."""
    hashed = make_hash("falcon*solo")  # one hash for every line: made once
    victims = [f"victim{n}" for n in range(1600)]
    (tmp_path / "credentials.txt").write_text(
        "".join(f"{user} {hashed}\n" for user in [*victims, "hans"])
    )
    server = await ServerProcess(tmp_path).started()
    guessers = [
        Guesser(server.port, f"127.0.{n + 1}.1", victims[n * 200 : (n + 1) * 200]) for n in range(8)
    ]
    floods = [
        ensureDeferred(guesser.run()) for guesser in guessers for _ in range(16)
    ]  # 16 connections from each of 8 networks: the most each may open
    waits: list[float] = []
    try:
        await sleep(1.5)  # the pool is full of guesses
        for _ in range(20):
            started = reactor.seconds()
            hans = await connect(server.port, "127.0.9.1")
            reply = await hans.login("hans", "falcon*solo")
            assert reply == {"type": "ok", "id": 3, "user": "hans"}
            waits.append(reactor.seconds() - started)
            await hans.request("logout")
            await hans.gone
        guesses = Counter[str]()
        for guesser in guessers:
            guesses.update(guesser.replies)
        assert guesses["wrong-password"] > 100  # the flood was on all along
    finally:
        for guesser in guessers:
            await guesser.stop()
        for flood in floods:
            await flood
        await finish(server.process)
    assert max(waits) < 2.0, waits


@pytest_twisted.ensureDeferred
async def test_one_address_makes_five_accounts_then_waits_and_others_log_in_fast(
    tmp_path: Path,
) -> None:
    """One address made 8,899 accounts in 20 s, and with hashing on, logins of
    existing users slowed to 2.1 s. Now a network makes 5, then one a minute."""
    (tmp_path / "credentials.txt").write_text("hans falcon*solo\n")
    server = await ServerProcess(tmp_path, 60, 120, "--hash-new-passwords").started()
    try:
        answers = []
        for n in range(40):
            bot = await connect(server.port, "127.0.5.1")
            reply = await bot.login(f"bot{n}", "bot-password-1")
            answers.append(reply.get("code", reply["type"]))
            bot.close()
        assert answers == ["ok"] * 5 + ["too-many-new-accounts"] * 35
        started = reactor.seconds()
        hans = await connect(server.port, "127.0.9.1")
        assert (await hans.login("hans", "falcon*solo"))["type"] == "ok"
        assert reactor.seconds() - started < 0.2
        newcomer = await connect(server.port, "127.0.9.1")  # another network: its own
        assert (await newcomer.login("rey", "jakku+1"))["type"] == "ok"
        hans.close()
        newcomer.close()
        text = (tmp_path / "credentials.txt").read_text()
        assert text.count("\nbot") == 5 and "rey" in text
    finally:
        await finish(server.process)
