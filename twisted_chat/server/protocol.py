"""The server side of the client link: frames in, domain calls, frames out.

One :class:`ChatServerProtocol` per connection. It keeps the connection's phase (moved
only through the table in ``phases``), the username being logged in and the session
once online; its limits are its :class:`ConnectionPolicy`'s, and the login's work is in
``login``. Every line goes through one dispatch boundary that turns :class:`ChatError`
and :class:`FrameError` into ``error`` frames and logs anything unexpected; neither
reaches Twisted, so a bad line never drops the connection by accident.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.errors import (
    AccountLocked,
    AlreadyOnline,
    ChatError,
    NeedsNewerProtocol,
    NotLoggedIn,
    ProtocolStateError,
    TooManyNewAccounts,
    UsernameTaken,
)
from twisted_chat.interfaces import IChatClient
from twisted_chat.server import commands, login, names
from twisted_chat.server.accounts import check_username
from twisted_chat.server.addresses import group_of, ip_of, listener_of
from twisted_chat.server.core import Chat
from twisted_chat.server.limits import ConnectionCounter, Limits, NewAccountLimit
from twisted_chat.server.output import TurnFlusher
from twisted_chat.server.phases import Phase, Step, after
from twisted_chat.server.policy import ConnectionPolicy
from twisted_chat.server.session import Session
from twisted_chat.server.stats import Stats

TLS_RECORD = b"\x16\x03"
"""How a TLS handshake starts (a handshake record, protocol version 3.x); every frame
of ours starts with ``{``."""

_REPLIED = object()
"""A handler's result meaning it sent its reply itself."""

Result = dict[str, Any] | Deferred[Any] | object


@implementer(IChatClient)
class ChatServerProtocol(LineReceiver):
    """One client connection: its phase (``phases``), its dispatch and its replies;
    its limits are its :class:`ConnectionPolicy`'s."""

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
        """The username being logged in (from the username step on)."""
        self.avatar: Session | None = None
        """The user's session while online."""
        self.policy: ConnectionPolicy
        self._peer_ip: str | None = None
        """The client's IP address (None over a UNIX socket), read once: the address
        objects ``getPeer`` makes are not cheap, and every command may need it."""
        self.version = wire.PROTOCOL_VERSION
        """The protocol version the client said it speaks (its ``hello``)."""
        self._listener: tuple[str, str] = ("", "")
        """(where it was accepted, "tls" or "plain"): what its connection counts under."""
        self.in_browser = False
        """The client is the web page (set by the WebSocket bridge, ``web``): it cannot
        take private sessions, and those who ask are told so."""

    def _step(self, step: Step) -> None:
        self.phase = after(self.phase, step)

    # --- Twisted callbacks ----------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self._peer_ip = ip_of(self.transport.getPeer())
        self.policy = ConnectionPolicy(
            self,
            factory.chat.clock,
            factory.limits,
            factory.connections,
            self._network(),
            factory.stats,
        )
        self._listener = listener_of(self.transport)
        factory.stats.connections_opened[self._listener] += 1
        factory.stats.connections_open[self._listener] += 1
        refusal = self.policy.admit(self.transport, factory.flusher)
        if refusal is not None:
            self._send(wire.Error("refused", refusal))
            self._step(Step.CLOSE)
            self._lose_connection()

    def dataReceived(self, data: bytes) -> None:
        if self.phase is Phase.HELLO and data[:2] == TLS_RECORD:
            # A TLS client on a plain port: it cannot read an error frame, so close
            # at once (it says "not a TLS port") instead of leaving it waiting.
            self.log.info("a TLS handshake from {who} on a plain port", who=self.who())
            self._step(Step.CLOSE)
            self.transport.abortConnection()
            return
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        # Never return a value from here: LineReceiver stops delivering the rest of the
        # buffer when lineReceived returns something truthy.
        if self.phase is not Phase.CLOSED:
            self.policy.received(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # Close on purpose: the rest of an oversized line would keep arriving as garbage.
        self.log.warn(
            "closing {peer}: line over {limit} bytes",
            peer=self.who(),
            limit=self.MAX_LENGTH,
            security_event="line-too-long",
        )
        self._send(
            wire.Error("line-too-long", f"Lines are limited to {self.MAX_LENGTH} bytes.", None)
        )
        self._step(Step.CLOSE)
        self._lose_connection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._step(Step.CLOSE)
        self.factory.stats.connections_open[self._listener] -= 1
        self.policy.lost()
        if self.avatar is not None:
            self.avatar.lost()  # nothing, if the session already ended

    # --- what the policy asks (Governed) -------------------------------------------------

    def handle(self, line: bytes) -> None:
        """A line the limits let through: parse, dispatch, reply. Every failure becomes
        an ``error`` frame; none reaches Twisted (which would drop the connection)."""
        request_id: wire.RequestId = None
        try:
            # The hot request (most lines an online user sends) skips the frame object.
            fast = wire.parse_message(line) if self.phase is Phase.ONLINE else None
            if fast is not None:
                assert self.avatar is not None
                self.factory.stats.frames["message"] += 1
                request_id, to, text = fast
                result: Result = commands.message(self.avatar, to, text)
            else:
                request_id, frame = wire.parse(line, wire.CLIENT_REQUESTS)
                self.factory.stats.frames[frame.TYPE] += 1
                result = self._dispatch(frame, request_id)
        except wire.FrameError as e:
            self._send(wire.Error(e.code, e.text, e.request_id))
            return
        except ChatError as e:
            self._send(wire.Error(e.code, e.text, request_id))
            return
        except Exception:
            self.log.failure("unexpected error handling a {kind} frame", kind=wire.kind_of(line))
            self._send(wire.Error("internal", "The server could not handle that.", request_id))
            return
        if isinstance(result, Deferred):
            result.addCallbacks(
                self._replyOk,
                self._replyFailure,
                callbackArgs=(request_id,),
                errbackArgs=(request_id,),
            )
            self.policy.read_after(result)
        else:
            self._replyOk(result, request_id)

    def refuse(self, code: str, text: str, request_id: wire.RequestId = None) -> None:
        if self.phase is Phase.ONLINE:
            self._send(wire.LoggedOut(code))
        else:
            self._send(wire.Error(code, text, request_id))
        self._close()

    def drop(self) -> None:
        """Close now, dropping unsent output (a reader too slow or gone); the user is
        logged out as for a lost connection."""
        self._step(Step.CLOSE)
        self.policy.outbox.discard()
        self.transport.abortConnection()

    def ping(self) -> None:
        self._send(wire.Ping())

    def is_closed(self) -> bool:
        # A method, so that type narrowing does not outlive calls that change the phase.
        return self.phase is Phase.CLOSED

    def who(self) -> str:
        if self.avatar is not None:
            return self.avatar.name
        return self._peer_ip if self._peer_ip is not None else self._network()

    # --- the mind (IChatClient) --------------------------------------------------------

    def deliver(self, event: wire.Frame) -> None:
        # Runs once per recipient of every fan-out: kept to the bare minimum.
        if self.phase is Phase.ONLINE:
            self.policy.send_event(wire.encode_event(event, self.version))

    def end_session(self, reason: str) -> None:
        """The domain ended the session itself (timeout, shutdown): say why, close."""
        if self.phase is Phase.CLOSED:
            return
        self._send(wire.LoggedOut(reason))
        self._step(Step.CLOSE)
        self._lose_connection()

    # --- dispatch -----------------------------------------------------------------------

    def _dispatch(self, frame: wire.Frame, request_id: wire.RequestId) -> Result:
        phase = self.phase
        if isinstance(frame, wire.Ping):
            return {}
        if phase is Phase.ONLINE:
            assert self.avatar is not None
            if isinstance(frame, wire.Logout):
                self._reply(request_id, {})
                self._close()
                return _REPLIED
            if self.version < frame.VERSION:
                raise NeedsNewerProtocol(frame.TYPE, frame.VERSION)
            return commands.run(self.avatar, frame, self._peer_ip)
        if phase is Phase.HELLO:
            if not isinstance(frame, wire.Hello):
                raise ProtocolStateError("Send a hello frame first.")
            return self._hello(frame)
        if phase is Phase.USERNAME and isinstance(frame, wire.Login):
            return self._login(frame)
        if phase in (Phase.PASSWORD, Phase.NEW_PASSWORD) and isinstance(frame, wire.Password):
            return self._password(frame, request_id)
        if isinstance(frame, wire.Hello | wire.Login | wire.Password):
            raise ProtocolStateError(f"A {frame.TYPE} frame is not expected now.")
        raise NotLoggedIn()

    def _hello(self, frame: wire.Hello) -> dict[str, Any]:
        try:
            answer = login.greeting(frame.version)
        except ProtocolStateError:
            self._close_soon()
            raise
        self._step(Step.GREETED)
        self.version = frame.version
        return answer

    def _login(self, frame: wire.Login) -> Deferred[dict[str, Any]]:
        user = names.normalise(frame.user)  # jos\u00e9 and jose\u0301 are one name
        check_username(user)
        chat = self.factory.chat
        offline = chat.require_offline(user)
        self._step(Step.NAME_GIVEN)

        def known(existing: bool) -> dict[str, Any]:
            if not existing:
                self._may_make_an_account()
            self._user = user
            self._step(Step.EXISTING if existing else Step.NEW)
            return {"account": "existing" if existing else "new"}

        def refused(failure: Failure) -> Failure:
            self._step(Step.NAME_REFUSED)
            self._count_login(failure)
            return failure

        self.policy.hold_reading()
        if isinstance(offline, Deferred):
            checked = offline.addCallback(lambda _: login.is_existing_account(chat.accounts, user))
        else:
            checked = login.is_existing_account(chat.accounts, user)
        return checked.addCallback(known).addErrback(refused)

    def _password(self, frame: wire.Password, request_id: wire.RequestId) -> Deferred[object]:
        user, chat = self._user, self.factory.chat
        new_account = self.phase is Phase.NEW_PASSWORD
        signing_in = login.sign_in(
            chat.accounts,
            self.factory.portal,
            user,
            frame.password,
            new_account,
            self,
            network=self.policy.network,
        )  # a bad new password raises here, and is asked again
        self._step(Step.PASSWORD_GIVEN)

        def signed_in(result: login.SignedIn) -> object:
            avatar, logout = result
            if self.is_closed():  # the client left while we were checking
                logout()
                return _REPLIED
            self.avatar = avatar
            if self.in_browser and self.version >= wire.PrivateUnsupported.VERSION:
                avatar.in_browser()
            self.factory.stats.logins["new-account" if new_account else "ok"] += 1
            self._step(Step.ACCEPTED)
            self.policy.online = True
            self._reply(request_id, {"user": user})
            chat.begin(avatar).addErrback(
                lambda f: self.log.failure("delivering offline mail to {user}", f, user=user)
            )
            return _REPLIED

        def refused(failure: Failure) -> Failure:
            self._count_login(failure)
            if failure.check(AccountLocked):
                self._close_soon()  # answered in this phase, closed next turn
            else:
                taken = failure.check(AlreadyOnline, UsernameTaken)
                self._step(Step.NAME_TAKEN if taken else Step.REFUSED)
            return failure

        self.policy.hold_reading()
        return signing_in.addCallbacks(signed_in, refused)

    def _may_make_an_account(self) -> None:
        """A new name: refused when its network, or the server, made too many lately."""
        network = self.policy.network
        wait = self.factory.new_accounts.take(network)
        if wait is not None:
            self.log.warn(
                "refused a new account from {network}: too many lately",
                network=network,
                security_event="new-account-flood",
            )
            raise TooManyNewAccounts(wait)

    def _count_login(self, failure: Failure) -> None:
        error = failure.value
        self.factory.stats.logins[error.code if isinstance(error, ChatError) else "error"] += 1

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
            self.policy.send(wire.encode(frame))

    def _close(self) -> None:
        """Log out now (so others are told at once) and close after pending writes."""
        self._step(Step.CLOSE)
        if self.avatar is not None:
            self.avatar.logout()  # nothing, if the session already ended
        self._lose_connection()

    def _lose_connection(self) -> None:
        """Close once everything written so far is sent (the policy aborts a
        connection still open a grace later: a TLS peer may never answer the close)."""
        self.policy.outbox.flush()
        self.transport.loseConnection()
        self.policy.closing()

    def _close_soon(self) -> None:
        """Close on the next reactor turn, once the reply being built has been written
        (``_send`` writes nothing after ``loseConnection``)."""
        self.factory.chat.clock.callLater(0, self._close)

    def _network(self) -> str:
        """What this connection counts under for the per-address limits (connections,
        password checks, new accounts): its IPv4 /24 or IPv6 /64 (``--v4-prefix``,
        ``--v6-prefix``), or its kind of address (all connections over a UNIX socket
        count as one place)."""
        if self._peer_ip is not None:
            limits = self.factory.limits
            return group_of(self._peer_ip, limits.v4_prefix, limits.v6_prefix)
        peer = self.transport.getPeer() if self.transport is not None else None
        return type(peer).__name__


class ChatServerFactory(ServerFactory):
    """Builds one :class:`ChatServerProtocol` per connection; holds the shared
    :class:`Chat` and the cred portal."""

    def __init__(
        self,
        chat: Chat,
        portal: Portal,
        limits: Limits | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.chat = chat
        self.portal = portal
        self.limits = limits or Limits()
        self.stats = stats or Stats()
        self.connections = ConnectionCounter(self.limits)
        self.new_accounts = NewAccountLimit(chat.clock, self.limits)
        self.flusher = TurnFlusher(chat.clock)
        """Sends every connection's output once per reactor turn (see ``output``)."""

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:
        return ChatServerProtocol(self)
