"""The client's side of rooms and history: the commands typed, the lines shown, each
message shown once (by msgid), and ``history ... more`` going on from what was shown."""

from __future__ import annotations

import pytest

from tests.test_client_session import Client
from twisted_chat import wire
from twisted_chat.client.commands import CommandError, parse_command


@pytest.mark.parametrize(
    "typed, args",
    [
        ("join #general", ("#general",)),
        ("leave #general", ("#general",)),
        ("members #general", ("#general",)),
        ("history yoda", ("yoda", "20")),
        ("history #general 50", ("#general", "50")),
        ("history #general more", ("#general", "more")),
        ("message #general hello  there", ("#general", "hello  there")),
    ],
)
def test_room_commands_parse(typed: str, args: tuple[str, ...]) -> None:
    assert parse_command(typed).args == args


@pytest.mark.parametrize(
    "typed",
    [
        "join general",
        "join",
        "members",
        "history",
        "history yoda 0",
        "history yoda 201",
        "history yoda ²",
        "history yoda 5 6",
        "rooms now",
    ],
)
def test_room_commands_say_what_is_wrong(typed: str) -> None:
    with pytest.raises(CommandError):
        parse_command(typed)


def test_joining_speaking_and_what_the_room_says() -> None:
    client = Client().logged_in()
    client.type("join #jedi")
    assert client.link.answer(room="#jedi", created=True, members=1) == wire.Join("#jedi")
    assert client.display.take() == ["You joined #jedi (a new room): 1 member(s)."]
    assert client.session.names_for("leave") == ["#jedi"]
    client.type("message #jedi hello room")
    assert client.link.answer(room="#jedi", msgid=3) == wire.SendMessage("#jedi", "hello room")
    assert client.display.take() == ["you \u2192 #jedi: hello room"]
    client.session.event_received(wire.RoomMessage("#jedi", "yoda", "welcome", 1.0, 4))
    client.session.event_received(wire.RoomMember("#jedi", "luke", True))
    assert client.display.take() == ["[#jedi] yoda: welcome", "-!- luke joined #jedi"]
    client.session.event_received(wire.RoomMessage("#jedi", "yoda", "welcome", 1.0, 4))
    assert client.display.take() == []  # a repeat, by msgid: shown once


def test_what_was_missed_then_how_many_more() -> None:
    client = Client().logged_in()
    client.session.event_received(wire.RoomMessage("#jedi", "yoda", "early", 1.0, 1, True))
    client.session.event_received(wire.RoomReplayed("#jedi", 1, 12))
    shown = client.display.take()
    assert shown[0].startswith("[#jedi] yoda: early  (sent ")
    assert shown[0].endswith(" while you were away)")
    assert shown[1] == "\u2026 12 more: history #jedi"


def test_history_shows_dates_and_more_goes_on_from_the_oldest_shown() -> None:
    client = Client().logged_in()
    client.type("history yoda 2")
    lines = [
        {"msgid": 7, "sender": "hans", "text": "first", "sent": 0.0},
        {"msgid": 8, "sender": "yoda", "text": "second", "sent": 0.0},
    ]
    assert client.link.answer(messages=lines, more=True) == wire.History("yoda", 2, 0)
    shown = client.display.take()
    assert [line.split(" ", 2)[2] for line in shown[:2]] == ["hans: first", "yoda: second"]
    assert shown[2] == "(older: history yoda more)"
    client.type("history yoda more")
    assert client.link.answer(messages=[], more=False) == wire.History("yoda", 20, 7)
    assert client.display.take() == ["Nothing more in the history with yoda."]
    client.type("history yoda more")
    assert client.display.take() == ["There is nothing before that in yoda's history."]


def test_a_message_shown_live_is_not_shown_again() -> None:
    client = Client().logged_in()
    client.session.event_received(wire.Message("yoda", "once", 1.0, msgid=5))
    client.session.event_received(wire.Message("yoda", "once", 1.0, True, 9, msgid=5))
    assert client.display.take() == ["yoda: once"]
    client.session.event_received(wire.Message("yoda", "no msgid", 1.0))
    client.session.event_received(wire.Message("yoda", "no msgid", 1.0))
    assert client.display.take() == ["yoda: no msgid", "yoda: no msgid"]  # not kept: no id
