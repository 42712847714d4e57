"""Hashed passwords with real processes: a file converted with ``chat-server
hash-credentials`` while nothing runs, then a server on it where users log in; and a
server that hashes the accounts it creates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import REPO, ServerProcess, finish, logged_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "credentials.txt").write_text("hans falcon*solo\nluke =hope+\n")
    return tmp_path


@pytest_twisted.ensureDeferred
async def test_a_converted_file_serves_the_same_users(workdir: Path) -> None:
    credentials = workdir / "credentials.txt"
    run = subprocess.run(
        [sys.executable, str(REPO / "server.py"), "hash-credentials", str(credentials)],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.strip()
        == f"{credentials}: 2 password(s) hashed (argon2id); 0 line(s) left as they were"
    )
    text = credentials.read_text()
    assert "falcon*solo" not in text and text.count("$argon2id$") == 2
    server = await ServerProcess(workdir).started()
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        wrong = server.client("wrong")
        await wrong.expect("Username: ")
        wrong.send("luke", "=hope")
        await wrong.expect("Invalid password. Please try again (2 tries left).")
        await finish(wrong)
        luke = await logged_in(server, "luke", "=hope+")
        hans.send("message luke hashed and fine")
        await luke.expect("hans: hashed and fine")
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_server_that_hashes_new_accounts(workdir: Path) -> None:
    server = await ServerProcess(workdir, 60, 120, "--hash-new-passwords").started()
    try:
        jaba = server.client("jaba")
        await jaba.expect("Username: ")
        jaba.send("jaba")
        await jaba.expect("New password: ")
        jaba.send("hutt")
        await jaba.expect("Welcome")
        jaba.send("logout")
        assert await jaba.exit_status() == 0
        line = (workdir / "credentials.txt").read_text().splitlines()[-1]
        assert line.startswith("jaba $argon2id$") and "hutt" not in line
        again = await logged_in(server, "jaba", "hutt")
        await finish(again)
    finally:
        await finish(server)
