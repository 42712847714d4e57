"""The cluster's pieces without Redis: the connection (StringTransport and a Clock),
the node's handling of inbox events, and the options that make a node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage

from tests.harness import write_credentials
from twisted_chat import wire
from twisted_chat.errors import AlreadyOnline, SharedStateUnavailable
from twisted_chat.server import events
from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.cluster.address import RedisAddress
from twisted_chat.server.cluster.directory import RedisDirectory
from twisted_chat.server.cluster.node import ClusterNode
from twisted_chat.server.cluster.primitives import Primitive, Primitives
from twisted_chat.server.cluster.redis import (
    RedisError,
    RedisProtocol,
    encode_command,
)
from twisted_chat.server.cluster.rooms import RedisHistory, RedisRoomStore
from twisted_chat.server.cluster.stores import (
    ClusterAccounts,
    ClusterBlocks,
    RedisMailbox,
    RedisPrivateRequests,
)
from twisted_chat.server.core import Chat
from twisted_chat.server.options import Options, node_id
from twisted_chat.server.passwords import check_inline
from twisted_chat.server.rooms import RoomLimits
from twisted_chat.server.stats import Stats


def connected(clock: Clock, timeout: float = 2.0) -> tuple[RedisProtocol, StringTransport]:
    ready: list[RedisProtocol] = []
    address = RedisAddress.parse("redis://127.0.0.1:1/0")
    protocol = RedisProtocol(clock, address, timeout, ready.append)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == encode_command(["PING"])
    protocol.dataReceived(b"+PONG\r\n")
    assert ready == [protocol]
    transport.clear()
    return protocol, transport


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_the_address_forms() -> None:
    tcp = RedisAddress.parse("redis://:s3cret@cache.example:6380/2")
    assert (tcp.host, tcp.port, tcp.db, tcp.password) == ("cache.example", 6380, 2, "s3cret")
    unix = RedisAddress.parse("unix:///run/redis/redis.sock?db=3")
    assert (unix.endpoint_kind, unix.path, unix.db) == ("unix", "/run/redis/redis.sock", 3)
    assert RedisAddress.parse("redis://localhost").port == 6379
    for bad in ("http://x", "redis://", "redis://h/x", "unix://", "redis://h:99999/0"):
        with pytest.raises(ValueError):
            RedisAddress.parse(bad)


def test_a_password_and_a_database_are_sent_before_anything_else() -> None:
    ready: list[RedisProtocol] = []
    protocol = RedisProtocol(Clock(), RedisAddress.parse("redis://u:p@h/5"), 2.0, ready.append)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == (
        encode_command(["AUTH", "u", "p"])
        + encode_command(["SELECT", 5])
        + encode_command(["PING"])
    )


def test_a_connection_is_handed_over_once_signed_in_and_dropped_when_redis_is_loading() -> None:
    ready: list[RedisProtocol] = []
    address = RedisAddress.parse("redis://127.0.0.1:1/0")
    protocol = RedisProtocol(Clock(), address, 2.0, ready.append)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert ready == []
    protocol.dataReceived(b"+PONG\r\n")
    assert ready == [protocol]
    # Redis restarted and still reading its AOF: not handed over, dropped, and the
    # ClientService around it tries again.
    loading = RedisProtocol(Clock(), address, 2.0, ready.append)
    transport = StringTransport()
    loading.makeConnection(transport)
    loading.dataReceived(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert ready == [protocol] and transport.disconnecting


def test_a_connection_lost_while_signing_in_is_never_handed_over() -> None:
    ready: list[RedisProtocol] = []
    address = RedisAddress.parse("redis://127.0.0.1:1/0")
    protocol = RedisProtocol(Clock(), address, 2.0, ready.append, ["return 1"])
    protocol.makeConnection(StringTransport())
    protocol.connectionLost()
    protocol.dataReceived(b"")  # nothing more comes, and nothing is left waiting
    assert ready == []
    assert isinstance(results(protocol.call("PING"))[0].value, SharedStateUnavailable)


def test_scripts_are_loaded_on_each_connection_and_a_lost_one_reconnects() -> None:
    ready: list[RedisProtocol] = []
    address = RedisAddress.parse("redis://127.0.0.1:1/0")
    protocol = RedisProtocol(Clock(), address, 2.0, ready.append, ["return 1", "return 2"])
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == (
        encode_command(["SCRIPT", "LOAD", "return 1"])
        + encode_command(["SCRIPT", "LOAD", "return 2"])
        + encode_command(["PING"])
    )
    protocol.dataReceived(b"$40\r\n" + b"a" * 40 + b"\r\n$40\r\n" + b"b" * 40 + b"\r\n")
    assert ready == []  # not before every script is in
    protocol.dataReceived(b"+PONG\r\n")
    assert ready == [protocol]
    # SCRIPT FLUSH by someone: the call fails as unavailable and the connection goes,
    # so that the next one loads the scripts again.
    flushed = results(protocol.call("EVALSHA", "a" * 40, 0))
    protocol.dataReceived(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
    assert isinstance(flushed[0].value, SharedStateUnavailable)
    assert transport.disconnecting


def test_replies_come_back_in_order_including_errors_and_split_reads() -> None:
    protocol, _transport = connected(Clock())
    first = results(protocol.call("GET", "a"))
    second = results(protocol.call("EVALSHA", "x", 0))
    third = results(protocol.call("HGETALL", "h"))
    for byte in b"$4\r\n0123\r\n-WRONGTYPE Operation against a key\r\n*2\r\n$1\r\nk\r\n$3\r\nv\xc3":
        protocol.dataReceived(bytes([byte]))
    protocol.dataReceived(b"\xa9\r\n")
    assert first == ["0123"]  # a string stays a string: no number conversion
    assert isinstance(second[0].value, RedisError)
    assert str(second[0].value).startswith("WRONGTYPE")
    assert third == [["k", "vé"]]
    # Bytes that are not UTF-8 (written by another tool) cannot stop the replies.
    fourth = results(protocol.call("GET", "binary"))
    fifth = results(protocol.call("PING"))
    protocol.dataReceived(b"$2\r\n\xff\xfe\r\n+PONG\r\n")
    assert fourth == ["\ufffd\ufffd"] and fifth == ["PONG"]


def test_a_late_reply_fails_every_waiting_call_and_drops_the_connection() -> None:
    clock = Clock()
    protocol, transport = connected(clock, timeout=2.0)
    waiting = [results(protocol.call("PING")) for _ in range(3)]
    clock.advance(1.5)
    assert not transport.disconnecting and all(w == [] for w in waiting)
    clock.advance(1.0)
    assert transport.disconnecting
    protocol.connectionLost()
    for w in waiting:
        assert isinstance(w[0].value, SharedStateUnavailable)
    # Never sent late: a call on a lost connection fails at once.
    late = results(protocol.call("SET", "k", "v"))
    assert isinstance(late[0].value, SharedStateUnavailable)
    assert clock.getDelayedCalls() == []


def test_a_blocking_read_gets_its_block_time_on_top() -> None:
    clock = Clock()
    protocol, transport = connected(clock, timeout=2.0)
    read = results(protocol.call("XREADGROUP", "BLOCK", 1000, extra_time=1.0))
    clock.advance(2.9)
    assert not transport.disconnecting
    protocol.dataReceived(b"*-1\r\n")
    assert read == [None]


def test_garbage_from_redis_drops_the_connection() -> None:
    protocol, transport = connected(Clock())
    pending = results(protocol.call("PING"))
    protocol.dataReceived(b"?what\r\n")
    assert transport.disconnecting
    protocol.connectionLost()
    assert isinstance(pending[0].value, SharedStateUnavailable)


def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    protocol, transport = connected(Clock())
    protocol.dataReceived(b"+OK\r\n")
    assert transport.disconnecting


class FakePrimitives(Primitives):
    """Records what would go to Redis; answers with ``answer``."""

    def __init__(self, answer: Any = 1) -> None:
        self.ran: list[tuple[str, tuple[Any, ...]]] = []
        self.answer = answer

    def run(self, primitive: Primitive, *args: str | int | float | bytes) -> Deferred[Any]:
        self.ran.append((primitive.name, args))
        return succeed(self.answer)

    def call(self, *args: str | int | float | bytes) -> Deferred[Any]:
        self.ran.append(("call", args))
        # A map read (a user's rooms, their positions) finds nothing in this fake.
        return succeed([] if args[0] == "HGETALL" else self.answer)


class Mind:
    def __init__(self) -> None:
        self.events: list[wire.Frame] = []
        self.ended: list[str] = []

    def deliver(self, event: wire.Frame) -> None:
        self.events.append(event)

    def end_session(self, reason: str) -> None:
        self.ended.append(reason)


def make_node(chat: Chat, directory: RedisDirectory, commands: Any = None) -> ClusterNode:
    """The node around ``chat``, on connections that record what they are asked."""
    accounts, blocks = chat.accounts, chat.blocks
    assert isinstance(accounts, ClusterAccounts) and isinstance(blocks, ClusterBlocks)
    fake: Any = commands or FakeClient()
    return ClusterNode(Clock(), fake, cast(Any, FakeClient()), chat, directory, accounts, blocks)


def node_chat(tmp_path: Path) -> tuple[Chat, FakePrimitives, RedisDirectory]:
    """The core over the Redis seams of node ``a`` (incarnation 1), joined."""
    redis = FakePrimitives("ok")
    file = CredentialsFile(write_credentials(tmp_path / "credentials.txt"), check_hash=check_inline)
    accounts = ClusterAccounts(file, redis, "a", check_inline)
    accounts.load(["hans", "x", "yoda", "y", "luke", "z"])
    directory = RedisDirectory(redis, "a")
    directory.joined(1)
    directory.ready = True
    chat = Chat(
        Clock(),
        accounts,
        ClusterBlocks(redis, "a"),
        RedisMailbox(redis, 100),
        directory,
        RedisPrivateRequests(redis),
        RedisRoomStore(redis),
        RedisHistory(redis, Clock(), 30, 100),
        120,
        60,
        room_limits=RoomLimits(history_days=0),  # messages here are not what is tested
    )
    return chat, redis, directory


def online(chat: Chat, user: str) -> Mind:
    mind = Mind()
    session = chat.login(user, mind)  # type: ignore[arg-type]
    assert not isinstance(session, Deferred) or session.called
    chat.begin(chat.online[user])
    return mind


def test_events_from_other_nodes_reach_the_users_of_this_node(tmp_path: Path) -> None:
    chat, _redis, _ = node_chat(tmp_path)
    hans, yoda = online(chat, "hans"), online(chat, "yoda")
    chat.apply(events.BlockChanged("yoda", "luke", True))
    chat.apply(events.Presence("luke", "b#2", True, 4.0))
    chat.apply(events.DirectMessage("hans", "luke", "hi", 5.0))
    chat.apply(events.Broadcast("luke", "all", 6.0))
    assert hans.events[-3:] == [
        wire.Presence("luke", True),
        wire.Message("luke", "hi", 5.0),
        wire.Broadcast("luke", "all", 6.0),
    ]
    # yoda blocks luke: still sees luke come and go (blocking hides the blocker from
    # the blocked, not the other way), but gets nothing luke sends.
    assert yoda.events[-1] == wire.Presence("luke", True)
    assert chat.others_online("hans") == ["luke", "yoda"]
    chat.apply(events.BlockChanged("luke", "hans", True))
    chat.apply(events.Presence("luke", "b#2", False, 7.0))
    assert hans.events[-1] == wire.Broadcast("luke", "all", 6.0)  # luke hides from hans
    assert chat.others_online("hans") == ["yoda"]
    assert chat.seen_since("yoda", 10**7) == ["hans", "luke"]


def test_a_logout_notice_that_comes_after_the_user_moved_is_old_news(tmp_path: Path) -> None:
    chat, _redis, _ = node_chat(tmp_path)
    hans = online(chat, "hans")
    chat.apply(events.Presence("luke", "c#3", True, 4.0))  # luke now on c
    chat.apply(events.Presence("luke", "b#2", False, 3.0))  # his old session, on b
    assert hans.events[-1] == wire.Presence("luke", True)
    assert "luke" in chat.roster


def test_a_message_blocked_while_it_crossed_between_nodes_is_not_delivered(
    tmp_path: Path,
) -> None:
    chat, _redis, _ = node_chat(tmp_path)
    hans = online(chat, "hans")
    chat.blocks.learned("hans", "luke", True)
    chat.apply(events.DirectMessage("hans", "luke", "sent before the block reached b", 5.0))
    assert not any(isinstance(e, wire.Message) for e in hans.events)


def test_a_message_for_a_user_who_left_goes_back_to_redis(tmp_path: Path) -> None:
    chat, redis, _ = node_chat(tmp_path)
    message = events.DirectMessage("luke", "hans", "are you there", 5.0)
    chat.apply(message)
    assert redis.ran[-1] == ("route", ("luke", events.encode(message), 0, "a"))


def test_a_message_between_two_users_of_one_node_never_waits_on_redis(tmp_path: Path) -> None:
    chat, redis, _ = node_chat(tmp_path)
    online(chat, "hans")
    yoda = online(chat, "yoda")
    redis.ran.clear()
    assert chat.online["hans"].message("yoda", "hi") is None  # done, at once
    assert yoda.events[-1].TYPE == "message"
    assert redis.ran == []


def test_an_account_from_redis_whose_name_could_fool_a_terminal_is_left_out(
    tmp_path: Path,
) -> None:
    chat, _, _ = node_chat(tmp_path)
    accounts = chat.accounts
    assert isinstance(accounts, ClusterAccounts)
    accounts.load(["hans", "x", "evil\x1b[2J", "y", "\u200bhans", "z", "", "w"])
    assert list(accounts.names()) == ["hans"]
    chat.apply(events.AccountAdded("bad\nname", "pw"))
    chat.apply(events.AccountAdded("rey", "pw"))
    assert list(accounts.names()) == ["hans", "rey"]


@pytest.mark.parametrize(
    "fields",
    [
        [[b"e", b'["zz"]']],
        [[b"e", b'["m","hans"]']],
        [[b"e", b'["m",1,"x","y",2.0]']],
        [[b"e", b"not json"]],
        [[b"to", b"hans"]],
    ],
)
def test_a_malformed_or_unknown_inbox_entry_is_logged_and_skipped(
    tmp_path: Path, fields: list[list[bytes]]
) -> None:
    chat, _redis, directory = node_chat(tmp_path)
    hans = online(chat, "hans")
    before = list(hans.events)
    node = make_node(chat, directory)
    flat = [item.decode() for pair in fields for item in pair]
    node._dispatch("1-0", flat)
    assert hans.events == before


class FakeClient:
    """A Redis connection that records each call and answers as a reap of a node with
    nothing left would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self) -> None:
        pass

    def call(self, *args: Any, extra_time: float = 0.0) -> Deferred[Any]:
        self.calls.append(args)
        return succeed([[], 0])


def test_a_node_that_left_takes_its_users_with_it(tmp_path: Path) -> None:
    chat, _redis, directory = node_chat(tmp_path)
    hans = online(chat, "hans")
    chat.apply(events.Presence("luke", "b#2", True, 4.0))
    chat.apply(events.Presence("leia", "c#3", True, 4.0))
    chat.apply(events.Presence("obiwan", "d#9", True, 4.0))  # joined after the answer
    commands = FakeClient()
    node = ClusterNode(Clock(), commands, FakeClient(), chat, directory, chat.accounts, chat.blocks)  # type: ignore[arg-type]
    # The heartbeat's answer: the counter was 5; b expired, c is alive, a is us.
    node._members(5, ["a", 1, 0, "b", 2, 1, "c", 3, 0])
    assert [call[3:] for call in commands.calls] == [("b", "0")]  # b reaped
    assert wire.Presence("luke", False) in hans.events
    assert wire.Presence("leia", False) not in hans.events
    assert sorted(chat.roster) == ["leia", "obiwan"]


def test_a_node_that_has_not_joined_refuses_logins(tmp_path: Path) -> None:
    chat, redis, directory = node_chat(tmp_path)
    directory.ready = False
    with pytest.raises(SharedStateUnavailable):
        chat.require_offline("hans")
    assert redis.ran == []  # not even asked
    directory.ready = True
    assert chat.require_offline("hans") is None  # nobody holds him: no round trip
    assert redis.ran == []
    chat.apply(events.Presence("hans", "b#2", True, 4.0))  # the roster says b has him
    redis.answer = "b"
    asked = chat.require_offline("hans")
    assert isinstance(asked, Deferred)
    assert isinstance(results(asked)[0].value, AlreadyOnline)
    redis.answer = None  # b is gone, and the roster is a heartbeat behind
    asked = chat.require_offline("hans")
    assert isinstance(asked, Deferred)
    assert results(asked) == [None]


def test_losing_redis_ends_every_session_here_with_the_reason(tmp_path: Path) -> None:
    chat, _, _ = node_chat(tmp_path)
    hans = online(chat, "hans")
    chat.end_all("unavailable")
    assert hans.ended == ["unavailable"]
    assert chat.online == {}


def test_a_release_redis_missed_is_retried_unless_the_user_is_back(tmp_path: Path) -> None:
    chat, redis, directory = node_chat(tmp_path)
    online(chat, "hans")
    online(chat, "yoda")
    redis.run = lambda primitive, *args: fail(SharedStateUnavailable())  # type: ignore[method-assign]
    chat.detach(chat.online["hans"], "logout")
    chat.detach(chat.online["yoda"], "logout")
    del redis.run
    online(chat, "yoda")
    redis.ran.clear()
    directory.retry_pending(chat.online)
    assert [(name, args[0]) for name, args in redis.ran] == [("release", "hans")]


def test_a_message_rerouted_while_redis_is_away_is_routed_when_it_is_back(
    tmp_path: Path,
) -> None:
    """A message reached this node for luke just after he left it, and Redis died
    before it took the message back: his sender was told it was sent, so it waits
    here and goes to his mailbox when Redis answers, instead of being dropped."""
    chat, redis, directory = node_chat(tmp_path)
    redis.run = lambda primitive, *args: fail(SharedStateUnavailable())  # type: ignore[method-assign]
    chat.apply(events.DirectMessage("luke", "hans", "kept", 5.0, 0))
    del redis.run
    assert redis.ran == []
    directory.retry_pending(chat.online)
    assert [(name, args[0]) for name, args in redis.ran] == [("route", "luke")]
    redis.ran.clear()
    directory.retry_pending(chat.online)  # once routed, never again
    assert redis.ran == []


def test_node_options(tmp_path: Path) -> None:
    credentials = write_credentials(tmp_path / "credentials.txt")

    def parse(*argv: str) -> Options:
        options = Options()
        options.parseOptions(["--credentials", str(credentials), *argv])
        return options

    options = parse("--redis", "redis://127.0.0.1:6390/1", "--node-id", "east-1")
    assert options["node-id"] == "east-1"
    assert options["redis-address"].db == 1
    generated = parse("--redis", "unix:///tmp/r.sock")["node-id"]
    assert generated != parse("--redis", "unix:///tmp/r.sock")["node-id"]
    for argv in (
        ["--redis", "http://x"],
        ["--redis", "redis://h/0", "--node-id", "a b"],
        ["--redis", "redis://h/0", "--node-id", "x" * 65],
        ["--node-id", "a"],
        ["--redis", "redis://h/0", "--in-memory"],
    ):
        with pytest.raises(usage.UsageError):
            parse(*argv)
    assert node_id("ok_1.2-3") == "ok_1.2-3"


def test_redis_calls_are_timed_and_their_failures_counted() -> None:
    clock = Clock()
    stats = Stats()
    stats.timing = True
    address = RedisAddress.parse("redis://127.0.0.1:1/0")
    protocol = RedisProtocol(clock, address, 2.0, lambda _: None, (), stats)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"+PONG\r\n")  # the sign-in's PING: timed too
    answered = results(protocol.call("GET", "k"))
    clock.advance(0.003)
    protocol.dataReceived(b"$1\r\nv\r\n")
    refused = results(protocol.call("INCR", "k"))
    protocol.dataReceived(b"-ERR value is not an integer\r\n")
    waiting = results(protocol.call("GET", "k"))
    protocol.connectionLost()
    assert answered == ["v"] and isinstance(refused[0].value, RedisError)
    assert isinstance(waiting[0].value, SharedStateUnavailable)
    assert sum(stats.redis_calls.counts) == 3
    assert stats.redis_calls.total >= 0.003
    assert stats.redis_errors == {"error": 1, "unavailable": 1}


def test_a_reserved_account_is_replaced_by_a_usable_one_and_not_the_other_way(
    tmp_path: Path,
) -> None:
    """A node's copy of the accounts: another node's fixed line replaces a reserved
    name; a reservation never replaces a usable account."""
    from tests.harness import verified
    from twisted_chat.server.passwords import RESERVED

    file = CredentialsFile(write_credentials(tmp_path / "credentials.txt"), check_hash=check_inline)
    accounts = ClusterAccounts(file, FakePrimitives("ok"), "a", check_inline)
    accounts.load(["lando", RESERVED, "hans", "solo"])
    assert accounts.exists("lando") and not verified(accounts, "lando", RESERVED)
    accounts.learned("lando", "calrissian")
    assert verified(accounts, "lando", "calrissian")
    accounts.learned("hans", RESERVED)
    assert verified(accounts, "hans", "solo")
