"""Hostile and broken input at the server: an error frame, the connection kept or
closed on purpose, nobody else affected, nothing logged as an unhandled error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import Server
from twisted_chat import wire


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xff\xfe\n", "bad-utf8"),
        (b"hello\n", "bad-json"),
        (b'{"type":"teleport"}\n', "unknown-type"),
        (b'{"type":"message","to":"yoda"}\n', "bad-frame"),
        (b"\n", "bad-json"),
    ],
)
def test_bad_lines_get_an_error_frame_and_the_session_goes_on(
    server: Server, data: bytes, code: str
) -> None:
    users = server.everyone("hans", "yoda")
    frames = users["hans"].send_raw(data)
    assert [f["code"] for f in frames] == [code]
    assert not users["hans"].lost
    assert users["hans"].send("whoelse")["users"] == ["yoda"]
    assert users["yoda"].send("whoelse")["users"] == ["hans"]


def test_crlf_and_lf_clients_both_work(server: Server) -> None:
    connection = server.connect()
    frames = connection.send_raw(b'{"type":"hello","version":2,"id":1}\r\n{"type":"ping","id":2}\n')
    assert [(f["type"], f["id"]) for f in frames] == [("ok", 1), ("ok", 2)]


def test_several_lines_in_one_chunk_are_all_handled(server: Server) -> None:
    connection = server.connect()
    chunk = b"".join(
        wire.encode(frame, n)
        for n, frame in enumerate(
            [
                wire.Hello(wire.PROTOCOL_VERSION),
                wire.Login("hans"),
                wire.Password("falcon*solo"),
                wire.WhoElse(),
            ]
        )
    )
    frames = connection.send_raw(chunk)
    assert [f["type"] for f in frames] == ["ok"] * 4


def test_lines_split_across_chunks_are_reassembled(server: Server) -> None:
    connection = server.connect()
    line = b'{"type":"hello","version":2,"id":"h"}\n'
    frames = []
    for byte in line:
        frames += connection.send_raw(bytes([byte]))
    assert [(f["type"], f["id"]) for f in frames] == [("ok", "h")]


def test_an_oversized_line_is_refused_and_the_connection_closed(server: Server) -> None:
    users = server.everyone("hans", "yoda")
    frames = users["hans"].send_raw(b"x" * (wire.MAX_INBOUND_LINE + 10))
    assert frames == [
        {
            "type": "error",
            "code": "line-too-long",
            "text": f"Lines are limited to {wire.MAX_INBOUND_LINE} bytes.",
        }
    ]
    assert users["hans"].lost
    assert users["yoda"].events() == [{"type": "presence", "user": "hans", "online": False}]


def test_a_second_hello_or_login_while_online_is_an_error(server: Server) -> None:
    hans = server.online("hans")
    assert hans.send("hello", version=2)["code"] == "bad-state"
    assert hans.send("login", user="yoda")["code"] == "bad-state"
    assert hans.send("whoelse")["type"] == "ok"


def test_request_ids_are_echoed_as_given(server: Server) -> None:
    connection = server.connect()
    frames = connection.send_raw(
        json.dumps({"type": "hello", "version": 2, "id": "a1"}).encode() + b"\n"
    )
    assert frames[0]["id"] == "a1"


def test_a_request_without_an_id_is_answered_only_if_it_fails(server: Server) -> None:
    # Fire-and-forget, as IRC's PRIVMSG: no receipt, but never a silent failure.
    users = server.everyone("hans", "yoda")
    hans, yoda = users["hans"], users["yoda"]
    assert hans.send_raw(b'{"type":"message","to":"yoda","text":"no receipt"}\n') == []
    assert [f["text"] for f in yoda.events() if f["type"] == "message"] == ["no receipt"]
    assert hans.send_raw(b'{"type":"ping"}\n') == []
    frames = hans.send_raw(b'{"type":"message","to":"bob","text":"x"}\n')
    assert [(f["type"], f["code"], f.get("id")) for f in frames] == [
        ("error", "no-such-user", None)
    ]
