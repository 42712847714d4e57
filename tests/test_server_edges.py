"""The server's own edges: old password strikes expire, the listen backlog, the open-file
limit, and a port in use."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from tests.harness import Server, write_credentials
from twisted_chat.server import limits
from twisted_chat.server.tap import Options, makeService
from twisted_chat.server.wiring import LISTEN_BACKLOG, with_backlog


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, "--block-duration", "60")


def test_two_old_strikes_do_not_count_towards_a_lock(server: Server) -> None:
    """An attacker could pre-load two strikes on every account and lock any of them
    with one more try whenever they liked."""
    for wrong in ("a", "b"):
        assert server.connect().login("hans", wrong)["code"] == "wrong-password"
    server.clock.advance(60.5)  # longer than a lock lasts: forgotten
    reply = server.connect().login("hans", "c")
    assert reply["code"] == "wrong-password" and "2 tries left" in reply["text"]


def test_strikes_within_the_block_duration_still_lock(server: Server) -> None:
    for wrong in ("a", "b"):
        server.connect().login("hans", wrong)
        server.clock.advance(59)
    assert server.connect().login("hans", "c")["code"] == "locked"


def test_tcp_listeners_get_a_burst_sized_backlog() -> None:
    assert with_backlog("tcp:5000") == f"tcp:5000:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:5000:backlog=10") == "tcp:5000:backlog=10"
    assert with_backlog("unix:/tmp/chat.sock") == "unix:/tmp/chat.sock"


def test_the_listener_is_made_with_the_backlog(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--credentials", str(write_credentials(tmp_path / "c.txt"))])
    reactor = MemoryReactorClock()
    makeService(options, reactor).startService()
    assert reactor.tcpServers[0][2] == LISTEN_BACKLOG


def test_connections_are_capped_below_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: None)
    fitted, why = limits.fit_descriptor_limit(20_000)
    assert fitted == 1024 - limits.DESCRIPTORS_KEPT
    assert why is not None and "does not fit the open-file limit (1024)" in why
    assert limits.fit_descriptor_limit(500) == (500, None)


def test_a_limit_short_only_by_the_descriptors_kept_is_fitted_without_a_word(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default --max-connections (20,000) on the usual hard limit of 20,000: the
    server takes 64 fewer for itself, and says nothing at every start."""
    monkeypatch.setattr(resource, "getrlimit", lambda _: (20_000, 20_000))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: None)
    assert limits.fit_descriptor_limit(20_000) == (20_000 - limits.DESCRIPTORS_KEPT, None)
    fitted, why = limits.fit_descriptor_limit(20_100)
    assert fitted == 20_000 - limits.DESCRIPTORS_KEPT and why is not None


def test_the_soft_limit_is_raised_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 65536))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: raised.append(value))
    assert limits.fit_descriptor_limit(20_000) == (20_000, None)
    assert raised == [(65536, 65536)]


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--credentials", str(write_credentials(tmp_path / "c.txt"))])
    reactor = MemoryReactorClock()

    def busy(*_: object, **__: object) -> None:
        raise CannotListenError("", 5000, OSError(98, "Address already in use"))

    reactor.listenTCP = busy  # type: ignore[method-assign]
    service = makeService(options, reactor)
    with pytest.raises(SystemExit) as exited:
        service.startService()
    assert str(exited.value) == "chatserver: cannot listen on port 5000: Address already in use"
