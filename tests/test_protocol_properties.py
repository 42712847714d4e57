"""Random frame sequences against the real server protocol (hypothesis stateful
testing): whatever clients send, in whatever order, the server never raises, never
logs an unhandled error, answers with well-formed frames only, and its routing table
always matches the connections that are logged in."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tests.harness import HANDOUT_USERS, Connection, Server
from twisted_chat import wire
from twisted_chat.server.phases import Phase

NAMES = [*HANDOUT_USERS, "ghost", "new_user", "bad name", ""]

field_values = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=20),
    st.integers(-5, 10**6),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
frames = st.builds(
    lambda kind, fields, request_id: {"type": kind, **fields, **request_id},
    st.sampled_from([*wire.CLIENT_REQUESTS, "bogus"]),
    st.dictionaries(
        st.sampled_from(["user", "to", "text", "seconds", "version", "password", "accept", "port"]),
        field_values,
        max_size=3,
    ),
    st.one_of(st.just({}), st.builds(lambda n: {"id": n}, st.integers(0, 1000))),
)


class ChatProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = Server(
            Path(tempfile.mkdtemp()),
            "--timeout",
            "50",
            "--flood-burst",
            "1000",
            "--flood-rate",
            "1000",
            "--private-request-ttl",
            "5",
        )
        self.connections: list[Connection] = []

    clients = Bundle("clients")

    @rule(target=clients)
    def connect(self) -> Connection:
        connection = self.server.connect()
        self.connections.append(connection)
        return connection

    @rule(client=clients, user=st.sampled_from(NAMES), right=st.booleans())
    def log_in(self, client: Connection, user: str, right: bool) -> None:
        password = HANDOUT_USERS.get(user, "pw") if right else "wrong"
        for frame in (
            {"type": "hello", "version": 2},
            {"type": "login", "user": user},
            {"type": "password", "password": password},
        ):
            self._send(client, json.dumps(frame).encode() + b"\n")

    @rule(client=clients, frame=frames)
    def send_frame(self, client: Connection, frame: dict[str, Any]) -> None:
        self._send(client, json.dumps(frame).encode() + b"\n")

    @rule(client=clients, data=st.binary(max_size=100))
    def send_bytes(self, client: Connection, data: bytes) -> None:
        self._send(client, data)

    @rule(client=clients)
    def drop(self, client: Connection) -> None:
        client.close()

    @rule(seconds=st.sampled_from([0.5, 3.0, 20.0]))
    def wait(self, seconds: float) -> None:
        self.server.advance(seconds)

    def _send(self, client: Connection, data: bytes) -> None:
        if not client.lost and not client.transport.disconnecting:
            client.protocol.dataReceived(data)
            self.server.clock.advance(0)

    @invariant()
    def output_is_well_formed(self) -> None:
        for connection in self.connections:
            for frame in connection.received():  # (closes what the server closed)
                line = json.dumps(frame).encode()
                wire.parse(line, wire.SERVER_FRAMES)  # raises if not a valid frame

    @invariant()
    def routing_table_matches_the_logged_in_connections(self) -> None:
        logged_in = {
            c.protocol.avatar.name
            for c in self.connections
            if not c.lost and c.protocol.phase is Phase.ONLINE and c.protocol.avatar
        }
        assert set(self.server.chat.online) == logged_in
        for name, session in self.server.chat.online.items():
            assert session.timer is not None and session.timer.active(), name

    def teardown(self) -> None:
        for connection in self.connections:
            connection.close()
        assert self.server.chat.online == {}


ChatProtocolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestChatProtocol = ChatProtocolMachine.TestCase
