"""The client's session logic, apart from the terminal and the network.

:class:`ClientSession` reads what the user typed (``line_entered``), what the server
pushed (``event_received``) and what peers did (``peer_*``), and answers through a
:class:`Display` (what the user sees), the server link's ``request`` and a
:class:`PeerNetwork` (private sessions). It holds no socket and no terminal, so unit
tests drive it with fakes and a ``Clock``.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict, deque
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.commands import Command, CommandError, help_text, parse_command
from twisted_chat.client.link import ServerError, ServerGone
from twisted_chat.text import describe, forbidden_character

WELCOME = "Welcome to the greatest messaging application ever!"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
"""The shell's convention for a program ended by Ctrl-C (128 + SIGINT)."""


class Display(Protocol):
    """What the user sees. The console implements it; tests record it."""

    def show(self, text: str, style: str = "") -> None:
        """Print one line for the user. ``style`` (``error``, ``message``, ``private``,
        ``presence``) lets a terminal colour it. ``text`` may hold what others sent:
        every control character in it (a line break included) is shown visibly
        (``twisted_chat.text.visible``), never obeyed."""

    def ask(self, prompt: str, secret: bool = False) -> None:
        """Wait for the next line, showing ``prompt``; ``secret`` hides what is typed."""

    def show_status(self, text: str) -> None:
        """What a status bar says now (who you are, private chats, waiting requests);
        a console without one ignores it."""

    def finish(self, status: int) -> None:
        """The session is over: restore the terminal and exit with ``status``."""


class Link(Protocol):
    def request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]: ...


class PeerEvents(Protocol):
    """What the peer network tells the session."""

    def peer_opened(self, user: str) -> None: ...
    def peer_text(self, user: str, text: str) -> None: ...
    def peer_closed(self, user: str, reason: str) -> None: ...


class PeerNetwork(Protocol):
    """Private sessions straight between clients (see ``client/peer.py``)."""

    def bind(self, events: PeerEvents) -> None:
        """Report openings, texts and closings to ``events``."""

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the certificate this client shows its peers."""

    def listen(self, me: str) -> Deferred[int]:
        """Start accepting peers for user ``me``; fires with the port."""

    def expect(self, user: str, token: str, fingerprint: str) -> None:
        """``user`` will connect presenting ``token`` (once), over TLS with the
        certificate whose fingerprint is ``fingerprint``."""

    def connect(
        self, user: str, host: str, port: int, token: str, fingerprint: str
    ) -> Deferred[None]:
        """Connect to ``user``'s client, whose certificate must have ``fingerprint``,
        and authenticate with ``token``."""

    def session_code(self, user: str) -> str | None:
        """The code both users of the session with ``user`` can compare aloud."""

    def has(self, user: str) -> bool: ...

    def open_sessions(self) -> list[str]:
        """The users we have a private session with."""

    def send(self, user: str, text: str) -> bool:
        """Send a private message; False if the connection is gone."""

    def stop(self, user: str) -> None: ...

    def stop_all(self, reason: str) -> None: ...


def _server_error(failure: Failure) -> ServerError:
    """The server's error in ``failure``; anything else passes on down the errbacks."""
    failure.trap(ServerError)
    assert isinstance(failure.value, ServerError)
    return failure.value


class Stage(enum.Enum):
    CONNECTING = "connecting"
    USERNAME = "username"
    CHECKING_NAME = "checking-name"
    PASSWORD = "password"
    CHECKING_PASSWORD = "checking-password"
    ONLINE = "online"
    LEAVING = "leaving"
    DONE = "done"


MOVES: dict[Stage, frozenset[Stage]] = {
    Stage.CONNECTING: frozenset({Stage.USERNAME}),
    Stage.USERNAME: frozenset({Stage.CHECKING_NAME}),
    Stage.CHECKING_NAME: frozenset({Stage.PASSWORD, Stage.USERNAME}),
    Stage.PASSWORD: frozenset({Stage.CHECKING_PASSWORD}),
    Stage.CHECKING_PASSWORD: frozenset({Stage.ONLINE, Stage.PASSWORD, Stage.USERNAME}),
    Stage.ONLINE: frozenset({Stage.LEAVING}),
    Stage.LEAVING: frozenset(),
    Stage.DONE: frozenset(),
}
"""Where each stage may go next, besides DONE (reachable from every stage but DONE):
a session moves only along these."""

TAKES_INPUT = frozenset({Stage.USERNAME, Stage.PASSWORD, Stage.ONLINE})
"""Stages that take the next typed line; in the others (a check under way, leaving),
typed lines wait in order."""


_END_OF_INPUT = object()
"""Queued when standard input closes: log out once what was typed before is done."""

_YES = {"y", "yes"}
_NO = {"n", "no"}


class ClientSession:
    """One user's session with the server, from hello to exit."""

    log = Logger()

    def __init__(self, display: Display, peers: PeerNetwork, scripted: bool = False) -> None:
        self.display = display
        self.peers = peers
        self.scripted = scripted
        """Lines come from a script (a pipe), not a person: a refused login step ends
        the client (exit 1) instead of asking again, or the script's next line (a
        password) would be taken for a username, and announced to everyone."""
        peers.bind(self)
        self.stage = Stage.CONNECTING
        self.user = ""
        self._link: Link | None = None
        self._typed: deque[str | object] = deque()
        self._askers: OrderedDict[str, None] = OrderedDict()
        """Users whose private-chat request waits for our y/n, oldest first."""
        self._requested: set[str] = set()
        """Users we asked for a private session, until it is answered or lapses: only an
        approval of one of these makes us connect anywhere."""
        self._accepted: set[str] = set()
        """Users whose request we accepted: only their approval makes us expect a peer."""
        self.known_users: set[str] = set()
        """Names seen this run (presence, whoelse, messages): for completion."""
        self.accounts: set[str] | None = None
        """Every account name, from the server at login (None: not known, or more than
        it lists): "not a user" is said only when this is known."""
        self.online: set[str] = set()
        """Who else is online, as we can see (from login on, kept by presence)."""
        self.offline: set[str] = set()
        """Users seen logging out and not back in since."""
        self.blocked: set[str] = set()
        """Users we block (for completing ``unblock``)."""
        self._new_account = False
        """The username asked for is a new account (its password creates it)."""
        self._first_password: str | None = None
        """A new account's password typed once, waiting to be typed again."""
        self._gone: set[str] = set()
        """Users the server said logged out while their private session was still
        open: its end, when it comes, says both in one line."""
        self._left_privately: set[str] = set()
        """Users whose private session ended with their logout, already said in one
        line: the server's ``logged out`` notice for them is not repeated."""

    # --- from the server link ------------------------------------------------------

    def _move(self, to: Stage) -> bool:
        """Move to stage ``to``; False (and no move) once the session is done, which is
        where a reply that comes after the end lands."""
        if self.stage is Stage.DONE:
            return False
        if to is not Stage.DONE and to not in MOVES[self.stage]:
            raise AssertionError(f"no move from {self.stage.value} to {to.value}")
        self.stage = to
        return True

    def link_made(self, link: Link) -> None:
        self._link = link
        self._request(wire.Hello(wire.PROTOCOL_VERSION)).addCallbacks(
            self._greeted, self._fatal_error
        )

    def _greeted(self, _: dict[str, Any]) -> None:
        self._ask_username()

    def event_received(self, event: wire.Frame) -> None:
        if self.stage is Stage.DONE:
            return
        self._event(event)
        self._update_status()

    def status_line(self) -> str:
        """The status bar: who you are, your private chats, requests waiting."""
        if self.stage is not Stage.ONLINE:
            return ""
        parts = [f"[{self.user}]"]
        sessions = self.peers.open_sessions()
        if sessions:
            parts.append("private: " + ", ".join(sessions))
        if self._askers:
            parts.append("asking you: " + ", ".join(self._askers) + " (y/n)")
        if self._requested:
            parts.append("you asked: " + ", ".join(sorted(self._requested)))
        return "  ".join(parts)

    def _update_status(self) -> None:
        self.display.show_status(self.status_line())

    def _event(self, event: wire.Frame) -> None:
        match event:
            case wire.Presence(user=user, online=online):
                self.known_users.add(user)
                if self.accounts is not None:
                    self.accounts.add(user)  # created since we asked
                (self.online if online else self.offline).add(user)
                (self.offline if online else self.online).discard(user)
                if not online and user in self._left_privately:
                    self._left_privately.discard(user)  # said with the session's end
                    return
                if not online and self.peers.has(user):
                    # One line for one departure: the private session's end, about to
                    # come on the other connection, says both.
                    self._gone.add(user)
                    return
                self.display.show(f"{user} logged {'in' if online else 'out'}", "presence")
            case wire.Message(sender=sender, text=text, sent=sent, stored=stored):
                self.known_users.add(sender)
                if stored:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(sent))
                    self.display.show(
                        f"{sender}: {text}  (sent {when} while you were away)", "message"
                    )
                else:
                    self.display.show(f"{sender}: {text}", "message")
            case wire.StoredDone(upto=upto):
                # Shown, so acknowledged: the server may forget them now.
                self._request(wire.Received(upto)).addErrback(self._show_error)
            case wire.Broadcast(sender=sender, text=text):
                self.known_users.add(sender)
                self.display.show(f"{sender}: {text}", "message")
            case wire.PrivateRequest(sender=sender):
                self._askers[sender] = None
                self.display.show(f"{sender} would like to private message, enter y or n:")
            case wire.PrivateAccepted():
                self._private_accepted(event)
            case wire.PrivateDeclined(user=user):
                self._requested.discard(user)
                self.display.show(f"{user} declined private messaging.")
            case wire.PrivateExpired(user=user, reason=reason):
                self._askers.pop(user, None)
                self._requested.discard(user)
                self._accepted.discard(user)
                if reason == "left":
                    self.display.show(
                        f"The private messaging request with {user} was "
                        f"cancelled: {user} logged out."
                    )
                else:
                    self.display.show(
                        f"The private messaging request with {user} lapsed unanswered."
                    )
            case wire.IdleWarning(seconds=seconds):
                self.display.show(
                    f"You will be logged out for inactivity in {seconds:.0f} s "
                    "unless you type a command.",
                    "error",
                )
            case wire.LoggedOut(reason=reason):
                self._logged_out(reason)
            case wire.Error(text=text):
                self.display.show(f"Error from the server: {text}")
            case _:
                self.log.debug("ignored a {kind} frame", kind=event.TYPE)

    def server_lost(self, why: str = "The connection to the server was lost.") -> None:
        if self.stage in (Stage.LEAVING, Stage.DONE):
            self._finish(EXIT_OK)  # expected (nothing, if already done)
            return
        self.peers.stop_all("quit")
        self.display.show(why)
        self._finish(EXIT_FAILURE)

    # --- from the user ------------------------------------------------------------------

    def line_entered(self, line: str) -> None:
        """One line typed by the user (without its line ending)."""
        self._typed.append(line)
        self._drain()
        self._update_status()

    def input_closed(self) -> None:
        """Standard input reached its end (Ctrl-D, or the end of a script)."""
        self._typed.append(_END_OF_INPUT)
        self._drain()

    def interrupted(self) -> None:
        """Ctrl-C: leave now, logging out politely if logged in; exit status 130."""
        self._typed.clear()
        if self.stage is Stage.ONLINE:
            self._move(Stage.LEAVING)
            self.peers.stop_all("logout")
            self._request(wire.Logout()).addBoth(
                lambda _: self._finish(EXIT_INTERRUPTED, "Interrupted: you have logged out.")
            )
        else:
            self._finish(EXIT_INTERRUPTED, "Interrupted.")

    def _drain(self) -> None:
        while self._typed and self.stage in TAKES_INPUT:
            item = self._typed.popleft()
            if item is _END_OF_INPUT:
                self._end_of_input()
            else:
                assert isinstance(item, str)
                self._handle_line(item)

    def _handle_line(self, line: str) -> None:
        if self.stage is Stage.USERNAME:
            self._username_entered(line.strip())
        elif self.stage is Stage.PASSWORD:
            self._password_entered(line)
        else:
            self._command_entered(line)

    def _end_of_input(self) -> None:
        if self.stage is Stage.ONLINE:
            self._logout()
        elif self.scripted:
            self._finish(EXIT_FAILURE, "Input ended before logging in.")
        else:
            self._finish(EXIT_OK)

    # --- logging in -----------------------------------------------------------------

    def _ask_username(self) -> None:
        if not self._move(Stage.USERNAME):
            return
        self.display.ask("Username: ")
        self._drain()

    def _username_entered(self, user: str) -> None:
        if not user:
            self.display.ask("Username: ")
            return
        self._move(Stage.CHECKING_NAME)

        def answered(result: dict[str, Any]) -> None:
            if not self._move(Stage.PASSWORD):
                return
            self.user = user
            self._new_account = result.get("account") == "new"
            if self._new_account:
                self.display.show(f"This is a new user. Enter a password to create {user}.")
            self._ask_password()
            self._drain()

        def refused(failure: Failure) -> None:
            error = _server_error(failure)
            self.display.show(error.text)
            if self.scripted:
                self._finish(EXIT_FAILURE)
            else:
                self._ask_username()

        self._request(wire.Login(user)).addCallback(answered).addErrback(refused).addErrback(
            self._unexpected
        )

    def _ask_password(self) -> None:
        """The password prompt, saying what it is for (a new account's, or the one)."""
        self._first_password = None
        self.display.ask("New password: " if self._new_account else "Password: ", secret=True)

    def _password_entered(self, password: str) -> None:
        # A person creating an account types the password twice: a typo would lock
        # them out of the account they just made. (A script, on a pipe, types once.)
        if self._new_account and not self.scripted:
            if self._first_password is None:
                self._first_password = password
                self.display.ask("Repeat the new password: ", secret=True)
                return
            if password != self._first_password:
                self.display.show("The two passwords differ. Enter the new password again.")
                self._ask_password()
                return
        self._first_password = None
        self._move(Stage.CHECKING_PASSWORD)

        def welcomed(_: dict[str, Any]) -> None:
            if not self._move(Stage.ONLINE):
                return
            self.display.show(WELCOME)
            self.display.show("Type help for the commands.")
            self.peers.listen(self.user).addCallbacks(self._listening, self._no_listener)
            # Names to complete, and to tell "not a user" from "offline", from the start.
            self._request(wire.Accounts()).addCallbacks(self._directory, self._show_error)
            self.display.ask("> ")
            self._drain()
            self._update_status()

        def refused(failure: Failure) -> None:
            error = _server_error(failure)
            self.display.show(error.text)
            if error.code == "locked" or self.scripted:
                self._finish(EXIT_FAILURE)
            elif error.code in ("already-online", "username-taken"):
                self._ask_username()
            elif self._move(Stage.PASSWORD):
                self._ask_password()  # "New password: " again for a new account
                self._drain()

        self._request(wire.Password(password)).addCallback(welcomed).addErrback(refused).addErrback(
            self._unexpected
        )

    def _directory(self, result: dict[str, Any]) -> None:
        users = [u for u in result.get("users", []) if isinstance(u, str)]
        self.known_users.update(users)
        if not result.get("truncated"):
            self.accounts = set(users)
        self.online.update(u for u in result.get("online", []) if isinstance(u, str))
        self.blocked.update(u for u in result.get("blocked", []) if isinstance(u, str))

    def names_for(self, command: str) -> list[str]:
        """The names that make sense after ``command`` (Tab completion): anyone for
        ``message`` and ``block``, those we block for ``unblock``, online users for
        ``startprivate``, our private sessions for ``private`` and ``stopprivate``."""
        if command in ("private", "stopprivate", "fingerprint"):
            pool: set[str] = set(self.peers.open_sessions())
        elif command == "unblock":
            pool = set(self.blocked)
        elif command == "startprivate":
            pool = set(self.online)
        else:
            pool = set(self.accounts or self.known_users)
        pool.discard(self.user)
        return sorted(pool)

    def _not_reachable(self, user: str) -> str | None:
        """Why ``user`` cannot be reached privately, when we know: not a user, offline."""
        if self.accounts is not None and user not in self.accounts:
            return f"Error. {user} is not a user."
        if user in self.offline:
            return f"Error. {user} is offline."
        return None

    def _listening(self, port: int) -> None:
        self._request(wire.Listening(port, self.peers.fingerprint)).addErrback(self._show_error)

    def _no_listener(self, failure: Failure) -> None:
        self.log.failure("cannot listen for peers", failure)
        self.display.show("Private messaging is unavailable: cannot listen for peers.")

    # --- commands -------------------------------------------------------------------

    def _command_entered(self, line: str) -> None:
        stripped = line.strip()
        if not stripped:
            return
        word, _, rest = stripped.partition(" ")
        if word.lower() in _YES | _NO:
            if not self._askers and not rest.strip():
                self.display.show("There is no private messaging request to answer.", "error")
                return
            if self._answer_private(word.lower() in _YES, rest):
                return
        try:
            command = parse_command(stripped)
        except CommandError as e:
            self.display.show(str(e), "error")
            return
        self._run(command)

    def _run(self, command: Command) -> None:
        name = command.name
        if name == "help":
            for line in help_text().splitlines():
                self.display.show(line)
        elif name == "logout":
            self._logout()
        elif name == "message":
            self.known_users.add(command.user)
            self._send(
                wire.SendMessage(command.user, command.text),
                self._message_sent,
                command.user,
                command.text,
            )
        elif name == "broadcast":
            self._send(wire.SendBroadcast(command.text), self._broadcast_sent, command.text)
        elif name == "whoelse":
            self._send(wire.WhoElse(), self._show_users, "No other users are online.")
        elif name == "whoelsesince":
            seconds = command.seconds
            self._send(
                wire.WhoElseSince(seconds),
                self._show_users,
                f"Nobody else was online in the last {seconds} seconds.",
            )
        elif name == "block":
            self._send(wire.Block(command.user), self._blocked, command.user, True)
        elif name == "unblock":
            self._send(wire.Unblock(command.user), self._blocked, command.user, False)
        elif name == "startprivate":
            self._start_private(command.user)
        elif name == "private":
            self._private(command.user, command.text)
        elif name == "stopprivate":
            self._stop_private(command.user)
        elif name == "fingerprint":
            if self.peers.has(command.user):
                self._show_code(command.user)
            else:
                self.display.show(f"Error. There is no private session with {command.user}.")

    def _send(self, frame: wire.Frame, done: Any, *args: Any) -> None:
        self._request(frame).addCallback(done, *args).addErrback(self._show_error)

    def _message_sent(self, result: dict[str, Any], user: str, text: str) -> None:
        # What we said, as a chat line (the conversation reads as one), once accepted.
        self.display.show(f"\u2192 {user}: {text}", "own")
        if result.get("stored"):
            self.display.show(f"{user} is offline; they will get the message when they log in.")

    def _broadcast_sent(self, result: dict[str, Any], text: str) -> None:
        self.display.show(f"\u2192 all: {text}", "own")
        if result.get("skipped"):
            self.display.show("Your message could not be delivered to some recipients.")

    def _show_users(self, result: dict[str, Any], empty: str) -> None:
        users = [str(u) for u in result.get("users", [])]
        self.known_users.update(users)
        for user in users or [empty]:
            self.display.show(user)

    def _confirm(self, _: dict[str, Any], text: str) -> None:
        self.display.show(text)

    def _blocked(self, _: dict[str, Any], user: str, blocked: bool) -> None:
        (self.blocked.add if blocked else self.blocked.discard)(user)
        self.display.show(f"{user} is {'blocked' if blocked else 'unblocked'}")

    def _logout(self) -> None:
        self._move(Stage.LEAVING)
        self.peers.stop_all("logout")
        self._request(wire.Logout()).addBoth(
            lambda _: self._finish(EXIT_OK, "You have logged out.")
        )

    def _logged_out(self, reason: str) -> None:
        self.peers.stop_all(reason)
        if reason == "timeout":
            self.display.show("You have been logged out due to inactivity.")
            self._finish(EXIT_OK)
        else:
            self.display.show(f"The server ended your session ({reason}).")
            self._finish(EXIT_FAILURE)

    # --- private sessions -----------------------------------------------------------

    def _answer_private(self, accept: bool, rest: str) -> bool:
        """Answer a pending request; False if this line is not such an answer."""
        if not self._askers:
            return False
        user = rest.strip()
        if not user:
            if len(self._askers) > 1:
                waiting = ", ".join(self._askers)
                self.display.show(
                    f"Several users are waiting for an answer ({waiting}): "
                    "type y <user> or n <user>."
                )
                return True
            user = next(iter(self._askers))
        elif user not in self._askers:
            return False
        del self._askers[user]
        if accept:
            self._accepted.add(user)  # the approval we then hear of is ours

        def answered(_: dict[str, Any]) -> None:
            if not accept:
                self.display.show(f"You declined private messaging with {user}.")

        self._send(wire.AnswerPrivate(user, accept), answered)
        return True

    def _start_private(self, user: str) -> None:
        if user == self.user:
            self.display.show("Error. You cannot start a private session with yourself.")
            return
        if self.peers.has(user):
            self.display.show(f"Error. You are already in a private session with {user}.")
            return
        self._requested.add(user)
        self._request(wire.StartPrivate(user)).addCallback(
            self._confirm, f"Start private messaging with {user}: waiting for {user} to answer."
        ).addErrback(self._start_refused, user).addBoth(lambda _: self._update_status())

    def _start_refused(self, failure: Failure, user: str) -> None:
        if not (failure.check(ServerError) and _server_error(failure).code == "private-conflict"):
            self._requested.discard(user)  # (a conflict: our earlier request still stands)
        self._show_error(failure)

    def _private_accepted(self, event: wire.PrivateAccepted) -> None:
        user = event.user
        if not event.port:  # we accepted: the requester connects to us
            if user not in self._accepted:
                self.log.warn("ignored an approval from {user} we never gave", user=user)
                return
            self._accepted.discard(user)
            self.known_users.add(user)
            self.peers.expect(user, event.token, event.fingerprint)
            return
        # Connect only where a request of ours was answered, and never to a privileged
        # port: else whoever controls the approval picks a target for our client.
        if user not in self._requested:
            self.log.warn("ignored an approval for {user} we never asked for", user=user)
            return
        self._requested.discard(user)
        if not 1024 <= event.port <= 65535:
            self.display.show(
                f"Could not open private messaging with {user}: "
                f"the server named port {event.port}, outside 1024-65535."
            )
            return
        self.known_users.add(user)
        self.display.show(f"{user} accepts private messaging.")

        def failed(failure: Failure) -> None:
            self.display.show(
                f"Could not open private messaging with {user}: {failure.getErrorMessage()}"
            )

        self.peers.connect(user, event.host, event.port, event.token, event.fingerprint).addErrback(
            failed
        )

    def _private(self, user: str, text: str) -> None:
        if user == self.user:
            self.display.show("Error. You cannot private message yourself.")
        elif not self.peers.has(user):
            why = self._not_reachable(user) or f"Error. Private messaging to {user} not enabled."
            self.display.show(why)
        elif len(text) > wire.MAX_TEXT_CHARS:
            self.display.show(
                f"Error. The message has {len(text)} characters; the limit is "
                f"{wire.MAX_TEXT_CHARS}. Nothing was sent."
            )
        elif (bad := forbidden_character(text)) is not None:
            self.display.show(
                f"Error. The message contains a control character ({describe(bad)}); "
                "nothing was sent."
            )
        elif not self.peers.send(user, text):
            self.display.show(
                f"Error. {user} is no longer reachable; private messaging with {user} ended."
            )
        else:
            self.display.show(f"\u2192 {user} (private): {text}", "own")
            self._tell_server_active()

    def _stop_private(self, user: str) -> None:
        if user == self.user:
            self.display.show("Error. You cannot stop a private session with yourself.")
        elif not self.peers.has(user):
            why = self._not_reachable(user) or f"Error. There is no private session with {user}."
            self.display.show(why)
        else:
            self.peers.stop(user)
            self.display.show(f"Private messaging with {user} stopped.")
            self._tell_server_active()

    def _tell_server_active(self) -> None:
        # Private messages bypass the server, which must still see the user as active;
        # it learns *that* we did something, never what.
        self._request(wire.Activity()).addErrback(self._show_error)

    # --- from the peer network --------------------------------------------------------

    def peer_opened(self, user: str) -> None:
        self.display.show(f"Private messaging with {user} started: type private {user} <message>.")
        self._show_code(user)
        self._update_status()

    def _show_code(self, user: str) -> None:
        code = self.peers.session_code(user)
        if code is not None:
            self.display.show(
                f"Sealed end to end; session code {code}: {user} sees the same code, "
                "or someone is in the middle (compare them by voice)."
            )

    def peer_text(self, user: str, text: str) -> None:
        self.known_users.add(user)
        self.display.show(f"{user}(private): {text}", "private")

    def peer_closed(self, user: str, reason: str) -> None:
        if self.stage is Stage.DONE:
            return
        if reason == "stop":
            self.display.show(f"{user} stopped private messaging.")
        elif reason in ("logout", "timeout", "quit") or user in self._gone:
            if user not in self._gone:
                self._left_privately.add(user)  # the server's notice, still to come
            self._gone.discard(user)
            self.display.show(f"{user} logged out; private messaging with {user} ended.")
        else:
            self.display.show(f"Private messaging with {user} ended: the connection was lost.")
        self._update_status()

    # --- plumbing -----------------------------------------------------------------------

    def _request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]:
        assert self._link is not None
        return self._link.request(frame)

    def _show_error(self, failure: Failure) -> None:
        if failure.check(ServerGone):
            return  # server_lost says it once
        if failure.check(ServerError):
            self.display.show(_server_error(failure).text, "error")
            return
        self._unexpected(failure)

    def _fatal_error(self, failure: Failure) -> None:
        if failure.check(ServerError):
            self.display.show(_server_error(failure).text)
            self._finish(EXIT_FAILURE)
        elif not failure.check(ServerGone):
            self._unexpected(failure)

    def _unexpected(self, failure: Failure) -> None:
        if failure.check(ServerGone):
            return
        self.log.failure("client error", failure)
        self.display.show(f"Error. Something went wrong: {failure.getErrorMessage()}")

    def _finish(self, status: int, farewell: str = "") -> None:
        if not self._move(Stage.DONE):
            return
        if farewell:
            self.display.show(farewell)
        self.display.finish(status)
