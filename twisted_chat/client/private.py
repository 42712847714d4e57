"""Private sessions, on the client's side: asking, answering y/n, connecting only for
an approval of a request we made (and never to a privileged port), sending straight
to the peer, and saying once, in one line, how each session ended."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client import presentation
from twisted_chat.client.link import ServerError, server_error
from twisted_chat.text import describe, forbidden_character

if TYPE_CHECKING:
    from twisted_chat.client.session import ClientSession


class PrivateChats:
    """The private-session requests and sessions of one client session."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self.askers: OrderedDict[str, None] = OrderedDict()
        """Users whose private-chat request waits for our y/n, oldest first."""
        self._requested: set[str] = set()
        """Users we asked for a private session, until it is answered or lapses: only an
        approval of one of these makes us connect anywhere."""
        self._accepted: set[str] = set()
        """Users whose request we accepted: only their approval makes us expect a peer."""
        self._gone: set[str] = set()
        """Users the server said logged out while their private session was still
        open: its end, when it comes, says both in one line."""
        self._left_privately: set[str] = set()
        """Users whose private session ended with their logout, already said in one
        line: the server's ``logged out`` notice for them is not repeated."""

    def status_parts(self) -> list[str]:
        """What the status bar says of private chats."""
        parts = []
        sessions = self._session.peers.open_sessions()
        if sessions:
            parts.append("private: " + ", ".join(sessions))
        if self.askers:
            parts.append("asking you: " + ", ".join(self.askers) + " (y/n)")
        if self._requested:
            parts.append("you asked: " + ", ".join(sorted(self._requested)))
        return parts

    # --- our peer listener ------------------------------------------------------------

    def listening(self, port: int) -> None:
        session = self._session
        session.request(wire.Listening(port, session.peers.fingerprint)).addErrback(
            session.show_error
        )

    def no_listener(self, failure: Failure) -> None:
        self._session.log.failure("cannot listen for peers", failure)
        self._session.display.show("Private messaging is unavailable: cannot listen for peers.")

    # --- from the server ----------------------------------------------------------------

    def shows_presence(self, user: str, online: bool) -> bool:
        """Whether the server's notice that ``user`` logged in or out is worth a line:
        not if their private session's end says it, or already said it."""
        if not online and user in self._left_privately:
            self._left_privately.discard(user)  # said with the session's end
            return False
        if not online and self._session.peers.has(user):
            # One line for one departure: the private session's end, about to come on
            # the other connection, says both.
            self._gone.add(user)
            return False
        return True

    def asked_by(self, sender: str) -> None:
        self.askers[sender] = None
        self._session.display.show(f"{sender} would like to private message, enter y or n:")

    def accepted(self, event: wire.PrivateAccepted) -> None:
        session = self._session
        user = event.user
        if not event.port:  # we accepted: the requester connects to us
            if user not in self._accepted:
                session.log.warn("ignored an approval from {user} we never gave", user=user)
                return
            self._accepted.discard(user)
            session.roster.saw(user)
            session.peers.expect(user, event.token, event.fingerprint)
            return
        # Connect only where a request of ours was answered, and never to a privileged
        # port: else whoever controls the approval picks a target for our client.
        if user not in self._requested:
            session.log.warn("ignored an approval for {user} we never asked for", user=user)
            return
        self._requested.discard(user)
        if not 1024 <= event.port <= 65535:
            session.display.show(
                f"Could not open private messaging with {user}: "
                f"the server named port {event.port}, outside 1024-65535."
            )
            return
        session.roster.saw(user)
        session.display.show(f"{user} accepts private messaging.")

        def failed(failure: Failure) -> None:
            session.display.show(
                f"Could not open private messaging with {user}: {failure.getErrorMessage()}"
            )

        session.peers.connect(
            user, event.host, event.port, event.token, event.fingerprint
        ).addErrback(failed)

    def declined(self, user: str) -> None:
        self._requested.discard(user)
        self._session.display.show(f"{user} declined private messaging.")

    def expired(self, user: str, reason: str) -> None:
        self.askers.pop(user, None)
        self._requested.discard(user)
        self._accepted.discard(user)
        self._session.peers.withdrawn(user)
        if reason == "left":
            self._session.display.show(
                f"The private messaging request with {user} was cancelled: {user} logged out."
            )
        else:
            self._session.display.show(
                f"The private messaging request with {user} lapsed unanswered."
            )

    # --- commands ---------------------------------------------------------------------

    def answer(self, accept: bool, rest: str) -> bool:
        """Answer a pending request; False if this line is not such an answer."""
        session = self._session
        if not self.askers:
            return False
        user = rest.strip()
        if not user:
            if len(self.askers) > 1:
                waiting = ", ".join(self.askers)
                session.display.show(
                    f"Several users are waiting for an answer ({waiting}): "
                    "type y <user> or n <user>."
                )
                return True
            user = next(iter(self.askers))
        elif user not in self.askers:
            return False
        del self.askers[user]
        if accept:
            self._accepted.add(user)  # the approval we then hear of is ours
            session.peers.consented(user)

        def answered(_: dict[str, Any]) -> None:
            if not accept:
                session.display.show(f"You declined private messaging with {user}.")

        session.request(wire.AnswerPrivate(user, accept)).addCallback(answered).addErrback(
            session.show_error
        )
        return True

    def start(self, user: str) -> None:
        session = self._session
        if user == session.user:
            session.display.show("Error. You cannot start a private session with yourself.")
            return
        if session.peers.has(user):
            session.display.show(f"Error. You are already in a private session with {user}.")
            return
        self._requested.add(user)

        def asked(_: dict[str, Any]) -> None:
            session.display.show(
                f"Start private messaging with {user}: waiting for {user} to answer."
            )

        session.request(wire.StartPrivate(user)).addCallback(asked).addErrback(
            self._start_refused, user
        ).addBoth(lambda _: session.update_status())

    def _start_refused(self, failure: Failure, user: str) -> None:
        if not (failure.check(ServerError) and server_error(failure).code == "private-conflict"):
            self._requested.discard(user)  # (a conflict: our earlier request still stands)
        self._session.show_error(failure)

    def send(self, user: str, text: str) -> None:
        session = self._session
        if user == session.user:
            session.display.show("Error. You cannot private message yourself.")
        elif not session.peers.has(user):
            why = (
                session.roster.not_reachable(user)
                or f"Error. Private messaging to {user} not enabled."
            )
            session.display.show(why)
        elif len(text) > wire.MAX_TEXT_CHARS:
            session.display.show(
                f"Error. The message has {len(text)} characters; the limit is "
                f"{wire.MAX_TEXT_CHARS}. Nothing was sent."
            )
        elif (bad := forbidden_character(text)) is not None:
            session.display.show(
                f"Error. The message contains a control character ({describe(bad)}); "
                "nothing was sent."
            )
        elif not session.peers.send(user, text):
            session.display.show(
                f"Error. {user} is no longer reachable; private messaging with {user} ended."
            )
        else:
            session.display.show(presentation.own_private(user, text), "own")
            self._tell_server_active()

    def stop(self, user: str) -> None:
        session = self._session
        if user == session.user:
            session.display.show("Error. You cannot stop a private session with yourself.")
        elif not session.peers.has(user):
            why = (
                session.roster.not_reachable(user)
                or f"Error. There is no private session with {user}."
            )
            session.display.show(why)
        else:
            session.peers.stop(user)
            session.display.show(f"Private messaging with {user} stopped.")
            self._tell_server_active()

    def fingerprint(self, user: str) -> None:
        if self._session.peers.has(user):
            self.show_code(user)
        else:
            self._session.display.show(f"Error. There is no private session with {user}.")

    def _tell_server_active(self) -> None:
        # Private messages bypass the server, which must still see the user as active;
        # it learns *that* we did something, never what.
        self._session.request(wire.Activity()).addErrback(self._session.show_error)

    # --- from the peer network --------------------------------------------------------

    def opened(self, user: str) -> None:
        session = self._session
        session.display.show(
            f"Private messaging with {user} started: type private {user} <message>."
        )
        self.show_code(user)
        session.update_status()

    def show_code(self, user: str) -> None:
        code = self._session.peers.session_code(user)
        if code is not None:
            self._session.display.show(
                f"Sealed end to end; session code {code}: {user} sees the same code, "
                "or someone is in the middle (compare them by voice)."
            )

    def text(self, user: str, text: str) -> None:
        self._session.roster.saw(user)
        self._session.display.show(presentation.private(user, text), "private")

    def closed(self, user: str, reason: str) -> None:
        display = self._session.display
        if reason == "stop":
            display.show(f"{user} stopped private messaging.")
        elif reason in ("logout", "timeout", "quit") or user in self._gone:
            if user not in self._gone:
                self._left_privately.add(user)  # the server's notice, still to come
            self._gone.discard(user)
            display.show(f"{user} logged out; private messaging with {user} ended.")
        else:
            display.show(f"Private messaging with {user} ended: the connection was lost.")
        self._session.update_status()
