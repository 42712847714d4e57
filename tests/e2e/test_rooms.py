"""End to end: rooms and history with the real server and real clients. Three users
in a room, one away who is sent what they missed once and in order; history after a
``kill -9`` and a restart; history only from joining; a blocked member kept out of
live delivery, replay and history; members on two nodes sharing Redis; the limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import Process, ServerProcess, finish, logged_in, start
from tests.e2e.test_cluster import Cluster

pytestmark = pytest.mark.e2e

PASSWORDS = {
    "hans": "falcon*solo",
    "yoda": "wise@!man",
    "luke": "=hope+",
    "leia": "$blasterpistol$",
}


async def member(server: ServerProcess, user: str, room: str) -> Process:
    """``user`` logged in and in ``room``."""
    client = await logged_in(server, user, PASSWORDS[user])
    client.send(f"join {room}")
    await client.expect(f"You joined {room}")
    return client


async def leave(client: Process) -> None:
    client.send("logout")
    await client.expect("You have logged out.")
    await client.exit_status()


@pytest_twisted.ensureDeferred
async def test_an_absent_member_is_sent_what_they_missed_once_in_order(workdir: Path) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    try:
        hans = await member(server, "hans", "#jedi")
        yoda = await member(server, "yoda", "#jedi")
        luke = await member(server, "luke", "#jedi")
        clients += [hans, yoda, luke]
        await hans.expect("luke joined #jedi")
        await leave(luke)
        hans.send("message #jedi one", "message #jedi two")
        await yoda.expect("[#jedi] hans: two")
        yoda.send("message #jedi three")
        await hans.expect("[#jedi] yoda: three")
        assert "→ #jedi: one" in hans.output  # the sender's own line, not an echo
        assert "[#jedi] hans: one" not in hans.output
        back = await logged_in(server, "luke", PASSWORDS["luke"])
        clients.append(back)
        await back.expect("three  (sent ")
        replayed = re.findall(
            r"\[#jedi\] (\w+): (\w+)  \(sent .* while you were away\)", back.output
        )
        assert replayed == [("hans", "one"), ("hans", "two"), ("yoda", "three")]
        back.send("rooms")
        await back.expect("#jedi: 3 member(s), 0 not seen")
        await leave(back)
        again = await logged_in(server, "luke", PASSWORDS["luke"])
        clients.append(again)
        again.send("rooms")
        await again.expect("#jedi: 3 member(s), 0 not seen")
        assert "while you were away" not in again.output  # once
    finally:
        await finish(*clients, server)


@pytest_twisted.ensureDeferred
async def test_history_survives_kill_9_and_a_restart(workdir: Path) -> None:
    server = await start(workdir)
    hans = await member(server, "hans", "#kept")
    yoda = await logged_in(server, "yoda", PASSWORDS["yoda"])
    try:
        hans.send("message yoda just between us", "message #kept for the room")
        await hans.expect("→ #kept: for the room")  # acknowledged: durable
        await yoda.expect("hans: just between us")
        yoda.send("message hans answered")
        await yoda.expect("→ hans: answered")
        server.process.kill()  # SIGKILL: no shutdown code runs
        await server.process.ended
        await hans.exit_status()
        await yoda.exit_status()
        server = await start(workdir)
        hans = await logged_in(server, "hans", PASSWORDS["hans"])
        hans.send("history yoda")
        await hans.expect("yoda: answered")
        lines = [line for line in hans.output.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
        assert [line.split(" ", 2)[2] for line in lines] == [
            "hans: just between us",
            "yoda: answered",
        ]
        hans.send("history #kept")
        await hans.expect("[#kept] hans: for the room")
    finally:
        await finish(hans, yoda, server)


@pytest_twisted.ensureDeferred
async def test_a_room_s_history_is_only_from_when_you_joined(workdir: Path) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    try:
        hans = await member(server, "hans", "#r")
        clients.append(hans)
        hans.send("message #r before leia came")
        await hans.expect("→ #r: before leia came")
        leia = await member(server, "leia", "#r")
        clients.append(leia)
        hans.send("message #r after leia came")
        await leia.expect("[#r] hans: after leia came")
        leia.send("history #r")
        await leia.expect("Nothing more|hans: after leia came", regex=True)
        leia.send("history #r more")
        await leia.expect("There is nothing before that|Nothing more", regex=True)
        assert "before leia came" not in leia.output
    finally:
        await finish(*clients, server)


@pytest_twisted.ensureDeferred
async def test_a_blocked_member_is_kept_out_live_in_replay_and_in_history(workdir: Path) -> None:
    server = await start(workdir)
    clients: list[Process] = []
    try:
        hans = await member(server, "hans", "#r")
        yoda = await member(server, "yoda", "#r")
        luke = await member(server, "luke", "#r")
        clients += [hans, yoda, luke]
        yoda.send("block hans")
        await yoda.expect("hans is blocked")
        hans.send("message #r live from hans")
        luke.send("message #r live from luke")
        await yoda.expect("[#r] luke: live from luke")
        await leave(yoda)
        hans.send("message #r while away from hans")
        luke.send("message #r while away from luke")
        await luke.expect("→ #r: while away from luke")
        back = await logged_in(server, "yoda", PASSWORDS["yoda"])
        clients.append(back)
        await back.expect("luke: while away from luke")
        back.send("history #r")
        await back.expect(r"\d\d:\d\d \[#r\] luke: while away from luke", regex=True)
        everything = yoda.output + back.output
        assert "from hans" not in everything
    finally:
        await finish(*clients, server)


@pytest_twisted.ensureDeferred
async def test_the_limits_are_said_clearly(workdir: Path) -> None:
    server = await ServerProcess(
        workdir, 60, 120, "--max-rooms-per-user", "1", "--max-room-members", "1"
    ).started()
    clients: list[Process] = []
    try:
        hans = await member(server, "hans", "#one")
        clients.append(hans)
        hans.send("join #two")
        await hans.expect("as many as this server allows")
        yoda = await logged_in(server, "yoda", PASSWORDS["yoda"])
        clients.append(yoda)
        yoda.send("join #one")
        await yoda.expect("as many as a room may have")
        yoda.send("join general")
        await yoda.expect("a room's name starts with #")
    finally:
        await finish(*clients, server)


@pytest_twisted.async_yield_fixture
async def two(workdir: Path) -> AsyncIterator[Cluster]:
    cluster = await Cluster(workdir).start("a", "b")
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest_twisted.ensureDeferred
async def test_members_on_two_nodes_share_a_room_and_its_history(two: Cluster) -> None:
    a, b = two.nodes["a"], two.nodes["b"]
    clients: list[Process] = []
    try:
        hans = await member(a, "hans", "#galaxy")
        yoda = await member(b, "yoda", "#galaxy")
        luke = await member(b, "luke", "#galaxy")
        clients += [hans, yoda, luke]
        await hans.expect("luke joined #galaxy")
        hans.send("message #galaxy across nodes")
        await yoda.expect("[#galaxy] hans: across nodes")
        await luke.expect("[#galaxy] hans: across nodes")
        await leave(luke)
        yoda.send("message #galaxy while luke is away")
        await hans.expect("[#galaxy] yoda: while luke is away")
        back = await logged_in(a, "luke", PASSWORDS["luke"])  # through the other node
        clients.append(back)
        await back.expect("yoda: while luke is away  (sent ")
        back.send("history #galaxy")
        await back.expect(r"\[#galaxy\] yoda: while luke is away\n", regex=True)
        assert back.output.count("across nodes") == 1  # history, not the replay
    finally:
        await finish(*clients)
