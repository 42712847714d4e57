"""Messaging, offline delivery, broadcast and every effect of blocking (spec §6-§8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Connection, Server
from twisted_chat import wire


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, "--timeout", "3600", "--mailbox-limit", "5")


Users = dict[str, Connection]


def texts(events: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(e["sender"], e["text"]) for e in events if e["type"] in ("message", "broadcast")]


# --- message ------------------------------------------------------------------------


def test_message_to_an_online_user_arrives_at_once(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    assert users["hans"].send("message", to="yoda", text="Hey Dude") == {
        "type": "ok",
        "id": 4,
        "stored": False,
        "msgid": 1,  # its place in hans and yoda's history
    }
    (event,) = users["yoda"].events()
    assert event["type"] == "message"
    assert (event["sender"], event["text"], event["stored"]) == ("hans", "Hey Dude", False)
    assert event["sent"] == server.clock.seconds()


@pytest.mark.parametrize("text", ["héllo wörld", "你好 世界", "🎉🚀 emoji", "tab\there"])
def test_any_unicode_text_is_delivered_intact(server: Server, text: str) -> None:
    users = server.everyone("hans", "yoda")
    users["hans"].send("message", to="yoda", text=text)
    assert texts(users["yoda"].events()) == [("hans", text)]


def test_text_at_the_limit_is_fine_and_over_it_is_refused_not_cut(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    limit = wire.MAX_TEXT_CHARS
    assert users["hans"].send("message", to="yoda", text="中" * limit)["type"] == "ok"
    reply = users["hans"].send("message", to="yoda", text="中" * (limit + 1))
    assert reply["code"] == "text-too-long"
    assert f"limit is {limit}" in reply["text"]
    assert texts(users["yoda"].events()) == [("hans", "中" * limit)]


@pytest.mark.parametrize(
    ("to", "text", "code"),
    [("bob", "party time", "no-such-user"), ("hans", "me", "self"), ("yoda", "   ", "empty-text")],
)
def test_message_errors(server: Server, to: str, text: str, code: str) -> None:
    users = server.everyone("hans", "yoda")
    reply = users["hans"].send("message", to=to, text=text)
    assert reply["code"] == code
    assert reply["text"].startswith("Error.")
    assert users["yoda"].events() == []


def test_the_senders_own_blocks_do_not_stop_their_messages(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    users["hans"].send("block", user="yoda")
    assert users["hans"].send("message", to="yoda", text="still")["type"] == "ok"
    assert texts(users["yoda"].events()) == [("hans", "still")]


# --- offline delivery ---------------------------------------------------------------


def test_offline_messages_arrive_after_the_welcome_in_order_with_times(server: Server) -> None:
    hans = server.online("hans")
    for n in range(3):
        server.advance(10)
        assert hans.send("message", to="luke", text=f"m{n}")["stored"] is True
    sent_times = [server.clock.seconds() - 20, server.clock.seconds() - 10, server.clock.seconds()]
    luke = server.connect()
    luke.hello()
    luke.send("login", user="luke")
    welcome = luke.send("password", password="=hope+")
    assert welcome["type"] == "ok"
    events = luke.events()
    assert [(e["text"], e["stored"], e["sent"]) for e in events[:3]] == [
        ("m0", True, sent_times[0]),
        ("m1", True, sent_times[1]),
        ("m2", True, sent_times[2]),
    ]
    keys = [e["key"] for e in events[:3]]
    assert keys == sorted(keys)
    assert events[3] == {"type": "stored-done", "upto": keys[-1], "count": 3}


def acknowledge(connection: Connection, events: list[dict[str, object]]) -> None:
    done = [e for e in events if e["type"] == "stored-done"]
    assert connection.send("received", upto=done[-1]["upto"])["type"] == "ok"


def test_acknowledged_offline_messages_are_delivered_once(server: Server) -> None:
    server.online("hans").send("message", to="luke", text="once")
    luke = server.online("luke")
    events = luke.events()
    assert texts(events) == [("hans", "once")]
    acknowledge(luke, events)
    luke.send("logout")
    assert texts(server.online("luke").events()) == []


def test_unacknowledged_offline_messages_come_again_at_the_next_login(server: Server) -> None:
    server.online("hans").send("message", to="luke", text="did you get this?")
    luke = server.online("luke")
    assert texts(luke.events()) == [("hans", "did you get this?")]
    luke.close()  # dropped before acknowledging: written to a socket is not received
    again = server.online("luke")
    events = again.events()
    assert texts(events) == [("hans", "did you get this?")]
    acknowledge(again, events)
    again.send("logout")
    assert texts(server.online("luke").events()) == []


def test_a_received_frame_forgets_only_what_was_sent(server: Server) -> None:
    luke = server.online("luke")
    assert luke.send("received", upto=10**9)["type"] == "ok"  # nothing to forget


def test_messages_to_a_new_account_created_this_run_are_kept(server: Server) -> None:
    jaba = server.connect()
    jaba.login("jaba", "hutt")
    jaba.send("logout")
    assert server.online("hans").send("message", to="jaba", text="pay up")["stored"] is True


def test_a_full_offline_queue_tells_the_sender_and_drops_nothing(server: Server) -> None:
    hans = server.online("hans")
    for n in range(5):
        assert hans.send("message", to="luke", text=f"m{n}")["stored"] is True
    reply = hans.send("message", to="luke", text="one too many")
    assert reply["code"] == "queue-full"
    assert "was not stored" in reply["text"]
    luke = server.online("luke")
    events = luke.events()
    assert [t for _, t in texts(events)] == [f"m{n}" for n in range(5)]
    acknowledge(luke, events)
    luke.send("logout")
    assert hans.send("message", to="luke", text="room again")["stored"] is True


def test_broadcasts_are_never_stored(server: Server) -> None:
    server.online("hans").send("broadcast", text="anyone?")
    assert texts(server.online("luke").events()) == []


# --- broadcast ---------------------------------------------------------------------


def test_broadcast_reaches_everyone_else_online(server: Server) -> None:
    users = server.everyone("hans", "yoda", "luke")
    assert users["hans"].send("broadcast", text="vader is evil")["skipped"] is False
    assert texts(users["yoda"].events()) == [("hans", "vader is evil")]
    assert texts(users["luke"].events()) == [("hans", "vader is evil")]
    assert texts(users["hans"].events()) == []


def test_broadcast_errors(server: Server) -> None:
    hans = server.online("hans")
    assert hans.send("broadcast", text="")["code"] == "empty-text"
    assert hans.send("broadcast", text="x" * 1001)["code"] == "text-too-long"


# --- the blacklist matrix (§7): A = luke has blocked B = hans --------------------------


@pytest.fixture
def blocked(server: Server) -> Users:
    users = server.everyone("hans", "yoda", "luke")
    assert users["luke"].send("block", user="hans")["type"] == "ok"
    return users


def test_b_cannot_message_a_and_nothing_is_stored(server: Server, blocked: Users) -> None:
    reply = blocked["hans"].send("message", to="luke", text="You angry?")
    assert reply["code"] == "blocked"
    assert "blocked you" in reply["text"]
    assert blocked["luke"].events() == []
    blocked["luke"].send("logout")
    assert blocked["hans"].send("message", to="luke", text="offline?")["code"] == "blocked"
    assert texts(server.online("luke").events()) == []


def test_b_broadcast_skips_a_and_says_some_were_skipped(blocked: Users) -> None:
    reply = blocked["hans"].send("broadcast", text="I travel solo")
    assert reply["skipped"] is True
    assert texts(blocked["yoda"].events()) == [("hans", "I travel solo")]
    assert blocked["luke"].events() == []


def test_b_does_not_see_a_log_in_or_out(server: Server, blocked: Users) -> None:
    blocked["luke"].send("logout")
    assert blocked["hans"].events() == []
    assert blocked["yoda"].events() == [{"type": "presence", "user": "luke", "online": False}]
    server.online("luke")
    assert blocked["hans"].events() == []
    assert blocked["yoda"].events() == [{"type": "presence", "user": "luke", "online": True}]


def test_a_is_hidden_from_b_in_whoelse_and_whoelsesince(server: Server, blocked: Users) -> None:
    assert blocked["hans"].send("whoelse")["users"] == ["yoda"]
    blocked["luke"].send("logout")
    assert blocked["hans"].send("whoelsesince", seconds=100)["users"] == ["yoda"]
    assert blocked["yoda"].send("whoelsesince", seconds=100)["users"] == ["hans", "luke"]


def test_b_cannot_start_a_private_chat_and_a_is_not_asked(blocked: Users) -> None:
    blocked["luke"].send("listening", port=4000)
    reply = blocked["hans"].send("startprivate", user="luke")
    assert reply["code"] == "blocked"
    assert blocked["luke"].events() == []


def test_a_can_still_reach_b_and_see_b(blocked: Users) -> None:
    assert blocked["luke"].send("message", to="hans", text="I can")["stored"] is False
    assert texts(blocked["hans"].events()) == [("luke", "I can")]
    assert blocked["luke"].send("broadcast", text="all")["skipped"] is False
    assert texts(blocked["hans"].events()) == [("luke", "all")]
    assert blocked["luke"].send("whoelse")["users"] == ["hans", "yoda"]
    blocked["hans"].send("logout")
    assert blocked["luke"].events() == [{"type": "presence", "user": "hans", "online": False}]


def test_b_is_never_told_of_the_block(blocked: Users) -> None:
    assert blocked["hans"].events() == []


def test_unblocking_restores_everything(server: Server, blocked: Users) -> None:
    assert blocked["luke"].send("unblock", user="hans")["type"] == "ok"
    assert blocked["hans"].send("message", to="luke", text="friends?")["type"] == "ok"
    assert blocked["hans"].send("broadcast", text="jedis are cool")["skipped"] is False
    assert texts(blocked["luke"].events()) == [("hans", "friends?"), ("hans", "jedis are cool")]
    assert blocked["hans"].send("whoelse")["users"] == ["luke", "yoda"]
    blocked["luke"].send("logout")
    assert blocked["hans"].events()[-1] == {"type": "presence", "user": "luke", "online": False}


def test_blocking_works_whether_the_target_is_online_or_not(server: Server) -> None:
    luke = server.online("luke")
    assert luke.send("block", user="vader")["type"] == "ok"
    vader = server.online("vader")
    assert vader.send("message", to="luke", text="join me")["code"] == "blocked"


@pytest.mark.parametrize(
    ("command", "user", "code", "text"),
    [
        ("block", "luke", "self", "Error. Cannot block self."),
        ("block", "bob", "no-such-user", "Error. bob is not a user."),
        ("unblock", "luke", "self", "Error. Cannot unblock self."),
        ("unblock", "yoda", "not-blocked", "Error. yoda was not blocked."),
        ("unblock", "bob", "no-such-user", "Error. bob is not a user."),
    ],
)
def test_block_errors(server: Server, command: str, user: str, code: str, text: str) -> None:
    luke = server.online("luke")
    reply = luke.send(command, user=user)
    assert (reply["code"], reply["text"]) == (code, text)


def test_blocking_twice_is_an_error(server: Server) -> None:
    luke = server.online("luke")
    luke.send("block", user="hans")
    reply = luke.send("block", user="hans")
    assert (reply["code"], reply["text"]) == ("already-blocked", "Error. hans is already blocked.")


def test_a_user_may_block_many(server: Server) -> None:
    users = server.everyone("luke", "hans", "yoda", "vader")
    for user in ("hans", "yoda"):
        users["luke"].send("block", user=user)
    assert users["vader"].send("whoelse")["users"] == ["hans", "luke", "yoda"]
    assert users["hans"].send("whoelse")["users"] == ["vader", "yoda"]
    assert users["yoda"].send("whoelse")["users"] == ["hans", "vader"]
