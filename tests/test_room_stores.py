"""The room stores and the history behind one contract, run against memory, SQLite
and a real ``redis-server``: msgids increase per conversation and are never given
twice, paging is by msgid, the operator's bounds hold, each change to a room is
atomic, and what SQLite and Redis hold survives a reopen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from tests.redisproc import RedisServer
from twisted_chat.interfaces import IHistory, IRoomStore
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.rooms import RedisHistory, RedisRoomStore
from twisted_chat.server.sqlite_store import SqliteState
from twisted_chat.server.stores import MemoryHistory, MemoryRoomStore

DAYS = 30.0
KEPT = 5


@dataclass
class Kept:
    rooms: IRoomStore
    history: IHistory
    clock: Any
    reopen: Callable[[], Any] | None = None
    """Fires with a new Kept over the same data (None: nothing outlives the process)."""


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "redis"])
async def kept(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kept]:
    closers: list[Callable[[], Any]] = []
    if request.param == "memory":
        clock = Clock()
        clock.advance(1_000_000)
        yield Kept(MemoryRoomStore(), MemoryHistory(clock, DAYS, KEPT), clock)
        return
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite3"

        def open_sqlite() -> Kept:
            state = SqliteState(path, 100, reactor, history_limits=(DAYS, KEPT))
            closers.append(state.close)
            return Kept(state.rooms, state.history, reactor, reopen)

        async def reopen() -> Kept:
            await closers.pop()()
            return open_sqlite()

        yield open_sqlite()
        for close in closers:
            await close()
        return
    directory = tmp_path / "redis"
    directory.mkdir()
    server = await RedisServer(directory).start()
    clients = []

    async def open_redis() -> Kept:
        client = await server.client()
        clients.append(client)
        redis = Primitives(client)
        history = RedisHistory(redis, reactor, DAYS, KEPT)
        return Kept(RedisRoomStore(redis), history, reactor, restart)

    async def restart() -> Kept:
        await clients[-1].stop()
        await server.kill()  # kill -9, then the same directory: the AOF is read back
        await server.start()
        return await open_redis()

    try:
        yield await open_redis()
    finally:
        for client in clients:
            await client.stop()
        await server.stop()


def test_providers_verify(kept: Kept) -> None:
    assert verifyObject(IRoomStore, kept.rooms)
    assert verifyObject(IHistory, kept.history)


@pytest_twisted.ensureDeferred
async def test_msgids_increase_per_conversation_and_page_both_ways(kept: Kept) -> None:
    history = kept.history
    now = kept.clock.seconds()
    ids = [await history.append("#a", "hans", f"a{n}", now) for n in range(4)]
    assert ids == [1, 2, 3, 4]
    assert await history.append("hans\tyoda", "yoda", "dm", now) == 1  # its own count
    assert [line.text for line in await history.before("#a", 0, 2)] == ["a2", "a3"]
    assert [line.text for line in await history.before("#a", 3, 10)] == ["a0", "a1"]
    assert [line.msgid for line in await history.after("#a", 1, 2)] == [2, 3]
    assert await history.after("#a", 4, 10) == []
    assert await history.last_ids(["#a", "hans\tyoda", "#none"]) == {
        "#a": 4,
        "hans\tyoda": 1,
        "#none": 0,
    }
    (line,) = await history.before("hans\tyoda", 0, 1)
    assert (line.sender, line.text, line.sent) == ("yoda", "dm", now)


@pytest_twisted.ensureDeferred
async def test_the_oldest_go_past_the_limit_and_no_msgid_is_given_twice(kept: Kept) -> None:
    history = kept.history
    now = kept.clock.seconds()
    for n in range(KEPT + 3):
        await history.append("#busy", "hans", f"m{n}", now)
    lines = await history.before("#busy", 0, 100)
    assert [line.msgid for line in lines] == list(range(4, KEPT + 4))
    if kept.reopen is not None:
        kept = await kept.reopen()
        history = kept.history
        assert [line.msgid for line in await history.before("#busy", 0, 100)] == list(
            range(4, KEPT + 4)
        )
    assert await history.append("#busy", "hans", "after", now) == KEPT + 4


@pytest_twisted.ensureDeferred
async def test_what_is_older_than_the_days_goes(kept: Kept) -> None:
    history = kept.history
    long_ago = kept.clock.seconds() - (DAYS + 1) * 86400
    await history.append("#old", "hans", "ancient", long_ago)
    await history.append("#old", "hans", "recent", kept.clock.seconds())
    sweep = getattr(history, "sweep", None)
    if sweep is not None:
        await sweep()  # SQLite sweeps once a minute; the others trim as they append
    assert [line.text for line in await history.before("#old", 0, 10)] == ["recent"]


@pytest_twisted.ensureDeferred
async def test_what_is_said_at_once_is_kept_in_order(kept: Kept) -> None:
    """Appends of one turn (SQLite commits them together, Redis sends them in one
    call): each gets its own msgid, in the order they came, per conversation."""
    history = kept.history
    now = kept.clock.seconds()
    said = [history.append("#a" if n % 2 else "#b", "hans", f"m{n}", now) for n in range(6)]
    if isinstance(kept.clock, Clock):
        kept.clock.advance(0)
    ids = [await d for d in said]
    assert ids == [1, 1, 2, 2, 3, 3]
    assert [line.text for line in await history.before("#a", 0, 10)] == ["m1", "m3", "m5"]


@pytest_twisted.ensureDeferred
async def test_a_conversation_whose_every_message_went_keeps_counting(kept: Kept) -> None:
    """Its msgids are never given again, not even after a restart: a client that
    showed msgid 2 would drop a new message numbered 2 as a repeat."""
    history = kept.history
    long_ago = kept.clock.seconds() - (DAYS + 1) * 86400
    for n in range(2):
        await history.append("#gone", "hans", f"ancient {n}", long_ago)
    await history.append("#stays", "hans", "recent", kept.clock.seconds())
    sweep = getattr(history, "sweep", None)
    if sweep is not None:
        await sweep()
    if kept.reopen is not None:
        kept = await kept.reopen()
        history = kept.history
    assert await history.before("#gone", 0, 10) == []
    assert await history.append("#gone", "hans", "new", kept.clock.seconds()) == 3
    assert await history.append("#stays", "hans", "more", kept.clock.seconds()) == 2


@pytest_twisted.ensureDeferred
async def test_a_room_is_made_once_and_look_alikes_are_refused(kept: Kept) -> None:
    rooms = kept.rooms
    assert await rooms.create("#general", "#general-look", "hans", 10.0) is None
    assert await rooms.create("#general", "#general-look", "yoda", 11.0) == "#general"
    assert await rooms.create("#gener\u0430l", "#general-look", "yoda", 12.0) == "#general"
    assert await rooms.create("#other", "#other-look", "hans", 20.0) is None
    assert await rooms.created_since("hans", 15.0) == 1
    assert await rooms.created_since("hans", 0.0) == 2
    assert await rooms.members("#general") == {}
    assert await rooms.members("#nowhere") is None


@pytest_twisted.ensureDeferred
async def test_members_join_and_leave_within_both_caps(kept: Kept) -> None:
    rooms = kept.rooms
    for room in ("#a", "#b", "#c"):
        await rooms.create(room, room, "hans", 1.0)
    assert await rooms.add_member("#a", "hans", 0, 2, 2) == "ok"
    assert await rooms.add_member("#a", "hans", 0, 2, 2) == "member"
    assert await rooms.add_member("#a", "yoda", 7, 2, 2) == "ok"
    assert await rooms.add_member("#a", "luke", 0, 2, 2) == "full"
    assert await rooms.add_member("#b", "hans", 0, 2, 2) == "ok"
    assert await rooms.add_member("#c", "hans", 0, 2, 2) == "too-many"
    assert await rooms.add_member("#nowhere", "hans", 0, 2, 5) == "no-room"
    assert await rooms.members("#a") == {"hans": 0, "yoda": 7}
    assert await rooms.rooms_of("hans") == {"#a": 0, "#b": 0}
    assert await rooms.member_counts(["#a", "#b", "#c"]) == {"#a": 2, "#b": 1, "#c": 0}
    assert await rooms.remove_member("#a", "hans") is True
    assert await rooms.remove_member("#a", "hans") is False
    assert await rooms.rooms_of("hans") == {"#b": 0}


@pytest_twisted.ensureDeferred
async def test_positions_only_move_forward_and_outlive_a_reopen(kept: Kept) -> None:
    rooms = kept.rooms
    await rooms.create("#a", "#a", "hans", 1.0)
    await rooms.add_member("#a", "yoda", 3, 10, 10)
    await rooms.save_positions("yoda", {"#a": 9})
    await rooms.save_positions("yoda", {"#a": 5})  # an older save, late
    assert await rooms.positions("yoda") == {"#a": 9}
    if kept.reopen is not None:
        kept = await kept.reopen()
        assert await kept.rooms.positions("yoda") == {"#a": 9}
        assert await kept.rooms.members("#a") == {"yoda": 3}
        assert await kept.rooms.create("#a", "#a", "luke", 2.0) == "#a"
