"""One set of scenarios, two directories: the core's rules must hold the same whether
the chat is one process (memory) or two nodes sharing a real ``redis-server``.

Each scenario logs users in through :class:`Chat` (the realm's half of a login, then
the session's start), as the protocol does, and checks what each user is shown. In one
process "node 0" and "node 1" are the same chat; on Redis they are two, so every rule
is exercised across nodes. Waiting is by condition, bounded, never by a fixed sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.harness import run_inline, write_credentials
from tests.redisproc import RedisServer
from twisted_chat import wire
from twisted_chat.errors import AlreadyOnline, BlockedByRecipient, PrivateConflict
from twisted_chat.server.core import Chat
from twisted_chat.server.lockout import Lockout
from twisted_chat.server.options import Options
from twisted_chat.server.passwords import check_inline
from twisted_chat.server.session import Session
from twisted_chat.server.wiring import build_parts

FINGERPRINT = "ab" * 32
WAIT = 10.0


class Mind:
    """What one user is shown."""

    def __init__(self) -> None:
        self.frames: list[wire.Frame] = []
        self.ended: list[str] = []

    def deliver(self, event: wire.Frame) -> None:
        self.frames.append(event)

    def end_session(self, reason: str) -> None:
        self.ended.append(reason)


class Deployment:
    """Two nodes (or one process seen twice) and their lockouts."""

    def __init__(self, chats: list[Chat], lockouts: list[Lockout]) -> None:
        self.chats = chats
        self.lockouts = lockouts

    def node(self, index: int) -> Chat:
        return self.chats[index % len(self.chats)]

    async def login(self, user: str, node: int = 0) -> tuple[Session, Mind]:
        chat = self.node(node)
        await _now(chat.require_offline(user))
        mind = Mind()
        session = await _now(chat.login(user, mind))  # type: ignore[arg-type]
        await chat.begin(session)
        return session, mind


async def _now(value: Any) -> Any:
    return await value if isinstance(value, Deferred) else value


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Until ``check()`` holds (events cross between nodes through Redis), bounded."""
    deadline = reactor.seconds() + WAIT
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        await deferLater(reactor, 0.01, lambda: None)


def _ready(chat: Chat) -> bool:
    return bool(getattr(chat.directory, "ready", False))


def options(tmp_path: Path, *extra: str) -> Options:
    parsed = Options()
    credentials = tmp_path / "credentials.txt"
    if not credentials.exists():
        write_credentials(credentials)
    parsed.parseOptions(["--credentials", str(credentials), "--timeout", "120", *extra])
    return parsed


@pytest_twisted.async_yield_fixture(params=["one process", "two nodes on Redis"])
async def deployment(request: Any, tmp_path: Path) -> AsyncIterator[Deployment]:
    if request.param == "one process":
        parts = build_parts(options(tmp_path, "--in-memory"), reactor, run_inline, check_inline)
        chat = parts.chat
        yield Deployment([chat], [parts.lockout])
        chat.stop()
        return
    directory = tmp_path / "redis"
    directory.mkdir()
    server = await RedisServer(directory).start()
    chats, lockouts, nodes = [], [], []
    for name in ("a", "b"):
        parsed = options(tmp_path, "--redis", server.url, "--node-id", name)
        parts = build_parts(parsed, reactor, run_inline, check_inline)
        assert parts.membership is not None
        parts.membership.startService()
        chats.append(parts.chat)
        lockouts.append(parts.lockout)
        nodes.append(parts.membership)
    for chat in chats:
        await eventually(partial(_ready, chat), "joined")
    try:
        yield Deployment(chats, lockouts)
    finally:
        for chat, node in zip(chats, nodes, strict=True):
            chat.stop()
            await node.stopService()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_presence_whoelse_and_whoelsesince(deployment: Deployment) -> None:
    _hans, hans = await deployment.login("hans", 0)
    yoda_session, _yoda = await deployment.login("yoda", 1)
    await eventually(lambda: wire.Presence("yoda", True) in hans.frames, "hans sees yoda")
    assert deployment.node(0).others_online("hans") == ["yoda"]
    assert deployment.node(1).others_online("yoda") == ["hans"]
    with pytest.raises(AlreadyOnline):
        await _now(deployment.node(0).require_offline("yoda"))
    yoda_session.logout()
    await eventually(lambda: wire.Presence("yoda", False) in hans.frames, "hans sees yoda go")
    assert deployment.node(0).others_online("hans") == []
    await eventually(lambda: deployment.node(0).seen_since("hans", 60) == ["yoda"], "yoda was seen")


@pytest_twisted.ensureDeferred
async def test_messages_reach_online_users_and_wait_for_offline_ones(
    deployment: Deployment,
) -> None:
    hans_session, _hans = await deployment.login("hans", 0)
    _yoda_session, yoda = await deployment.login("yoda", 1)
    sent = await _now(hans_session.message("yoda", "hello"))
    assert sent is None or sent[0] is False  # delivered, not stored
    await eventually(
        lambda: any(isinstance(f, wire.Message) and f.text == "hello" for f in yoda.frames),
        "yoda gets the message",
    )
    stored, _msgid = await _now(hans_session.message("luke", "later"))
    assert stored is True
    _luke_session, luke = await deployment.login("luke", 1)
    stored = [f for f in luke.frames if isinstance(f, wire.Message)]
    assert [(m.sender, m.text, m.stored) for m in stored] == [("hans", "later", True)]


@pytest_twisted.ensureDeferred
async def test_a_block_holds_on_every_node(deployment: Deployment) -> None:
    hans_session, hans = await deployment.login("hans", 0)
    yoda_session, yoda = await deployment.login("yoda", 1)
    _leia_session, _ = await deployment.login("leia", 0)
    await yoda_session.block("hans")
    chat0 = deployment.node(0)
    await eventually(lambda: chat0.blocks.is_blocked("yoda", "hans"), "node 0 knows the block")
    with pytest.raises(BlockedByRecipient):
        hans_session.message("yoda", "let me in")
    assert hans_session.broadcast("to all") is True  # yoda skipped, and hans is told
    assert _leia_session.broadcast("marker") is False
    # leia's broadcast left node 0 after hans's: once yoda has it, hans's would be in.
    await eventually(
        lambda: any(isinstance(f, wire.Broadcast) and f.text == "marker" for f in yoda.frames),
        "yoda gets leia's broadcast",
    )
    assert [f.text for f in yoda.frames if isinstance(f, wire.Broadcast)] == ["marker"]
    assert hans_session.whoelse() == ["leia"]  # yoda hides from the one she blocks
    yoda_session.logout()
    await deployment.login("luke", 1)  # after yoda left, through the same node
    await eventually(lambda: wire.Presence("luke", True) in hans.frames, "hans sees luke")
    assert wire.Presence("yoda", False) not in hans.frames  # yoda's logout hidden from hans
    yoda_session, yoda = await deployment.login("yoda", 1)
    await yoda_session.unblock("hans")
    await eventually(lambda: not chat0.blocks.is_blocked("yoda", "hans"), "unblocked everywhere")
    await _now(hans_session.message("yoda", "hello again"))
    await eventually(
        lambda: any(isinstance(f, wire.Message) and f.text == "hello again" for f in yoda.frames),
        "yoda gets hans's message again",
    )


@pytest_twisted.ensureDeferred
async def test_a_private_request_and_its_answer_cross_nodes(deployment: Deployment) -> None:
    hans_session, hans = await deployment.login("hans", 0)
    yoda_session, yoda = await deployment.login("yoda", 1)
    await _now(hans_session.listening("127.0.0.1", 40001, FINGERPRINT))
    await _now(yoda_session.listening("127.0.0.2", 40002, "cd" * 32))
    await hans_session.start_private("yoda")
    await eventually(lambda: wire.PrivateRequest("hans", 60.0) in yoda.frames, "yoda is asked")
    with pytest.raises(PrivateConflict):
        await yoda_session.start_private("hans")  # one request between two at a time
    await yoda_session.answer_private("hans", True)
    approvals = [f for f in yoda.frames if isinstance(f, wire.PrivateAccepted)]
    assert [(a.user, a.port, a.fingerprint) for a in approvals] == [("hans", 0, FINGERPRINT)]
    await eventually(
        lambda: any(isinstance(f, wire.PrivateAccepted) for f in hans.frames), "hans hears"
    )
    (to_hans,) = [f for f in hans.frames if isinstance(f, wire.PrivateAccepted)]
    assert (to_hans.user, to_hans.host, to_hans.port) == ("yoda", "127.0.0.2", 40002)
    assert to_hans.token == approvals[0].token and to_hans.fingerprint == "cd" * 32
    with pytest.raises(PrivateConflict):
        await yoda_session.answer_private("hans", True)  # answered once


@pytest_twisted.ensureDeferred
async def test_a_private_request_ends_when_its_requester_leaves(deployment: Deployment) -> None:
    hans_session, _hans = await deployment.login("hans", 0)
    yoda_session, yoda = await deployment.login("yoda", 1)
    await _now(hans_session.listening("127.0.0.1", 40001, FINGERPRINT))
    await _now(yoda_session.listening("127.0.0.2", 40002, "cd" * 32))
    await hans_session.start_private("yoda")
    hans_session.logout()
    await eventually(lambda: wire.PrivateExpired("hans", "left") in yoda.frames, "yoda is told")
    with pytest.raises(PrivateConflict):
        await yoda_session.answer_private("hans", True)


@pytest_twisted.ensureDeferred
async def test_strikes_through_any_node_add_up_to_one_lock(deployment: Deployment) -> None:
    lockouts = deployment.lockouts
    answers = [await lockouts[n % len(lockouts)].strike("vader") for n in range(3)]
    assert [tries for tries, _ in answers] == [2, 1, 0]
    for lockout in lockouts:
        assert await lockout.lock_left("vader") > 59
    await lockouts[0].clear("vader")
    assert await lockouts[-1].lock_left("vader") == 0
