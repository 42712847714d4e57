"""Presence, whoelse, whoelsesince, logout and the idle timeout (spec §4-§6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import HANDOUT_USERS, Server
from twisted_chat import wire

TIMEOUT = 120.0


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, "--timeout", str(TIMEOUT))


def presence(user: str, online: bool) -> dict[str, object]:
    return {"type": "presence", "user": user, "online": online}


def test_others_see_logins_and_logouts_but_not_their_own(server: Server) -> None:
    hans = server.online("hans")
    yoda = server.online("yoda")
    assert hans.events() == [presence("yoda", True)]
    assert yoda.events() == []
    yoda.send("logout")
    assert yoda.lost
    assert hans.events() == [presence("yoda", False)]


def test_a_dropped_connection_is_a_logout(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    users["yoda"].close()
    assert users["hans"].events() == [presence("yoda", False)]
    assert not server.chat.is_online("yoda")


def test_whoelse_lists_the_others(server: Server) -> None:
    users = server.everyone("hans", "yoda", "luke")
    assert users["hans"].send("whoelse")["users"] == ["luke", "yoda"]
    users["luke"].send("logout")
    assert users["hans"].send("whoelse")["users"] == ["yoda"]


def test_whoelse_alone(server: Server) -> None:
    assert server.online("hans").send("whoelse")["users"] == []


def test_whoelsesince_matches_sample_e5(tmp_path: Path) -> None:
    # r2d2 in 600 s ago and out 300 s ago; vader in 300 s ago and out 120 s ago.
    server = Server(tmp_path, "--timeout", "3600")
    r2d2 = server.online("r2d2")
    server.advance(300)
    vader = server.online("vader")
    r2d2.send("logout")
    server.advance(180)
    vader.send("logout")
    users = server.everyone("hans", "yoda", "luke")
    server.advance(120)
    assert users["luke"].send("whoelsesince", seconds=200)["users"] == ["hans", "vader", "yoda"]
    assert users["yoda"].send("whoelsesince", seconds=500)["users"] == [
        "hans",
        "luke",
        "r2d2",
        "vader",
    ]


def test_whoelsesince_window_edges(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    users["yoda"].send("logout")
    server.advance(10)
    assert users["hans"].send("whoelsesince", seconds=10)["users"] == ["yoda"]
    assert users["hans"].send("whoelsesince", seconds=9)["users"] == []
    assert users["hans"].send("whoelsesince", seconds=0)["users"] == []


def test_whoelsesince_beyond_uptime_lists_everyone_this_run(server: Server) -> None:
    users = server.everyone("hans", "leia")
    users["leia"].send("logout")
    server.advance(5)
    assert users["hans"].send("whoelsesince", seconds=10**9)["users"] == ["leia"]


def test_whoelsesince_rejects_bad_arguments(server: Server) -> None:
    hans = server.online("hans")
    assert hans.send("whoelsesince", seconds=-1)["code"] == "bad-argument"
    assert hans.send("whoelsesince", seconds="ten")["code"] == "bad-frame"
    assert hans.send("whoelsesince")["code"] == "bad-frame"


def test_idle_user_is_logged_out_at_the_timeout_and_others_are_told(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    server.advance(TIMEOUT / 2)
    users["yoda"].send("whoelse")  # yoda stays active; hans does not
    server.advance(TIMEOUT / 2 - 0.01)
    assert server.chat.is_online("hans")
    assert users["yoda"].events() == []
    server.advance(0.01)
    assert users["hans"].events() == [
        {"type": "idle-warning", "seconds": 10.0},  # at timeout - 10 s
        {"type": "logged-out", "reason": "timeout"},
    ]
    assert users["hans"].lost
    assert users["yoda"].events() == [presence("hans", False)]


def test_valid_commands_reset_the_idle_timer(server: Server) -> None:
    hans = server.online("hans")
    server.advance(TIMEOUT - 1)
    hans.send("whoelse")
    server.advance(TIMEOUT - 1)
    assert server.chat.is_online("hans")
    server.advance(1)
    assert not server.chat.is_online("hans")


def test_invalid_commands_and_pings_do_not_count_as_activity(server: Server) -> None:
    hans = server.online("hans")
    server.advance(TIMEOUT - 1)
    hans.send("frobnicate")
    hans.send("whoelsesince", seconds=-5)
    hans.send_raw(b"not json\n")
    hans.send("ping")
    server.advance(1)
    assert not server.chat.is_online("hans")


def test_activity_frames_count(server: Server) -> None:
    hans = server.online("hans")
    server.advance(TIMEOUT - 1)
    assert hans.send("activity")["type"] == "ok"
    server.advance(TIMEOUT - 1)
    assert server.chat.is_online("hans")


def test_logout_then_login_again(server: Server) -> None:
    hans = server.online("hans")
    assert hans.send("logout")["type"] == "ok"
    assert hans.lost
    assert server.online("hans").send("whoelse")["type"] == "ok"


def test_no_timer_is_left_after_everyone_leaves(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    users["hans"].send("logout")
    users["yoda"].close()
    assert server.clock.getDelayedCalls() == []


def test_stopping_the_server_ends_every_session(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    server.chat.stop()
    for user in ("hans", "yoda"):
        assert users[user].events()[-1] == {"type": "logged-out", "reason": "shutdown"}
        assert users[user].lost
    assert server.clock.getDelayedCalls() == []


def test_shutdown_sends_each_user_one_event_and_no_presence(server: Server) -> None:
    everyone = ("hans", "yoda", "vader", "luke", "leia", "chewy")
    users = server.everyone(*everyone)
    users["luke"].send("block", user="vader")
    users["luke"].events()
    server.chat.stop()
    for user in everyone:
        assert users[user].events() == [{"type": "logged-out", "reason": "shutdown"}]
        assert users[user].lost
    assert server.chat.online == {}
    assert server.clock.getDelayedCalls() == []


def test_accounts_lists_names_online_and_blocked_and_is_bounded(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = server.everyone("hans", "yoda", "vader")
    users["hans"].send("block", user="vader")
    users["vader"].send("block", user="hans")  # vader hides from hans
    reply = users["hans"].send("accounts")
    assert reply["users"] == sorted(HANDOUT_USERS) and reply["truncated"] is False
    assert reply["online"] == ["yoda"]
    assert reply["blocked"] == ["vader"]
    monkeypatch.setattr(wire, "MAX_ACCOUNT_NAMES", 3)
    bounded = users["yoda"].send("accounts")
    assert bounded["users"] == sorted(HANDOUT_USERS)[:3] and bounded["truncated"] is True


def test_an_idle_warning_comes_ten_seconds_before_and_activity_cancels_it(server: Server) -> None:
    hans = server.online("hans")
    server.advance(TIMEOUT - 10 - 0.01)
    assert hans.events() == []
    server.advance(0.01)
    assert hans.events() == [{"type": "idle-warning", "seconds": 10.0}]
    hans.send("whoelse")  # the user is back: a whole timeout again
    server.advance(TIMEOUT - 10 - 0.01)
    assert hans.events() == [] and server.chat.is_online("hans")
    server.advance(10.01)
    assert hans.events() == [{"type": "idle-warning", "seconds": 10.0}]
    server.advance(10)
    assert not server.chat.is_online("hans")


def test_no_warning_when_the_timeout_is_too_short_for_one(tmp_path: Path) -> None:
    server = Server(tmp_path, "--timeout", "15")
    hans = server.online("hans")
    server.advance(15)
    assert hans.events() == [{"type": "logged-out", "reason": "timeout"}]
