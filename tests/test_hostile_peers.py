"""Peers and the private-chat broker at the edges: idle connections cannot lock real
peers out, refusals never reach the user's screen, every per-connection structure is
bounded, and a client connects only where a request of its own was answered."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tests.fakes import FAKE_FINGERPRINT
from tests.harness import Server
from tests.memnet import MemoryNetwork, Person, RawPeer, people, raw_peer
from twisted_chat import wire
from twisted_chat.client.peer import MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_ADDRESS


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def connect_raw(network: MemoryNetwork, target: Person, host: str) -> RawPeer | None:
    """A connection from ``host`` to ``target``'s peer port (None: refused at once)."""
    return raw_peer(network, target, source=host)


def test_idle_connections_do_not_block_a_real_private_session(server: Server) -> None:
    network, who = people(server, "hans", "luke")
    hoarders = [connect_raw(network, who["luke"], "127.0.0.1") for _ in range(40)]
    hoarders += [connect_raw(network, who["luke"], f"10.0.0.{n}") for n in range(40)]
    assert all(h is not None for h in hoarders)  # accepted, the oldest silent evicted
    assert len(who["luke"].peers._authenticating) <= MAX_UNAUTHENTICATED
    who["hans"].type("startprivate luke")
    who["luke"].type("y")
    assert who["hans"].peers.has("luke") and who["luke"].peers.has("hans")


def test_one_address_has_a_bounded_share_of_handshakes(server: Server) -> None:
    network, who = people(server, "luke")
    for _ in range(10):
        connect_raw(network, who["luke"], "203.0.113.9")
    waiting = [p for p in who["luke"].peers._authenticating if p.host == "203.0.113.9"]
    assert len(waiting) == MAX_UNAUTHENTICATED_PER_ADDRESS


def test_hellos_waiting_for_an_approval_are_not_evicted_but_refused(server: Server) -> None:
    """A hello from a user luke said yes to may come before the approval: it waits,
    and is not evicted for a newcomer."""
    network, who = people(server, "luke")
    talkers = []
    for n in range(MAX_UNAUTHENTICATED_PER_ADDRESS):
        who["luke"].peers.consented(f"user{n}")
        peer = connect_raw(network, who["luke"], "203.0.113.9")
        assert peer is not None
        peer.send(wire.encode(wire.PeerHello(2, f"user{n}", "t")))
        talkers.append(peer)
    assert connect_raw(network, who["luke"], "203.0.113.9") is None
    assert not any(t.closed for t in talkers)


def test_hellos_from_strangers_are_refused_at_once_and_a_real_chat_starts(
    server: Server,
) -> None:
    """Four fake hellos (users luke never said yes to) used to hold luke's handshake
    places; now each is refused and closed at once, and a real private chat starts
    while fifty of them are tried."""
    network, who = people(server, "hans", "luke")
    fakes = []
    for n in range(50):
        peer = connect_raw(network, who["luke"], "203.0.113.9")
        assert peer is not None  # never full: the refused ones are gone
        peer.send(wire.encode(wire.PeerHello(2, f"user{n % 5}", "forged")))
        assert peer.closed and b'"code":"refused"' in peer.received
        fakes.append(peer)
        if n == 25:
            who["hans"].type("startprivate luke")
            who["luke"].type("y")
    assert who["hans"].peers.has("luke") and who["luke"].peers.has("hans")
    assert who["luke"].peers._awaiting == {}


def test_a_second_hello_on_one_connection_is_refused(server: Server) -> None:
    """Repeated ``peer-hello`` with an empty user grew the client's memory forever."""
    network, who = people(server, "luke")
    attacker = connect_raw(network, who["luke"], "203.0.113.9")
    assert attacker is not None
    attacker.send(wire.encode(wire.PeerHello(2, "", "")) * 1000)
    assert attacker.closed
    assert b'"code":"refused"' in attacker.received
    assert who["luke"].peers._awaiting == {}


def test_a_refusal_is_never_an_unhandled_error(
    server: Server, no_logged_failures: list[dict[str, object]]
) -> None:
    network, who = people(server, "hans", "luke")
    for n in range(50):
        attacker = connect_raw(network, who["luke"], f"198.51.100.{n}")
        assert attacker is not None
        attacker.send(wire.encode(wire.PeerHello(2, "vader", "guess")))
        attacker.hang_up()
    gc.collect()  # an unhandled Deferred failure is logged when it is collected
    assert no_logged_failures == []
    assert who["luke"].sees() == []


def test_an_approval_we_never_asked_for_does_not_make_us_connect(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    connects: list[tuple[object, ...]] = []
    who["hans"].peers.connect = lambda *a: connects.append(a)  # type: ignore[assignment,method-assign]
    # As if the server (or anyone who can inject frames) sent it unasked:
    who["hans"].session.event_received(wire.PrivateAccepted("luke", "tok", "127.0.0.1", 22))
    who["hans"].session.event_received(wire.PrivateAccepted("luke", "tok", "127.0.0.1", 6000))
    assert connects == []
    assert who["hans"].sees() == []


def test_an_approval_naming_a_privileged_port_is_refused(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    connects: list[tuple[object, ...]] = []
    who["hans"].peers.connect = lambda *a: connects.append(a)  # type: ignore[assignment,method-assign]
    who["hans"].type("startprivate luke")
    who["hans"].sees()
    who["hans"].session.event_received(wire.PrivateAccepted("luke", "tok", "127.0.0.1", 25))
    assert connects == []
    assert who["hans"].sees() == [
        "Could not open private messaging with luke: the server named port 25, outside 1024-65535."
    ]


def test_a_token_for_a_session_we_did_not_accept_is_not_expected(server: Server) -> None:
    _, who = people(server, "hans", "luke")
    who["luke"].session.event_received(wire.PrivateAccepted("hans", "tok"))
    assert not who["luke"].peers._expected


@pytest.mark.parametrize("port", [0, 22, 1023, 65536])
def test_the_server_refuses_a_privileged_peer_port(server: Server, port: int) -> None:
    hans = server.online("hans")
    reply = hans.send("listening", port=port, fingerprint=FAKE_FINGERPRINT)
    assert reply["code"] == "bad-argument"
    assert hans.send("listening", port=1024, fingerprint=FAKE_FINGERPRINT)["type"] == "ok"


@pytest.mark.parametrize("fingerprint", ["", "AB" * 32, "ab" * 31, "xy" * 32, "ab" * 33])
def test_the_server_refuses_a_fingerprint_that_is_not_one(server: Server, fingerprint: str) -> None:
    hans = server.online("hans")
    reply = hans.send("listening", port=4000, fingerprint=fingerprint)
    assert reply["code"] == "bad-argument"


def test_a_client_without_a_peer_identity_cannot_ask_for_a_private_session(
    server: Server,
) -> None:
    hans, luke = server.online("hans"), server.online("luke")
    assert luke.send("listening", port=4000, fingerprint=FAKE_FINGERPRINT)["type"] == "ok"
    reply = hans.send("startprivate", user="luke")  # hans sent no listening
    assert reply["code"] == "no-peer-listener"
    assert "Your client cannot take private sessions" in reply["text"]
