"""The cluster's storage primitives and Redis stores against a real ``redis-server``:
each step atomic, exactly once when two nodes race for the same thing, and the
lockout and private-request rules (written once, in Python) holding over Redis."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from tests.redisproc import RedisServer, primitives_on, redis_server
from twisted_chat import wire
from twisted_chat.errors import QueueFull
from twisted_chat.interfaces import PendingRequest, StoredMessage
from twisted_chat.server import events
from twisted_chat.server.cluster import primitives
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.redis import RedisClient
from twisted_chat.server.cluster.stores import RedisMailbox, RedisPrivateRequests, RedisStrikes
from twisted_chat.server.lockout import Lockout
from twisted_chat.server.passwords import RESERVED

__all__ = ["redis_server"]

TTL_MS = 3000


async def inbox(redis: Primitives, node: str) -> list[events.Event]:
    """The events waiting in ``node``'s inbox, decoded."""
    entries = await redis.call("XRANGE", f"chat:inbox:{node}", "-", "+")
    return [events.decode(dict(zip(f[::2], f[1::2], strict=True))["e"]) for _id, f in entries]


async def mailbox(redis: Primitives, user: str) -> list[str]:
    """The texts waiting in ``user``'s mailbox, in order."""
    return [m.text for m in await RedisMailbox(redis, 100).pending(user)]


def message(to: str, text: str, sender: str = "hans", sent: float = 1.0) -> bytes:
    return events.encode(events.DirectMessage(to, sender, text, sent))


async def chat_of(server: RedisServer, *nodes: str) -> tuple[Primitives, RedisClient]:
    """Primitives on a fresh chat with ``nodes`` joined, their inboxes empty."""
    redis, client = await primitives_on(server)
    for node in nodes:
        await redis.run(primitives.JOIN, node, TTL_MS, f"process-{node}")
    return redis, client


@pytest_twisted.ensureDeferred
async def test_two_nodes_claiming_one_user_at_once_one_wins(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    other, other_client = await primitives_on(redis_server)
    try:
        for round_ in range(20):
            user = f"racer{round_}"
            answers = await gatherResults(
                [redis.run(primitives.CLAIM, user, "a"), other.run(primitives.CLAIM, user, "b")]
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
        assert await redis.run(primitives.JOIN, "a", TTL_MS, "impostor") == "in-use"
        beat = await redis.run(primitives.HEARTBEAT, "a", TTL_MS, "process-a")
        assert beat == [1, "a", 1, 0]  # the counter, then each member: a, incarnation 1
        # The same process joining again (after it lost Redis) is a new incarnation.
        assert await redis.run(primitives.JOIN, "a", TTL_MS, "process-a") == [2, [], 0]
        await redis.call("ZADD", "chat:nodes", 0, "a")  # the first process died
        assert await redis.run(primitives.JOIN, "a", TTL_MS, "second") == [3, [], 0]
        # Should the first come back, it learns it was replaced.
        assert await redis.run(primitives.HEARTBEAT, "a", TTL_MS, "process-a") == "reaped"
        assert await redis.run(primitives.HEARTBEAT, "a", TTL_MS, "second") == [3, "a", 3, 0]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_that_is_not_a_member_cannot_claim(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(primitives.CLAIM, "hans", "ghost") == "no-node"
        assert await redis.call("HGET", "chat:online", "hans") is None
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_release_publishes_the_logout_once_and_only_if_it_happened(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(primitives.CLAIM, "yoda", "a") == "ok"
        gone = events.encode(events.Presence("yoda", "a#1", False, 1234.5))
        assert await redis.run(primitives.RELEASE, "yoda", "a", 1234.5, gone) == 1
        assert await redis.run(primitives.RELEASE, "yoda", "a", 1234.5, gone) == 0  # once
        assert await redis.run(primitives.RELEASE, "hans", "b", 1.0, gone) == 0  # not b's
        assert await inbox(redis, "b") == [events.Presence("yoda", "a#1", False, 1234.5)]
        assert await inbox(redis, "a") == []  # not to the node it came from
        assert float(await redis.call("ZSCORE", "chat:lastseen", "yoda")) == 1234.5
        snapshot = await redis.run(primitives.SNAPSHOT)
        assert snapshot == [[], ["a", "1", "b", "2"], ["yoda", "1234.5"]]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_strikes_from_three_nodes_lock_the_user(redis_server: RedisServer) -> None:
    connections = [await primitives_on(redis_server) for _ in range(3)]
    lockouts = [Lockout(RedisStrikes(redis), 60) for redis, _client in connections]
    try:
        answers = [await lockout.strike("hans") for lockout in lockouts]
        assert [tries for tries, _locked in answers] == [2, 1, 0]
        assert answers[-1][1] == 60.0
        for lockout in lockouts:
            assert 59 < await lockout.lock_left("hans") <= 60
        # A strike while locked neither counts nor extends the lock.
        tries, left = await lockouts[0].strike("hans")
        assert tries == 0 and left <= 60
        assert await lockouts[0].lock_left("yoda") == 0
    finally:
        for _redis, client in connections:
            await client.stop()


@pytest_twisted.ensureDeferred
async def test_strikes_racing_on_two_nodes_all_count(redis_server: RedisServer) -> None:
    """Compare-and-set: of two strikes read at once, the second writes after reading
    again, so neither is lost (the rule is applied once per strike)."""
    connections = [await primitives_on(redis_server) for _ in range(2)]
    lockouts = [Lockout(RedisStrikes(redis), 60) for redis, _client in connections]
    try:
        answers = await gatherResults([lockouts[0].strike("yoda"), lockouts[1].strike("yoda")])
        assert sorted(tries for tries, _ in answers) == [1, 2]
        tries, locked = await lockouts[0].strike("yoda")
        assert (tries, locked) == (0, 60.0)
    finally:
        for _redis, client in connections:
            await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_lock_ends_after_its_duration_and_counting_starts_again(
    redis_server: RedisServer,
) -> None:
    redis, client = await primitives_on(redis_server)
    lockout = Lockout(RedisStrikes(redis), 60)
    try:
        for _ in range(3):
            await lockout.strike("hans")
        assert await lockout.lock_left("hans") > 0
        # The minute passes: the lock's end, kept in Redis, is now a second ago.
        await redis.call("HSET", "chat:strikes:hans", "until", await redis_now(redis) - 1)
        assert await lockout.lock_left("hans") == 0
        assert (await lockout.strike("hans"))[0] == 2
        await lockout.clear("hans")
        assert await redis.call("EXISTS", "chat:strikes:hans") == 0
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_racing_a_login_arrives_exactly_once(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    sender, sender_client = await primitives_on(redis_server)
    try:
        routed = [
            sender.run(primitives.ROUTE, "luke", message("luke", f"m{n}"), 100, "b")
            for n in range(50)
        ]
        claim = redis.run(primitives.CLAIM, "luke", "a")
        answers = await gatherResults(routed)
        assert await claim == "ok"
        stored = await mailbox(redis, "luke")
        sent = [e.text for e in await inbox(redis, "a") if isinstance(e, events.DirectMessage)]
        assert answers.count("stored") == len(stored)
        assert answers.count("sent") == len(sent)
        # Each exactly once, and in the order sent: stored first, then live.
        assert stored + sent == [f"m{n}" for n in range(50)]
    finally:
        await client.stop()
        await sender_client.stop()


@pytest_twisted.ensureDeferred
async def test_the_mailbox_cap_holds(redis_server: RedisServer) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        answers = await gatherResults(
            [
                redis.run(primitives.ROUTE, "luke", message("luke", f"m{n}"), 3, "a")
                for n in range(5)
            ]
        )
        assert answers == ["stored"] * 3 + ["full"] * 2
        assert await mailbox(redis, "luke") == ["m0", "m1", "m2"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_the_redis_mailbox_keeps_order_holds_its_cap_and_forgets_what_was_received(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    box = RedisMailbox(redis, limit=2)
    try:
        for text in ("first", "second"):
            await box.append("luke", StoredMessage("hans", text, 1.0))
        with pytest.raises(QueueFull):
            await box.append("luke", StoredMessage("hans", "third", 1.0))
        waiting = await box.pending("luke")
        assert [(m.sender, m.text) for m in waiting] == [("hans", "first"), ("hans", "second")]
        assert waiting[0].key < waiting[1].key
        await box.delivered("luke", waiting[:1])
        assert [m.text for m in await box.pending("luke")] == ["second"]
        await box.append("luke", StoredMessage("yoda", "room again", 1.0))
        assert [m.text for m in await box.pending("luke")] == ["second", "room again"]
        # Mail written by the first releases, as [sender, text, sent], still reads.
        await redis.call("HSET", "chat:mail:luke", 999, json.dumps(["m", "old form", 2.0]))
        assert [(m.sender, m.text) for m in await box.pending("luke")][-1] == ("m", "old form")
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_node_is_reaped_once_and_its_messages_reach_their_recipients(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(primitives.CLAIM, "yoda", "b") == "ok"
        assert await redis.run(primitives.CLAIM, "hans", "a") == "ok"
        dying = message("yoda", "to the dead")
        assert await redis.run(primitives.ROUTE, "yoda", dying, 100, "") == "sent"
        await redis.run(primitives.PUBLISH, b'["b","hans","all",1.0]', "a")  # not moved
        # Not yet dead: reaping does nothing.
        assert await redis.run(primitives.REAP, "b", "0") == [[], 0]
        await redis.call("ZADD", "chat:nodes", 0, "b")  # its heartbeat ran out
        beat = await redis.run(primitives.HEARTBEAT, "a", TTL_MS, "process-a")
        members = [beat[i : i + 3] for i in range(1, len(beat), 3)]
        assert ["b", 2, 1] in members  # expired, as every member's heartbeat now says
        answers = await gatherResults(
            [redis.run(primitives.REAP, "b", "0"), redis.run(primitives.REAP, "b", "0")]
        )
        assert sorted(answers, key=lambda a: -a[1]) == [[["yoda"], 1], [[], 0]]
        assert await redis.call("HGET", "chat:online", "yoda") is None
        assert await mailbox(redis, "yoda") == ["to the dead"]
        assert await redis.call("ZSCORE", "chat:lastseen", "yoda") is not None
        assert await redis.call("EXISTS", "chat:inbox:b") == 0
        # The heartbeat of the reaped node tells it so.
        assert await redis.run(primitives.HEARTBEAT, "b", TTL_MS, "process-b") == "reaped"
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_private_request_answered_twice_is_answered_once(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    other, other_client = await primitives_on(redis_server)
    requests = [RedisPrivateRequests(redis), RedisPrivateRequests(other)]
    pending = PendingRequest("t1", "f" * 64)
    try:
        assert await requests[0].open("hans", "yoda", pending, 60) is True
        assert await requests[1].open("yoda", "hans", PendingRequest("t2", ""), 60) is False
        taken = await gatherResults([r.take("hans", "yoda") for r in requests])
        assert sorted(taken, key=lambda t: t is None) == [pending, None]
        # A lapse after the answer finds nothing to lapse; a new request may be made.
        assert await requests[0].lapse("hans", "yoda", "t1") is False
        assert await requests[1].open("yoda", "hans", PendingRequest("t3", ""), 60) is True
        assert await requests[0].lapse("yoda", "hans", "not-t3") is False
        assert await requests[0].drop_user("hans") == [("yoda", "hans")]
        assert await requests[0].drop_user("hans") == []
        assert await redis.call("EXISTS", "chat:privateof:yoda") == 0
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
    requests = RedisPrivateRequests(redis)
    try:
        assert await requests.open("x:y", "z", PendingRequest("t1", ""), 60)
        assert await requests.open("x", "y:z", PendingRequest("t2", ""), 60)
        assert await requests.lapse("x", "y:z", "t2") is True
        assert await requests.lapse("x:y", "z", "t1") is True
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
        assert await redis.run(primitives.CLAIM, "luke", "a") == "ok"
        back = message("luke", "hi", sent=1.5)
        assert await redis.run(primitives.ROUTE, "luke", back, 0, "a") == "stored"
        assert await inbox(redis, "a") == []
        assert await mailbox(redis, "luke") == ["hi"]
        # On another node by now: it goes there.
        await redis.call("HSET", "chat:online", "luke", "b")
        again = message("luke", "again", sent=2.5)
        assert await redis.run(primitives.ROUTE, "luke", again, 0, "a") == "sent"
        assert await inbox(redis, "b") == [events.DirectMessage("luke", "hans", "again", 2.5)]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_frame_is_told_only_to_the_node_holding_its_user(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    try:
        assert await redis.run(primitives.CLAIM, "yoda", "b") == "ok"
        told = events.encode(events.ForUser("yoda", wire.PrivateDeclined("hans")))
        assert await redis.run(primitives.TELL, "yoda", told) == 1
        assert await redis.run(primitives.TELL, "leia", told) == 0  # nobody holds her
        assert await inbox(redis, "b") == [events.ForUser("yoda", wire.PrivateDeclined("hans"))]
        peer = json.dumps(["127.0.0.1", 40000, "f" * 64])
        assert await redis.run(primitives.SET_PEER, "yoda", "b", peer) == 1
        assert await redis.run(primitives.SET_PEER, "yoda", "a", peer) == 0  # not a's
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_events_handed_over_are_acknowledged_and_deleted_together(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a")
    try:
        assert await redis.run(primitives.CLAIM, "luke", "a") == "ok"
        for n in range(3):
            await redis.run(primitives.ROUTE, "luke", message("luke", f"m{n}"), 100, "")
        read = await redis.call(
            "XREADGROUP", "GROUP", "chat", "a", "COUNT", 2, "STREAMS", "chat:inbox:a", ">"
        )
        ids = [entry_id for entry_id, _fields in read[0][1]]
        assert await redis.run(primitives.ACKNOWLEDGE, "a", *ids) == 2
        assert (await redis.call("XPENDING", "chat:inbox:a", "chat"))[0] == 0
        # m0 and m1 were read and acknowledged: gone.
        assert [getattr(e, "text", None) for e in await inbox(redis, "a")] == ["m2"]
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_blocks_are_kept_both_ways_and_each_change_is_published_once(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")
    blocked = events.encode(events.BlockChanged("luke", "hans", True))
    try:
        assert await redis.run(primitives.BLOCK, "luke", "hans", "1", blocked, "a") == 1
        assert await redis.run(primitives.BLOCK, "luke", "hans", "1", blocked, "a") == 0
        assert await redis.run(primitives.ALL_BLOCKS) == ["luke", "hans"]
        assert await redis.call("SMEMBERS", "chat:blockers:hans") == ["luke"]
        assert await inbox(redis, "b") == [events.BlockChanged("luke", "hans", True)]
        unblocked = events.encode(events.BlockChanged("luke", "hans", False))
        assert await redis.run(primitives.BLOCK, "luke", "hans", "0", unblocked, "a") == 1
        assert await redis.run(primitives.ALL_BLOCKS) == []
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_merging_accounts_keeps_the_first_value_and_tells_every_node(
    redis_server: RedisServer,
) -> None:
    redis, client = await chat_of(redis_server, "a", "b")

    def account(user: str, stored: str) -> list[Any]:
        return [user, stored, events.encode(events.AccountAdded(user, stored))]

    try:
        await redis.run(primitives.MERGE_ACCOUNTS, "a", *account("hans", "first"))
        merged = await redis.run(
            primitives.MERGE_ACCOUNTS, "a", *account("hans", "changed"), *account("leia", "x")
        )
        assert merged == 1
        assert await redis.call("HGET", "chat:accounts", "hans") == "first"
        assert await inbox(redis, "b") == [
            events.AccountAdded("hans", "first"),
            events.AccountAdded("leia", "x"),
        ]
        assert await inbox(redis, "a") == []  # the merging node has them already
        assert await redis.run(primitives.RESERVE_NAME, "leia", "a") == "taken"
        assert await redis.run(primitives.RESERVE_NAME, "rey", "a") == "ok"
        assert await redis.run(primitives.RESERVE_NAME, "rey", "b") == "taken"
    finally:
        await client.stop()


@pytest_twisted.ensureDeferred
async def test_a_reserved_name_is_kept_from_strangers_until_a_usable_line_replaces_it(
    redis_server: RedisServer,
) -> None:
    """A damaged line reserves its name on every node; the line fixed in any node's
    file replaces the reservation (and nothing replaces a usable value)."""
    redis, client = await chat_of(redis_server, "a", "b")

    def account(user: str, stored: str) -> list[Any]:
        return [user, stored, events.encode(events.AccountAdded(user, stored))]

    try:
        assert await redis.run(primitives.MERGE_ACCOUNTS, "a", *account("lando", RESERVED)) == 1
        assert await redis.run(primitives.RESERVE_NAME, "lando", "a") == "taken"
        assert await redis.run(primitives.MERGE_ACCOUNTS, "b", *account("lando", "calrissian")) == 0
        assert await redis.call("HGET", "chat:accounts", "lando") == "calrissian"
        assert await redis.run(primitives.MERGE_ACCOUNTS, "a", *account("lando", RESERVED)) == 0
        assert await redis.call("HGET", "chat:accounts", "lando") == "calrissian"
        assert await inbox(redis, "b") == [events.AccountAdded("lando", RESERVED)]
        assert await inbox(redis, "a") == [events.AccountAdded("lando", "calrissian")]
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
            redis = Primitives(client)
            assert await redis.run(primitives.JOIN, "a", TTL_MS, "process-a") == [1, [], 0]
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


async def redis_now(redis: Primitives) -> float:
    """Redis's clock, the one the strike records are read with."""
    seconds, micros = await redis.call("TIME")
    return int(seconds) + int(micros) / 1e6
