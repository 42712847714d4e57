"""The web listener on in-memory transports: the page and its headers, and the
WebSocket bridge (frames in and out, the Origin check, the limits it shares with TCP),
through the real ``twisted.web`` site and autobahn protocol, on a ``Clock``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site

from tests import websocket_client as ws
from tests.harness import HANDOUT_USERS, Connection, Server
from twisted_chat.server.limits import OutputGate
from twisted_chat.server.options import Options
from twisted_chat.server.web import normalised_origin, own_origin
from twisted_chat.server.webpage import CONTENT_SECURITY_POLICY, web_site

PAGE = "http://127.0.0.1:8080"


class TakenOverTransport(StringTransport):
    """A StringTransport that knows its protocol, as a TCP transport does: autobahn's
    resource hands the connection over to the WebSocket by changing it."""

    protocol: Any = None


class WebClient:
    """A browser's connection to the web listener: one HTTP request, or a WebSocket."""

    def __init__(self, site: Site, ip: str = "127.0.0.1", port: int = 40000) -> None:
        self.transport = TakenOverTransport(
            peerAddress=IPv4Address("TCP", ip, port),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        )
        self.channel = site.buildProtocol(None)
        self.transport.protocol = self.channel  # as a TCP transport knows its protocol
        self.channel.makeConnection(self.transport)
        self.status = 0
        self.head = b""

    # --- plain HTTP ---------------------------------------------------------------------

    def get(
        self, path: str, method: str = "GET", headers: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{headers}\r\n"
        self.channel.dataReceived(request.encode())
        head, body = ws.split_response(self.transport.value())
        status_line, *header_lines = head.decode().split("\r\n")
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), fields, body

    # --- the WebSocket ------------------------------------------------------------------

    def open(self, origin: str | None = PAGE, host: str = "127.0.0.1:8080") -> int:
        self.channel.dataReceived(ws.handshake(host, origin))
        self.head, rest = ws.split_response(self.transport.value())
        self.transport.clear()
        self.transport.write(rest)  # frames sent at once (a refusal) are read as frames
        self.status = int(self.head.split()[1])
        return self.status

    @property
    def socket(self) -> Any:
        return self.transport.protocol  # autobahn took the connection over

    def send_raw(self, payload: bytes, opcode: int = ws.TEXT) -> None:
        self.socket.dataReceived(ws.frame(payload, opcode))

    def send(self, kind: str, **fields: Any) -> None:
        self.send_raw(json.dumps({"type": kind, **fields}).encode())

    def received(self, clock: Any) -> list[ws.ServerFrame]:
        clock.advance(0)  # the end of the turn: the chat's output is flushed
        found = ws.frames(self.transport.value())
        self.transport.clear()
        return found

    def messages(self, clock: Any) -> list[dict[str, Any]]:
        """The chat frames received (each WebSocket message holds exactly one)."""
        found = []
        for received in self.received(clock):
            if received.opcode == ws.TEXT:
                assert b"\n" not in received.payload
                found.append(json.loads(received.payload))
        return [f for f in found if f != {"type": "ping"}]

    def request(self, clock: Any, kind: str, **fields: Any) -> dict[str, Any]:
        self.send(kind, id=kind, **fields)
        replies = [m for m in self.messages(clock) if m.get("id") == kind]
        assert len(replies) == 1, replies
        return replies[0]

    def login(self, clock: Any, user: str, password: str | None = None) -> dict[str, Any]:
        assert self.request(clock, "hello", version=3)["type"] == "ok"
        assert self.request(clock, "login", user=user)["type"] == "ok"
        return self.request(clock, "password", password=password or HANDOUT_USERS[user])


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def site_of(server: Server, *origins: str) -> Site:
    return web_site(server.factory, server.clock, frozenset(origins))


# --- the page ---------------------------------------------------------------------------


def test_the_page_is_served_with_headers_that_keep_it_to_itself(server: Server) -> None:
    status, headers, body = WebClient(site_of(server)).get("/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>twisted-chat</title>" in body
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_the_page_holds_no_inline_script_and_nothing_from_elsewhere(server: Server) -> None:
    _, _, body = WebClient(site_of(server)).get("/")
    page = body.decode()
    assert '<script type="module" src="app.js"></script>' in page
    assert "<script>" not in page and "style=" not in page and "onclick" not in page
    assert "http://" not in page and "https://" not in page and "//" not in page


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/protocol.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
    ],
)
def test_each_file_of_the_page_has_its_type(server: Server, path: str, kind: str) -> None:
    status, headers, body = WebClient(site_of(server)).get(path)
    assert (status, headers["content-type"]) == (200, kind)
    assert body
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "path", ["/nothing", "/app.js/more", "/../setup.cfg", "/%2e%2e/setup.cfg", "/__init__.py"]
)
def test_nothing_but_the_page_is_served(server: Server, path: str) -> None:
    status, headers, body = WebClient(site_of(server)).get(path)
    assert status == 404
    assert body == b"Not found.\n"
    assert headers["x-content-type-options"] == "nosniff"


def test_a_page_already_loaded_is_revalidated_not_sent_again(server: Server) -> None:
    site = site_of(server)
    _, headers, _ = WebClient(site).get("/app.js")
    assert headers["cache-control"] == "no-cache"
    status, _, body = WebClient(site).get(
        "/app.js", headers=f"If-None-Match: {headers['etag']}\r\n"
    )
    assert (status, body) == (304, b"")


def test_head_answers_without_a_body(server: Server) -> None:
    status, headers, body = WebClient(site_of(server)).get("/", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY


# --- the WebSocket: frames in and out ---------------------------------------------------------


def test_each_message_is_one_frame_of_the_wire_protocol(server: Server) -> None:
    browser = WebClient(site_of(server))
    assert browser.open() == 101
    reply = browser.request(server.clock, "hello", version=3)
    assert reply["type"] == "ok" and reply["version"] == 3
    assert browser.request(server.clock, "login", user="yoda") == {
        "type": "ok",
        "id": "login",
        "account": "existing",
    }
    assert browser.request(server.clock, "password", password="wise@!man")["user"] == "yoda"


def test_a_browser_and_a_terminal_user_talk_through_one_chat(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    terminal = server.online("hans", version=3)
    assert browser.messages(server.clock)[-1] == {
        "type": "presence",
        "user": "hans",
        "online": True,
    }

    assert terminal.send("message", to="yoda", text="hello browser")["type"] == "ok"
    (message,) = browser.messages(server.clock)
    assert (message["type"], message["sender"], message["text"]) == (
        "message",
        "hans",
        "hello browser",
    )
    reply = browser.request(server.clock, "broadcast", text="<img src=x onerror=alert(1)>")
    assert reply == {"type": "ok", "id": "broadcast", "skipped": False}
    (broadcast,) = [e for e in terminal.events() if e["type"] == "broadcast"]
    assert (
        broadcast["text"] == "<img src=x onerror=alert(1)>"
    )  # text, as sent: the page shows it as text


def test_a_browser_logging_out_is_gone_for_everyone(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    terminal = server.online("hans")
    assert browser.request(server.clock, "logout")["type"] == "ok"
    assert {"type": "presence", "user": "yoda", "online": False} in terminal.events()
    assert "yoda" not in server.factory.chat.online


def test_a_closed_websocket_logs_the_user_out(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    browser.socket.connectionLost(Failure(ConnectionDone()))
    assert "yoda" not in server.factory.chat.online


def test_a_binary_message_is_refused_and_nothing_is_done(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.send_raw(b'{"type":"hello","version":3,"id":1}', ws.BINARY)
    (error,) = browser.messages(server.clock)
    assert (error["type"], error["code"]) == ("error", "bad-frame")
    assert browser.request(server.clock, "hello", version=3)["type"] == "ok"  # still open


def test_two_frames_in_one_message_are_refused(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.send_raw(b'{"type":"hello","version":3,"id":1}\n{"type":"ping","id":2}')
    (error,) = browser.messages(server.clock)
    assert error["code"] == "bad-frame"
    assert "one frame per WebSocket text message" in error["text"]


def test_a_bad_frame_gets_the_same_error_as_over_tcp(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.send_raw(b"this is not json")
    (error,) = browser.messages(server.clock)
    assert error == {"type": "error", "code": "bad-json", "text": "The line is not a JSON object."}


# --- the Origin check -------------------------------------------------------------------------


def test_a_page_of_another_origin_cannot_open_the_websocket(server: Server) -> None:
    browser = WebClient(site_of(server))
    assert browser.open(origin="https://evil.example") == 403
    assert not browser.socket.chat  # no chat connection was ever made
    assert server.factory.connections.total == 0


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:8081", 403),
        ("https://127.0.0.1:8080", 403),
        ("http://127.0.0.1.evil:8080", 403),
        ("null", 400),  # a sandboxed or file: page; autobahn refuses it as no origin at all
    ],
)
def test_only_the_exact_origin_of_the_page_is_its_own(
    server: Server, origin: str, status: int
) -> None:
    assert WebClient(site_of(server)).open(origin=origin) == status
    assert server.factory.connections.total == 0


def test_an_origin_the_operator_lists_may_use_the_chat(server: Server) -> None:
    site = site_of(server, "https://Chat.Example.org:443/")
    assert WebClient(site).open(origin="https://chat.example.org", host="10.0.0.5:8080") == 101
    assert WebClient(site).open(origin="https://other.example.org") == 403


def test_a_client_that_is_not_a_browser_sends_no_origin_and_is_let_in(server: Server) -> None:
    browser = WebClient(site_of(server))
    assert browser.open(origin=None) == 101
    assert browser.request(server.clock, "hello", version=3)["type"] == "ok"


def test_origins_compare_as_browsers_compare_them() -> None:
    assert own_origin("Example.org:80", secure=False) == "http://example.org"
    assert own_origin("example.org:443", secure=True) == "https://example.org"
    assert own_origin("example.org:8443", secure=True) == "https://example.org:8443"
    assert normalised_origin("HTTP://[::1]:8080/") == "http://[::1]:8080"
    assert normalised_origin("http://[::1]") == "http://[::1]"


# --- the limits it shares with TCP -------------------------------------------------------------


def test_a_frame_over_the_size_limit_is_refused_and_the_socket_closed(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.send_raw(b'{"type":"hello","pad":"' + b"x" * 20000 + b'"}')
    frames = browser.received(server.clock)
    error = json.loads(frames[0].payload)
    assert error["code"] == "line-too-long"
    assert frames[-1].opcode == ws.CLOSE


def test_a_message_far_over_the_limit_is_cut_off_by_the_websocket_itself(server: Server) -> None:
    """autobahn drops the connection as soon as the frame's header says it is too big,
    before buffering it."""
    browser = WebClient(site_of(server))
    browser.open()
    browser.send_raw(b"x" * 100_000)
    assert browser.received(server.clock) == []
    assert browser.transport.disconnecting


def test_connections_from_one_address_count_over_tcp_and_websocket_together(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path, "--max-per-ip", "2")
    Connection(server, 40001, "10.0.0.7")
    WebClient(site_of(server), ip="10.0.0.7").open()
    browser = WebClient(site_of(server), ip="10.0.0.7", port=40003)
    browser.open()
    frames = browser.received(server.clock)
    refusal = json.loads(frames[0].payload)
    assert (refusal["code"], refusal["text"]) == (
        "refused",
        "Too many connections from 10.0.0.0/24.",
    )
    assert frames[-1].opcode == ws.CLOSE


def test_a_browser_that_does_not_log_in_in_time_is_closed(tmp_path: Path) -> None:
    server = Server(tmp_path, "--login-timeout", "5")
    browser = WebClient(site_of(server))
    browser.open()
    server.clock.advance(5)
    (error,) = browser.messages(server.clock)
    assert error["code"] == "login-timeout"


def test_a_flooding_browser_is_slowed_by_reading_less(tmp_path: Path) -> None:
    server = Server(tmp_path, "--flood-burst", "3", "--flood-rate", "1")
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    for n in range(5):
        browser.send("whoelse", id=n)
    answered = [m["id"] for m in browser.messages(server.clock) if "id" in m]
    assert answered == []  # the login took the burst
    assert browser.transport.producerState == "paused"  # the socket is not read
    for _ in range(5):
        server.clock.advance(1)
        answered += [m["id"] for m in browser.messages(server.clock) if "id" in m]
    assert answered == [0, 1, 2, 3, 4]  # all of them, in order, a second apart
    assert browser.transport.producerState == "producing"


def test_a_browser_that_reads_nothing_is_dropped(tmp_path: Path) -> None:
    server = Server(tmp_path, "--output-cap", "2000", "--flood-burst", "100")
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    browser.messages(server.clock)
    gate = browser.transport.producer  # what the chat watches the output with
    assert isinstance(gate, OutputGate)  # in the place of twisted.web's channel
    gate.pauseProducing()  # the transport's buffer is full: the reader does not read
    terminal = server.online("hans")
    for n in range(40):
        terminal.send("message", to="yoda", text=f"message {n} " + "x" * 100)
    assert browser.transport.disconnecting  # dropped, its output with it
    browser.socket.connectionLost(Failure(ConnectionDone()))  # as the reactor then says
    assert "yoda" not in server.factory.chat.online


# --- private chats: a browser cannot take one ------------------------------------------------


def test_a_private_chat_request_to_a_browser_is_answered_peer_unsupported(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    terminal = server.online("hans", version=3)
    terminal.send("listening", port=45000, fingerprint="a" * 64)
    browser.messages(server.clock)
    reply = terminal.send("startprivate", user="yoda")
    assert (reply["type"], reply["code"]) == ("error", "peer-unsupported")
    assert "web browser" in reply["text"]
    assert browser.messages(server.clock) == [{"type": "private-unsupported", "user": "hans"}]


def test_a_browser_cannot_ask_for_a_private_chat(server: Server) -> None:
    browser = WebClient(site_of(server))
    browser.open()
    browser.login(server.clock, "yoda")
    terminal = server.online("hans", version=3)
    terminal.send("listening", port=45000, fingerprint="a" * 64)
    reply = browser.request(server.clock, "startprivate", user="hans")
    assert reply["code"] == "peer-unsupported"
    assert not [e for e in terminal.events() if e["type"].startswith("private")]


def test_a_terminal_user_without_a_listener_is_still_told_no_peer_listener(
    server: Server,
) -> None:
    server.online("yoda", version=3)  # a terminal client that has not sent listening
    terminal = server.online("hans", version=3)
    terminal.send("listening", port=45000, fingerprint="a" * 64)
    assert terminal.send("startprivate", user="yoda")["code"] == "no-peer-listener"


# --- options ------------------------------------------------------------------------------------


def parsed(tmp_path: Path, *args: str) -> Options:
    credentials = tmp_path / "credentials.txt"
    credentials.write_text("hans falcon*solo\n")
    options = Options()
    options.parseOptions(["--credentials", str(credentials), *args])
    return options


def test_web_takes_endpoints_and_bare_ports(tmp_path: Path) -> None:
    options = parsed(tmp_path, "--web", "8080", "--web", "tcp:8081:interface=127.0.0.1")
    assert options["web"] == ["tcp:8080", "tcp:8081:interface=127.0.0.1"]
    assert parsed(tmp_path)["web"] == []


@pytest.mark.parametrize("origin", ["chat.example.org", "https://", "https://a/b", "ftp://a"])
def test_a_web_origin_must_be_an_origin(tmp_path: Path, origin: str) -> None:
    with pytest.raises(usage.UsageError, match="--web-origin"):
        parsed(tmp_path, "--web", "8080", "--web-origin", origin)


def test_a_web_origin_without_a_web_listener_is_a_mistake(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="give --web too"):
        parsed(tmp_path, "--web-origin", "https://chat.example.org")
