"""TLS between client and server, with real processes: a login over TLS trusting a
self-signed certificate, and every way it must refuse, each in one line."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.protocols import portforward

from tests.e2e.processes import Process, client, finish, spawn
from twisted_chat import launch
from twisted_chat.certs import self_signed, write_identity
from twisted_chat.launch import LISTENING, twistd_command

pytestmark = pytest.mark.e2e


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "credentials.txt").write_text("hans falcon*solo\nluke =hope+\n")
    write_identity(
        self_signed(["127.0.0.1", "localhost"]), tmp_path / "key.pem", tmp_path / "cert.pem"
    )
    write_identity(self_signed(["127.0.0.1"]), tmp_path / "other-key.pem", tmp_path / "other.pem")
    return tmp_path


async def server_on(workdir: Path, *listeners: str) -> tuple[Process, list[int]]:
    """twistd chatserver with these listeners; the ports, in order."""
    argv = twistd_command("credentials.txt")
    at = argv.index("--port")
    argv[at : at + 2] = [arg for listener in listeners for arg in ("--port", listener)]
    server = spawn("twistd", argv, workdir)
    ports = [await launch.ready(server, LISTENING) for _ in listeners]
    return server, ports


TLS = "ssl:0:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1"
PLAIN = "tcp:0:interface=127.0.0.1"


async def refused_with(process: Process, line: str) -> None:
    assert await process.exit_status() == 1
    said = [text for text in process.output.splitlines() if text.strip()]
    assert said == [line], process.describe()
    assert "Traceback" not in process.errors


class Tap(portforward.ProxyServer):
    """A relay that keeps a copy of every byte it passes on: an eavesdropper on the
    path between a client and the server."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.seen.append(data)  # type: ignore[attr-defined]
        super().dataReceived(data)


class TapClient(portforward.ProxyClient):
    def dataReceived(self, data: bytes) -> None:
        self.peer.factory.seen.append(data)  # type: ignore[union-attr]
        super().dataReceived(data)


class TapClientFactory(portforward.ProxyClientFactory):
    protocol = TapClient


Tap.clientProtocolFactory = TapClientFactory


@pytest_twisted.ensureDeferred
async def test_users_chat_over_tls_trusting_a_self_signed_certificate(workdir: Path) -> None:
    server, (port,) = await server_on(workdir, TLS)
    tap = portforward.ProxyFactory("127.0.0.1", port)
    tap.protocol = Tap
    tap.seen = []  # type: ignore[attr-defined]
    relay = reactor.listenTCP(0, tap, interface="127.0.0.1")  # type: ignore[arg-type]
    ca = ("--tls", "--ca", str(workdir / "cert.pem"))
    relay_port = cast(IPv4Address, relay.getHost()).port
    hans = client("hans", relay_port, False, True, *ca)  # through the tap
    luke = client("luke", port, False, True, *ca)
    try:
        for user, password, process in (("hans", "falcon*solo", hans), ("luke", "=hope+", luke)):
            await process.expect("Username: ")
            process.send(user)
            await process.expect("Password: ")
            process.send(password)
            await process.expect("Welcome")
        hans.send("message luke over TLS")
        await luke.expect("hans: over TLS")
        assert (
            b"over TLS" not in (workdir / "server.log").read_bytes()
            if (workdir / "server.log").exists()
            else True
        )
    finally:
        await finish(hans, luke, server)


@pytest_twisted.ensureDeferred
async def test_a_certificate_that_is_not_trusted_ends_the_client_in_one_line(
    workdir: Path,
) -> None:
    server, (port,) = await server_on(workdir, TLS)
    try:
        wrong = client("wrong", port, False, False, "--tls", "--ca", str(workdir / "other.pem"))
        await refused_with(
            wrong,
            "TLS: the server's certificate is not trusted (certificate verify failed); "
            "not connecting",
        )
        system = client("system", port, False, False, "--tls")  # self-signed: not trusted
        await refused_with(
            system,
            "TLS: the server's certificate is not trusted (certificate verify failed); "
            "not connecting",
        )
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_an_expired_certificate_is_refused(workdir: Path) -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = self_signed(["127.0.0.1"], days=1, starting=long_ago)
    write_identity(expired, workdir / "key.pem", workdir / "cert.pem")
    server, (port,) = await server_on(workdir, TLS)
    try:
        ca = str(workdir / "cert.pem")
        late = client("late", port, False, False, "--tls", "--ca", ca)
        await refused_with(
            late,
            "TLS: the server's certificate is not trusted (certificate verify failed); "
            "not connecting",
        )
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_name_is_refused(workdir: Path) -> None:
    write_identity(self_signed(["chat.example"]), workdir / "key.pem", workdir / "cert.pem")
    server, (port,) = await server_on(workdir, TLS)
    try:
        dialled = client("dialled", port, False, False, "--tls", "--ca", str(workdir / "cert.pem"))
        await refused_with(
            dialled,
            "TLS: the server's certificate is not for 127.0.0.1, the name you dialled; "
            "not connecting",
        )
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_plain_and_tls_mixed_up_are_said_so_never_fallen_back(workdir: Path) -> None:
    server, (tls_port, plain_port) = await server_on(workdir, TLS, PLAIN)
    try:
        plain_to_tls = client("plain", tls_port)
        await refused_with(
            plain_to_tls,
            "the server closed the connection before answering (if the port speaks TLS, use --tls)",
        )
        ca = str(workdir / "cert.pem")
        tls_to_plain = client("tls", plain_port, False, False, "--tls", "--ca", ca)
        await refused_with(
            tls_to_plain,
            "the server closed the connection during the TLS handshake (is it a TLS port?)",
        )
    finally:
        await finish(server)
