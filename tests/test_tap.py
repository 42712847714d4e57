"""Options, makeService and the launchers' argument checks, without listening."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from tests.harness import write_credentials
from tests.logcapture import formatted, log_events
from twisted_chat.client.main import parse_args as client_args
from twisted_chat.server.main import parse_args as server_args
from twisted_chat.server.service import ChatService
from twisted_chat.server.tap import Options, makeService
from twisted_chat.server.wiring import clear_on_network

REPO = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_and_bare_port(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    options = parse("--credentials", str(creds))
    assert options["port"] == "tcp:5000"
    assert (options["block-duration"], options["timeout"]) == (60, 120)
    assert parse("--credentials", str(creds), "--port", "6000")["port"] == "tcp:6000"


def test_endpoint_descriptions_pass_through(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    port = "tcp:5000:interface=127.0.0.1"
    assert parse("--credentials", str(creds), "--port", port)["port"] == port


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "80"],
        ["--port", "70000"],
        ["--port", "five"],
        ["--timeout", "0"],
        ["--timeout", "-3"],
        ["--block-duration", "-1"],
        ["--block-duration", "x"],
        ["--mailbox-limit", "0"],
        ["--credentials", "/nonexistent/c.txt"],
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    with pytest.raises(usage.UsageError):
        parse("--credentials", str(creds), *argv)


def test_make_service_listens_where_told(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    reactor = MemoryReactorClock()
    service = makeService(parse("--credentials", str(creds), "--port", "tcp:5123"), reactor)
    assert isinstance(service, ChatService)
    service.startService()
    assert reactor.tcpServers[0][0] == 5123
    service.stopService()


def test_a_damaged_credentials_file_is_reported_by_line_and_the_server_still_starts(
    tmp_path: Path,
) -> None:
    """A damaged line must never stop a restart: it is skipped and reported."""
    creds = tmp_path / "c.txt"
    creds.write_text("hans solo\nbroken line here\n")
    with log_events() as events:
        service = makeService(parse("--credentials", str(creds)), MemoryReactorClock())
    logged = formatted(events)
    assert service.factory.chat.accounts.exists("hans")
    assert (
        f"{creds}, line 2: expected 'username password', got 3 field(s); nobody can log in as "
        "broken or take the name until it is fixed"
    ) in logged


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["5000"],
        ["5000", "60"],
        ["x", "60", "120"],
        ["80", "60", "120"],
        ["5000", "-1", "120"],
        ["5000", "60", "0"],
        ["5000", "60", "abc"],
        ["5000", "60", "120", "extra"],
        ["--bogus", "5000", "60", "120"],
    ],
)
def test_server_py_argument_errors_exit_2_with_one_usage_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        server_args(argv, "server.py")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: server.py") and err.count("\n") == 1


def test_server_py_good_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_credentials(tmp_path / "credentials.txt")
    monkeypatch.chdir(tmp_path)
    options, debug = server_args(["5000", "60", "120", "-d"], "server.py")
    assert (options["port"], options["block-duration"], options["timeout"]) == (
        "tcp:5000",
        60,
        120,
    )
    assert debug


@pytest.mark.parametrize(
    "argv", [[], ["x"], ["0"], ["5000", "6000"], ["--host"], ["--nope", "5000"]]
)
def test_client_py_argument_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        client_args(argv, "client.py")
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("usage: client.py")


def test_client_py_host_option() -> None:
    assert client_args(["5000"], "c") == ("127.0.0.1", 5000)
    assert client_args(["--host", "localhost", "5000"], "c") == ("localhost", 5000)
    assert client_args(["--host=::1", "5000"], "c") == ("::1", 5000)


def test_several_listeners_and_tls_options_for_server_py(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_credentials(tmp_path / "credentials.txt")
    monkeypatch.chdir(tmp_path)
    argv = ["--tls-cert", "c:ert.pem", "--tls-key=key.pem", "--listen", "unix:chat.sock"]
    options, _ = server_args([*argv, "5000", "60", "120"], "server.py")
    assert options["ports"] == [
        "ssl:5000:privateKey=key.pem:certKey=c\\:ert.pem",
        "unix:chat.sock",
    ]
    with pytest.raises(SystemExit):
        server_args(["--tls-cert", "cert.pem", "5000", "60", "120"], "server.py")


def test_twistd_takes_several_ports(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    options = parse("--credentials", str(creds), "--port", "5000", "--port", "tcp:5001")
    assert options["ports"] == ["tcp:5000", "tcp:5001"]
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    service.startService()
    assert [listening[0] for listening in reactor.tcpServers] == [5000, 5001]
    service.stopService()


@pytest.mark.parametrize(
    ("description", "warned"),
    [
        ("tcp:5000", "port 5000 (every interface)"),
        ("tcp:5000:interface=0.0.0.0", "port 5000 (0.0.0.0)"),
        ("tcp:port=5000:interface=192.0.2.7", "port 5000 (192.0.2.7)"),
        ("tcp:5000:interface=127.0.0.1", None),
        ("tcp6:5000:interface=\\:\\:1", None),
        ("ssl:5000:privateKey=k.pem:certKey=c.pem", None),
        ("unix:/run/chat.sock", None),
    ],
)
def test_a_plain_listener_on_the_network_is_warned_of(description: str, warned: str | None) -> None:
    assert clear_on_network(description) == warned


def test_the_warning_reaches_the_log(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    with log_events() as events:
        makeService(parse("--credentials", str(creds), "--port", "5000"), MemoryReactorClock())
    assert any("passwords travel in clear on port 5000" in line for line in formatted(events))


def test_a_plain_web_listener_on_the_network_is_warned_of_too(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "c.txt")
    with log_events() as events:
        makeService(
            parse(
                "--credentials",
                str(creds),
                "--port",
                "tcp:5000:interface=127.0.0.1",
                "--web",
                "8080",
            ),
            MemoryReactorClock(),
        )
    lines = [line for line in formatted(events) if "passwords travel in clear" in line]
    assert len(lines) == 1 and "port 8080 (every interface)" in lines[0]
    assert "--web ssl:PORT" in lines[0]  # how to listen with HTTPS instead


def test_server_py_hashes_new_passwords_on_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_credentials(tmp_path / "credentials.txt")
    monkeypatch.chdir(tmp_path)
    options, _ = server_args(["--hash-new-passwords", "5000", "60", "120"], "server.py")
    assert options["hash-new-passwords"]
    plain, _ = server_args(["5000", "60", "120"], "server.py")
    assert not plain["hash-new-passwords"]


def test_client_py_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        client_args(["--help"], "client.py")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: client.py") and "--tls" in out and "Exit status" in out


def test_a_server_of_one_process_imports_nothing_of_the_cluster(tmp_path: Path) -> None:
    """Redis's connection, hiredis, Prometheus and autobahn are loaded only by the
    options that need them (--redis, --metrics, --web)."""
    credentials = tmp_path / "credentials.txt"
    credentials.write_text("hans falcon*solo\n")
    program = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "from twisted_chat.server.tap import Options, makeService\n"
        "options = Options()\n"
        f"options.parseOptions(['--credentials', {str(credentials)!r}, '--in-memory'])\n"
        "makeService(options, reactor)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('twisted_chat.server.cluster',"
        " 'hiredis', 'prometheus_client', 'autobahn', 'twisted_chat.server.web'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_help_has_no_runs_of_spaces_inside_its_sentences() -> None:
    """twistd prints each option's help as it is written: an indented docstring
    would put runs of spaces in the middle of a sentence."""
    for line in Options().getUsage().splitlines():
        sentence = re.sub(r"^\s*(-\w, )?--[\w-]+=?\s+", "", line).strip()
        assert "  " not in sentence, line
