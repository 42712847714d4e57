"""Every limit, on a Clock: flood control that slows before it disconnects, the cap on
unread output, liveness, connection limits, the login deadline and budget, and
security events logged without secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent

from tests.harness import Connection, Server
from tests.logcapture import log_events
from twisted_chat.server.addresses import group_of
from twisted_chat.server.limits import TokenBucket


def test_token_bucket_bursts_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(clock, burst=3, rate=2.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take() and not bucket.take()
    clock.advance(10)
    assert bucket.full


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(
        tmp_path,
        "--timeout",
        "3600",
        "--flood-burst",
        "5",
        "--flood-rate",
        "2",
        "--flood-disconnect",
        "10",
    )


def lines(n: int, start: int = 100) -> bytes:
    return b"".join(
        json.dumps({"type": "whoelse", "id": i}).encode() + b"\n" for i in range(start, start + n)
    )


def replies(connection: Connection) -> list[int]:
    return [f["id"] for f in connection.received() if f.get("type") == "ok" and "id" in f]


def test_a_burst_is_served_then_the_flooder_is_slowed_not_dropped(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    hans, yoda = users["hans"], users["yoda"]
    server.advance(5)  # logging in spent tokens; start from a full bucket
    hans.protocol.dataReceived(lines(12))
    assert replies(hans) == list(range(100, 105))  # the burst of 5
    assert hans.protocol.paused  # reading from hans stops: TCP pushes back on him only
    assert yoda.send("whoelse")["users"] == ["hans"]  # others are not slowed at all
    server.advance(0.5)
    assert replies(hans) == [105]  # then 2 a second
    server.advance(3)
    assert replies(hans) == [106, 107, 108, 109, 110, 111]
    assert not hans.protocol.paused and not hans.lost


def test_a_short_burst_then_calm_is_never_punished(server: Server) -> None:
    hans = server.online("hans")
    for round_ in range(5):
        hans.protocol.dataReceived(lines(8, start=round_ * 100))
        server.advance(10)  # a pause long enough to refill the bucket
        assert len(replies(hans)) == 8
    assert not hans.lost


def test_sustained_flooding_disconnects_with_a_reason(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    hans, yoda = users["hans"], users["yoda"]
    for second in range(15):
        if hans.lost:
            break
        hans.protocol.dataReceived(lines(10, start=second * 100))
        server.advance(1)
        hans.received()
    assert hans.lost
    assert {"type": "presence", "user": "hans", "online": False} in yoda.events()


def test_the_flood_disconnect_reason_is_sent(server: Server) -> None:
    hans = server.online("hans")
    frames = []
    for second in range(15):
        hans.protocol.dataReceived(lines(10, start=second * 100))
        server.advance(1)
        frames += hans.received()
        if hans.lost:
            break
    assert frames[-1] == {"type": "logged-out", "reason": "flood"}


def test_a_reader_that_stops_reading_is_dropped_past_the_cap(tmp_path: Path) -> None:
    server = Server(tmp_path, "--output-cap", "4096", "--timeout", "3600")
    users = server.everyone("hans", "yoda")
    hans, yoda = users["hans"], users["yoda"]
    yoda.gate().pauseProducing()  # yoda's socket buffer is full: he stopped reading
    sent = 0
    while not yoda.transport.disconnecting:
        hans.send("message", to="yoda", text="x" * 900)
        sent += 1
        assert sent < 20
    assert sent == 5  # 4 KiB past the transport's own buffer, then out
    yoda.close()  # the reactor would now report the aborted connection
    assert {"type": "presence", "user": "yoda", "online": False} in hans.events()
    assert hans.send("message", to="yoda", text="later")["stored"] is True


def test_a_reader_that_catches_up_is_kept(tmp_path: Path) -> None:
    server = Server(tmp_path, "--output-cap", "4096", "--timeout", "3600")
    users = server.everyone("hans", "yoda")
    gate = users["yoda"].gate()
    for _ in range(10):
        gate.pauseProducing()
        users["hans"].send("message", to="yoda", text="x" * 900)
        gate.resumeProducing()  # drained again: the count starts over
        server.advance(1)  # (and hans stays under the flood limit)
    assert not users["yoda"].transport.disconnecting


def test_a_silent_client_is_pinged_then_dropped(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    hans = users["hans"]
    hans.transport.answer_pings = False  # hans's machine vanished (half-open connection)
    server.advance(30)
    assert b'{"type":"ping"}' in hans.transport.value()
    server.advance(59)
    assert not hans.transport.disconnecting
    server.advance(1)
    assert hans.transport.disconnecting
    hans.close()
    assert {"type": "presence", "user": "hans", "online": False} in users["yoda"].events()
    assert users["yoda"].send("message", to="hans", text="you there?")["stored"] is True


def test_a_client_that_answers_pings_stays(server: Server) -> None:
    hans = server.online("hans")
    server.advance(600)
    assert server.chat.is_online("hans") and not hans.lost


def test_login_must_finish_in_time(server: Server) -> None:
    slow = server.connect()
    slow.hello()
    server.advance(59)
    assert not slow.transport.disconnecting
    server.advance(1)
    assert slow.received()[-1]["code"] == "login-timeout"
    assert slow.lost
    quick = server.online("hans")
    server.advance(120)
    assert not quick.lost


@pytest.mark.parametrize("deadline", [12.5, 45.0, 75.0])
def test_the_login_deadline_holds_between_liveness_checks(tmp_path: Path, deadline: float) -> None:
    # The deadline shares the liveness timer (pings every 30 s): it must still fire at
    # its own time, before, between or after the checks.
    server = Server(tmp_path, "--login-timeout", str(deadline))
    slow = server.connect()
    slow.hello()
    server.advance(deadline - 0.5)
    assert not slow.transport.disconnecting
    server.advance(0.5)
    assert slow.received()[-1]["code"] == "login-timeout"
    assert slow.lost


def test_a_connection_that_says_nothing_is_dropped_at_the_hello_deadline(
    tmp_path: Path,
) -> None:
    """Not even a first frame (over TLS: not even a handshake, so no error frame could
    reach it): dropped without a word, its count against its address with it."""
    server = Server(tmp_path, "--hello-timeout", "4")
    with log_events() as events:
        silent = server.connect()
        talker = server.connect()
        talker.hello()
        server.advance(3.5)
        assert not silent.transport.disconnecting
        server.advance(0.5)
        assert silent.transport.disconnected and silent.transport.value() == b""  # aborted
    assert not talker.transport.disconnecting  # it said hello: the login deadline is its own
    (dropped,) = [e for e in events if e.get("security_event") == "no-hello"]
    assert formatEvent(dropped) == "dropping 127.0.0.1: no first frame in 4s"


def test_a_connection_the_server_closed_is_aborted_if_its_peer_never_lets_go(
    server: Server,
) -> None:
    """A TLS close waits for the peer's answer: one that never comes must not keep the
    connection, and its count against its address, for ever."""
    slow = server.connect()
    slow.hello()
    server.advance(60)
    assert slow.transport.disconnecting and not slow.transport.disconnected  # closing
    server.advance(4.9)
    assert not slow.transport.disconnected
    server.advance(0.1)
    assert slow.transport.disconnected  # aborted


def test_frames_before_login_are_limited(tmp_path: Path) -> None:
    server = Server(tmp_path, "--login-frames", "6", "--flood-burst", "100")
    guesser = server.connect()
    guesser.hello()
    for name in ("a b", "c d", "e f", "g h", "i j"):
        assert guesser.send("login", user=name)["code"] == "invalid-username"
    assert guesser.send("login", user="k l")["code"] == "too-many-attempts"
    assert guesser.lost


def test_connection_limits(tmp_path: Path) -> None:
    server = Server(tmp_path, "--max-connections", "3", "--max-per-ip", "5")
    first = server.connect()
    server.connect()
    server.connect()
    refused = server.connect()
    assert refused.received() == [
        {"type": "error", "code": "refused", "text": "The server is full. Try again later."}
    ]
    assert refused.lost
    first.close()
    assert server.connect().hello()["type"] == "ok"


def test_per_address_limit_applies_to_loopback_too(tmp_path: Path) -> None:
    # On a shared machine every local user is 127.0.0.1: no exemption by default.
    server = Server(tmp_path, "--max-per-ip", "2")
    server.connect()
    server.connect()
    assert server.connect().received() == [
        {"type": "error", "code": "refused", "text": "Too many connections from 127.0.0.0/24."}
    ]
    first = server.connect("203.0.113.9")
    server.connect("203.0.113.77")  # the same /24: one network
    third = server.connect("203.0.113.9")
    assert third.received() == [
        {"type": "error", "code": "refused", "text": "Too many connections from 203.0.113.0/24."}
    ]
    assert third.lost
    assert server.connect("198.51.100.7").hello()["type"] == "ok"  # other addresses: fine
    first.close()
    assert server.connect("203.0.113.9").hello()["type"] == "ok"  # room again


def test_sixteen_silent_connections_from_one_address_leave_room_for_others(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)  # the default: 16 per address
    hoarded = [server.connect("203.0.113.9") for _ in range(16)]
    assert all(not c.lost for c in hoarded)
    assert server.connect("203.0.113.9").received()[0]["code"] == "refused"
    assert server.online("hans").send("whoelse")["type"] == "ok"  # from another address


def test_many_connections_opened_and_closed_leave_nothing_behind(server: Server) -> None:
    for _ in range(2000):
        connection = server.connect()
        connection.close()
    assert server.factory.connections.total == 0
    assert server.clock.getDelayedCalls() == []


def test_security_events_are_structured_and_keep_secrets_out(server: Server) -> None:
    with log_events() as events:
        for wrong in ("s3cret-1", "s3cret-2", "s3cret-3"):
            connection = server.connect()
            connection.login("yoda", wrong)
        hans = server.online("hans")
        hans.send("message", to="luke", text="the body of a message")
        for second in range(15):
            hans.protocol.dataReceived(lines(10, start=second * 100))
            server.advance(1)
            hans.received()
    warnings = [e for e in events if e.get("log_level", LogLevel.debug) >= LogLevel.warn]
    kinds = {e.get("security_event") for e in warnings}
    assert {"lockout", "flood"} <= kinds
    everything = " ".join(formatEvent(e) + repr(sorted(map(str, e.values()))) for e in events)
    assert "s3cret" not in everything and "wise@!man" not in everything
    assert "the body of a message" not in everything


def test_addresses_count_under_their_network() -> None:
    assert group_of("203.0.113.9") == group_of("203.0.113.200") == "203.0.113.0/24"
    assert group_of("203.0.114.9") != group_of("203.0.113.9")
    assert group_of("2001:db8:1:2::1") == group_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert group_of("::ffff:203.0.113.9") == "203.0.113.0/24"  # an IPv4 client on IPv6
    assert group_of("203.0.113.9", v4_prefix=32) == "203.0.113.9/32"
    assert group_of(None) == "local"


def new_account(server: Server, user: str, host: str) -> dict[str, Any]:
    connection = Connection(server, 40000, host)
    connection.hello()
    return connection.send("login", user=user)


def test_new_accounts_are_made_at_a_bounded_rate_per_network(tmp_path: Path) -> None:
    """One address made 8,899 accounts in 20 s; now a network makes five at once, then
    one a minute, and logins of existing users are never held up by it."""
    server = Server(tmp_path)
    for n in range(5):
        assert new_account(server, f"bot{n}", f"198.51.100.{n + 1}")["account"] == "new"
    with log_events() as events:
        refused = new_account(server, "bot5", "198.51.100.77")
    assert refused["code"] == "too-many-new-accounts"
    assert "try again in 1 minute(s)" in refused["text"]
    assert [e for e in events if e.get("security_event") == "new-account-flood"]
    assert new_account(server, "other", "198.51.101.1")["account"] == "new"  # next network
    assert Connection(server, 40001, "198.51.100.77").login("hans")["type"] == "ok"
    server.advance(60)
    assert new_account(server, "bot5", "198.51.100.77")["account"] == "new"


def test_new_accounts_are_bounded_in_all_too(tmp_path: Path) -> None:
    server = Server(tmp_path, "--new-accounts-total-burst", "3")
    for n in range(3):
        assert new_account(server, f"bot{n}", f"198.51.{n}.1")["account"] == "new"
    assert new_account(server, "bot3", "198.51.9.1")["code"] == "too-many-new-accounts"
    server.advance(1)
    assert new_account(server, "bot3", "198.51.9.1")["account"] == "new"
