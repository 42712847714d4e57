"""End to end: the handout's samples E2, E3, E4 and E6 (spec §12) with real client
processes, checking what each terminal shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.e2e.processes import Process, finish, logged_in, start

pytestmark = pytest.mark.e2e

PASSWORDS = {"hans": "falcon*solo", "yoda": "wise@!man", "luke": "=hope+"}


async def trio(server: object) -> dict[str, Process]:
    clients = {}
    for user in ("hans", "yoda", "luke"):
        clients[user] = await logged_in(server, user, PASSWORDS[user])  # type: ignore[arg-type]
    await clients["hans"].expect("luke logged in")
    await clients["yoda"].expect("luke logged in")
    return clients


@pytest_twisted.ensureDeferred
async def test_e2_message_and_invalid_user(workdir: Path) -> None:
    server = await start(workdir)
    clients: dict[str, Process] = {}
    try:
        clients = await trio(server)
        clients["hans"].send("message yoda Hey Dude")
        await clients["yoda"].expect("hans: Hey Dude")
        clients["hans"].send("message bob party time")
        await clients["hans"].expect("Error. bob is not a user.")
        clients["hans"].send("message hans hello me")
        await clients["hans"].expect("Error. You cannot message yourself.")
        clients["hans"].send("message yoda héllo 中文 🎉")
        await clients["yoda"].expect("hans: héllo 中文 🎉")
        assert "Hey Dude" not in clients["luke"].output
    finally:
        await finish(*clients.values(), server)


@pytest_twisted.ensureDeferred
async def test_e3_broadcast(workdir: Path) -> None:
    server = await start(workdir)
    clients: dict[str, Process] = {}
    try:
        clients = await trio(server)
        clients["hans"].send("broadcast vader is evil")
        await clients["yoda"].expect("hans: vader is evil")
        await clients["luke"].expect("hans: vader is evil")
        clients["hans"].send("whoelse")  # a marker: hans's own broadcast is not shown
        await clients["hans"].expect("luke")
        assert "hans: vader is evil" not in clients["hans"].output
    finally:
        await finish(*clients.values(), server)


@pytest_twisted.ensureDeferred
async def test_e4_blocking(workdir: Path) -> None:
    server = await start(workdir)
    clients: dict[str, Process] = {}
    try:
        clients = await trio(server)
        hans, yoda, luke = clients["hans"], clients["yoda"], clients["luke"]
        luke.send("block hans")
        await luke.expect("hans is blocked")
        hans.send("broadcast I travel solo")
        await hans.expect("Your message could not be delivered to some recipients.")
        await yoda.expect("hans: I travel solo")
        before_whoelse = hans.mark()
        hans.send("whoelse")
        await hans.expect("yoda")
        hans.send("message luke You angry?")
        await hans.expect("could not be delivered as the recipient has blocked you")
        hans.send("block hans")
        await hans.expect("Error. Cannot block self.")
        luke.send("unblock yoda")
        await luke.expect("Error. yoda was not blocked.")
        luke.send("unblock hans")
        await luke.expect("hans is unblocked")
        hans.send("broadcast jedis are cool")
        await yoda.expect("hans: jedis are cool")
        await luke.expect("hans: jedis are cool")
        assert "I travel solo" not in luke.output
        assert "You angry?" not in luke.output
        whoelse_reply = hans.since(before_whoelse).split("Your message could not")[0]
        assert whoelse_reply.split() == ["yoda"]  # luke is hidden from hans
    finally:
        await finish(*clients.values(), server)


@pytest_twisted.ensureDeferred
async def test_e6_offline_message_and_presence(workdir: Path) -> None:
    server = await start(workdir)
    clients: dict[str, Process] = {}
    try:
        clients["hans"] = await logged_in(server, "hans", PASSWORDS["hans"])
        clients["yoda"] = await logged_in(server, "yoda", PASSWORDS["yoda"])
        clients["hans"].send("message luke Let's rock")
        await clients["hans"].expect("luke is offline; they will get the message")
        clients["luke"] = await logged_in(server, "luke", PASSWORDS["luke"])
        await clients["luke"].expect("hans: Let's rock  (sent ")
        await clients["hans"].expect("luke logged in")
        await clients["yoda"].expect("luke logged in")
        clients["yoda"].send("logout")
        await clients["hans"].expect("yoda logged out")
        await clients["luke"].expect("yoda logged out")
        assert await clients["yoda"].exit_status() == 0
    finally:
        await finish(*clients.values(), server)
