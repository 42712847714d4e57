"""The twisted-chat wire format, for client<->server and peer<->peer links alike.

One frame is one JSON object encoded as UTF-8 on one line ending in ``\\n`` (a ``\\r``
before it is tolerated). Every object has a string ``type``. Requests may carry an ``id``
(an integer or a short string) that the reply to them echoes; replies are ``ok`` or
``error`` frames; everything else the server sends is an event pushed at any time.
``docs/protocol.md`` documents every frame with an example.

This module is a leaf: no I/O, no Twisted. It turns bytes into typed frames and typed
frames into bytes, and raises :class:`FrameError` (with a stable code) for anything that
is not a well-formed frame. Its one piece of state is :func:`encode_event`'s last
encoded event, a cache that changes no result. It is long on purpose: the wire format
lives in one place (every frame class, the tables that parse them, the codec and the
message fast path), so that it reads as a whole beside docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

PROTOCOL_VERSION = 3
"""The version this release's client announces in ``hello``. 3: rooms and history
(``join``, ``leave``, ``rooms``, ``members``, ``history``; ``room-*`` events; a
``message`` event carries its history ``id``). 2: private sessions over TLS, pinned by
certificate fingerprints; a version-1 client would connect in clear to a TLS
listener."""

SUPPORTED_VERSIONS = frozenset({2, 3})
"""What a server accepts in ``hello``. A version-2 client keeps every command of the
handout: it is sent no frame and no field it does not know (``SINCE``), and its
requests for rooms or history are refused as needing version 3."""

PEER_PROTOCOL_VERSION = 2
"""The version peers announce in ``peer-hello``: private sessions did not change in
version 3, so clients of either release talk to each other."""

DELIMITER = b"\n"

MAX_INBOUND_LINE = 16 * 1024
"""Longest line (bytes, delimiter excluded) a server or a peer listener accepts.

The largest legitimate client frame is a message of ``MAX_TEXT_CHARS`` characters; even
if every character took 6 bytes of JSON escaping that is about 6 KiB, so 16 KiB leaves
room while bounding what one connection can make us buffer (Twisted's own default)."""

MAX_SERVER_LINE = 1024 * 1024
"""Longest line a client accepts from the server: a ``whoelse`` reply lists every online
user, so it grows with the user count (10,000 names of 32 characters are about 360 KiB)."""

MAX_TEXT_CHARS = 1000
"""Longest message text, in characters (Unicode code points). Longer text is refused with
``text-too-long``, never cut."""

MAX_NAME_CHARS = 32
MAX_PASSWORD_CHARS = 128
MAX_ID_CHARS = 32


class FrameError(Exception):
    """A line that is not a well-formed frame; ``code`` is the error code to answer with."""

    def __init__(self, code: str, text: str, request_id: RequestId = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.request_id = request_id


RequestId = int | str | None


@dataclass(frozen=True)
class Frame:
    """Base of every frame. ``TYPE`` is the value of the ``type`` field on the wire;
    ``SINCE`` names the fields that only clients of a later version are sent (field ->
    the version that brought it), and ``VERSION`` the version that brought the frame."""

    TYPE: ClassVar[str] = ""
    SINCE: ClassVar[dict[str, int]] = {}
    VERSION: ClassVar[int] = 2


# --- client -> server requests -------------------------------------------------------


@dataclass(frozen=True)
class Hello(Frame):
    """First frame on every link: the sender's protocol version."""

    TYPE: ClassVar[str] = "hello"
    version: int


@dataclass(frozen=True)
class Login(Frame):
    """Step 1 of logging in: the username."""

    TYPE: ClassVar[str] = "login"
    user: str


@dataclass(frozen=True)
class Password(Frame):
    """Step 2 of logging in: the password (or the new account's password)."""

    TYPE: ClassVar[str] = "password"
    password: str


@dataclass(frozen=True)
class WhoElse(Frame):
    TYPE: ClassVar[str] = "whoelse"


@dataclass(frozen=True)
class Accounts(Frame):
    """Which usernames exist (for completion and for checking a name before use), and
    whom the sender blocks. Not user activity."""

    TYPE: ClassVar[str] = "accounts"


MAX_ACCOUNT_NAMES = 10_000
"""Names an ``accounts`` reply lists at most (then ``truncated`` is true): about
200 KB, bounded however many accounts a server holds."""


@dataclass(frozen=True)
class WhoElseSince(Frame):
    TYPE: ClassVar[str] = "whoelsesince"
    seconds: int


@dataclass(frozen=True)
class SendMessage(Frame):
    TYPE: ClassVar[str] = "message"
    to: str
    text: str


@dataclass(frozen=True)
class SendBroadcast(Frame):
    TYPE: ClassVar[str] = "broadcast"
    text: str


@dataclass(frozen=True)
class Block(Frame):
    TYPE: ClassVar[str] = "block"
    user: str


@dataclass(frozen=True)
class Unblock(Frame):
    TYPE: ClassVar[str] = "unblock"
    user: str


@dataclass(frozen=True)
class StartPrivate(Frame):
    """Ask the server to ask ``user`` for a private session with the sender."""

    TYPE: ClassVar[str] = "startprivate"
    user: str


@dataclass(frozen=True)
class AnswerPrivate(Frame):
    """The target's answer to a ``private-request`` from ``user``."""

    TYPE: ClassVar[str] = "answerprivate"
    user: str
    accept: bool


@dataclass(frozen=True)
class Listening(Frame):
    """The TCP port on which the sender's client accepts peer connections (over TLS),
    and the SHA-256 fingerprint of the certificate it presents there and when it
    connects to a peer."""

    TYPE: ClassVar[str] = "listening"
    port: int
    fingerprint: str


@dataclass(frozen=True)
class Activity(Frame):
    """The user did something the server does not see (a private message): reset the
    idle timer. Carries nothing about what was done."""

    TYPE: ClassVar[str] = "activity"


@dataclass(frozen=True)
class Ping(Frame):
    """Liveness probe; answered with ``ok``. Never counts as user activity."""

    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Logout(Frame):
    TYPE: ClassVar[str] = "logout"


@dataclass(frozen=True)
class Join(Frame):
    """Join a room (``#name``), creating it if there is none. Version 3."""

    TYPE: ClassVar[str] = "join"
    VERSION: ClassVar[int] = 3
    room: str


@dataclass(frozen=True)
class Leave(Frame):
    TYPE: ClassVar[str] = "leave"
    VERSION: ClassVar[int] = 3
    room: str


@dataclass(frozen=True)
class Rooms(Frame):
    """The rooms the sender is in, each with its member count and unread count."""

    TYPE: ClassVar[str] = "rooms"
    VERSION: ClassVar[int] = 3


@dataclass(frozen=True)
class Members(Frame):
    """A room's members, and which of them the sender may see online."""

    TYPE: ClassVar[str] = "members"
    VERSION: ClassVar[int] = 3
    room: str


MAX_HISTORY = 200
"""Messages one ``history`` reply holds at most."""

DEFAULT_HISTORY = 20


@dataclass(frozen=True)
class History(Frame):
    """The last ``limit`` messages of a conversation (``target``: a user, for the
    messages between the sender and them, or a room), before the message ``before``
    (0: the newest). Version 3."""

    TYPE: ClassVar[str] = "history"
    VERSION: ClassVar[int] = 3
    target: str
    limit: int = DEFAULT_HISTORY
    before: int = 0


# --- server -> client replies and events ---------------------------------------------


@dataclass(frozen=True)
class Ok(Frame):
    """Success reply to request ``id``; ``result`` fields are spread into the frame."""

    TYPE: ClassVar[str] = "ok"
    id: RequestId = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Frame):
    """Failure reply to request ``id`` (``None`` when the line could not be read)."""

    TYPE: ClassVar[str] = "error"
    code: str
    text: str
    id: RequestId = None


@dataclass(frozen=True)
class Presence(Frame):
    TYPE: ClassVar[str] = "presence"
    user: str
    online: bool


@dataclass(frozen=True)
class Message(Frame):
    """A direct message. ``sent`` is when the server accepted it (Unix seconds);
    ``stored`` says it waited in the offline queue, where ``key`` identifies it;
    ``msgid`` is its place in the conversation's history (0: not kept), the same in
    ``history`` replies, so that a client shows it once."""

    TYPE: ClassVar[str] = "message"
    SINCE: ClassVar[dict[str, int]] = {"msgid": 3}
    sender: str
    text: str
    sent: float
    stored: bool = False
    key: int = 0
    msgid: int = 0


@dataclass(frozen=True)
class StoredDone(Frame):
    """The end of the stored messages sent at login: ``count`` of them, keys up to
    ``upto``. The client answers ``received``; until then they stay stored."""

    TYPE: ClassVar[str] = "stored-done"
    upto: int
    count: int


@dataclass(frozen=True)
class Received(Frame):
    """The client has the stored messages with keys up to ``upto``: forget them."""

    TYPE: ClassVar[str] = "received"
    upto: int


@dataclass(frozen=True)
class Broadcast(Frame):
    TYPE: ClassVar[str] = "broadcast"
    sender: str
    text: str
    sent: float


@dataclass(frozen=True)
class PrivateRequest(Frame):
    """``sender`` asks the recipient for a private session; lapses after ``expires_in``."""

    TYPE: ClassVar[str] = "private-request"
    sender: str
    expires_in: float


@dataclass(frozen=True)
class PrivateAccepted(Frame):
    """A private session with ``user`` was approved.

    The requester gets the peer's ``host``/``port`` and connects; the accepter gets
    ``port = 0`` and waits. Both get the same one-time ``token``, and ``fingerprint``,
    the other side's certificate fingerprint, which its TLS connection must show."""

    TYPE: ClassVar[str] = "private-accepted"
    user: str
    token: str
    host: str = ""
    port: int = 0
    fingerprint: str = ""


@dataclass(frozen=True)
class PrivateDeclined(Frame):
    TYPE: ClassVar[str] = "private-declined"
    user: str


@dataclass(frozen=True)
class PrivateExpired(Frame):
    """A request to or from ``user`` lapsed unanswered, or one side left before it was
    answered."""

    TYPE: ClassVar[str] = "private-expired"
    user: str
    reason: str


@dataclass(frozen=True)
class PrivateUnsupported(Frame):
    """``user`` asked you for a private session, which your client (a web page) cannot
    take: they were told so (``peer-unsupported``); nothing waits for an answer."""

    TYPE: ClassVar[str] = "private-unsupported"
    VERSION: ClassVar[int] = 3
    user: str


@dataclass(frozen=True)
class IdleWarning(Frame):
    """The session ends for inactivity in ``seconds`` unless the user does something."""

    TYPE: ClassVar[str] = "idle-warning"
    seconds: float


@dataclass(frozen=True)
class RoomMessage(Frame):
    """What ``sender`` said in ``room``; ``msgid`` is its place in the room's history.
    ``replay``: sent at login, from what was said while the recipient was away."""

    TYPE: ClassVar[str] = "room-message"
    VERSION: ClassVar[int] = 3
    room: str
    sender: str
    text: str
    sent: float
    msgid: int
    replay: bool = False


@dataclass(frozen=True)
class RoomMember(Frame):
    """``user`` joined (or left) ``room``."""

    TYPE: ClassVar[str] = "room-member"
    VERSION: ClassVar[int] = 3
    room: str
    user: str
    joined: bool


@dataclass(frozen=True)
class RoomReplayed(Frame):
    """The end of a room's replay at login: ``shown`` messages were sent, and ``more``
    unseen ones follow them in the room's history."""

    TYPE: ClassVar[str] = "room-replayed"
    VERSION: ClassVar[int] = 3
    room: str
    shown: int
    more: int


@dataclass(frozen=True)
class LoggedOut(Frame):
    """The server ends this session (``reason``: ``logout``, ``timeout``, ...);
    the connection closes after this frame."""

    TYPE: ClassVar[str] = "logged-out"
    reason: str


# --- peer <-> peer --------------------------------------------------------------------


@dataclass(frozen=True)
class PeerHello(Frame):
    """First frame from the connecting peer: who it is and the session's token."""

    TYPE: ClassVar[str] = "peer-hello"
    version: int
    user: str
    token: str


@dataclass(frozen=True)
class PrivateText(Frame):
    TYPE: ClassVar[str] = "private"
    text: str


@dataclass(frozen=True)
class StopPrivate(Frame):
    TYPE: ClassVar[str] = "stopprivate"
    reason: str = "stop"


def _table(*classes: type[Frame]) -> dict[str, type[Frame]]:
    return {cls.TYPE: cls for cls in classes}


CLIENT_REQUESTS = _table(
    Hello,
    Login,
    Password,
    WhoElse,
    WhoElseSince,
    Accounts,
    SendMessage,
    SendBroadcast,
    Block,
    Unblock,
    StartPrivate,
    AnswerPrivate,
    Listening,
    Activity,
    Ping,
    Logout,
    Received,
    Join,
    Leave,
    Rooms,
    Members,
    History,
)
SERVER_FRAMES = _table(
    Hello,
    Ok,
    Error,
    Presence,
    Message,
    StoredDone,
    Broadcast,
    PrivateRequest,
    PrivateAccepted,
    PrivateDeclined,
    PrivateExpired,
    PrivateUnsupported,
    IdleWarning,
    LoggedOut,
    Ping,
    RoomMessage,
    RoomMember,
    RoomReplayed,
)
PEER_FRAMES = _table(PeerHello, Ok, Error, PrivateText, StopPrivate)


# --- decoding -------------------------------------------------------------------------


def decode_object(line: bytes) -> dict[str, Any]:
    """Decode one line (delimiter removed) into a JSON object with a string ``type``.

    orjson, not the standard library: it is several times faster (the codec was a fifth
    of the server's time per message; ``docs/performance.md``), and stricter where we
    want strictness: it refuses ``NaN``/``Infinity``, numbers that overflow a double, and
    escaped lone surrogates, which ``json.loads`` lets through into text that can never
    be encoded as UTF-8 again."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("bad-utf8", "The line is not valid UTF-8.") from None
        raise FrameError("bad-json", "The line is not a JSON object.") from None
    if not isinstance(obj, dict):
        raise FrameError("bad-json", "The line is not a JSON object.")
    request_id = obj.get("id")
    if not _valid_id(request_id):
        raise FrameError("bad-frame", "The id must be an integer or a short string.")
    if not isinstance(obj.get("type"), str):
        raise FrameError("bad-frame", "The frame has no string 'type'.", request_id)
    return obj


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
}


def parse(line: bytes, table: dict[str, type[Frame]]) -> tuple[RequestId, Frame]:
    """Decode ``line`` into ``(request id, frame)`` using the frame classes in ``table``.

    Unknown types, missing or extra fields and fields of the wrong JSON type are
    :class:`FrameError` with the request id preserved so the error can answer it.
    """
    return parse_object(decode_object(line), table)


def parse_object(obj: dict[str, Any], table: dict[str, type[Frame]]) -> tuple[RequestId, Frame]:
    """:func:`parse` for an object already decoded (by :func:`decode_object`, or as
    part of a larger document: a node's event that carries a frame for one user).
    ``obj`` is consumed."""
    request_id = obj.pop("id", None)
    kind = obj.pop("type")
    cls = table.get(kind)
    if cls is None:
        raise FrameError("unknown-type", f"Unknown frame type {kind!r}.", request_id)
    if cls is Ok:
        return request_id, Ok(request_id, obj)
    if cls is Error:
        obj["id"] = request_id
    values: dict[str, Any] = {}
    for name, annotation, required in _SCHEMAS[cls]:
        if name not in obj:
            if required:
                raise FrameError(
                    "bad-frame", f"A {kind!r} frame needs the field {name!r}.", request_id
                )
            continue
        value = obj.pop(name)
        if name != "id" and not _has_type(value, annotation):
            raise FrameError(
                "bad-frame", f"Field {name!r} of {kind!r} has the wrong type.", request_id
            )
        values[name] = value
    if obj:
        extra = ", ".join(sorted(obj))
        raise FrameError("bad-frame", f"Unexpected field(s) in {kind!r}: {extra}.", request_id)
    return request_id, cls(**values)


_MESSAGE_MARK = b'"message"'
"""In the first bytes of every ``message`` request as clients write it (``type``
first, with or without spaces); a line without it is not tried on the fast path."""


def parse_message(line: bytes) -> tuple[RequestId, str, str] | None:
    """The hot request, checked without building a frame object: ``(id, to, text)``
    for a well-formed ``message`` (exactly its fields, of their types), None for
    anything else, which then goes through :func:`parse` (errors and all). Accepts
    exactly what :func:`parse` accepts as a ``message``, only faster."""
    if _MESSAGE_MARK not in line[:24]:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("type") != "message":
        return None
    to, text = obj.get("to"), obj.get("text")
    if type(to) is not str or type(text) is not str:
        return None
    if "id" in obj:
        request_id = obj["id"]
        if len(obj) != 4 or not _valid_id(request_id):
            return None
        return request_id, to, text
    return (None, to, text) if len(obj) == 3 else None


def _field_schema(cls: type[Frame]) -> tuple[tuple[str, str, bool], ...]:
    """(name, annotation, required) of each field of a frame class."""
    return tuple(
        (
            spec.name,
            str(spec.type),
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING,
        )
        for spec in dataclasses.fields(cls)
    )


_SCHEMAS = {cls: _field_schema(cls) for cls in Frame.__subclasses__()}
"""Every frame class's fields, worked out once at import rather than for every line."""


def _has_type(value: object, annotation: str) -> bool:
    accepted = _FIELD_TYPES.get(annotation)
    if accepted is None:  # pragma: no cover - a frame class with an unsupported field
        raise TypeError(f"unsupported field annotation {annotation}")
    if isinstance(value, bool) and annotation != "bool":
        return False  # JSON true is not a number
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, accepted)


def kind_of(line: bytes) -> str:
    """A line's ``type``, for a log line about it ("?" if it has none to read)."""
    try:
        return str(decode_object(line)["type"])[:32]
    except FrameError:
        return "?"


# --- encoding -------------------------------------------------------------------------


def to_object(
    frame: Frame, request_id: RequestId = None, version: int = PROTOCOL_VERSION
) -> dict[str, Any]:
    """The JSON object that :func:`encode` writes for ``frame``, for a peer that speaks
    ``version`` (a field it does not know is left out)."""
    obj: dict[str, Any] = {"type": frame.TYPE}
    if isinstance(frame, Ok):
        if frame.id is not None:
            obj["id"] = frame.id
        obj.update(frame.result)
        return obj
    if request_id is not None:
        obj["id"] = request_id
    for name, _, _ in _SCHEMAS[type(frame)]:
        value = getattr(frame, name)
        if name == "id" and value is None:
            continue
        obj[name] = value
    for name, since in frame.SINCE.items():
        if since > version:
            del obj[name]
    return obj


def encode(frame: Frame, request_id: RequestId = None, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one frame as a complete line, delimiter included: compact JSON, UTF-8
    (not ``\\u`` escapes), as ``json.dumps(..., ensure_ascii=False,
    separators=(",", ":"))`` would write it; for a peer of ``version``."""
    return orjson.dumps(to_object(frame, request_id, version), option=orjson.OPT_APPEND_NEWLINE)


_last_event: list[tuple[Frame, int, bytes]] = []


def encode_event(frame: Frame, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode a server event for a client of ``version``. Presence and broadcasts hand
    the *same* frame object to each recipient in turn, so the last one encoded is kept
    and reused by identity: encoded once per fan-out (and per version), with no
    hashing, and a unique direct message costs no more than ``encode``. (The kept
    frame is referenced, so its identity is not reused.)
    """
    if _last_event:
        last, last_version, line = _last_event[0]
        if last is frame and last_version == version:
            return line
    line = encode(frame, None, version)
    _last_event[:] = [(frame, version, line)]
    return line
