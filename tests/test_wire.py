"""The codec: every frame round-trips, and anything malformed is a FrameError with the
right code (never another exception)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_chat import wire


def test_requests_round_trip() -> None:
    frame = wire.SendMessage("yoda", "héllo 中 🎉")
    line = wire.encode(frame, 7)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert wire.parse(line[:-1], wire.CLIENT_REQUESTS) == (7, frame)


@pytest.mark.parametrize(
    "frame",
    [
        wire.Presence("hans", True),
        wire.Message("hans", "hi", 12.5, True),
        wire.Broadcast("hans", "hi", 3.0),
        wire.PrivateRequest("hans", 60.0),
        wire.PrivateAccepted("luke", "tok", "127.0.0.1", 4000),
        wire.PrivateDeclined("luke"),
        wire.PrivateExpired("luke", "unanswered"),
        wire.LoggedOut("timeout"),
        wire.Error("no-such-user", "Error. bob is not a user.", 3),
        wire.Ok(4, {"users": ["a", "b"]}),
    ],
)
def test_server_frames_round_trip(frame: wire.Frame) -> None:
    _request_id, parsed = wire.parse(wire.encode(frame)[:-1], wire.SERVER_FRAMES)
    assert parsed == frame


def test_peer_frames_round_trip() -> None:
    for frame in (wire.PeerHello(2, "hans", "t0k"), wire.PrivateText("hi"), wire.StopPrivate()):
        assert wire.parse(wire.encode(frame)[:-1], wire.PEER_FRAMES)[1] == frame


def test_carriage_return_before_the_newline_is_accepted() -> None:
    assert wire.parse(b'{"type":"whoelse"}\r', wire.CLIENT_REQUESTS)[1] == wire.WhoElse()


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"\xff\xfe", "bad-utf8"),
        (b"not json", "bad-json"),
        (b"[1,2]", "bad-json"),
        (b'{"type": NaN}', "bad-json"),
        (b'{"x": 1}', "bad-frame"),
        (b'{"type": 5}', "bad-frame"),
        (b'{"type":"nope"}', "unknown-type"),
        (b'{"type":"message","to":"a"}', "bad-frame"),
        (b'{"type":"message","to":"a","text":5}', "bad-frame"),
        (b'{"type":"whoelsesince","seconds":true}', "bad-frame"),
        (b'{"type":"whoelsesince","seconds":1.5}', "bad-frame"),
        (b'{"type":"whoelse","extra":1}', "bad-frame"),
        (b'{"type":"whoelse","id":[1]}', "bad-frame"),
        (b'{"type":"whoelse","id":"' + b"x" * 40 + b'"}', "bad-frame"),
        (b"[" * 100000, "bad-json"),
        # Text that could never be written out again as UTF-8: refused at the door.
        (b'{"type":"broadcast","text":"\\ud800"}', "bad-json"),
        (b'{"type":"whoelsesince","seconds":1e400}', "bad-json"),
        (b'{"type":"whoelsesince","seconds":Infinity}', "bad-json"),
    ],
)
def test_malformed_lines(line: bytes, code: str) -> None:
    with pytest.raises(wire.FrameError) as raised:
        wire.parse(line, wire.CLIENT_REQUESTS)
    assert raised.value.code == code


def test_errors_keep_the_request_id_when_they_can() -> None:
    with pytest.raises(wire.FrameError) as raised:
        wire.parse(b'{"type":"nope","id":9}', wire.CLIENT_REQUESTS)
    assert raised.value.request_id == 9


def test_shared_events_are_encoded_once() -> None:
    event = wire.Presence("hans", True)
    assert wire.encode_event(event) is wire.encode_event(event)


# Generation time varies on shared CI machines; the properties, not the speed, matter.
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@RELAXED
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_frame_error(data: bytes) -> None:
    with contextlib.suppress(wire.FrameError):
        wire.parse(data, wire.CLIENT_REQUESTS)


@RELAXED
@given(
    st.dictionaries(
        st.sampled_from(["type", "id", "user", "to", "text", "seconds", "version", "accept"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.sampled_from(list(wire.CLIENT_REQUESTS)),
        ),
    )
)
def test_arbitrary_objects_never_raise_anything_but_frame_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(wire.FrameError):
        wire.parse(json.dumps(obj).encode(), wire.CLIENT_REQUESTS)


@RELAXED
@given(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=50),
    st.one_of(st.none(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=8)),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_encoding_is_compact_json_with_text_as_utf8(
    text: str, request_id: wire.RequestId, sent: float
) -> None:
    # The format docs/protocol.md documents, whichever codec writes it: one compact
    # object a line, text in UTF-8 rather than \u escapes, exactly the fields given.
    line = wire.encode(wire.Message("hans", text, sent), request_id)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    expected = {"type": "message", "sender": "hans", "text": text, "sent": sent}
    if request_id is not None:
        expected["id"] = request_id
    assert json.loads(line) == {**expected, "stored": False, "key": 0, "msgid": 0}
    older = wire.encode(wire.Message("hans", text, sent), request_id, version=2)
    assert json.loads(older) == {**expected, "stored": False, "key": 0}  # no msgid for 2
    assert json.dumps(text, ensure_ascii=False).encode("utf-8") in line
    assert line.startswith(b'{"type":"message",')


@given(
    st.dictionaries(
        st.sampled_from(["type", "to", "text", "id", "extra"]),
        st.one_of(
            st.just("message"),
            st.text(max_size=5),
            st.integers(-(2**60), 2**60),
            st.booleans(),
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
    ),
    st.booleans(),
)
def test_the_message_fast_path_accepts_exactly_what_parse_accepts(
    fields: dict[str, object], type_first: bool
) -> None:
    ordered = dict(sorted(fields.items(), key=lambda kv: kv[0] != "type")) if type_first else fields
    line = json.dumps(ordered, separators=(",", ":")).encode()
    fast = wire.parse_message(line)
    try:
        request_id, frame = wire.parse(line, wire.CLIENT_REQUESTS)
    except wire.FrameError:
        assert fast is None
        return
    if fast is not None:
        assert frame == wire.SendMessage(fast[1], fast[2]) and request_id == fast[0]
    elif isinstance(frame, wire.SendMessage) and line.startswith(
        b'{"type":"message"'
    ):  # typed first
        raise AssertionError(f"the fast path refused a message parse takes: {line!r}")


def test_the_message_fast_path_on_what_clients_write() -> None:
    line = wire.encode(wire.SendMessage("luke", "hi \u4e2d"), 7)
    assert wire.parse_message(line) == (7, "luke", "hi \u4e2d")
    assert wire.parse_message(line.rstrip(b"\n") + b"\r") == (7, "luke", "hi \u4e2d")
    assert wire.parse_message(b'{"type":"message","to":"luke","text":"x","id":true}') is None
    assert wire.parse_message(b'{"type":"whoelse"}') is None
