"""End to end: kill -9 the real server right after acknowledgements, restart it, and
find everything acknowledged (offline mail exactly once and in order, block lists, new
accounts); a damaged state file stops the server with a clear message."""

from __future__ import annotations

import os
import re
import resource
import signal
from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import ServerProcess, finish, logged_in, start
from tests.e2e.wire_client import connect

pytestmark = pytest.mark.e2e

N = 25


async def crash(server: ServerProcess) -> None:
    server.process.kill()  # SIGKILL: no shutdown code runs
    await server.process.ended


@pytest_twisted.ensureDeferred
async def test_acknowledged_offline_mail_survives_kill_9_exactly_once(workdir: Path) -> None:
    server = await start(workdir)
    hans = await logged_in(server, "hans", "falcon*solo")
    hans.send(*(f"message luke number {n:02d} 中🎉" for n in range(N)))
    for _ in range(N):
        await hans.expect("luke is offline; they will get the message when they log in.")
    await crash(server)
    await hans.exit_status()

    server = await start(workdir)
    try:
        luke = await logged_in(server, "luke", "=hope+")
        await luke.expect(f"hans: number {N - 1:02d} 中🎉")
        luke.send("whoelsesince 100000")  # a marker after the mail; nobody was online
        await luke.expect("Nobody else was online in the last 100000 seconds.")
        received = re.findall(r"hans: number (\d\d) 中🎉  \(sent ", luke.output)
        assert received == [f"{n:02d}" for n in range(N)]
        luke.send("logout")
        await luke.exit_status()
        again = await logged_in(server, "luke", "=hope+")
        again.send("whoelse")
        await again.expect("No other users are online.")
        assert "number" not in again.output  # delivered once, then gone
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_blocks_and_new_accounts_survive_kill_9(workdir: Path) -> None:
    server = await start(workdir)
    luke = await logged_in(server, "luke", "=hope+")
    luke.send("block hans")
    await luke.expect("hans is blocked")
    jaba = server.client("jaba")
    await jaba.expect("Username: ")
    jaba.send("jaba", "hutt!")
    await jaba.expect("Welcome")
    await crash(server)
    await finish(luke, jaba)

    server = await start(workdir)
    try:
        hans = await logged_in(server, "hans", "falcon*solo")
        hans.send("message luke still angry?")
        await hans.expect("could not be delivered as the recipient has blocked you")
        jaba = await logged_in(server, "jaba", "hutt!")
        jaba.send("logout")
        assert await jaba.exit_status() == 0
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_clean_stop_keeps_everything_too(workdir: Path) -> None:
    server = await start(workdir)
    hans = await logged_in(server, "hans", "falcon*solo")
    hans.send("message leia help me obiwan")
    await hans.expect("leia is offline")
    await server.stop()  # SIGTERM: twistd stops the service, then exits by that signal
    assert server.process.signal == signal.SIGTERM
    assert "Server Shut Down." in server.process.output
    await hans.exit_status()
    server = await start(workdir)
    try:
        leia = await logged_in(server, "leia", "$blasterpistol$")
        await leia.expect("hans: help me obiwan")
    finally:
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_in_memory_forgets_as_the_handout_does(workdir: Path) -> None:
    server = await ServerProcess(workdir, 60, 120, "--in-memory").started()
    hans = await logged_in(server, "hans", "falcon*solo")
    hans.send("message leia hello")
    await hans.expect("leia is offline")
    await finish(server, hans)
    assert not (workdir / "chat-state.sqlite3").exists()


@pytest_twisted.ensureDeferred
async def test_a_damaged_state_file_stops_the_server_with_its_name(workdir: Path) -> None:
    state = workdir / "chat-state.sqlite3"
    state.write_bytes(b"garbage, not a database " * 200)
    server = ServerProcess(workdir)
    status = await server.process.exit_status()
    assert status != 0
    assert f"the state file {state} is damaged or not a database" in server.process.errors
    assert "Traceback" not in server.process.errors + server.process.output
    assert state.read_bytes().startswith(b"garbage")  # nothing was overwritten


@pytest_twisted.ensureDeferred
async def test_hand_edits_to_credentials_count_at_the_next_login(workdir: Path) -> None:
    # The real server watches credentials.txt (inotify on Linux) instead of checking it
    # at every login: an append and an editor's save must both be seen.
    server = await start(workdir)
    credentials = workdir / "credentials.txt"
    clients = []
    try:
        clients.append(await logged_in(server, "hans", "falcon*solo"))
        with credentials.open("a") as f:
            f.write("\nlando calrissian")
        clients.append(await logged_in(server, "lando", "calrissian"))
        assert "new user" not in clients[-1].output
        edited = workdir / ".credentials.txt.swp"
        edited.write_text(credentials.read_text().replace("luke =hope+", "luke newhope"))
        os.replace(edited, credentials)
        luke = server.client("luke", interactive=True)
        clients.append(luke)
        await luke.expect("Username: ")
        luke.send("luke")
        await luke.expect("Password: ")
        luke.send("=hope+")
        await luke.expect("Invalid password. Please try again")
        luke.send("newhope")
        await luke.expect("Welcome")
    finally:
        await finish(server, *clients)


def may_not_grow(pid: int, *files: Path) -> None:
    """The files of process ``pid`` may be written but not grow: what a full disk
    looks like to it (the kernel says EFBIG, not ENOSPC, which is the one difference
    for the server). Other processes' disks are untouched."""
    smallest = min(path.stat().st_size for path in files if path.exists())
    # The soft limit only: raising it again needs no privilege.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (smallest, resource.RLIM_INFINITY))


def room_again(pid: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_is_said_in_words_loses_nothing_and_passes(workdir: Path) -> None:
    """A user got ``internal`` and the log a critical traceback. Now each request that
    needs storing is refused with ``storage-full`` (nothing half-stored), the log has
    one line, what was acknowledged before survives, and writes work again once there
    is room."""
    server = await start(workdir)
    assert server.process.pid is not None
    state = workdir / "chat-state.sqlite3"
    hans = await connect(server.port)
    assert (await hans.login("hans", "falcon*solo"))["type"] == "ok"
    acknowledged = []
    for n in range(3):
        assert (await hans.request("message", to="luke", text=f"before {n}"))["type"] == "ok"
        acknowledged.append(f"before {n}")

    may_not_grow(server.process.pid, state, Path(f"{state}-wal"), workdir / "credentials.txt")
    refused = None
    for n in range(3000):
        reply = await hans.request("message", to="luke", text=f"while full {n}")
        if reply["type"] != "ok":
            refused = reply
            break
        acknowledged.append(f"while full {n}")
    assert refused is not None and refused["code"] == "storage-full", refused
    assert "disk is full" in refused["text"]
    again = await hans.request("message", to="luke", text="refused again")
    assert again.get("code") == "storage-full"
    newcomer = await connect(server.port)
    created = await newcomer.login("rey", "jakku+1")
    assert created.get("code") == "storage-full", created
    newcomer.close()

    room_again(server.process.pid)
    assert (await hans.request("message", to="luke", text="after"))["type"] == "ok"
    acknowledged.append("after")
    hans.close()
    await server.stop()
    log = server.process.output
    assert log.count("cannot write to") == 1, log
    assert "Traceback" not in log and "writes to" in log and "work again" in log
    assert "rey" not in (workdir / "credentials.txt").read_text()

    server = await start(workdir)
    luke = await connect(server.port)
    try:
        assert (await luke.login("luke", "=hope+"))["type"] == "ok"
        await luke.next_event("stored-done")
        texts = luke.texts()
        assert texts == acknowledged
    finally:
        luke.close()
        await finish(server)


@pytest_twisted.ensureDeferred
async def test_a_damaged_write_ahead_log_stops_the_server_instead_of_losing_mail(
    workdir: Path,
) -> None:
    """Overwriting part of the -wal made the server start and serve 150 of 300
    acknowledged messages without a word (found by reading SQLite's log as it does,
    before SQLite folds the good part in). Now it refuses to start, naming the file
    and the way on, until the operator accepts the loss (or restores a backup)."""
    server = await start(workdir)
    hans = await connect(server.port)
    assert (await hans.login("hans", "falcon*solo"))["type"] == "ok"
    for n in range(90):  # under the mailbox's 100
        assert (await hans.request("message", to="luke", text=f"kept {n}"))["type"] == "ok"
    await crash(server)  # nothing folded into the database: all of it is in the -wal
    wal = workdir / "chat-state.sqlite3-wal"
    data = bytearray(wal.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
    wal.write_bytes(bytes(data))

    refused = ServerProcess(workdir)
    assert await refused.process.exit_status() != 0
    said = refused.process.errors + refused.process.output
    assert f"the write-ahead log {wal} is damaged at frame" in said
    assert "--accept-damaged-wal" in said and "Traceback" not in said
    assert wal.read_bytes() == bytes(data)  # the evidence is untouched

    server = await ServerProcess(workdir, 60, 120, "--accept-damaged-wal").started()
    luke = await connect(server.port)
    try:
        assert (await luke.login("luke", "=hope+"))["type"] == "ok"
        await luke.next_event("stored-done")
        texts = luke.texts()
        assert 0 < len(texts) < 90 and texts == [f"kept {n}" for n in range(len(texts))]
    finally:
        luke.close()
        await finish(server)
