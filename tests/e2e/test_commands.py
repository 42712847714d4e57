"""Every command we install, run as a user would: help that a reader may cut short,
and usage that names every option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, REPO, environment
from twisted_chat.certs import self_signed, write_identity
from twisted_chat.client import main as client_main

pytestmark = pytest.mark.e2e

COMMANDS = [
    [str(BIN / "chat-server"), "--help"],
    [str(BIN / "chat-client"), "--help"],
    [str(BIN / "chat-backup"), "--help"],
    [str(BIN / "chat-make-cert"), "--help"],
    [str(BIN / "twistd"), "chatserver", "--help"],
    [sys.executable, str(REPO / "server.py"), "--help"],
    [sys.executable, str(REPO / "client.py"), "--help"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[-2:]))
def test_help_exits_0_and_a_reader_that_stops_early_gets_no_traceback(
    command: list[str],
) -> None:
    """``chat-server --help`` was a usage error (exit 2); ``--help | head -1`` ended
    some commands with a BrokenPipeError traceback."""
    whole = subprocess.run(command, capture_output=True, env=environment(), timeout=60)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.lower().startswith(b"usage:") and whole.stderr == b""
    cut = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment()
    )
    assert cut.stdout is not None
    cut.stdout.close()  # as head -1 does once it has its line
    _, errors = cut.communicate(timeout=60)
    assert cut.returncode == 0 and errors == b"", errors


def test_the_client_s_usage_names_every_option_it_takes() -> None:
    options = ("--host", "--tls", "--ca", "--interactive", "--keep-private-history")
    for option in (*options, "--no-timestamps"):
        assert option in client_main.USAGE and option in client_main.HELP
        with pytest.raises(SystemExit) as unknown:
            client_main.parse_options([option + "x", "5000"], "client.py")
        assert unknown.value.code == 2


def test_a_bad_number_is_one_line_and_exit_2() -> None:
    for argv in (["server.py", "abc", "60", "120"], ["server.py", "5000", "x", "120"]):
        ran = subprocess.run(
            [sys.executable, *argv[:1], *argv[1:]],
            cwd=REPO,
            capture_output=True,
            env=environment(),
            timeout=60,
        )
        assert ran.returncode == 2 and ran.stderr.count(b"\n") == 1, ran.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--host", "bad host!", "5000"], "is not a host name or an address"),
        (["--host", "[::1]", "5000"], "without brackets"),
        (["--host", "x@y", "5000"], "is not a host name or an address"),
        (["--host", "", "5000"], "--host is empty"),
        (["0"], "from 1 to 65535"),
        (["65536"], "from 1 to 65535"),
        (["five"], "from 1 to 65535"),
        (["--tls", "--ca", "key.pem", "5000"], "holds a private key"),
        (["--tls", "--ca", "missing.pem", "5000"], "No such file"),
        (["--tls", "--ca", ".", "5000"], "is a directory"),
    ],
)
def test_a_bad_address_port_or_certificate_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    write_identity(self_signed(["localhost"]), tmp_path / "key.pem", tmp_path / "cert.pem")
    ran = subprocess.run(
        [sys.executable, str(REPO / "client.py"), *argv],
        cwd=tmp_path,
        capture_output=True,
        env=environment(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert ran.returncode == 2, ran.stderr
    assert said.encode() in ran.stderr and ran.stderr.count(b"\n") == 1, ran.stderr
    assert b"Traceback" not in ran.stderr


def test_every_port_is_accepted_for_the_server_privileged_ones_too() -> None:
    for port in ("1", "80", "443", "65535"):
        assert client_main.parse_options([port], "client.py").port == int(port)
