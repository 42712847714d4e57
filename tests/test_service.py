"""The server's service: its parts start in order, stop in reverse (listeners, then
sessions, then stores, each awaited), and a listener failing at any time is fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.harness import Server
from twisted_chat.server.service import ChatRunning, ChatService, StoresService


@implementer(IStreamServerEndpoint)
class ControlledEndpoint:
    """An endpoint whose ``listen`` answers when the test says."""

    def __init__(self) -> None:
        self.answer: Deferred[IListeningPort] = Deferred()

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.answer


@implementer(IStreamServerEndpoint)
class RefusingEndpoint:
    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return fail(CannotListenError("127.0.0.1", 5000, OSError(98, "Address already in use")))


def service_with(server: Server, endpoint: IStreamServerEndpoint, description: str) -> ChatService:
    chat_service = ChatService(server.factory)
    ChatRunning(server.chat, MemoryReactorClock()).setServiceParent(chat_service)
    chat_service.add_listener(endpoint, description)
    return chat_service


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_a_listener_failing_at_once_stops_the_start_with_one_line(server: Server) -> None:
    chat_service = service_with(server, RefusingEndpoint(), "tcp:5000")
    with pytest.raises(SystemExit) as exited:
        chat_service.startService()
    assert str(exited.value) == "chatserver: cannot listen on port 5000: Address already in use"


def test_a_listener_failing_late_fails_the_service(
    server: Server, no_logged_failures: list[dict[str, object]]
) -> None:
    endpoint = ControlledEndpoint()
    chat_service = service_with(server, endpoint, "onion:5000")
    chat_service.startService()  # nothing yet: the endpoint has not answered
    ended: list[Failure] = []
    chat_service.failed.addErrback(ended.append)
    endpoint.answer.errback(Failure(RuntimeError("Tor stopped")))
    (failure,) = ended
    assert failure.check(SystemExit)
    assert str(failure.value) == "chatserver: cannot listen on onion:5000: Tor stopped"
    # Said once, for the operator, at the level that means "the server cannot go on".
    assert [event["text"] for event in no_logged_failures] == [str(failure.value)]
    no_logged_failures.clear()
    chat_service.stopService()


def test_stop_order_listeners_then_sessions_then_stores(server: Server) -> None:
    events: list[str] = []

    class Port:
        def stopListening(self) -> Deferred[None]:
            events.append("stopped listening")
            self.stopped: Deferred[None] = Deferred()
            return self.stopped

        def getHost(self) -> Any:
            return None

    port = Port()
    endpoint = ControlledEndpoint()
    chat_service = ChatService(server.factory)
    StoresService([lambda: events.append("stores closed")]).setServiceParent(chat_service)
    ChatRunning(server.chat, MemoryReactorClock()).setServiceParent(chat_service)
    chat_service.add_listener(endpoint, "tcp:5000")
    chat_service.startService()
    endpoint.answer.callback(port)  # type: ignore[arg-type]
    hans = server.online("hans")
    stopped = chat_service.stopService()
    assert events == ["stopped listening"]  # and nothing else until the port is closed
    assert not hans.lost
    port.stopped.callback(None)
    assert events == ["stopped listening", "stores closed"]
    assert hans.events()[-1] == {"type": "logged-out", "reason": "shutdown"}
    assert stopped.called
