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
from twisted.internet.interfaces import IAddress, IDelayedCall, ITCPTransport
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
    InvalidUsername,
    NotLoggedIn,
    UsernameTaken,
)
from twisted_chat.interfaces import IChatClient, IChatUser
from twisted_chat.server import names
from twisted_chat.server.accounts import check_password, check_username
from twisted_chat.server.core import Chat, Session
from twisted_chat.server.limits import ConnectionCounter, Limits, OutputGate, TokenBucket
from twisted_chat.server.output import Outbox, TurnFlusher


class Phase(enum.Enum):
    HELLO = "hello"
    USERNAME = "username"
    PASSWORD = "password"
    CHECKING = "checking"
    ONLINE = "online"
    CLOSED = "closed"


_NOT_PAUSED: frozenset[str] = frozenset()

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
    _outbox: Outbox
    """This connection's output for the current turn; set on connection."""

    def __init__(self, factory: ChatServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HELLO
        self._user = ""
        self._new_account = False
        self.avatar: Session | None = None
        self._logout: Callable[[], None] | None = None
        limits = factory.limits
        self._clock = factory.chat.clock
        self._host = ""
        self._counted = False
        self._bucket = TokenBucket(self._clock, limits.flood_burst, limits.flood_rate)
        self._held_line: bytes | None = None
        """A line that found the flood bucket empty; handled when a token is due."""
        self._throttled_since: float | None = None
        self._resume: IDelayedCall | None = None
        self._gate = OutputGate(limits.output_cap, self._too_slow)
        self._heard = self._clock.seconds()
        self._watchdog: IDelayedCall | None = None
        self._connected_at = self._heard
        self._frames_before_login = 0
        self._pauses = _NOT_PAUSED
        """Why reading is paused ("flood", "login"); it resumes when none is left. A
        frozenset: the empty one is shared, so an unpaused connection (nearly all of
        them) keeps no set of its own."""

    # --- Twisted callbacks ----------------------------------------------------------

    def connectionMade(self) -> None:
        self._outbox = Outbox(self.transport, self.factory.flusher)
        self._host = self._peer()
        refusal = self.factory.connections.admit(self._host)
        if refusal is not None:
            self.log.warn(
                "refused a connection from {host}: {why}",
                host=self._host,
                why=refusal,
                security_event="connection-refused",
            )
            self._send(wire.Error("refused", refusal))
            self.phase = Phase.CLOSED
            self._lose_connection()
            return
        self._counted = True
        if ITCPTransport.providedBy(self.transport):
            # Writes are already gathered per reactor turn; Nagle would only add delay
            # to the small frames a chat server sends.
            self.transport.setTcpNoDelay(True)
        limits = self.factory.limits
        self.transport.registerProducer(self._gate, True)
        # One timer per connection watches both liveness and the login deadline: a
        # cancelled DelayedCall stays in the reactor's heap until its time comes.
        first = min(limits.ping_interval, limits.login_timeout)
        self._watchdog = self._clock.callLater(first, self._check_alive)

    def lineReceived(self, line: bytes) -> None:
        # Never return a value from here: LineReceiver stops delivering the rest of the
        # buffer when lineReceived returns something truthy.
        if self.phase is Phase.CLOSED:
            return
        self._heard = self._clock.seconds()
        if self._throttled_since is not None and self._bucket.full:
            self._throttled_since = None  # calm for a whole burst's worth of time
        if self._bucket.take():
            self._process(line)
        else:
            self._throttle(line)

    def _process(self, line: bytes) -> None:
        if self.phase is not Phase.ONLINE:
            self._frames_before_login += 1
            if self._frames_before_login > self.factory.limits.login_frames:
                self._refuse_and_close(
                    "too-many-attempts", "Too many attempts to log in.", _request_id(line)
                )
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
            if "login" in self._pauses:
                result.addBoth(lambda _: self._unpause("login"))
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
        self._lose_connection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.phase = Phase.CLOSED
        for call in (self._resume, self._watchdog):
            if call is not None and call.active():
                call.cancel()
        self._resume = self._watchdog = None
        if self._counted:
            self._counted = False
            self.factory.connections.release(self._host)
        logout, self._logout = self._logout, None
        if logout is not None and self.avatar is not None:
            self.avatar.lost()

    # --- limits ---------------------------------------------------------------------

    def _throttle(self, line: bytes) -> None:
        """No token for this line: hold it and stop reading (TCP pushes back on the
        flooder, and only on the flooder) until a token is due. Sustained flooding,
        throttled for ``flood_disconnect`` seconds without a break, disconnects."""
        now = self._clock.seconds()
        if self._throttled_since is None:
            self._throttled_since = now
        elif now - self._throttled_since > self.factory.limits.flood_disconnect:
            self.log.warn(
                "disconnecting {who} for flooding", who=self._who(), security_event="flood"
            )
            self._refuse_and_close("flood", "Disconnected for sending too fast for too long.")
            return
        self._held_line = line
        self._pause("flood")
        self._resume = self._clock.callLater(self._bucket.wait(), self._release_held)

    def _release_held(self) -> None:
        """A token is due: handle the held line, then read on (LineReceiver delivers
        the lines it buffered meanwhile, each through the bucket again)."""
        self._resume = None
        line, self._held_line = self._held_line, None
        if line is None or self.phase is Phase.CLOSED:
            return
        if not self._bucket.take():
            self._throttle(line)  # not quite due (rounding): wait a little more
            return
        self._process(line)
        if not self._is_closed() and self._held_line is None:
            self._unpause("flood")

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            self.pauseProducing()
        self._pauses |= {reason}

    def _unpause(self, reason: str) -> None:
        # An empty result is a new frozenset; keep the shared one instead.
        self._pauses = (self._pauses - {reason}) or _NOT_PAUSED
        if not self._pauses and self.paused and not self._is_closed():
            # LineReceiver then delivers the lines it buffered meanwhile, in order.
            self.resumeProducing()

    def _in_order(self, step: Deferred[Any]) -> Deferred[Any]:
        """A login step waits (on the disk, on cred): read no further line until it is
        answered (see ``_process``, which resumes after the reply is written), so that
        a client pipelining hello, login and password is served in order."""
        self._pause("login")
        return step

    def _is_closed(self) -> bool:
        # A method, so that type narrowing does not outlive calls that change the phase.
        return self.phase is Phase.CLOSED

    def _too_slow(self) -> None:
        """Our output to this client went past the cap: it does not read. Drop it at
        once (its buffered output with it); it is logged out as for a lost connection."""
        if self.phase is Phase.CLOSED:
            return
        self.log.warn(
            "dropping {who}: over {cap} bytes of output unread",
            who=self._who(),
            cap=self.factory.limits.output_cap,
            security_event="slow-reader",
        )
        self.phase = Phase.CLOSED
        self._abort_connection()

    def _check_alive(self) -> None:
        """Refuse a connection still not logged in at its deadline; ping a quiet
        client; drop one that stayed silent past the timeout (a peer that vanished
        without closing: a half-open connection)."""
        limits = self.factory.limits
        now = self._clock.seconds()
        self._watchdog = None
        logging_in = self.phase is not Phase.ONLINE
        if logging_in and now - self._connected_at >= limits.login_timeout:
            self._refuse_and_close("login-timeout", "Took too long to log in.")
            return
        quiet = now - self._heard
        if quiet >= limits.ping_timeout:
            self.log.warn(
                "dropping {who}: silent for {quiet:.0f}s",
                who=self._who(),
                quiet=quiet,
                security_event="no-response",
            )
            self.phase = Phase.CLOSED
            self._abort_connection()
            return
        if quiet >= limits.ping_interval:
            self._send(wire.Ping())
            wait = min(limits.ping_interval, limits.ping_timeout - quiet)
        else:
            wait = limits.ping_interval - quiet
        if logging_in:
            wait = min(wait, limits.login_timeout - (now - self._connected_at))
        self._watchdog = self._clock.callLater(wait, self._check_alive)

    def _refuse_and_close(self, code: str, text: str, request_id: wire.RequestId = None) -> None:
        if self.phase is Phase.ONLINE:
            self._send(wire.LoggedOut(code))
        else:
            self._send(wire.Error(code, text, request_id))
        self._close()

    def _who(self) -> str:
        return self.avatar.name if self.avatar is not None else self._host

    # --- the mind (IChatClient) --------------------------------------------------------

    def deliver(self, event: wire.Frame) -> None:
        # Runs once per recipient of every fan-out: kept to the bare minimum.
        if self.phase is Phase.ONLINE:
            data = wire.encode_event(event)
            self._outbox.write(data)
            if self._gate.paused:
                self._gate.wrote(len(data))

    def end_session(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._send(wire.LoggedOut(reason))
        # The domain ends the session itself (with its own reason); just let go of it.
        self._logout = None
        self.phase = Phase.CLOSED
        self._lose_connection()

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
        user = names.normalise(frame.user)  # jos\u00e9 and jose\u0301 are one name
        check_username(user)
        chat = self.factory.chat
        if chat.is_online(user):
            raise AlreadyOnline(user)
        self.phase = Phase.CHECKING

        def known(_: object) -> dict[str, Any]:
            new_account = not chat.accounts.exists(user)
            if new_account:
                # Refused before a password is asked: a look-alike of an existing
                # name, blank or invisible characters, separators, mixed scripts.
                problem = chat.accounts.new_account_problem(user)
                if problem is not None:
                    raise InvalidUsername(problem)
            self._user = user
            self._new_account = new_account
            self.phase = Phase.PASSWORD
            return {"account": "new" if self._new_account else "existing"}

        def failed(failure: Failure) -> Failure:
            self.phase = Phase.USERNAME
            return failure

        # Accounts added to the file by hand count from the next login on.
        answered: Deferred[dict[str, Any]] = (
            chat.accounts.refresh().addCallback(known).addErrback(failed)
        )
        return self._in_order(answered)

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
            self._reply(request_id, {"user": user})
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

        return self._in_order(d.addCallbacks(loggedIn, refused))

    def _command(self, avatar: Session, frame: wire.Frame, request_id: wire.RequestId) -> Result:
        match frame:
            case wire.WhoElse():
                return {"users": avatar.whoelse()}
            case wire.WhoElseSince(seconds=seconds):
                return {"users": avatar.whoelsesince(seconds)}
            case wire.SendMessage(to=to, text=text):
                stored = avatar.message(names.normalise(to), text)
                if stored is None:
                    return {"stored": False}
                return stored.addCallback(lambda _: {"stored": True})
            case wire.SendBroadcast(text=text):
                return {"skipped": avatar.broadcast(text)}
            case wire.Block(user=user):
                return avatar.block(names.normalise(user)).addCallback(lambda _: {})
            case wire.Unblock(user=user):
                return avatar.unblock(names.normalise(user)).addCallback(lambda _: {})
            case wire.StartPrivate(user=user):
                avatar.start_private(names.normalise(user))
                return {}
            case wire.AnswerPrivate(user=user, accept=accept):
                avatar.answer_private(names.normalise(user), accept)
                return {}
            case wire.Listening(port=port):
                avatar.listening(_host_of(self.transport.getPeer()), port)
                return {}
            case wire.Activity():
                avatar.activity()
                return {}
            case wire.Received(upto=upto):
                return avatar.received(upto).addCallback(lambda _: {})
            case wire.Logout():
                self._reply(request_id, {})
                self._close()
                return _REPLIED
        raise ProtocolStateError(f"A {frame.TYPE} frame is not expected now.")

    # --- replies ----------------------------------------------------------------------

    def _replyOk(self, result: object, request_id: wire.RequestId) -> None:
        if result is _REPLIED:
            return
        assert isinstance(result, dict)
        self._reply(request_id, result)

    def _reply(self, request_id: wire.RequestId, result: dict[str, Any]) -> None:
        """Answer a request that succeeded. One without an ``id`` is fire-and-forget,
        as IRC's PRIVMSG: only a failure is answered (docs/protocol.md). That halves
        the frames and writes per message for a client that does not need receipts."""
        if request_id is not None:
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
            data = wire.encode(frame)
            self._outbox.write(data)
            self._gate.wrote(len(data))

    def _close(self) -> None:
        """Log out now (so others are told at once) and close after pending writes."""
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()
        self.phase = Phase.CLOSED
        self._lose_connection()

    def _lose_connection(self) -> None:
        """Close once everything written so far is sent."""
        self._outbox.flush()
        self.transport.loseConnection()

    def _abort_connection(self) -> None:
        """Close now, dropping unsent output (a reader too slow or gone)."""
        self._outbox.discard()
        self.transport.abortConnection()

    def _close_soon(self) -> None:
        """Close on the next reactor turn, once the reply being built has been written
        (``_send`` writes nothing after ``loseConnection``)."""
        self.factory.chat.clock.callLater(0, self._close)

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return _host_of(peer) if peer is not None else "?"


def _host_of(address: IAddress) -> str:
    return str(getattr(address, "host", "127.0.0.1"))


def _request_id(line: bytes) -> wire.RequestId:
    """The id of a request that will not be handled, so its refusal can answer it."""
    try:
        request_id: wire.RequestId = wire.decode_object(line).get("id")
    except wire.FrameError:
        return None
    return request_id


def _kind(line: bytes) -> str:
    try:
        return str(wire.decode_object(line)["type"])[:32]
    except wire.FrameError:
        return "?"


class ChatServerFactory(ServerFactory):
    """Builds one :class:`ChatServerProtocol` per connection; holds the shared
    :class:`Chat` and the cred portal."""

    def __init__(self, chat: Chat, portal: Portal, limits: Limits | None = None) -> None:
        self.chat = chat
        self.portal = portal
        self.limits = limits or Limits()
        self.connections = ConnectionCounter(self.limits)
        self.flusher = TurnFlusher(chat.clock)
        """Sends every connection's output once per reactor turn (see ``output``)."""
        self.closers: list[Callable[[], object]] = []
        """Called when the service stops (closing the durable store)."""

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:
        return ChatServerProtocol(self)
