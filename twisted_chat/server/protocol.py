"""The server side of the client link: frames in, domain calls, frames out.

One :class:`ChatServerProtocol` per connection. It holds only that connection's data:
its phase, the username being logged in, the avatar and its logout callable. Every line
goes through one dispatch boundary that turns :class:`ChatError` and
:class:`FrameError` into ``error`` frames and logs anything unexpected; neither reaches
Twisted, so a bad line never drops the connection by accident.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import __version__, wire
from twisted_chat.errors import (
    AccountLocked,
    AlreadyOnline,
    ChatError,
    NotLoggedIn,
    UsernameTaken,
)
from twisted_chat.interfaces import IChatClient, IChatUser
from twisted_chat.server.accounts import check_password, check_username
from twisted_chat.server.core import ChatServer, Session


class Phase(enum.Enum):
    HELLO = "hello"
    USERNAME = "username"
    PASSWORD = "password"
    CHECKING = "checking"
    ONLINE = "online"
    CLOSED = "closed"


_REPLIED = object()
"""A handler's result meaning it sent its reply itself."""

Result = dict[str, Any] | Deferred[Any] | object


class ProtocolStateError(ChatError):
    code = "bad-state"


@implementer(IChatClient)
class ChatServerProtocol(LineReceiver):
    """One client connection."""

    transport: Any
    """Set by Twisted on connection. ``Any``: ``Protocol`` types it ``ITransport | None``,
    and the TCP/StringTransport providers we use have more (``disconnecting``)."""

    delimiter = wire.DELIMITER  # LF; a CR before it is stripped by the codec
    MAX_LENGTH = wire.MAX_INBOUND_LINE
    log = Logger()

    def __init__(self, factory: ChatServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HELLO
        self._user = ""
        self._new_account = False
        self.avatar: Session | None = None
        self._logout: Callable[[], None] | None = None

    # --- Twisted callbacks ----------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        # Never return a value from here: LineReceiver stops delivering the rest of the
        # buffer when lineReceived returns something truthy.
        if self.phase is Phase.CLOSED:
            return
        request_id: wire.RequestId = None
        try:
            request_id, frame = wire.parse(line, wire.CLIENT_REQUESTS)
            result = self._dispatch(frame, request_id)
        except wire.FrameError as e:
            self._send(wire.Error(e.code, e.text, e.request_id))
            return
        except ChatError as e:
            self._send(wire.Error(e.code, e.text, request_id))
            return
        except Exception:
            self.log.failure("unexpected error handling a {kind} frame", kind=_kind(line))
            self._send(wire.Error("internal", "The server could not handle that.", request_id))
            return
        if isinstance(result, Deferred):
            result.addCallbacks(
                self._replyOk,
                self._replyFailure,
                callbackArgs=(request_id,),
                errbackArgs=(request_id,),
            )
        else:
            self._replyOk(result, request_id)

    def lineLengthExceeded(self, line: bytes) -> None:
        # Close on purpose: the rest of an oversized line would keep arriving as garbage.
        self.log.warn(
            "closing {peer}: line over {limit} bytes",
            peer=self._peer(),
            limit=self.MAX_LENGTH,
            security_event="line-too-long",
        )
        self._send(
            wire.Error("line-too-long", f"Lines are limited to {self.MAX_LENGTH} bytes.", None)
        )
        self.phase = Phase.CLOSED
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.phase = Phase.CLOSED
        logout, self._logout = self._logout, None
        if logout is not None and self.avatar is not None:
            self.avatar.lost()

    # --- the mind (IChatClient) --------------------------------------------------------

    def deliver(self, event: wire.Frame) -> None:
        if self.phase is Phase.ONLINE:
            self.transport.write(wire.encode_event(event))

    def end_session(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._send(wire.LoggedOut(reason))
        # The domain ends the session itself (with its own reason); just let go of it.
        self._logout = None
        self.phase = Phase.CLOSED
        self.transport.loseConnection()

    # --- dispatch -----------------------------------------------------------------------

    def _dispatch(self, frame: wire.Frame, request_id: wire.RequestId) -> Result:
        if isinstance(frame, wire.Ping):
            return {}
        if self.phase is Phase.HELLO:
            if not isinstance(frame, wire.Hello):
                raise ProtocolStateError("Send a hello frame first.")
            return self._hello(frame)
        if self.phase is Phase.USERNAME and isinstance(frame, wire.Login):
            return self._login(frame)
        if self.phase is Phase.PASSWORD and isinstance(frame, wire.Password):
            return self._password(frame, request_id)
        if self.phase is Phase.ONLINE:
            assert self.avatar is not None
            return self._command(self.avatar, frame, request_id)
        if isinstance(frame, wire.Hello | wire.Login | wire.Password):
            raise ProtocolStateError(f"A {frame.TYPE} frame is not expected now.")
        raise NotLoggedIn()

    def _hello(self, frame: wire.Hello) -> dict[str, Any]:
        if frame.version != wire.PROTOCOL_VERSION:
            self._close_soon()
            raise ProtocolStateError(
                f"Protocol version {frame.version} is not supported; "
                f"this server speaks {wire.PROTOCOL_VERSION}."
            )
        self.phase = Phase.USERNAME
        return {
            "version": wire.PROTOCOL_VERSION,
            "server": f"twisted-chat/{__version__}",
            "max_line": wire.MAX_INBOUND_LINE,
            "max_text": wire.MAX_TEXT_CHARS,
        }

    def _login(self, frame: wire.Login) -> Deferred[dict[str, Any]]:
        check_username(frame.user)
        chat = self.factory.chat
        if chat.is_online(frame.user):
            raise AlreadyOnline(frame.user)
        self.phase = Phase.CHECKING

        def known(_: object) -> dict[str, Any]:
            self._user = frame.user
            self._new_account = not chat.accounts.exists(frame.user)
            self.phase = Phase.PASSWORD
            return {"account": "new" if self._new_account else "existing"}

        def failed(failure: Failure) -> Failure:
            self.phase = Phase.USERNAME
            return failure

        # Accounts added to the file by hand count from the next login on.
        answered: Deferred[dict[str, Any]] = chat.accounts.refresh().addCallbacks(known, failed)
        return answered

    def _password(self, frame: wire.Password, request_id: wire.RequestId) -> Deferred[Any]:
        user = self._user
        if self._new_account:
            check_password(frame.password)
        self.phase = Phase.CHECKING  # no other frame is served while we check
        d: Deferred[Any] = (
            self.factory.chat.accounts.create(user, frame.password)
            if self._new_account
            else succeed(None)
        )
        credentials = UsernamePassword(user.encode("utf-8"), frame.password.encode("utf-8"))
        d.addCallback(lambda _: self.factory.portal.login(credentials, self, IChatUser))

        def loggedIn(result: tuple[object, Session, Callable[[], None]]) -> object:
            _, avatar, logout = result
            if self.phase is Phase.CLOSED:  # the client left while we were checking
                logout()
                return _REPLIED
            self.avatar, self._logout = avatar, logout
            self.phase = Phase.ONLINE
            self._send(wire.Ok(request_id, {"user": user}))
            self.factory.chat.begin(avatar).addErrback(
                lambda f: self.log.failure("delivering offline mail to {user}", f, user=user)
            )
            return _REPLIED

        def refused(failure: Failure) -> Failure:
            if self.phase is not Phase.CLOSED:
                if failure.check(AccountLocked):
                    self._close_soon()
                elif failure.check(AlreadyOnline, UsernameTaken):
                    self.phase = Phase.USERNAME
                else:
                    self.phase = Phase.PASSWORD
            return failure

        return d.addCallbacks(loggedIn, refused)

    def _command(self, avatar: Session, frame: wire.Frame, request_id: wire.RequestId) -> Result:
        match frame:
            case wire.WhoElse():
                return {"users": avatar.whoelse()}
            case wire.WhoElseSince(seconds=seconds):
                return {"users": avatar.whoelsesince(seconds)}
            case wire.SendMessage(to=to, text=text):
                return avatar.message(to, text).addCallback(lambda stored: {"stored": stored})
            case wire.SendBroadcast(text=text):
                return {"skipped": avatar.broadcast(text)}
            case wire.Block(user=user):
                return avatar.block(user).addCallback(lambda _: {})
            case wire.Unblock(user=user):
                return avatar.unblock(user).addCallback(lambda _: {})
            case wire.StartPrivate(user=user):
                avatar.start_private(user)
                return {}
            case wire.AnswerPrivate(user=user, accept=accept):
                avatar.answer_private(user, accept)
                return {}
            case wire.Listening(port=port):
                avatar.listening(_host_of(self.transport.getPeer()), port)
                return {}
            case wire.Activity():
                avatar.activity()
                return {}
            case wire.Logout():
                self._send(wire.Ok(request_id, {}))
                self._close()
                return _REPLIED
        raise ProtocolStateError(f"A {frame.TYPE} frame is not expected now.")

    # --- replies ----------------------------------------------------------------------

    def _replyOk(self, result: object, request_id: wire.RequestId) -> None:
        if result is _REPLIED:
            return
        assert isinstance(result, dict)
        self._send(wire.Ok(request_id, result))

    def _replyFailure(self, failure: Failure, request_id: wire.RequestId) -> None:
        error = failure.value
        if isinstance(error, ChatError):
            self._send(wire.Error(error.code, error.text, request_id))
            return
        self.log.failure("unexpected error answering request {id}", failure, id=request_id)
        self._send(wire.Error("internal", "The server could not handle that.", request_id))

    def _send(self, frame: wire.Frame) -> None:
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.write(wire.encode(frame))

    def _close(self) -> None:
        """Log out now (so others are told at once) and close after pending writes."""
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()
        self.phase = Phase.CLOSED
        self.transport.loseConnection()

    def _close_soon(self) -> None:
        """Close on the next reactor turn, once the reply being built has been written
        (``_send`` writes nothing after ``loseConnection``)."""
        self.factory.chat.clock.callLater(0, self._close)

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return _host_of(peer) if peer is not None else "?"


def _host_of(address: IAddress) -> str:
    return str(getattr(address, "host", "127.0.0.1"))


def _kind(line: bytes) -> str:
    try:
        return str(wire.decode_object(line)["type"])[:32]
    except wire.FrameError:
        return "?"


class ChatServerFactory(ServerFactory):
    """Builds one :class:`ChatServerProtocol` per connection; holds the shared
    :class:`ChatServer` and the cred portal."""

    def __init__(self, chat: ChatServer, portal: Portal) -> None:
        self.chat = chat
        self.portal = portal
        self.closers: list[Callable[[], None]] = []
        """Called when the service stops (closing the durable store)."""

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:
        return ChatServerProtocol(self)
