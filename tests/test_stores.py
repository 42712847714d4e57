"""The stores against their interfaces: the in-memory and the SQLite stores pass the same
tests; the SQLite ones also keep everything across a reopen and refuse a damaged file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import IBlockStore, IMailbox, StoredMessage
from twisted_chat.server.sqlite_store import SCHEMA_VERSION, SqliteState, StateFileError
from twisted_chat.server.stores import MemoryBlockStore, MemoryMailbox

LIMIT = 3


@dataclass
class Stores:
    blocks: IBlockStore
    mailbox: IMailbox
    reopen: Callable[[], Stores] | None = None
    close: Callable[[], object] = lambda: None


def memory() -> Stores:
    return Stores(MemoryBlockStore(), MemoryMailbox(LIMIT))


def durable(path: Path) -> Stores:
    state = SqliteState(path, LIMIT, reactor)

    def reopen() -> Stores:
        state.close()
        return durable(path)

    return Stores(state.blocks, state.mailbox, reopen, state.close)


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    made = memory() if request.param == "memory" else durable(tmp_path / "state.sqlite3")
    opened = [made]
    yield made
    for s in opened:
        s.close()


def message(n: int) -> StoredMessage:
    return StoredMessage("hans", f"message {n} 中🎉", 1000.0 + n)


def test_providers_verify(stores: Stores) -> None:
    assert verifyObject(IBlockStore, stores.blocks)
    assert verifyObject(IMailbox, stores.mailbox)


@pytest_twisted.ensureDeferred
async def test_block_and_unblock(stores: Stores) -> None:
    blocks = stores.blocks
    assert not blocks.is_blocked("luke", "hans")
    await blocks.block("luke", "hans")
    assert blocks.is_blocked("luke", "hans")
    assert not blocks.is_blocked("hans", "luke")
    await blocks.block("luke", "hans")  # idempotent
    await blocks.unblock("luke", "hans")
    assert not blocks.is_blocked("luke", "hans")
    await blocks.unblock("luke", "hans")  # idempotent


@pytest_twisted.ensureDeferred
async def test_blocks_are_indexed_both_ways(stores: Stores) -> None:
    blocks = stores.blocks
    await blocks.block("luke", "hans")
    await blocks.block("yoda", "hans")
    await blocks.block("luke", "vader")
    assert set(blocks.blockers_of("hans")) == {"luke", "yoda"}
    assert set(blocks.blocked_by("luke")) == {"hans", "vader"}
    await blocks.unblock("luke", "hans")
    assert set(blocks.blockers_of("hans")) == {"yoda"}
    assert set(blocks.blocked_by("luke")) == {"vader"}
    await blocks.unblock("yoda", "hans")
    assert set(blocks.blockers_of("hans")) == set()
    assert set(blocks.blocked_by("nobody")) == set()


@pytest_twisted.ensureDeferred
async def test_blocks_read_back_from_disk_are_indexed_both_ways(tmp_path: Path) -> None:
    first = durable(tmp_path / "state.sqlite3")
    await first.blocks.block("luke", "hans")
    first.close()
    again = durable(tmp_path / "state.sqlite3")
    try:
        assert set(again.blocks.blockers_of("hans")) == {"luke"}
        assert set(again.blocks.blocked_by("luke")) == {"hans"}
    finally:
        again.close()


@pytest_twisted.ensureDeferred
async def test_mail_comes_back_in_order_until_delivered(stores: Stores) -> None:
    mailbox = stores.mailbox
    assert await mailbox.pending("luke") == []
    for n in range(3):
        await mailbox.append("luke", message(n))
    pending = await mailbox.pending("luke")
    assert [(m.sender, m.text, m.sent) for m in pending] == [
        (m.sender, m.text, m.sent) for m in map(message, range(3))
    ]
    assert [m.text for m in await mailbox.pending("luke")] == [m.text for m in pending]
    await mailbox.delivered("luke", pending[:2])
    assert [m.text for m in await mailbox.pending("luke")] == [message(2).text]
    await mailbox.delivered("luke", pending[2:])
    assert await mailbox.pending("luke") == []
    assert await mailbox.pending("yoda") == []


@pytest_twisted.ensureDeferred
async def test_the_cap_holds_and_frees_after_delivery(stores: Stores) -> None:
    mailbox = stores.mailbox
    for n in range(LIMIT):
        await mailbox.append("luke", message(n))
    with pytest.raises(QueueFull):
        await mailbox.append("luke", message(99))
    await mailbox.append("yoda", message(0))  # the cap is per recipient
    await mailbox.delivered("luke", await mailbox.pending("luke"))
    await mailbox.append("luke", message(4))


@pytest_twisted.ensureDeferred
async def test_an_acknowledgement_twice_or_for_another_user_does_not_move_the_cap(
    stores: Stores,
) -> None:
    mailbox = stores.mailbox
    await mailbox.append("luke", message(0))
    await mailbox.append("yoda", message(1))
    lukes = await mailbox.pending("luke")
    await mailbox.delivered("luke", lukes)
    await mailbox.delivered("luke", lukes)  # a client that acknowledges twice
    await mailbox.delivered("luke", await mailbox.pending("yoda"))  # someone else's
    assert len(await mailbox.pending("yoda")) == 1
    for n in range(LIMIT):  # luke's count is 0, not -1: exactly LIMIT fit
        await mailbox.append("luke", message(n))
    with pytest.raises(QueueFull):
        await mailbox.append("luke", message(99))
    await mailbox.delivered("yoda", await mailbox.pending("yoda"))
    for n in range(LIMIT):
        await mailbox.append("yoda", message(n))
    with pytest.raises(QueueFull):
        await mailbox.append("yoda", message(99))


@pytest_twisted.ensureDeferred
async def test_the_cap_holds_for_appends_in_flight(stores: Stores) -> None:
    appends = [stores.mailbox.append("luke", message(n)) for n in range(LIMIT + 2)]
    outcomes = []
    for d in appends:
        try:
            await d
            outcomes.append("stored")
        except QueueFull:
            outcomes.append("full")
    assert outcomes == ["stored"] * LIMIT + ["full", "full"]


@pytest_twisted.ensureDeferred
async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    first = durable(tmp_path / "state.sqlite3")
    await first.blocks.block("luke", "hans")
    await first.mailbox.append("luke", message(1))
    await first.mailbox.append("luke", message(2))
    assert first.reopen is not None
    second = first.reopen()
    try:
        assert second.blocks.is_blocked("luke", "hans")
        assert [m.text for m in await second.mailbox.pending("luke")] == [
            message(1).text,
            message(2).text,
        ]
        await second.mailbox.append("luke", message(3))
        with pytest.raises(QueueFull):  # the counts were reloaded too
            await second.mailbox.append("luke", message(4))
    finally:
        second.close()


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StateFileError, match=str(path)):
        SqliteState(path, LIMIT, reactor)
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StateFileError, match="newer"):
        SqliteState(path, LIMIT, reactor)


def test_a_new_file_is_created_at_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteState(path, LIMIT, reactor).close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


@pytest_twisted.ensureDeferred
async def test_a_version_2_file_is_migrated_with_its_history(tmp_path: Path) -> None:
    """The history moved to a table in the order things were said: every message, its
    msgid, and each conversation's count come through."""
    from twisted_chat.server.sqlite_store import MIGRATIONS

    path = tmp_path / "state.sqlite3"
    connection = sqlite3.connect(path, isolation_level=None)
    for statements in MIGRATIONS[:2]:
        for statement in statements:
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    rows = [("#jedi", 7, "yoda", "seven", 10.0), ("#jedi", 8, "hans", "eight", 11.0)]
    rows.append(("hans\tyoda", 1, "hans", "hi", 9.0))
    connection.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?)", rows)
    connection.execute("INSERT INTO conversations VALUES ('#jedi', 8), ('#empty', 4)")
    connection.close()

    state = SqliteState(path, LIMIT, reactor, history_limits=(0.0, 100))
    try:
        lines = await state.history.before("#jedi", 0, 10)
        assert [(line.msgid, line.text) for line in lines] == [(7, "seven"), (8, "eight")]
        assert await state.history.append("#jedi", "luke", "nine", 12.0) == 9
        assert await state.history.append("#empty", "luke", "five", 12.0) == 5
        assert await state.history.append("hans\tyoda", "yoda", "two", 12.0) == 2
    finally:
        await state.close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 3
    connection.close()


@pytest_twisted.ensureDeferred
async def test_appends_that_come_together_are_committed_together_in_order(tmp_path: Path) -> None:
    """Group commit: what comes while a batch is written goes in the next one, in one
    transaction (one fsync); each is acknowledged only once committed."""
    state = SqliteState(tmp_path / "state.sqlite3", 1000, reactor)
    transactions: list[int] = []
    real = state.pool.runInteraction

    def counting(interaction: Callable[..., object], *args: object) -> object:
        transactions.append(1)
        return real(interaction, *args)

    state.pool.runInteraction = counting  # type: ignore[method-assign]
    try:
        acks = [state.mailbox.append("luke", message(n)) for n in range(50)]
        assert not any(d.called for d in acks)  # nothing acknowledged before its commit
        for d in acks:
            await d
        assert len(transactions) <= 3  # the first alone, then the rest batched
        stored = await state.mailbox.pending("luke")
        assert [m.text for m in stored] == [message(n).text for n in range(50)]
        await state.mailbox.drained()
    finally:
        state.pool.runInteraction = real  # type: ignore[method-assign]
        await state.close()


@pytest_twisted.ensureDeferred
async def test_a_batch_that_fails_fails_each_append_and_frees_the_cap(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.sqlite3", 2, reactor)
    real = state.pool.runInteraction

    def broken(interaction: Callable[..., object], *args: object) -> object:
        return real(lambda cursor: cursor.execute("INSERT INTO nowhere VALUES (1)"))

    state.pool.runInteraction = broken  # type: ignore[method-assign]
    failures = 0
    for d in [state.mailbox.append("luke", message(n)) for n in range(2)]:
        try:
            await d
        except sqlite3.Error:
            failures += 1
    assert failures == 2
    state.pool.runInteraction = real  # type: ignore[method-assign]
    await state.mailbox.append("luke", message(3))  # the cap was freed for each failure
    await state.mailbox.append("luke", message(4))
    await state.close()
