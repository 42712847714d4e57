"""End to end at the edges, with real server and client processes on 127.0.0.1: what
reaches a user's screen, what the operator's files do, what hostile peers can do, and
what a client does with input it cannot use."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import (
    REPO,
    Process,
    client,
    finish,
    logged_in,
    server_py,
    sleep,
    spawn,
    start,
)
from twisted_chat import wire
from twisted_chat.launch import free_port, twistd_command

pytestmark = pytest.mark.e2e


# --- the screen ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hostile_text_never_reaches_another_terminal(workdir: Path) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        yoda = await logged_in(server, "yoda", "wise@!man")
        clients += [hans, yoda]
        for hostile in ("hi\x1b]0;pwned\x07", "hi\x1b[2J", "x\u202eevil", "\x1b]52;c;AAAA\x07"):
            hans.send(f"message yoda {hostile}")
            await hans.expect("contains a control character")
        hans.send("broadcast \x9b31mred")
        await hans.expect("contains a control character")
        hans.send("message yoda clean")
        await yoda.expect("hans: clean")
        assert "\x1b" not in yoda.output and "\u202e" not in yoda.output
        assert "pwned" not in yoda.output and "red" not in yoda.output
    finally:
        await finish(*clients, server)


@pytest_twisted.ensureDeferred
async def test_no_new_name_passes_for_an_existing_one(workdir: Path) -> None:
    """Hans, hans with a combining grave accent, hans in small capitals and like with
    a dotless i were all accepted as new accounts beside hans and like."""
    server = await start(workdir)
    try:
        like = server.client("like")
        await like.expect("Username: ")
        like.send("like", "pass-word1", "pass-word1")
        await like.expect("Welcome")
        await finish(like)
        for name, said in (
            ("Hans", "looks too much like hans"),
            ("hans\u0300", "looks too much like hans"),
            ("\u029c\u1d00\u0274s", "phonetic or technical letters"),
            ("l\u0131ke", "looks too much like like"),
        ):
            stranger = server.client("stranger")
            await stranger.expect("Username: ")
            stranger.send(name)
            await stranger.expect(said)
            await finish(stranger)
        assert "Hans" not in (workdir / "credentials.txt").read_text()
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_mail_stored_before_the_rule_is_shown_visibly(workdir: Path) -> None:
    server = await start(workdir)
    await finish(server)  # the state file now exists, with its schema
    with sqlite3.connect(workdir / "chat-state.sqlite3") as db:
        db.execute(
            "INSERT INTO offline (recipient, sender, text, sent) VALUES (?, ?, ?, ?)",
            ("luke", "hans", "hi\nvader: send me your password\x1b[2J", 1.0),
        )
    server = await start(workdir)
    try:
        luke = await logged_in(server, "luke", "=hope+")
        await luke.expect("hans: hi^Jvader: send me your password^[[2J")
        assert "\x1b" not in luke.output
        assert not re.search(r"^vader: send me", luke.output, re.MULTILINE)  # no forged line
    finally:
        await finish(luke, server)


# --- the operator's files --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_notepad_bom_and_a_look_alike_name(workdir: Path) -> None:
    credentials = workdir / "credentials.txt"
    credentials.write_bytes(b"\xef\xbb\xbf" + credentials.read_bytes())
    server = await start(workdir)
    clients: list[Process] = []
    try:
        stranger = server.client("stranger")
        clients.append(stranger)
        await stranger.expect("Username: ")
        stranger.send("hans", "anything")  # with the BOM kept, "hans" was a new account
        await stranger.expect("Invalid password")
        assert await stranger.exit_status() == 1  # a script is not asked again
        spoof = server.client("spoof")
        clients.append(spoof)
        await spoof.expect("Username: ")
        spoof.send("h\u0430ns", "pw")
        await spoof.expect("must be written in one script")
        assert await spoof.exit_status() == 1
        assert "\u0430" not in credentials.read_text()
    finally:
        await finish(*clients, server)


@pytest_twisted.ensureDeferred
async def test_a_symlinked_credentials_file_stays_a_symlink(workdir: Path) -> None:
    real = workdir / "accounts" / "real.txt"
    real.parent.mkdir()
    os.replace(workdir / "credentials.txt", real)
    real.chmod(0o640)
    (workdir / "credentials.txt").symlink_to(real)
    server = await start(workdir)
    try:
        jaba = server.client("jaba")
        await jaba.expect("Username: ")
        jaba.send("jaba", "hutt")
        await jaba.expect("Welcome")
        jaba.send("logout")
        assert await jaba.exit_status() == 0
    finally:
        await finish(server)
    assert (workdir / "credentials.txt").is_symlink()
    assert real.read_text().endswith("jaba hutt\n")
    assert real.stat().st_mode & 0o777 == 0o640
    assert (workdir / "chat-state.sqlite3").stat().st_mode & 0o777 == 0o600


@pytest_twisted.ensureDeferred
async def test_a_backup_taken_while_running_restores_everything(workdir: Path) -> None:
    server = await start(workdir)
    hans = await logged_in(server, "hans", "falcon*solo")
    for n in range(20):
        hans.send(f"message luke backed up {n:02d}")
    for _ in range(20):
        await hans.expect("luke is offline; they will get the message when they log in.")
    backup = workdir / "backup.sqlite3"
    run = subprocess.run(
        [sys.executable, "-m", "twisted_chat.server.backup", str(workdir / "chat-state.sqlite3"),
         str(backup)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "(20 offline messages)" in run.stdout
    await finish(hans, server)  # kill -9: the -wal file may hold what was acknowledged
    for name in ("chat-state.sqlite3", "chat-state.sqlite3-wal", "chat-state.sqlite3-shm"):
        (workdir / name).unlink(missing_ok=True)
    os.replace(backup, workdir / "chat-state.sqlite3")  # restore
    server = await start(workdir)
    try:
        luke = await logged_in(server, "luke", "=hope+")
        await luke.expect("hans: backed up 19")
        assert len(re.findall(r"hans: backed up \d\d", luke.output)) == 20
    finally:
        await finish(luke, server)


@pytest_twisted.ensureDeferred
async def test_twistd_on_a_port_in_use_says_one_line_and_exits_non_zero(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = twistd_command("credentials.txt")
        argv[argv.index("tcp:0:interface=127.0.0.1")] = f"tcp:{port}:interface=127.0.0.1"
        server = spawn("twistd", argv, workdir)
        status = await server.exit_status()
    assert status == 1
    everything = server.output + server.errors  # twistd sends stderr to its log
    assert "Traceback" not in everything
    (said,) = [line for line in everything.splitlines() if "cannot listen" in line]
    assert said.endswith(f"chatserver: cannot listen on port {port}: Address already in use")


LATE_FAILING_ENDPOINT = """\
import atexit
import pathlib

from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.plugin import IPlugin
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from zope.interface import implementer


class LateFailing:
    def __init__(self, reactor):
        self.reactor = reactor

    def listen(self, factory):
        def fail():
            raise CannotListenError("", 0, OSError(99, "the network went away"))

        return deferLater(self.reactor, 0.5, fail)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class Parser:
    prefix = "latefail"

    def parseStreamServer(self, reactor, *args, **kwargs):
        return LateFailing(reactor)


parser = Parser()
# Another part of the process that counts on its exit handler (a log flushed, a
# socket file removed): it must still run when the server ends with status 1.
atexit.register(pathlib.Path("another-exit-handler-ran").write_text, "yes")
"""


@pytest_twisted.ensureDeferred
async def test_twistd_whose_listener_fails_late_says_one_line_and_exits_non_zero(
    workdir: Path,
) -> None:
    """An endpoint may answer after the reactor started (a late listen failure):
    the server must not go on running deaf."""
    plugins = workdir / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "chat_test_latefail.py").write_text(LATE_FAILING_ENDPOINT)
    argv = twistd_command("credentials.txt")
    argv[argv.index("tcp:0:interface=127.0.0.1")] = "latefail:"
    server = spawn("twistd", argv, workdir, PYTHONPATH=f"{REPO}:{workdir / 'plugins'}")
    status = await server.exit_status()
    assert status == 1
    everything = server.output + server.errors
    assert "Traceback" not in everything
    assert (workdir / "another-exit-handler-ran").read_text() == "yes"
    (said,) = [line for line in everything.splitlines() if "cannot listen" in line]
    assert said.endswith("chatserver: cannot listen on latefail:: the network went away")


@pytest_twisted.ensureDeferred
async def test_server_py_logs_security_events_without_d(workdir: Path) -> None:
    port = free_port()
    server = server_py(workdir, port)
    try:
        await server.expect(f"listening on port {port}")
        guesser = client("guesser", port, interactive=True)
        await guesser.expect("Username: ")
        guesser.send("yoda", "a", "b", "c")
        await guesser.expect("blocked")
        await guesser.exit_status()
        for _ in range(50):  # the server writes its log line on its own time
            if "locked" in server.errors:
                break
            await sleep(0.1)
        assert "username yoda locked for 60.0s after 3 failed passwords" in server.errors
    finally:
        await finish(server)


# --- hostile peers -----------------------------------------------------------------------


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on, from /proc (no tool needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest_twisted.ensureDeferred
async def test_idle_and_forged_peer_connections_do_not_stop_a_private_chat(
    workdir: Path,
) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    hoard: list[socket.socket] = []
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        luke = await logged_in(server, "luke", "=hope+")
        clients += [hans, luke]
        luke.send("whoelse")
        await luke.expect("hans")  # by now luke's client has its peer listener
        pid = luke.pid
        assert pid is not None
        (peer_port,) = listening_ports(pid)
        for n in range(40):
            attacker = socket.create_connection(("127.0.0.1", peer_port), timeout=5)
            if n % 2:
                hello = wire.PeerHello(2, "vader", "guessed-token")
                attacker.sendall(wire.encode(hello))
            hoard.append(attacker)
        hans.send("startprivate luke")
        await luke.expect("hans would like to private message, enter y or n:")
        luke.send("y")
        await hans.expect("Private messaging with luke started")
        hans.send("private luke through the crowd")
        await luke.expect("hans(private): through the crowd")
        assert "Traceback" not in luke.output + luke.errors
        assert "Unhandled error" not in luke.output + luke.errors
    finally:
        for attacker in hoard:
            attacker.close()
        await finish(*clients, server)


# --- the client at the edges -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_huge_whoelsesince_is_an_answer_not_a_crash(workdir: Path) -> None:
    server = await start(workdir)
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        hans.send("whoelsesince 99999999999999999999", "whoelsesince ²")
        await hans.seen("Nobody else was online in the last 1000000000000 seconds.")
        await hans.seen("Usage: whoelsesince <seconds>")
        hans.send("logout")
        assert await hans.exit_status() == 0
        assert "Traceback" not in hans.output + hans.errors
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_piped_login_refused_ends_the_client_and_creates_nothing(
    workdir: Path,
) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        clients.append(hans)
        script = server.client("script")  # a pipe, as `printf ... | client.py PORT`
        clients.append(script)
        script.send("hans", "falcon*solo", "message luke hi")
        assert await script.exit_status() == 1
        assert "hans is already logged in" in script.output
        names = [
            line.split()[0]
            for line in (workdir / "credentials.txt").read_text().split("\n")
            if line
        ]
        assert "falcon*solo" not in names  # the password was not taken for a new name
        hans.send("whoelse")
        await hans.expect("No other users are online.")
        assert "logged in" not in hans.output  # nobody was announced
        empty = server.client("empty")
        clients.append(empty)
        assert empty.transport is not None
        empty.transport.closeStdin()
        assert await empty.exit_status() == 1
        assert "Input ended before logging in." in empty.output
    finally:
        await finish(*clients, server)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--host", "nosuchhost.invalid", "5000"], "no such host"),
        ([str(free_port())], "connection refused"),
    ],
)
def test_connection_failures_are_said_in_words(argv: list[str], reason: str) -> None:
    run = subprocess.run(
        [sys.executable, "client.py", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 1
    assert reason in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr and "111" not in run.stderr


def test_serve_sh_installs_only_when_the_project_changed(tmp_path: Path) -> None:
    """scripts/serve.sh keeps a fingerprint of what it installed: a restart with
    nothing changed starts at once, a changed source installs again."""
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO,
        copy,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info"),
    )
    venv = copy / ".venv"
    (venv / "bin").mkdir(parents=True)
    # A stand-in venv: 'python3 -m venv' and pip would take minutes; what is tested is
    # the decision. Its twistd records that it ran; pip records that it installed.
    (venv / "bin" / "twistd").write_text("#!/bin/sh\necho twistd-ran\n")
    (venv / "bin" / "python").write_text(
        '#!/bin/sh\necho pip-ran >> "$(dirname "$0")/../pip.log"\n'
    )
    for tool in ("twistd", "python"):
        (venv / "bin" / tool).chmod(0o755)
    fake_python3 = tmp_path / "bin"
    fake_python3.mkdir()
    no_venv = 'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then exit 0; fi'
    (fake_python3 / "python3").write_text(f'#!/bin/sh\n{no_venv}\nexec {sys.executable} "$@"\n')
    (fake_python3 / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_python3}:{os.environ['PATH']}"}

    def serve() -> str:
        run = subprocess.run(
            ["bash", str(copy / "scripts" / "serve.sh")], capture_output=True, text=True,
            env=env, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "twistd-ran" in serve()
    assert serve() and (venv / "pip.log").read_text().count("pip-ran") == 1  # no reinstall
    with (copy / "twisted_chat" / "wire.py").open("a") as source:
        source.write("\n# changed\n")
    serve()
    assert (venv / "pip.log").read_text().count("pip-ran") == 2
    with (copy / "twisted_chat" / "web" / "app.js").open("a") as page:
        page.write("\n// changed\n")  # the web page is part of the install too
    serve()
    assert (venv / "pip.log").read_text().count("pip-ran") == 3
