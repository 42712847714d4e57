"""What one node of a chat tells the others: one frozen dataclass per kind of event,
one table that encodes and decodes them all (as ``wire`` does for frames).

The core makes these and applies them (``Chat.apply``): to its own users at once, and
through the directory to every other node, where the same handler applies them to
theirs (as Synapse's replication commands: ``synapse/replication/tcp/commands.py``).
In one process nothing is sent anywhere; the events are still how a change reaches the
users it concerns, so both modes take the same path.

On the wire between nodes an event is a compact JSON array, its kind first and then
its fields in the order the dataclass declares them. A frame for one user
(:class:`ForUser`) carries that frame as ``wire`` writes it. Anything that is not a
well-formed event of a known kind raises :class:`EventError` (an unknown kind:
:class:`UnknownEvent`), which the node logs and skips: a node running a newer release
beside an older one never crashes the older one.

A leaf beside ``wire``: no I/O and no Twisted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from twisted_chat import wire
from twisted_chat.interfaces import StoredMessage


class EventError(ValueError):
    """Bytes that are not a well-formed event."""


class UnknownEvent(EventError):
    """A well-formed event of a kind this node does not know (a newer node's)."""

    def __init__(self, kind: object) -> None:
        super().__init__(f"unknown event kind {kind!r}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event. ``KIND`` names it on the wire."""

    KIND: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class DirectMessage(Event):
    """A message for ``to``, who is online through the node it is sent to; if they are
    no longer there, it goes where they are now, or to their mailbox."""

    KIND: ClassVar[str] = "m"
    to: str
    sender: str
    text: str
    sent: float
    msgid: int = 0
    """Its place in the two users' history (0: not kept)."""

    def stored(self, key: int = 0) -> StoredMessage:
        """The same message as a mailbox holds it."""
        return StoredMessage(self.sender, self.text, self.sent, key, self.msgid)

    def frame(self) -> wire.Message:
        return wire.Message(self.sender, self.text, self.sent, msgid=self.msgid)


@dataclass(frozen=True, slots=True)
class Broadcast(Event):
    KIND: ClassVar[str] = "b"
    sender: str
    text: str
    sent: float


@dataclass(frozen=True, slots=True)
class Presence(Event):
    """``user`` came online through ``node`` (a node key: its id and incarnation), or
    went offline at ``when`` (Unix seconds)."""

    KIND: ClassVar[str] = "p"
    user: str
    node: str
    online: bool
    when: float


@dataclass(frozen=True, slots=True)
class ForUser(Event):
    """A frame for one user, wherever they are online (a private-chat request or its
    answer); dropped if they are not."""

    KIND: ClassVar[str] = "u"
    to: str
    frame: wire.Frame


@dataclass(frozen=True, slots=True)
class BlockChanged(Event):
    """``blocker`` blocked (or unblocked) ``target`` through another node: every node's
    copy of the block lists follows."""

    KIND: ClassVar[str] = "k"
    blocker: str
    target: str
    blocked: bool


@dataclass(frozen=True, slots=True)
class AccountAdded(Event):
    """An account now exists (created through a node, or merged from its file)."""

    KIND: ClassVar[str] = "a"
    user: str
    stored: str
    """The password as stored: in clear or an argon2id hash."""


@dataclass(frozen=True, slots=True)
class RoomSaid(Event):
    """``sender`` said ``text`` in ``room``, kept as ``msgid``: to its members online."""

    KIND: ClassVar[str] = "r"
    room: str
    sender: str
    text: str
    sent: float
    msgid: int


@dataclass(frozen=True, slots=True)
class RoomJoined(Event):
    """``user`` joined ``room`` (or, ``joined`` false, left it)."""

    KIND: ClassVar[str] = "j"
    room: str
    user: str
    joined: bool


KINDS: dict[str, type[Event]] = {
    cls.KIND: cls
    for cls in (
        DirectMessage,
        Broadcast,
        Presence,
        ForUser,
        BlockChanged,
        AccountAdded,
        RoomSaid,
        RoomJoined,
    )
}
"""The one table: every kind a node sends and takes."""

_FIELDS: dict[type[Event], tuple[tuple[str, str], ...]] = {
    cls: tuple((f.name, str(f.type)) for f in dataclasses.fields(cls)) for cls in KINDS.values()
}
_REQUIRED: dict[type[Event], int] = {
    cls: sum(1 for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
    for cls in KINDS.values()
}
"""Fields every event of a kind has; later ones (with defaults) may be missing, as in
the events of a node of an earlier release."""


def encode(event: Event) -> bytes:
    """``event`` as the bytes another node decodes with :func:`decode`."""
    items: list[Any] = [event.KIND]
    for name, annotation in _FIELDS[type(event)]:
        value = getattr(event, name)
        items.append(wire.to_object(value) if annotation == "wire.Frame" else value)
    return orjson.dumps(items)


def decode(data: bytes | str) -> Event:
    """The event in ``data``; :class:`EventError` for anything else."""
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise EventError(f"not JSON: {e}") from None
    if not isinstance(items, list) or not items:
        raise EventError("not a non-empty array")
    kind = items[0]
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownEvent(kind)
    fields = _FIELDS[cls]
    given = len(items) - 1
    if not _REQUIRED[cls] <= given <= len(fields):
        raise EventError(f"a {kind!r} event has {len(fields)} fields, not {given}")
    values = [
        _checked(kind, name, annotation, value)
        for (name, annotation), value in zip(fields[:given], items[1:], strict=True)
    ]
    return cls(*values)


def _checked(kind: str, name: str, annotation: str, value: object) -> object:
    if annotation == "wire.Frame":
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise EventError(f"field {name!r} of a {kind!r} event is not a frame")
        try:
            _, frame = wire.parse_object(value, wire.SERVER_FRAMES)
        except wire.FrameError as e:
            raise EventError(f"field {name!r} of a {kind!r} event: {e.text}") from None
        return frame
    if annotation == "str":
        ok = isinstance(value, str)
    elif annotation == "bool":
        ok = isinstance(value, bool)
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)  # type: ignore[arg-type]
        value = float(value) if ok else value  # type: ignore[arg-type]
    else:  # pragma: no cover - an event class with a field type this table lacks
        raise TypeError(f"unsupported field annotation {annotation}")
    if not ok:
        raise EventError(f"field {name!r} of a {kind!r} event has the wrong type")
    return value
