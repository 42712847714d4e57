"""The cluster's pieces without Redis: the connection (StringTransport and a Clock),
the node's handling of inbox events, and the options that make a node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage

from tests.harness import write_credentials
from twisted_chat import wire
from twisted_chat.errors import AlreadyOnline, SharedStateUnavailable
from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.cluster.chat import ClusterChat
from twisted_chat.server.cluster.redis import (
    RedisAddress,
    RedisError,
    RedisProtocol,
    encode_command,
)
from twisted_chat.server.cluster.scripts import Script, Scripts
from twisted_chat.server.cluster.stores import ClusterAccounts, ClusterBlocks, RedisMailbox
from twisted_chat.server.passwords import check_inline
from twisted_chat.server.tap import Options, node_id


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


class FakeScripts(Scripts):
    """Records what would go to Redis; answers with ``answer``."""

    def __init__(self, answer: Any = 1) -> None:
        self.ran: list[tuple[str, tuple[Any, ...]]] = []
        self.answer = answer

    def run(self, script: Script, *args: str | int | float) -> Deferred[Any]:
        self.ran.append((script.name, args))
        d: Deferred[Any] = Deferred()
        d.callback(self.answer)
        return d

    def call(self, *args: str | int | float) -> Deferred[Any]:
        self.ran.append(("call", args))
        d: Deferred[Any] = Deferred()
        d.callback(self.answer)
        return d


class Mind:
    def __init__(self) -> None:
        self.events: list[wire.Frame] = []
        self.ended: list[str] = []

    def deliver(self, event: wire.Frame) -> None:
        self.events.append(event)

    def end_session(self, reason: str) -> None:
        self.ended.append(reason)


def cluster_chat(tmp_path: Path) -> tuple[ClusterChat, FakeScripts]:
    redis = FakeScripts("ok")
    file = CredentialsFile(write_credentials(tmp_path / "credentials.txt"), check_hash=check_inline)
    accounts = ClusterAccounts(file, redis, "a", check_inline)
    accounts.load(["hans", "x", "yoda", "y", "luke", "z"])
    chat = ClusterChat(
        Clock(), accounts, ClusterBlocks(redis), RedisMailbox(redis, 100), redis, "a", 120, 60
    )
    chat.serving = True
    return chat, redis


def online(chat: ClusterChat, user: str) -> Mind:
    mind = Mind()
    chat.login(user, mind)  # type: ignore[arg-type]
    session = chat.online[user]
    chat.begin(session)
    return mind


def test_inbox_events_reach_the_users_of_this_node(tmp_path: Path) -> None:
    chat, _redis = cluster_chat(tmp_path)
    hans, yoda = online(chat, "hans"), online(chat, "yoda")
    chat.on_event(["k", "yoda", "luke", 1])
    chat.on_event(["p", "luke", 1])
    chat.on_event(["m", "hans", "luke", "hi", 5.0])
    chat.on_event(["b", "luke", "all", 6.0])
    assert hans.events == [
        wire.Presence("luke", True),
        wire.Message("luke", "hi", 5.0),
        wire.Broadcast("luke", "all", 6.0),
    ]
    # yoda blocks luke: still sees luke come and go (blocking hides the blocker from
    # the blocked, not the other way), but gets nothing luke sends.
    assert yoda.events == [wire.Presence("luke", True)]
    chat.on_event(["k", "luke", "hans", 1])
    chat.on_event(["p", "luke", 0])
    assert hans.events[-1] == wire.Broadcast("luke", "all", 6.0)  # luke hides from hans


def test_a_message_for_a_user_who_left_goes_back_to_redis(tmp_path: Path) -> None:
    chat, redis = cluster_chat(tmp_path)
    chat.on_event(["m", "luke", "hans", "are you there", 5.0])
    assert redis.ran[-1] == ("redeliver", ("luke", "hans", "are you there", 5.0, "a"))


def test_an_account_from_redis_whose_name_could_fool_a_terminal_is_left_out(
    tmp_path: Path,
) -> None:
    chat, _ = cluster_chat(tmp_path)
    chat.accounts.load(["hans", "x", "evil\x1b[2J", "y", "\u200bhans", "z", "", "w"])
    assert list(chat.accounts.names()) == ["hans"]
    chat.on_event(["a", "bad\nname", "pw"])
    chat.on_event(["a", "rey", "pw"])
    assert list(chat.accounts.names()) == ["hans", "rey"]


@pytest.mark.parametrize(
    "event",
    [
        ["zz"],
        ["m", "hans"],
        ["m", 1, "x", "y", 2.0],
        ["p"],
        ["pa", "hans", "x", "t", "h", "port", "f"],
    ],
)
def test_a_malformed_event_raises_for_the_node_to_skip(tmp_path: Path, event: list[Any]) -> None:
    chat, _ = cluster_chat(tmp_path)
    online(chat, "hans")
    with pytest.raises((ValueError, TypeError, IndexError)):
        chat.on_event(event)


def test_a_node_that_has_not_joined_refuses_logins(tmp_path: Path) -> None:
    chat, redis = cluster_chat(tmp_path)
    chat.serving = False
    refused = results(chat.require_offline("hans"))
    assert isinstance(refused[0].value, SharedStateUnavailable)
    assert redis.ran == []  # not even asked
    chat.serving = True
    redis.answer = None  # HGET chat:online hans: nobody holds him
    assert results(chat.require_offline("hans")) == [None]
    redis.answer = "b"  # held through node b
    assert isinstance(results(chat.require_offline("hans"))[0].value, AlreadyOnline)


def test_losing_redis_ends_every_session_here_with_the_reason(tmp_path: Path) -> None:
    chat, _ = cluster_chat(tmp_path)
    hans = online(chat, "hans")
    chat.end_all("unavailable")
    assert hans.ended == ["unavailable"]
    assert chat.online == {}


def test_a_release_redis_missed_is_retried_unless_the_user_is_back(tmp_path: Path) -> None:
    chat, redis = cluster_chat(tmp_path)
    chat.unreleased.update({"hans", "yoda"})
    online(chat, "yoda")
    redis.ran.clear()
    chat.retry_releases()
    assert redis.ran == [("release", ("hans", "a"))]


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
