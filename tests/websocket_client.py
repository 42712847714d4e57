"""The client side of RFC 6455, as much as the tests need to drive the server's
WebSocket over a ``StringTransport``: the opening handshake and text frames (masked,
as a browser sends them), and reading the server's frames back."""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def handshake(host: str = "127.0.0.1:8080", origin: str | None = None, path: str = "/ws") -> bytes:
    """An opening handshake as a browser on ``origin`` sends it (None: no Origin, as a
    client that is not a browser)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One whole message in one masked frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


@dataclass
class ServerFrame:
    opcode: int
    payload: bytes


def split_response(data: bytes) -> tuple[bytes, bytes]:
    """(the HTTP response head, what follows it)."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator, f"no complete HTTP response in {data[:200]!r}"
    return head, rest


def frames(data: bytes) -> list[ServerFrame]:
    """The server's frames in ``data`` (unmasked, each whole)."""
    found = []
    while data:
        first, second = data[0], data[1]
        assert not second & 0x80, "a server's frames are not masked"
        size, offset = second & 0x7F, 2
        if size == 126:
            (size,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif size == 127:
            (size,) = struct.unpack("!Q", data[2:10])
            offset = 10
        found.append(ServerFrame(first & 0x0F, data[offset : offset + size]))
        data = data[offset + size :]
    return found
