"""Private chat (spec §9) with the real server, real client sessions and real peer
networks joined in memory: consent, the one-time token, every error and every end."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from tests.harness import Server
from tests.memnet import MemoryNetwork, Person, RawPeer, people, raw_peer
from twisted_chat import wire
from twisted_chat.client.peerlink import HANDSHAKE_TIMEOUT, PeerProtocol
from twisted_chat.client.peertls import PeerTLS

TIMEOUT = 600.0
TTL = 60.0


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, "--timeout", str(TIMEOUT), "--private-request-ttl", str(TTL))


def open_session(requester: Person, target: Person) -> None:
    requester.type(f"startprivate {target.name}")
    target.type("y")
    assert requester.peers.has(target.name) and target.peers.has(requester.name)
    requester.sees()
    target.sees()


def test_sample_e7(server: Server) -> None:
    _, who = people(server, "hans", "yoda", "luke")
    hans, yoda, luke = who["hans"], who["yoda"], who["luke"]
    hans.type("private luke hey dude")
    assert hans.sees() == ["Error. Private messaging to luke not enabled."]
    hans.type("startprivate luke")
    assert hans.sees() == ["Start private messaging with luke: waiting for luke to answer."]
    assert luke.sees() == ["hans would like to private message, enter y or n:"]
    luke.type("y")
    code = hans.peers.session_code("luke")
    assert hans.sees() == [
        "luke accepts private messaging.",
        "Private messaging with luke started: type private luke <message>.",
        f"Sealed end to end; session code {code}: luke sees the same code, or someone is "
        "in the middle (compare them by voice).",
    ]
    assert luke.sees() == [
        "Private messaging with hans started: type private hans <message>.",
        f"Sealed end to end; session code {code}: hans sees the same code, or someone is "
        "in the middle (compare them by voice).",
    ]
    hans.type("private luke hey dude")
    assert luke.sees() == ["hans(private): hey dude"]
    luke.type("private hans hello man")
    assert hans.sees() == ["you \u2192 luke (private): hey dude", "luke(private): hello man"]
    hans.type("message yoda force is strong", "message luke now via server")
    assert yoda.sees() == ["hans: force is strong"]
    assert luke.sees() == ["you \u2192 hans (private): hello man", "hans: now via server"]
    assert hans.sees() == ["you \u2192 yoda: force is strong", "you \u2192 luke: now via server"]
    hans.type("logout")
    # Two connections (server and peer) tell of it; luke is told once.
    assert luke.sees() == ["hans logged out; private messaging with hans ended."]
    assert yoda.sees() == ["-!- hans logged out"]
    assert not luke.peers.has("hans")


def test_private_messages_never_pass_through_the_server(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    who["hans"].type("private luke the secret plans")
    who["luke"].type("private hans received")
    assert who["luke"].sees() == [
        "hans(private): the secret plans",
        "you \u2192 hans (private): received",
    ]
    everything = b"".join(who["hans"].server_saw + who["luke"].server_saw)
    assert b"secret plans" not in everything and b"received" not in everything
    # ... but the server was told that both were active, and nothing more.
    assert b'"type":"activity"' in b"".join(who["hans"].server_saw)
    assert b'"type":"activity"' in b"".join(who["luke"].server_saw)


def test_decline(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].type("n")
    assert who["luke"].sees()[-1] == "You declined private messaging with hans."
    assert who["hans"].sees()[-1] == "luke declined private messaging."
    assert not who["hans"].peers.has("luke")


def test_yes_and_no_are_answers_only_while_a_request_waits(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["luke"].type("y")
    assert who["luke"].sees() == ["There is no private messaging request to answer."]
    who["hans"].type("startprivate luke")
    who["luke"].type("whoelse", "yes")  # other commands in between stay commands
    assert who["luke"].sees()[-3:-1] == [
        "hans",
        "Private messaging with hans started: type private hans <message>.",
    ]


def test_several_waiting_requests_need_a_name(server: Server) -> None:
    _, who = people(server, "hans", "yoda", "luke")
    who["hans"].type("startprivate luke")
    who["yoda"].type("startprivate luke")
    who["luke"].sees()
    who["luke"].type("y")
    assert who["luke"].sees() == [
        "Several users are waiting for an answer (hans, yoda): type y <user> or n <user>."
    ]
    who["luke"].type("n yoda", "y hans")
    assert who["yoda"].sees()[-1] == "luke declined private messaging."
    assert who["hans"].peers.has("luke")


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("startprivate bob", "Error. bob is not a user."),
        ("startprivate hans", "Error. You cannot start a private session with yourself."),
        ("startprivate vader", "Error. vader is not online."),
        ("stopprivate luke", "Error. There is no private session with luke."),
        ("stopprivate hans", "Error. You cannot stop a private session with yourself."),
        ("private hans hi", "Error. You cannot private message yourself."),
        ("private luke hi", "Error. Private messaging to luke not enabled."),
        ("private", "Usage: private <user> <message>"),
    ],
)
def test_errors(server: Server, command: str, error: str) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type(command)
    assert who["hans"].sees() == [error]
    assert who["luke"].sees() == []


def test_a_user_who_blocked_you_is_never_asked(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["luke"].type("block hans")
    who["luke"].sees()
    who["hans"].type("startprivate luke")
    assert who["hans"].sees() == [
        "Error. You cannot start a private session with luke: the user has blocked you."
    ]
    assert who["luke"].sees() == []


def test_a_block_after_the_session_started_does_not_stop_it(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    who["luke"].type("block hans")
    who["hans"].type("private luke still here")
    assert who["luke"].sees()[-1] == "hans(private): still here"


def test_a_second_request_or_session_is_an_error(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke", "startprivate luke")
    assert who["hans"].sees()[-1].startswith("Error. A private request between you and luke")
    who["luke"].type("startprivate hans")
    assert who["luke"].sees()[-1].startswith("Error. A private request between you and hans")
    who["luke"].type("y")
    who["hans"].type("startprivate luke")
    assert who["hans"].sees()[-1] == "Error. You are already in a private session with luke."


def test_an_unanswered_request_lapses_and_both_are_told(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].sees()
    network.advance(TTL - 0.1)
    assert who["hans"].sees() == ["Start private messaging with luke: waiting for luke to answer."]
    network.advance(0.1)
    assert who["hans"].sees() == ["The private messaging request with luke lapsed unanswered."]
    assert who["luke"].sees() == ["The private messaging request with hans lapsed unanswered."]
    who["luke"].type("y")  # no longer an answer
    assert who["luke"].sees() == ["There is no private messaging request to answer."]


def test_a_requester_who_leaves_cancels_the_request(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].sees()
    who["hans"].type("logout")
    assert who["luke"].sees() == [
        "The private messaging request with hans was cancelled: hans logged out.",
        "-!- hans logged out",
    ]
    # The request and its lapse timer are gone: nothing is left to lapse, later.
    server.advance(server.chat.private.ttl + 1)
    assert who["luke"].sees() == []


@pytest.mark.parametrize("who_stops", ["hans", "luke"])
def test_stopprivate_from_either_side(server: Server, who_stops: str) -> None:
    _, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    other = "luke" if who_stops == "hans" else "hans"
    who[who_stops].type(f"stopprivate {other}")
    assert who[who_stops].sees() == [f"Private messaging with {other} stopped."]
    assert who[other].sees() == [f"{who_stops} stopped private messaging."]
    assert not who["hans"].peers.has("luke") and not who["luke"].peers.has("hans")
    who[other].type(f"private {who_stops} hello?")
    assert who[other].sees() == [f"Error. Private messaging to {who_stops} not enabled."]
    open_session(who["hans"], who["luke"])  # and a new session can start


def test_an_idle_timeout_ends_private_sessions(tmp_path: Path) -> None:
    server = Server(tmp_path, "--timeout", "100")
    network, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    network.advance(50)
    who["luke"].type("whoelse")  # luke stays active
    network.advance(50)
    assert who["hans"].sees() == [
        "You will be logged out for inactivity in 10 s unless you type a command.",
        "You have been logged out due to inactivity.",
    ]
    assert who["hans"].display.status == 0
    assert who["luke"].sees()[-1:] == ["hans logged out; private messaging with hans ended."]
    assert "-!- hans logged out" not in who["luke"].sees()


def test_private_messages_count_as_activity(tmp_path: Path) -> None:
    server = Server(tmp_path, "--timeout", "100")
    network, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    for _ in range(3):
        network.advance(60)
        who["hans"].type("private luke still here")
        who["luke"].type("private hans me too")
    assert server.chat.is_online("hans") and server.chat.is_online("luke")


def test_a_vanished_peer_ends_the_session_with_a_clear_message(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    # luke's client dies: its connections close without any goodbye frame.
    for pump in network.pumps:
        listening_side = getattr(pump.server, "wrappedProtocol", None)  # inside its TLS
        if pump.client is who["luke"].link or getattr(listening_side, "user", None) == "hans":
            pump.serverIO.loseConnection()
    network.flush()
    assert "Private messaging with luke ended: the connection was lost." in who["hans"].sees()
    who["hans"].type("private luke are you there")
    assert who["hans"].sees() == ["Error. luke is offline."]


def test_two_sessions_at_once_and_server_commands_alongside(server: Server) -> None:
    _, who = people(server, "hans", "yoda", "luke")
    open_session(who["hans"], who["luke"])
    open_session(who["hans"], who["yoda"])
    who["hans"].type("private luke to luke", "private yoda to yoda", "broadcast to all")
    assert who["luke"].sees() == ["hans(private): to luke", "[all] hans: to all"]
    assert who["yoda"].sees() == ["hans(private): to yoda", "[all] hans: to all"]
    who["hans"].type("stopprivate luke", "private yoda still open")
    assert who["yoda"].sees() == ["hans(private): still open"]


# --- the listener refuses anyone without the right one-time token --------------------


def stranger(network: MemoryNetwork, target: Person, tls: PeerTLS | None = None) -> RawPeer:
    peer = raw_peer(network, target, tls=tls)
    assert peer is not None
    return peer


@pytest.mark.parametrize(
    "hello",
    [
        wire.encode(wire.PeerHello(2, "hans", "guessed")),  # approved user, wrong token
        wire.encode(wire.PeerHello(2, "vader", "guessed")),  # a user never approved
        wire.encode(wire.PrivateText("hi luke, I am hans")),  # no hello at all
        b'{"type":"peer-hello","version":2,"user":"hans"}\n',  # no token
        b"\xff\xfe garbage\n",
    ],
)
def test_forged_peer_connections_are_refused_quietly(server: Server, hello: bytes) -> None:
    network, who = people(server, "hans", "luke")
    who["hans"].peers.connect = lambda *a: Deferred()  # type: ignore[method-assign]
    who["hans"].type("startprivate luke")
    who["luke"].type("y")  # approved: luke's client now expects hans with a token
    who["luke"].sees()
    attacker = stranger(network, who["luke"])
    attacker.send(hello)
    network.advance(HANDSHAKE_TIMEOUT)  # refused at once, or at the handshake deadline
    assert b'"type":"error"' in attacker.received
    assert attacker.closed
    assert who["luke"].sees() == []
    assert not who["luke"].peers.has("vader")


def capture_approval(who: dict[str, Person]) -> tuple[str, str]:
    """hans asks luke, luke says yes, but hans's client does not connect: the test
    has the token (and luke's fingerprint) to use as it likes."""
    captured: list[tuple[str, str, int, str, str]] = []

    def capture(user: str, host: str, port: int, token: str, fingerprint: str) -> Deferred[None]:
        captured.append((user, host, port, token, fingerprint))
        return Deferred()

    who["hans"].peers.connect = capture  # type: ignore[method-assign]
    who["hans"].type("startprivate luke")
    who["luke"].type("y")
    (_user, _host, _port, token, fingerprint) = captured[0]
    return token, fingerprint


def test_a_token_works_once(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    token, _ = capture_approval(who)
    hans_certificate = who["hans"].peers.tls  # the right certificate: only the token is reused
    first = stranger(network, who["luke"], hans_certificate)
    assert first.send(wire.encode(wire.PeerHello(2, "hans", token))) == [b'{"type":"ok"}']
    first.hang_up()
    second = stranger(network, who["luke"], hans_certificate)
    second.send(wire.encode(wire.PeerHello(2, "hans", token)))
    # Refused at once: luke expects no hans any more (nothing to wait for).
    assert b'"code":"refused"' in second.received
    assert second.closed


def test_a_stolen_token_with_another_certificate_is_refused(server: Server) -> None:
    """Whoever learnt the token (from a log, a screen, a server) still cannot be hans:
    the certificate luke's client was told to expect is hans's."""
    network, who = people(server, "hans", "luke")
    token, _ = capture_approval(who)
    who["luke"].sees()
    thief = stranger(network, who["luke"])
    thief.send(wire.encode(wire.PeerHello(2, "hans", token)))
    assert b'"code":"refused"' in thief.received
    assert thief.closed
    assert not who["luke"].peers.has("hans")
    assert who["luke"].sees() == []


def test_a_listener_with_another_certificate_never_gets_the_token(server: Server) -> None:
    """If hans is sent to someone else's listener (a lying server, a hijacked address),
    the handshake fails on the pinned certificate before the token leaves hans."""
    network, who = people(server, "hans", "luke", "vader")
    vader_port = who["vader"].peers.listening_port
    assert vader_port is not None
    heard: list[bytes] = []
    original = who["vader"].peers.admit

    def admit(protocol: PeerProtocol) -> None:
        heard.append(protocol.claimed_token.encode())
        original(protocol)

    who["vader"].peers.admit = admit  # type: ignore[method-assign]
    hans_peers = who["hans"].peers
    hans_peers._connect_to = lambda host, port: network.connect_to(host, vader_port)
    who["hans"].type("startprivate luke")
    who["luke"].type("y")
    assert heard == []  # vader's client never saw a hello, let alone a token
    assert not hans_peers.has("luke")
    assert who["hans"].sees()[-1] == (
        "Could not open private messaging with luke: its certificate is not the one the "
        "server approved (someone else may have answered)"
    )


def test_both_users_see_the_same_session_code(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].type("y")
    codes = [
        [
            line.split("; session code ")[1].split(":")[0]
            for line in who[user].sees()
            if "; session code " in line
        ]
        for user in ("hans", "luke")
    ]
    assert len(codes[0]) == 1 and codes[0] == codes[1]
    assert codes[0] == [who["hans"].peers.session_code("luke")]
    assert codes[0] == [who["luke"].peers.session_code("hans")]
    assert len(codes[0][0].replace(" ", "")) == 20


def test_a_silent_peer_connection_is_dropped_after_the_handshake_time(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    attacker = stranger(network, who["luke"])
    network.advance(HANDSHAKE_TIMEOUT)
    assert attacker.closed
    assert b'"code":"timeout"' in attacker.received


def test_an_oversized_peer_line_is_refused(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    attacker = stranger(network, who["luke"])
    attacker.send(b"x" * (PeerProtocol.MAX_LENGTH + 1))
    assert attacker.closed


def test_the_session_code_on_request(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    who["hans"].type("fingerprint luke")
    who["luke"].type("fingerprint hans")
    (hans_line,) = who["hans"].sees()
    (luke_line,) = who["luke"].sees()
    code = who["hans"].peers.session_code("luke")
    assert code is not None and code in hans_line and code in luke_line
    who["hans"].type("fingerprint yoda")
    assert who["hans"].sees() == ["Error. There is no private session with yoda."]


def test_private_and_stopprivate_say_who_is_not_a_user_or_offline(server: Server) -> None:
    _, who = people(server, "hans", "luke", "yoda")
    who["hans"].type("private bob hi", "stopprivate bob")
    assert who["hans"].sees() == ["Error. bob is not a user.", "Error. bob is not a user."]
    who["yoda"].type("logout")
    who["hans"].sees()
    who["hans"].type("private yoda hi", "stopprivate yoda", "private luke hi")
    assert who["hans"].sees() == [
        "Error. yoda is offline.",
        "Error. yoda is offline.",
        "Error. Private messaging to luke not enabled.",  # online, no session yet
    ]


def test_completion_offers_what_fits_each_command(server: Server) -> None:
    _, who = people(server, "hans", "luke", "yoda")
    hans = who["hans"]
    open_session(hans, who["luke"])
    hans.type("block vader")
    hans.sees()
    session = hans.session
    assert session.names_for("private") == ["luke"]
    assert session.names_for("stopprivate") == ["luke"]
    assert session.names_for("unblock") == ["vader"]
    assert session.names_for("startprivate") == ["luke", "yoda"]
    assert "palpatine" in session.names_for("message")  # every account, online or not
    assert "hans" not in session.names_for("message")
