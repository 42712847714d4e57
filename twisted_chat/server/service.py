"""The running server, composed from Twisted's service parts.

:class:`ChatService` is a ``MultiService`` of three kinds of children, started in this
order and stopped in the reverse one, each stop awaited before the next begins:

1. :class:`StoresService`: closes the durable store, last, after any write a session
   could still make;
2. :class:`ChatRunning`: watches the accounts file while running; on stop, ends every
   session (one ``shutdown`` event each);
3. one ``StreamServerEndpointService`` per listener: stops listening first, so that no
   session starts while the others end.

A listener that cannot listen, at start or later (an endpoint may answer late), makes
the whole service fail: :attr:`ChatService.failed` fires with a one-line reason, and
the launcher (twistd's ``makeService`` or ``server.py``) ends the process with it.
A server must never run deaf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.server.core import Chat
from twisted_chat.server.protocol import ChatServerFactory
from twisted_chat.server.watch import watch_file


class StoresService(Service):
    """Starts the stores' own timers with the server, and closes the stores when it
    stops."""

    name = "stores"

    def __init__(
        self,
        closers: list[Callable[[], object]],
        starters: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.closers = closers
        self.starters = list(starters)

    def startService(self) -> None:
        super().startService()
        for start in self.starters:
            start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return gatherResults([maybeDeferred(close) for close in self.closers])


class ChatRunning(Service):
    """The chat while the server runs: hand edits of the accounts file are watched for;
    on stop, every session ends and no timer outlives the service."""

    name = "chat"

    def __init__(self, chat: Chat, reactor: Any) -> None:
        self.chat = chat
        self._reactor = reactor
        self._stop_watching: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self.chat.start()
        accounts = self.chat.accounts
        path = accounts.watched_path
        if path is not None:
            # With the kernel telling us of hand edits, a login needs no disk access.
            self._stop_watching = watch_file(self._reactor, path, accounts.changed)
            if self._stop_watching is not None:
                accounts.watched()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        return self.chat.stop()


def listen_failure_text(description: str, failure: Failure) -> str:
    """One line for an operator: where, and the system's reason."""
    error = failure.value
    where, reason = description, failure.getErrorMessage()
    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or reason
        if where.startswith(("tcp:", "tcp6:")):
            where = f"port {error.port}"
    return f"chatserver: cannot listen on {where}: {reason}"


@implementer(IStreamServerEndpoint)
class ReportingEndpoint:
    """An endpoint that reports how its ``listen`` ended: the bound port to ``bound``,
    a failure (early or late) to ``failed`` as one line. The listening Deferred then
    fires with None, so ``StreamServerEndpointService`` neither logs a traceback nor
    has a port to stop."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        bound: Callable[[IListeningPort], None],
        failed: Callable[[str], None],
    ) -> None:
        self._endpoint = endpoint
        self._description = description
        self._bound = bound
        self._failed = failed

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        def bound(port: IListeningPort) -> IListeningPort:
            self._bound(port)
            return port

        def failed(failure: Failure) -> None:
            self._failed(listen_failure_text(self._description, failure))

        listening = self._endpoint.listen(protocolFactory).addCallbacks(bound, failed)
        # None after a failure: StreamServerEndpointService then has no port to stop.
        return cast(Deferred[IListeningPort], listening)


class ChatService(MultiService):
    """The whole server (see the module's docstring for its parts and their order)."""

    log = Logger()

    def __init__(self, factory: ChatServerFactory) -> None:
        super().__init__()
        self.factory = factory
        """Builds the protocol of every listener's connections."""
        self.listening: Deferred[IListeningPort] = Deferred()
        """Fires with the first listening port once bound (launchers wait on it)."""
        self.failed: Deferred[None] = Deferred()
        """Errbacks with ``SystemExit(one line)`` if a listener fails, whenever it does."""
        self._failure: str | None = None
        self._starting = False

    def add_listener(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        factory: IProtocolFactory | None = None,
        what: str = "chat server",
    ) -> None:
        """Listen on ``endpoint`` for clients (or, given a ``factory``, for something
        else the server serves, such as its metrics): a failure is the server's."""
        bound = partial(self._bound, what, factory is None)
        reporting = ReportingEndpoint(endpoint, description, bound, self._listen_failed)
        StreamServerEndpointService(reporting, factory or self.factory).setServiceParent(self)

    def _bound(self, what: str, clients: bool, port: IListeningPort) -> None:
        address = port.getHost()
        self.log.info(
            "{what} listening on {host}:{port}",
            what=what,
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        if clients and not self.listening.called:
            self.listening.callback(port)

    def _listen_failed(self, text: str) -> None:
        if self._failure is not None:
            return
        self._failure = text
        if self._starting:
            return  # raised by startService, once every child has been asked to start
        self.log.critical("{text}", text=text)
        self.failed.errback(SystemExit(text))

    def privilegedStartService(self) -> None:
        # twistd binds listeners here, before dropping privileges; the same rule.
        self._start(super().privilegedStartService)

    def startService(self) -> None:
        self._start(super().startService)

    def _start(self, start: Callable[[], None]) -> None:
        """Start every part; a listener that fails at once raises ``SystemExit`` with
        one line (twistd prints it and exits 1; no 40-line traceback)."""
        self._starting = True
        try:
            start()
        finally:
            self._starting = False
        if self._failure is not None:
            raise SystemExit(self._failure)

    def stopService(self) -> Deferred[None]:
        """Stop the parts in reverse order, each once the one before has stopped:
        listeners, then sessions, then stores."""
        Service.stopService(self)

        async def one_after_another() -> None:
            for child in reversed(list(self)):
                if child.running:
                    await maybeDeferred(child.stopService)

        return Deferred.fromCoroutine(one_after_another())
