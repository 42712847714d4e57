"""The events between nodes: every kind round-trips through the one table, and
anything else is refused with :class:`EventError` (an unknown kind with
:class:`UnknownEvent`), never a crash."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_chat import wire
from twisted_chat.server import events

EXAMPLES: list[events.Event] = [
    events.DirectMessage("yoda", "hans", "hi \u00e9\U0001f600", 1_700_000_000.25),
    events.Broadcast("hans", "all of you", 1.0),
    events.Presence("luke", "east-1#7", True, 2.5),
    events.Presence("luke", "east-1#7", False, 3.0),
    events.ForUser("yoda", wire.PrivateRequest("hans", 60.0)),
    events.ForUser("hans", wire.PrivateAccepted("yoda", "tok", "127.0.0.1", 40000, "f" * 64)),
    events.ForUser("hans", wire.PrivateExpired("yoda", "left")),
    events.BlockChanged("luke", "hans", True),
    events.AccountAdded("rey", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
    events.DirectMessage("yoda", "hans", "kept", 5.0, msgid=42),
    events.RoomSaid("#general", "hans", "hello room", 6.0, 7),
    events.RoomJoined("#general", "yoda", True),
]


def test_every_kind_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(events.KINDS.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_kind_round_trips(event: events.Event) -> None:
    assert events.decode(events.encode(event)) == event
    assert events.decode(events.encode(event).decode()) == event  # as Redis hands it back


@given(st.text(), st.text(), st.text(), st.floats(allow_nan=False, allow_infinity=False))
def test_any_text_round_trips(to: str, sender: str, text: str, sent: float) -> None:
    event = events.DirectMessage(to, sender, text, sent)
    assert events.decode(events.encode(event)) == event


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(events.UnknownEvent) as raised:
        events.decode(b'["reaction","#general","hans","+1",1.0]')
    assert raised.value.kind == "reaction"


def test_an_event_of_an_earlier_release_lacks_its_later_fields() -> None:
    """A direct message from a node that kept no history: no msgid, read as 0."""
    assert events.decode(b'["m","yoda","hans","hi",1.5]') == events.DirectMessage(
        "yoda", "hans", "hi", 1.5
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{}",
        b"[]",
        b"[1]",
        b'["m","yoda","hans","hi"]',
        b'["m","yoda","hans","hi",1.0,"extra"]',
        b'["m","yoda",2,"hi",1.0]',
        b'["m","yoda","hans","hi","soon"]',
        b'["m","yoda","hans","hi",true]',
        b'["p","luke","a#1","yes",1.0]',
        b'["u","yoda",{"type":"nonsense"}]',
        b'["u","yoda",{"type":"private-request"}]',
        b'["u","yoda","private-request"]',
        b'["k","a","b",1]',
        b"\xff\xfe",
    ],
)
def test_a_malformed_event_is_refused(data: bytes) -> None:
    with pytest.raises(events.EventError):
        events.decode(data)


def test_fields_are_in_the_order_the_dataclass_declares() -> None:
    """The encoding is positional: documented as such for anyone reading an inbox."""
    encoded = orjson.loads(events.encode(events.BlockChanged("luke", "hans", True)))
    names = [f.name for f in dataclasses.fields(events.BlockChanged)]
    assert names == ["blocker", "target", "blocked"]
    assert encoded == ["k", "luke", "hans", True]
