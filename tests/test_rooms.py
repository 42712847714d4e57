"""Rooms and history through the real protocols (the harness): joining, speaking,
leaving; what a member missed, sent once at login; history, since joining, paged;
blocks everywhere; the operator's limits; and what a version-2 client is spared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Connection, Server


def v3(server: Server, *users: str) -> dict[str, Connection]:
    return server.everyone(*users, version=3)


def of(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


def join(connection: Connection, room: str) -> dict[str, Any]:
    reply = connection.send("join", room=room)
    assert reply["type"] == "ok", reply
    return reply


FAST = ("--flood-burst", "1000", "--flood-rate", "1000")
"""Flood limits out of the way: these tests send dozens of frames in one go."""


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, *FAST)


def test_a_room_is_made_by_joining_and_its_members_hear_each_other(server: Server) -> None:
    users = v3(server, "hans", "yoda", "luke")
    made = join(users["hans"], "#general")
    assert (made["room"], made["created"], made["members"]) == ("#general", True, 1)
    again = join(users["yoda"], "#general")
    assert (again["created"], again["members"]) == (False, 2)
    assert of(users["hans"].events(), "room-member") == [
        {"type": "room-member", "room": "#general", "user": "yoda", "joined": True}
    ]
    sent = users["hans"].send("message", to="#general", text="hello room")
    assert sent["type"] == "ok" and sent["msgid"] == 1
    (heard,) = of(users["yoda"].events(), "room-message")
    assert (heard["room"], heard["sender"], heard["text"], heard["msgid"]) == (
        "#general",
        "hans",
        "hello room",
        1,
    )
    assert of(users["hans"].events(), "room-message") == []  # no echo to its sender
    assert of(users["luke"].events(), "room-message") == []  # not a member
    refused = users["luke"].send("message", to="#general", text="let me in")
    assert refused["code"] == "not-a-member"
    assert users["yoda"].send("leave", room="#general")["type"] == "ok"
    assert of(users["hans"].events(), "room-member")[-1]["joined"] is False
    assert users["yoda"].send("leave", room="#general")["code"] == "not-a-member"


def test_what_a_member_missed_is_sent_once_at_login(server: Server) -> None:
    users = v3(server, "hans", "yoda")
    join(users["hans"], "#r")
    join(users["yoda"], "#r")
    users["yoda"].send("logout")
    users["yoda"].close()
    for n in range(3):
        users["hans"].send("message", to="#r", text=f"while away {n}")
    server.advance(2)  # positions saved meanwhile (a second apart)
    yoda = server.online("yoda", version=3)
    replay = of(yoda.events(), "room-message")
    assert [(m["text"], m["replay"]) for m in replay] == [
        (f"while away {n}", True) for n in range(3)
    ]
    server.advance(2)
    yoda.send("logout")
    yoda.close()
    again = server.online("yoda", version=3)
    assert of(again.events(), "room-message") == []  # exactly once
    assert of(again.events(), "room-replayed") == []


def test_at_most_the_replay_limit_a_room_then_how_many_more(server: Server) -> None:
    users = v3(server, "hans", "yoda")
    join(users["hans"], "#busy")
    join(users["yoda"], "#busy")
    users["yoda"].send("logout")
    users["yoda"].close()
    for n in range(60):
        users["hans"].send("message", to="#busy", text=f"m{n}")
    yoda = server.online("yoda", version=3)
    frames = yoda.events()
    assert [m["text"] for m in of(frames, "room-message")] == [f"m{n}" for n in range(50)]
    assert of(frames, "room-replayed") == [
        {"type": "room-replayed", "room": "#busy", "shown": 50, "more": 10}
    ]
    rooms = yoda.send("rooms")["rooms"]
    assert rooms == [{"room": "#busy", "members": 2, "unread": 10}]


def test_history_between_two_users_both_ways_and_paged(server: Server) -> None:
    users = v3(server, "hans", "yoda")
    for n in range(5):
        sender, to = ("hans", "yoda") if n % 2 == 0 else ("yoda", "hans")
        assert users[sender].send("message", to=to, text=f"m{n}")["msgid"] == n + 1
    last3 = users["hans"].send("history", target="yoda", limit=3)
    assert [(m["sender"], m["text"]) for m in last3["messages"]] == [
        ("hans", "m2"),
        ("yoda", "m3"),
        ("hans", "m4"),
    ]
    assert last3["more"] is True
    earlier = users["yoda"].send("history", target="hans", limit=3, before=3)
    assert [m["text"] for m in earlier["messages"]] == ["m0", "m1"]
    assert earlier["more"] is False
    # The live message carried the same msgid: a client shows each once.
    (live,) = [m for m in of(users["yoda"].events(), "message") if m["text"] == "m4"]
    assert live["msgid"] == 5


def test_a_room_s_history_starts_when_you_joined(server: Server) -> None:
    users = v3(server, "hans", "yoda")
    join(users["hans"], "#r")
    users["hans"].send("message", to="#r", text="before yoda")
    join(users["yoda"], "#r")
    users["hans"].send("message", to="#r", text="after yoda")
    seen = users["yoda"].send("history", target="#r")
    assert [m["text"] for m in seen["messages"]] == ["after yoda"]
    assert seen["more"] is False
    assert [m["text"] for m in users["hans"].send("history", target="#r")["messages"]] == [
        "before yoda",
        "after yoda",
    ]
    assert users["yoda"].send("history", target="#elsewhere")["code"] == "not-a-member"


def test_a_block_holds_in_rooms_live_replayed_and_in_history(server: Server) -> None:
    users = v3(server, "hans", "yoda", "luke")
    for user in users.values():
        join(user, "#r")
        user.events()
    users["yoda"].send("block", user="hans")
    users["hans"].send("message", to="#r", text="yoda cannot hear this")
    assert of(users["yoda"].events(), "room-message") == []
    assert [m["text"] for m in of(users["luke"].events(), "room-message")] == [
        "yoda cannot hear this"
    ]
    history = users["yoda"].send("history", target="#r")["messages"]
    assert all(m["sender"] != "hans" for m in history)
    users["yoda"].send("logout")
    users["yoda"].close()
    users["hans"].send("message", to="#r", text="nor this")
    users["luke"].send("message", to="#r", text="but this")
    yoda = server.online("yoda", version=3)
    assert [m["text"] for m in of(yoda.events(), "room-message")] == ["but this"]
    # Those hans blocks do not hear him join or leave (as for presence).
    users["hans"].send("block", user="luke")
    users["hans"].send("leave", room="#r")
    assert of(users["luke"].events(), "room-member") == []


def test_members_shows_who_is_online_as_whoelse_would(server: Server) -> None:
    users = v3(server, "hans", "yoda", "luke")
    for user in users.values():
        join(user, "#r")
    users["yoda"].send("block", user="hans")
    users["luke"].send("logout")
    users["luke"].close()
    members = users["hans"].send("members", room="#r")["members"]
    assert members == [
        {"user": "hans", "online": True},
        {"user": "luke", "online": False},
        {"user": "yoda", "online": False},  # she blocks hans: not shown to him online
    ]


def test_room_names_are_checked_and_look_alikes_refused(server: Server) -> None:
    hans = server.online("hans", version=3)
    join(hans, "#general")
    for bad, code in (
        ("general", "invalid-room"),
        ("#", "invalid-room"),
        ("#a b", "invalid-room"),
        ("#gen:eral", "invalid-room"),
        ("#gener\u0430l", "invalid-room"),  # a Cyrillic a: looks like #general
        ("#" + "x" * 40, "invalid-room"),
    ):
        assert hans.send("join", room=bad)["code"] == code, bad
    assert hans.send("join", room="#general")["code"] == "already-a-member"


def test_the_operator_s_limits(tmp_path: Path) -> None:
    server = Server(
        tmp_path,
        *FAST,
        "--max-rooms-per-user",
        "2",
        "--max-room-members",
        "2",
        "--max-rooms-created-per-hour",
        "3",
    )
    users = v3(server, "hans", "yoda", "luke")
    hans = users["hans"]
    join(hans, "#a")
    join(hans, "#b")
    assert hans.send("join", room="#c")["code"] == "too-many-rooms"
    join(users["yoda"], "#a")
    assert users["luke"].send("join", room="#a")["code"] == "room-full"
    hans.send("leave", room="#a")
    join(hans, "#c")  # the third room created this hour
    hans.send("leave", room="#c")
    assert hans.send("join", room="#d")["code"] == "too-many-new-rooms"
    server.advance(3601)
    users = v3(server, "hans")  # (the idle timeout ended the others meanwhile)
    join(users["hans"], "#d")


def test_a_version_2_client_is_spared_what_it_does_not_know(server: Server) -> None:
    old = server.online("hans")  # hello version 2
    new = server.online("yoda", version=3)
    assert old.send("join", room="#r")["code"] == "bad-state"
    new.send("message", to="hans", text="hi")
    (event,) = of(old.events(), "message")
    assert "msgid" not in event
    old.send("message", to="yoda", text="hi back")
    (event,) = of(new.events(), "message")
    assert event["msgid"] == 2


def test_without_history_nothing_is_kept(tmp_path: Path) -> None:
    server = Server(tmp_path, *FAST, "--history-days", "0")
    users = v3(server, "hans", "yoda")
    reply = users["hans"].send("message", to="yoda", text="not kept")
    assert reply["stored"] is False and "msgid" not in reply
    assert users["hans"].send("history", target="yoda")["code"] == "history-off"
