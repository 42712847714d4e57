"""The cluster's decisions, each one Lua script, against a real ``redis-server``: what
happens when two nodes race for the same thing, and that each happens exactly once."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from tests.redisproc import RedisServer, redis_server, scripts_on
from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import StoredMessage
from twisted_chat.server.cluster import scripts
from twisted_chat.server.cluster.redis import RedisClient
from twisted_chat.server.cluster.scripts import Scripts
from twisted_chat.server.cluster.stores import RedisMailbox

__all__ = ["redis_server"]

TTL_MS = 3000


async def inbox(redis: Scripts, node: str) -> list[list[Any]]:
    """The events waiting in ``node``'s inbox, decoded."""
    entries = await redis.call("XRANGE", f"chat:inbox:{node}", "-", "+")
    return [json.loads(fields[1]) for _id, fields in entries]


async def mailbox(redis: Scripts, user: str) -> list[list[Any]]:
    flat = await redis.call("HGETALL", f"chat:mail:{user}")
    keyed = sorted(zip(map(int, flat[::2]), flat[1::2], strict=True))
    return [json.loads(body) for _key, body in keyed]


async def chat_of(server: RedisServer, *nodes: str) -> tuple[Scripts, RedisClient]:
    """Scripts on a fresh chat with ``nodes`` joined and hans, yoda, luke as accounts."""
    redis, client = await scripts_on(server)
    for node in nodes:
        await redis.run(scripts.JOIN, node, TTL_MS, f"process-{node}")
    await redis.run(scripts.MERGE_ACCOUNTS, "hans", "a", "yoda", "b", "luke", "c")
    for node in nodes:  # the account events are not what these tests look at
        await redis.call("DEL", f"chat:inbox:{node}")
        await redis.call("XGROUP", "CREATE", f"chat:inbox:{node}", "chat", "0", "MKSTREAM")
    return redis, client


@pytest_twisted.ensureDeferred
async def test_two_nodes_claiming_one_user_at_once_one_wins(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    other, other_client = await scripts_on(redis_server)
    try:
        for round_ in range(20):
            user = f"racer{round_}"
            answers = await gatherResults(
                [redis.run(scripts.CLAIM, user, "a"), other.run(scripts.CLAIM, user, "b")]
            )
            assert sorted(answers) == ["ok", "online"]
            holder = await redis.call("HGET", "chat:online", user)
            assert holder == ("a" if answers[0] == "ok" else "b")
    finally:
        await client.stop()
        await other_client.stop()


@pytest_twisted.ensureDeferred
async def test_a_second_process_with_a_node_id_in_use_waits_for_the_first_to_die(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(scripts.JOIN, "a", TTL_MS, "impostor") == "in-use"
        assert await redis.run(scripts.HEARTBEAT, "a", TTL_MS, "process-a") == []
        # The same process joining again (after it lost Redis) is not refused.
        assert await redis.run(scripts.JOIN, "a", TTL_MS, "process-a") == [[], 0]
        await redis.call("ZADD", "chat:nodes", 0, "a")  # the first process died
        assert await redis.run(scripts.JOIN, "a", TTL_MS, "second") == [[], 0]
        # Should the first come back, it learns it was replaced.
        assert await redis.run(scripts.HEARTBEAT, "a", TTL_MS, "process-a") == "reaped"
        assert await redis.run(scripts.HEARTBEAT, "a", TTL_MS, "second") == []
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_presence_is_announced_when_the_session_begins_not_at_the_claim(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(scripts.CLAIM, "hans", "a") == "ok"
        assert await inbox(redis, "b") == []  # nobody told before the welcome
        assert await redis.run(scripts.ANNOUNCE, "hans", "a") == 1
        assert await inbox(redis, "b") == [["p", "hans", 1]]
        # Claimed back by the same node before its release landed: 'back', so the
        # node does not announce again what the others never saw end.
        assert await redis.run(scripts.CLAIM, "hans", "a") == "back"
        assert await redis.run(scripts.ANNOUNCE, "hans", "b") == 0  # not through b
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_that_is_not_a_member_cannot_claim(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(scripts.CLAIM, "hans", "ghost") == "no-node"
        assert await redis.call("HGET", "chat:online", "hans") is None
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_strikes_from_three_connections_lock_the_user(redis_server: RedisServer) -> None:
    connections = [await scripts_on(redis_server) for _ in range(3)]
    try:
        answers = [await redis.run(scripts.STRIKE, "hans", 60, 3) for redis, _client in connections]
        assert [int(tries) for tries, _locked in answers] == [2, 1, 0]
        assert float(answers[-1][1]) == 60.0
        for redis, _client in connections:
            assert 59 < float(await redis.run(scripts.LOCK_LEFT, "hans")) <= 60
        # A strike while locked neither counts nor extends the lock.
        tries, left = await connections[0][0].run(scripts.STRIKE, "hans", 60, 3)
        assert int(tries) == 0 and float(left) <= 60
        assert float(await connections[0][0].run(scripts.LOCK_LEFT, "yoda")) == 0
    finally:
        for _redis, client in connections:
            await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_lock_ends_after_its_duration_and_counting_starts_again(
    redis_server: RedisServer,
) -> None:
    redis, client = await scripts_on(redis_server)
    try:
        for _ in range(3):
            await redis.run(scripts.STRIKE, "hans", 60, 3)
        assert float(await redis.run(scripts.LOCK_LEFT, "hans")) > 0
        # The minute passes: the lock's end, kept in Redis, is now a second ago.
        await redis.call("HSET", "chat:strikes:hans", "until", await redis_now(redis) - 1)
        assert float(await redis.run(scripts.LOCK_LEFT, "hans")) == 0
        tries, _ = await redis.run(scripts.STRIKE, "hans", 60, 3)
        assert int(tries) == 2
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_racing_a_login_arrives_exactly_once(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    sender, sender_client = await scripts_on(redis_server)
    try:
        messages = [sender.run(scripts.ROUTE, "hans", "luke", f"m{n}", 100) for n in range(50)]
        claim = redis.run(scripts.CLAIM, "luke", "a")
        answers = await gatherResults(messages)
        assert await claim == "ok"
        stored = [body[1] for body in await mailbox(redis, "luke")]
        sent = [e[3] for e in await inbox(redis, "a") if e[0] == "m"]
        assert answers.count("stored") == len(stored)
        assert answers.count("sent") == len(sent)
        # Each exactly once, and in the order sent: stored first, then live.
        assert stored + sent == [f"m{n}" for n in range(50)]
    finally:
        await client.stop()
        await sender_client.stop()


@pytest_twisted.ensureDeferred
async def test_route_refuses_a_blocked_sender_and_an_unknown_user(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(scripts.BLOCK, "luke", "hans", "1") == 1
        assert await redis.run(scripts.BLOCK, "luke", "hans", "1") == 0
        assert await redis.run(scripts.ROUTE, "hans", "luke", "hi", 100) == "blocked"
        assert await redis.run(scripts.ROUTE, "hans", "nobody", "hi", 100) == "no-such-user"
        assert await mailbox(redis, "luke") == []
        assert await redis.run(scripts.ALL_BLOCKS) == ["luke", "hans"]
        assert await redis.run(scripts.BLOCK, "luke", "hans", "0") == 1
        assert await redis.run(scripts.ALL_BLOCKS) == []
        assert await redis.run(scripts.ROUTE, "hans", "luke", "hi", 100) == "stored"
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_the_mailbox_cap_holds(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        answers = await gatherResults(
            [redis.run(scripts.ROUTE, "hans", "luke", f"m{n}", 3) for n in range(5)]
        )
        assert answers == ["stored"] * 3 + ["full"] * 2
        assert [m[1] for m in await mailbox(redis, "luke")] == ["m0", "m1", "m2"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_the_redis_mailbox_keeps_order_holds_its_cap_and_forgets_what_was_received(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    mailbox = RedisMailbox(redis, limit=2)
    try:
        for text in ("first", "second"):
            await mailbox.append("luke", StoredMessage("hans", text, 1.0))
        with pytest.raises(QueueFull):
            await mailbox.append("luke", StoredMessage("hans", "third", 1.0))
        waiting = await mailbox.pending("luke")
        assert [(m.sender, m.text) for m in waiting] == [("hans", "first"), ("hans", "second")]
        assert waiting[0].key < waiting[1].key
        await mailbox.delivered("luke", waiting[:1])
        assert [m.text for m in await mailbox.pending("luke")] == ["second"]
        await mailbox.append("luke", StoredMessage("yoda", "room again", 1.0))
        assert [m.text for m in await mailbox.pending("luke")] == ["second", "room again"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_node_is_reaped_once_and_its_messages_reach_their_recipients(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(scripts.CLAIM, "yoda", "b") == "ok"
        assert await redis.run(scripts.CLAIM, "hans", "a") == "ok"
        await redis.call("DEL", "chat:inbox:a")
        assert await redis.run(scripts.ROUTE, "hans", "yoda", "to the dead", 100) == "sent"
        # Not yet dead: reaping does nothing.
        assert await redis.run(scripts.REAP, "b", "0") == [[], 0]
        await redis.call("ZADD", "chat:nodes", 0, "b")  # its heartbeat ran out
        answers = await gatherResults(
            [redis.run(scripts.REAP, "b", "0"), redis.run(scripts.REAP, "b", "0")]
        )
        assert sorted(answers, key=lambda a: -a[1]) == [[["yoda"], 1], [[], 0]]
        assert await redis.call("HGET", "chat:online", "yoda") is None
        assert [m[1] for m in await mailbox(redis, "yoda")] == ["to the dead"]
        assert await inbox(redis, "a") == [["p", "yoda", 0]]
        assert await redis.call("ZSCORE", "chat:lastseen", "yoda") is not None
        assert await redis.call("EXISTS", "chat:inbox:b") == 0
        # The heartbeat of the reaped node tells it so.
        assert await redis.run(scripts.HEARTBEAT, "b", TTL_MS, "process-b") == "reaped"
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_private_request_answered_twice_is_answered_once(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    other, other_client = await scripts_on(redis_server)
    try:
        for user, node in (("hans", "a"), ("yoda", "b")):
            assert await redis.run(scripts.CLAIM, user, node) == "ok"
            peer = json.dumps(["127.0.0.1", 40000, "f" * 64])
            assert await redis.run(scripts.LISTENING, user, node, peer) == 1
        for node in ("a", "b"):
            await redis.call("DEL", f"chat:inbox:{node}")
        assert await redis.run(scripts.PRIVATE_REQUEST, "hans", "yoda", 60000, "t1") == "ok"
        assert await redis.run(scripts.PRIVATE_REQUEST, "yoda", "hans", 60000, "t2") == ("conflict")
        answers = await gatherResults(
            [
                redis.run(scripts.PRIVATE_ANSWER, "yoda", "hans", "1", "token-1"),
                other.run(scripts.PRIVATE_ANSWER, "yoda", "hans", "0", "token-2"),
            ]
        )
        assert sorted(answers) == ["none", "ok"]
        to_hans = await inbox(redis, "a")
        assert len(to_hans) == 1 and to_hans[0][0] in ("pa", "pd")
        # A lapse after the answer finds nothing to lapse.
        assert await redis.run(scripts.PRIVATE_LAPSE, "hans", "yoda", "t1") == 0
    finally:
        await client.stop()
        await other_client.stop()


@pytest_twisted.ensureDeferred
async def test_names_with_a_colon_do_not_share_a_private_request(
    redis_server: RedisServer,
) -> None:
    # "x:y" asking "z" and "x" asking "y:z" are two requests (a ':' may be in a name
    # from the operator's file).
    redis, client = await chat_of(redis_server, "a")
    try:
        peer = json.dumps(["127.0.0.1", 40000, "f" * 64])
        for user in ("x:y", "z", "x", "y:z"):
            assert await redis.run(scripts.CLAIM, user, "a") == "ok"
            assert await redis.run(scripts.LISTENING, user, "a", peer) == 1
        assert await redis.run(scripts.PRIVATE_REQUEST, "x:y", "z", 60000, "t1") == "ok"
        assert await redis.run(scripts.PRIVATE_REQUEST, "x", "y:z", 60000, "t2") == "ok"
        assert await redis.run(scripts.PRIVATE_LAPSE, "x", "y:z", "t2") == 1
        assert await redis.run(scripts.PRIVATE_LAPSE, "x:y", "z", "t1") == 1
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_back_from_a_node_its_recipient_left_is_stored_not_resent(
    redis_server: RedisServer,
) -> None:
    # Redis still says luke is on node a (a's release has not come yet): a message a
    # gives back must not go round to a's inbox again.
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(scripts.CLAIM, "luke", "a") == "ok"
        await redis.call("DEL", "chat:inbox:a")
        assert await redis.run(scripts.REDELIVER, "luke", "hans", "hi", 1.5, "a") == 1
        assert await inbox(redis, "a") == []
        assert await mailbox(redis, "luke") == [["hans", "hi", 1.5]]
        # On another node by now: it goes there.
        await redis.call("HSET", "chat:online", "luke", "b")
        await redis.call("DEL", "chat:inbox:b")
        assert await redis.run(scripts.REDELIVER, "luke", "hans", "again", 2.5, "a") == 1
        assert await inbox(redis, "b") == [["m", "luke", "hans", "again", 2.5]]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_events_handed_over_are_acknowledged_and_deleted_together(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(scripts.CLAIM, "luke", "a") == "ok"
        for n in range(3):
            await redis.run(scripts.ROUTE, "hans", "luke", f"m{n}", 100)
        read = await redis.call(
            "XREADGROUP", "GROUP", "chat", "a", "COUNT", 2, "STREAMS", "chat:inbox:a", ">"
        )
        ids = [entry_id for entry_id, _fields in read[0][1]]
        assert await redis.run(scripts.ACKNOWLEDGE, "a", *ids) == 2
        assert (await redis.call("XPENDING", "chat:inbox:a", "chat"))[0] == 0
        # m0 and m1 were read and acknowledged: gone.
        assert [e[3] for e in await inbox(redis, "a")] == ["m2"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_whoelsesince_uses_logout_times_kept_in_redis(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        for user in ("hans", "yoda", "luke"):
            assert await redis.run(scripts.CLAIM, user, "a") == "ok"
        assert await redis.run(scripts.RELEASE, "yoda", "a") == 1
        assert await redis.run(scripts.RELEASE, "yoda", "a") == 0  # once
        assert await redis.run(scripts.BLOCK, "luke", "hans", "1") == 1
        assert sorted(await redis.run(scripts.SEEN, "hans", -1)) == []
        assert sorted(await redis.run(scripts.SEEN, "hans", 60)) == ["yoda"]
        assert sorted(await redis.run(scripts.SEEN, "yoda", 60)) == ["hans", "luke"]
        # yoda's logout, kept in Redis, ten seconds back: outside a 5 s window.
        await redis.call("ZADD", "chat:lastseen", await redis_now(redis) - 10, "yoda")
        assert sorted(await redis.run(scripts.SEEN, "hans", 5)) == []
        assert sorted(await redis.run(scripts.SEEN, "hans", 60)) == ["yoda"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_merging_accounts_keeps_the_first_value_and_tells_every_node(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(scripts.MERGE_ACCOUNTS, "hans", "changed", "leia", "x") == 1
        assert await redis.call("HGET", "chat:accounts", "hans") == "a"
        for node in ("a", "b"):
            assert await inbox(redis, node) == [["a", "leia", "x"]]
        assert await redis.run(scripts.RESERVE_NAME, "leia", "a") == "taken"
        assert await redis.run(scripts.RESERVE_NAME, "rey", "a") == "ok"
        assert await redis.run(scripts.RESERVE_NAME, "rey", "b") == "taken"
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_reaches_redis_over_a_unix_socket(tmp_path: Path) -> None:
    # A short path: a UNIX socket's name is limited to about 100 bytes.
    short = Path(tempfile.mkdtemp(prefix="chat-redis-"))
    server = await RedisServer(tmp_path, unix_socket=short / "redis.sock").start()
    try:
        client = await server.client(url=f"unix://{short}/redis.sock?db=2")
        try:
            redis = Scripts(client)
            assert await redis.run(scripts.JOIN, "a", TTL_MS, "process-a") == [[], 0]
            assert await redis.call("ZCARD", "chat:nodes") == 1
        finally:
            await client.stop()
        other_db = await server.client()
        try:
            assert await other_db.call("ZCARD", "chat:nodes") == 0  # db 0 is another chat
        finally:
            await other_db.stop()
    finally:
        await server.stop()
        shutil.rmtree(short, ignore_errors=True)


async def redis_now(redis: Scripts) -> float:
    """Redis's clock, the one every script reads."""
    seconds, micros = await redis.call("TIME")
    return int(seconds) + int(micros) / 1e6
