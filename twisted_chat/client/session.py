"""The client's session, apart from the terminal and the network: one user's time
with the server, from hello to exit.

:class:`ClientSession` holds the stage (moved only along :data:`MOVES`), the lines
typed ahead of it and the link, and ties the parts that do the work:

- ``login``: the username and password steps;
- ``conversation``: commands typed, and events the server pushes;
- ``private``: private sessions straight between clients, and their consent;
- ``roster``: the names this client knows; ``presentation``: how lines read.

It reads what the user typed (:meth:`line_entered`), what the server pushed
(:meth:`event_received`) and what peers did (``peer_*``), and answers through the
seams in ``seams``: a :class:`Display`, the link's ``request`` and a
:class:`PeerNetwork`. It holds no socket and no terminal, so unit tests drive it with
fakes and a ``Clock``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.conversation import Conversation
from twisted_chat.client.link import ServerError, ServerGone, server_error
from twisted_chat.client.login import Login
from twisted_chat.client.presentation import WELCOME
from twisted_chat.client.private import PrivateChats
from twisted_chat.client.reconnect import COME_BACK_FROM, Reconnector
from twisted_chat.client.roster import Roster
from twisted_chat.client.seams import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Display,
    Link,
    PeerEvents,
    PeerNetwork,
)
from twisted_chat.client.stages import MOVES, TAKES_INPUT, Stage

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "WELCOME",
    "ClientSession",
    "Display",
    "Link",
    "PeerEvents",
    "PeerNetwork",
    "Stage",
]


_END_OF_INPUT = object()
"""Queued when standard input closes: log out once what was typed before is done."""


class _HeldSecret(str):
    """A line typed while the client waited on the server during login
    (``secret_entered``): it may only ever be a password, so it is used at a password
    prompt and dropped at any other (never sent as a name or a command, where it
    would be shown)."""


class ClientSession:
    """One user's session with the server, from hello to exit."""

    log = Logger()

    def __init__(
        self,
        display: Display,
        peers: PeerNetwork,
        scripted: bool = False,
        reconnect: Callable[[ClientSession], Reconnector] | None = None,
    ) -> None:
        """``reconnect`` makes the session's :class:`Reconnector` (a person at a
        terminal, unless ``--no-reconnect``); without it a lost server ends the
        client."""
        self.display = display
        self.peers = peers
        self.scripted = scripted
        """Lines come from a script (a pipe), not a person: a refused login step ends
        the client (exit 1) instead of asking again, or the script's next line (a
        password) would be taken for a username, and announced to everyone."""
        self.stage = Stage.CONNECTING
        self.user = ""
        self._link: Link | None = None
        self._typed: deque[str | object] = deque()
        self.roster = Roster()
        self.login = Login(self)
        self.private = PrivateChats(self)
        self.conversation = Conversation(self)
        self.reconnector = reconnect(self) if reconnect is not None else None
        self._peer_port: int | None = None
        peers.bind(self)

    @property
    def known_users(self) -> set[str]:
        return self.roster.known

    # --- stages -----------------------------------------------------------------------

    def move(self, to: Stage) -> bool:
        """Move to stage ``to``; False (and no move) once the session is done, which is
        where a reply that comes after the end lands."""
        if self.stage is Stage.DONE:
            return False
        if to is not Stage.DONE and to not in MOVES[self.stage]:
            raise AssertionError(f"no move from {self.stage.value} to {to.value}")
        self.stage = to
        return True

    def online_now(self) -> None:
        """The server welcomed us: listen for peers, learn the names, take commands."""
        self.display.show(WELCOME)
        self.display.show("Type help for the commands.")
        self.peers.listen(self.user).addCallbacks(self._listening_on, self.private.no_listener)
        # Names to complete, and to tell "not a user" from "offline", from the start.
        self.request(wire.Accounts()).addCallbacks(self.roster.took, self.show_error)
        self.display.ask("> ")
        self.drain()
        self.update_status()

    def _listening_on(self, port: int) -> None:
        self._peer_port = port
        self.private.listening(port)

    def back_online(self) -> None:
        """Logged in again after the server went away: the same peer port told again,
        the names learned again, and what was typed meanwhile sent, in order."""
        if self._peer_port is not None:
            self.private.listening(self._peer_port)
        self.request(wire.Accounts()).addCallbacks(self.roster.took, self.show_error)
        self.drain()
        self.update_status()

    # --- from the server link ------------------------------------------------------

    def link_made(self, link: Link) -> None:
        self._link = link
        self.request(wire.Hello(wire.PROTOCOL_VERSION)).addCallbacks(
            self._greeted, self._fatal_error
        )

    def _greeted(self, _: dict[str, Any]) -> None:
        if self.stage is Stage.RECONNECTING and self.reconnector is not None:
            self.reconnector.greeted()
            return
        self.login.ask_username()

    def close_link(self) -> None:
        """Close the link to the server, if there is one (at exit, or a try that was
        refused while reconnecting)."""
        transport = getattr(self._link, "transport", None)
        if transport is not None:
            transport.loseConnection()

    def event_received(self, event: wire.Frame) -> None:
        if self.stage is Stage.DONE:
            return
        self.conversation.event(event)
        self.update_status()

    def key_pressed(self) -> None:
        """Any key: while away, the status line says when the next try comes."""
        if self.reconnector is not None:
            self.reconnector.next_try_note()

    def status_line(self) -> str:
        """The status bar: who you are, your private chats, requests waiting."""
        if self.stage is Stage.RECONNECTING:
            return f"[{self.user}]  not connected"
        if self.stage is not Stage.ONLINE:
            return ""
        return "  ".join([f"[{self.user}]", *self.private.status_parts()])

    def update_status(self) -> None:
        self.display.show_status(self.status_line())

    def server_lost(self, why: str = "The connection to the server was lost.") -> None:
        if self.stage in (Stage.LEAVING, Stage.DONE):
            self.finish(EXIT_OK)  # expected (nothing, if already done)
            return
        if self.reconnector is not None:
            if self.stage is Stage.RECONNECTING:
                self.reconnector.link_lost()  # a try that did not get back in
                return
            if self.stage is Stage.ONLINE:
                self.reconnector.begin(why)  # private chats go on, peer to peer
                return
        self.peers.stop_all("quit")
        self.display.show(why)
        self.finish(EXIT_FAILURE)

    # --- from the user ------------------------------------------------------------------

    def line_entered(self, line: str) -> None:
        """One line typed by the user (without its line ending)."""
        if self.stage is Stage.RECONNECTING:
            if line.strip() == "logout":
                self._leave_while_away()
                return
            self.display.show("(not connected: sent once the client is back)")
        self._typed.append(line)
        self.drain()
        self.update_status()

    def secret_entered(self, line: str) -> None:
        """A line typed on a terminal while the client waited on the server during
        login (it was not shown): used as the password if a password prompt comes
        next, dropped otherwise."""
        self._typed.append(_HeldSecret(line))
        self.drain()

    def input_closed(self) -> None:
        """Standard input reached its end (Ctrl-D, or the end of a script)."""
        if self.stage is Stage.RECONNECTING:
            self._leave_while_away()
            return
        self._typed.append(_END_OF_INPUT)
        self.drain()

    def interrupted(self) -> None:
        """Ctrl-C where it quits (a login prompt; the line editor never sends it while
        online): leave now, logging out politely if logged in; exit status 130."""
        self._typed.clear()
        if self.stage is Stage.ONLINE:
            self.move(Stage.LEAVING)
            self.peers.stop_all("logout")
            self.request(wire.Logout()).addBoth(
                lambda _: self.finish(EXIT_INTERRUPTED, "Interrupted: you have logged out.")
            )
        else:
            self.finish(EXIT_INTERRUPTED, "Interrupted.")

    def drain(self) -> None:
        """Hand typed lines on, in order, while the stage takes them."""
        while self._typed and self.stage in TAKES_INPUT:
            item = self._typed.popleft()
            if item is _END_OF_INPUT:
                self._end_of_input()
            elif isinstance(item, _HeldSecret) and self.stage is not Stage.PASSWORD:
                # Typed ahead, maybe a password: never a name or a command. Said, so
                # that a command typed too soon is not thought sent.
                self.display.show("(a line typed while the server was checking was not used)")
            elif self.stage is Stage.USERNAME:
                self.login.username_entered(str(item).strip())
            elif self.stage is Stage.PASSWORD:
                self.login.password_entered(str(item))
            else:
                self.conversation.command_entered(str(item))

    def _end_of_input(self) -> None:
        if self.stage is Stage.ONLINE:
            self.logout()
        elif self.scripted:
            self.finish(EXIT_FAILURE, "Input ended before logging in.")
        else:
            self.finish(EXIT_OK)

    def names_for(self, command: str) -> list[str]:
        """The names that make sense after ``command`` (Tab completion)."""
        return self.roster.names_for(command, self.user, self.peers.open_sessions())

    # --- leaving ------------------------------------------------------------------------

    def logout(self) -> None:
        self.move(Stage.LEAVING)
        self.peers.stop_all("logout")
        self.request(wire.Logout()).addBoth(lambda _: self.finish(EXIT_OK, "You have logged out."))

    def _leave_while_away(self) -> None:
        """Leaving while not connected: nothing waits for a server that is not there
        (it logs the session out itself when it notices the connection is gone)."""
        self.peers.stop_all("logout")
        self.finish(EXIT_OK, "You have left (the server was not reachable to say so).")

    def logged_out(self, reason: str) -> None:
        """The server ended the session."""
        if self.reconnector is not None and reason in COME_BACK_FROM:
            self.reconnector.begin(f"The server ended your session ({reason}).")
            return
        self.peers.stop_all(reason)
        if reason == "timeout":
            self.display.show("You have been logged out due to inactivity.")
            self.finish(EXIT_OK)
        else:
            self.display.show(f"The server ended your session ({reason}).")
            self.finish(EXIT_FAILURE)

    def finish(self, status: int, farewell: str = "") -> None:
        if not self.move(Stage.DONE):
            return
        if self.reconnector is not None:
            self.reconnector.stop()
        if farewell:
            self.display.show(farewell)
        self.display.finish(status)

    # --- from the peer network (PeerEvents) ---------------------------------------------

    def peer_opened(self, user: str) -> None:
        self.private.opened(user)

    def peer_text(self, user: str, text: str) -> None:
        self.private.text(user, text)

    def peer_closed(self, user: str, reason: str) -> None:
        if self.stage is not Stage.DONE:
            self.private.closed(user, reason)

    # --- plumbing -----------------------------------------------------------------------

    def request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]:
        assert self._link is not None
        return self._link.request(frame)

    def show_error(self, failure: Failure) -> None:
        if failure.check(ServerGone):
            return  # server_lost says it once
        if failure.check(ServerError):
            self.display.show(server_error(failure).text, "error")
            return
        self.unexpected(failure)

    def _fatal_error(self, failure: Failure) -> None:
        if failure.check(ServerError):
            self.display.show(server_error(failure).text)
            self.finish(EXIT_FAILURE)
        elif not failure.check(ServerGone):
            self.unexpected(failure)

    def unexpected(self, failure: Failure) -> None:
        if failure.check(ServerGone):
            return
        self.log.failure("client error", failure)
        self.display.show(f"Error. Something went wrong: {failure.getErrorMessage()}")
