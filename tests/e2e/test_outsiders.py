"""What a stranger with nothing but sockets can do to everyone else, against the real
server on 127.0.0.1 (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests.e2e.processes import client, finish, sleep, spawn
from twisted_chat import launch
from twisted_chat.certs import self_signed, write_identity
from twisted_chat.launch import LISTENING, twistd_command

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
