"""Private chat (spec §9) with the real server, real client sessions and real peer
networks joined in memory: consent, the one-time token, every error and every end."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from tests.harness import Server
from tests.memnet import MemoryNetwork, Person, people
from twisted_chat import wire
from twisted_chat.client.peer import HANDSHAKE_TIMEOUT, PeerProtocol

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
    assert hans.sees() == [
        "luke accepts private messaging.",
        "Private messaging with luke started: type private luke <message>.",
    ]
    assert luke.sees() == ["Private messaging with hans started: type private hans <message>."]
    hans.type("private luke hey dude")
    assert luke.sees() == ["hans(private): hey dude"]
    luke.type("private hans hello man")
    assert hans.sees() == ["luke(private): hello man"]
    hans.type("message yoda force is strong", "message luke now via server")
    assert yoda.sees() == ["hans: force is strong"]
    assert luke.sees() == ["hans: now via server"]
    hans.type("logout")
    # Two notices from two connections (server and peer), in either order.
    assert sorted(luke.sees()) == [
        "hans logged out",
        "hans logged out; private messaging with hans ended.",
    ]
    assert yoda.sees() == ["hans logged out"]
    assert not luke.peers.has("hans")


def test_private_messages_never_pass_through_the_server(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    open_session(who["hans"], who["luke"])
    who["hans"].type("private luke the secret plans")
    who["luke"].type("private hans received")
    assert who["luke"].sees() == ["hans(private): the secret plans"]
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
    assert who["luke"].sees() == ["Error. Invalid command: y. Type help for the commands."]
    who["hans"].type("startprivate luke")
    who["luke"].type("whoelse", "yes")  # other commands in between stay commands
    assert who["luke"].sees()[-2:] == [
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
    assert who["luke"].sees() == ["Error. Invalid command: y. Type help for the commands."]


def test_a_requester_who_leaves_cancels_the_request(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].sees()
    who["hans"].type("logout")
    assert who["luke"].sees() == [
        "The private messaging request with hans was cancelled: hans logged out.",
        "hans logged out",
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
    assert who["hans"].sees() == ["You have been logged out due to inactivity."]
    assert who["hans"].display.status == 0
    assert sorted(who["luke"].sees()[-2:]) == [
        "hans logged out",
        "hans logged out; private messaging with hans ended.",
    ]


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
        if pump.client is who["luke"].link or getattr(pump.server, "user", None) == "hans":
            pump.serverIO.loseConnection()
    network.flush()
    assert "Private messaging with luke ended: the connection was lost." in who["hans"].sees()
    who["hans"].type("private luke are you there")
    assert who["hans"].sees() == ["Error. Private messaging to luke not enabled."]


def test_two_sessions_at_once_and_server_commands_alongside(server: Server) -> None:
    _, who = people(server, "hans", "yoda", "luke")
    open_session(who["hans"], who["luke"])
    open_session(who["hans"], who["yoda"])
    who["hans"].type("private luke to luke", "private yoda to yoda", "broadcast to all")
    assert who["luke"].sees() == ["hans(private): to luke", "hans: to all"]
    assert who["yoda"].sees() == ["hans(private): to yoda", "hans: to all"]
    who["hans"].type("stopprivate luke", "private yoda still open")
    assert who["yoda"].sees() == ["hans(private): still open"]


# --- the listener refuses anyone without the right one-time token --------------------


def raw_peer(network: MemoryNetwork, target: Person) -> StringTransport:
    """A connection from an attacker's raw socket to ``target``'s peer port."""
    (port,) = [p for p, f in network.listeners.items() if f.network is target.peers]  # type: ignore[attr-defined]
    listener = network.listeners[port]
    protocol = listener.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.protocol = protocol  # type: ignore[attr-defined]
    return transport


def feed(transport: StringTransport, frame: bytes) -> list[bytes]:
    transport.protocol.dataReceived(frame)  # type: ignore[attr-defined]
    written: bytes = transport.value()
    return written.splitlines()


@pytest.mark.parametrize(
    "hello",
    [
        wire.encode(wire.PeerHello(1, "hans", "guessed")),  # approved user, wrong token
        wire.encode(wire.PeerHello(1, "vader", "guessed")),  # a user never approved
        wire.encode(wire.PrivateText("hi luke, I am hans")),  # no hello at all
        b'{"type":"peer-hello","version":1,"user":"hans"}\n',  # no token
        b"\xff\xfe garbage\n",
    ],
)
def test_forged_peer_connections_are_refused_quietly(server: Server, hello: bytes) -> None:
    network, who = people(server, "hans", "luke")
    who["hans"].type("startprivate luke")
    who["luke"].type("y")  # approved: luke's client now expects hans with a token
    who["luke"].sees()
    attacker = raw_peer(network, who["luke"])
    feed(attacker, hello)
    network.advance(HANDSHAKE_TIMEOUT)  # refused at once, or at the handshake deadline
    assert b'"type":"error"' in attacker.value()
    assert attacker.disconnecting
    assert who["luke"].sees() == []
    assert not who["luke"].peers.has("vader")


def test_a_token_works_once(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    captured: list[tuple[str, str, int, str]] = []

    def capture(user: str, host: str, port: int, token: str) -> Deferred[None]:
        # hans's client never connects: we use the token ourselves
        captured.append((user, host, port, token))
        return Deferred()

    who["hans"].peers.connect = capture  # type: ignore[method-assign]
    who["hans"].type("startprivate luke")
    who["luke"].type("y")
    (_user, _host, _port, token) = captured[0]
    first = raw_peer(network, who["luke"])
    assert feed(first, wire.encode(wire.PeerHello(1, "hans", token))) == [b'{"type":"ok"}']
    first.protocol.connectionLost(None)  # type: ignore[attr-defined]
    second = raw_peer(network, who["luke"])
    assert feed(second, wire.encode(wire.PeerHello(1, "hans", token))) == []
    network.advance(HANDSHAKE_TIMEOUT)  # no approval for a second use ever comes
    assert b'"code":"timeout"' in second.value()
    assert second.disconnecting


def test_a_silent_peer_connection_is_dropped_after_the_handshake_time(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    attacker = raw_peer(network, who["luke"])
    network.advance(HANDSHAKE_TIMEOUT)
    assert attacker.disconnecting
    assert b'"code":"timeout"' in attacker.value()


def test_an_oversized_peer_line_is_refused(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    attacker = raw_peer(network, who["luke"])
    feed(attacker, b"x" * (PeerProtocol.MAX_LENGTH + 1))
    assert attacker.disconnecting
