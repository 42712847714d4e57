"""TLS between client and server, with real processes: a login over TLS trusting a
self-signed certificate, and every way it must refuse, each in one line."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import Process, client, finish, spawn
from tests.e2e.taps import Tap
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


@pytest_twisted.ensureDeferred
async def test_users_chat_over_tls_trusting_a_self_signed_certificate(workdir: Path) -> None:
    server, (port,) = await server_on(workdir, TLS)
    tap = Tap(port)
    ca = ("--tls", "--ca", str(workdir / "cert.pem"))
    hans = client("hans", tap.start(), False, True, *ca)  # through the tap
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


NOT_TRUSTED = (
    "TLS: the server's certificate is not trusted (certificate verify failed); not connecting"
)
LONG_AGO = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)


@pytest.mark.parametrize(
    ("served", "trusted", "line"),
    [
        ("good", "other", NOT_TRUSTED),  # --ca names another certificate
        ("good", None, NOT_TRUSTED),  # self-signed: not in the system's store
        ("expired", "served", NOT_TRUSTED),
        (
            "elsewhere",
            "served",
            "TLS: the server's certificate is not for 127.0.0.1, the name you dialled; "
            "not connecting",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_certificate_that_will_not_do_ends_the_client_in_one_line(
    workdir: Path, served: str, trusted: str | None, line: str
) -> None:
    if served == "expired":
        expired = self_signed(["127.0.0.1"], days=1, starting=LONG_AGO)
        write_identity(expired, workdir / "key.pem", workdir / "cert.pem")
    elif served == "elsewhere":
        write_identity(self_signed(["chat.example"]), workdir / "key.pem", workdir / "cert.pem")
    server, (port,) = await server_on(workdir, TLS)
    try:
        ca = {"other": ["--ca", str(workdir / "other.pem")], None: []}.get(
            trusted, ["--ca", str(workdir / "cert.pem")]
        )
        await refused_with(client("refused", port, False, False, "--tls", *ca), line)
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
