"""The conversation once logged in: what the user types (commands, and y/n answers to
private-chat requests), and what the server pushes (messages, broadcasts, presence,
private-chat notices), each shown as one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_chat import wire
from twisted_chat.client import presentation
from twisted_chat.client.commands import Command, CommandError, help_text, parse_command

if TYPE_CHECKING:
    from twisted_chat.client.session import ClientSession

_YES = {"y", "yes"}
_NO = {"n", "no"}


class Conversation:
    """Commands out, events in, for one client session."""

    log = Logger()

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    # --- what the server pushes ---------------------------------------------------------

    def event(self, event: wire.Frame) -> None:
        session = self._session
        show = session.display.show
        roster = session.roster
        match event:
            case wire.Presence(user=user, online=online):
                roster.presence(user, online)
                if session.private.shows_presence(user, online):
                    show(presentation.presence(user, online), "presence")
            case wire.Message(sender=sender, text=text, sent=sent, stored=stored):
                roster.saw(sender)
                if stored:
                    show(presentation.stored_message(sender, text, sent), "message")
                else:
                    show(presentation.message(sender, text), "message")
            case wire.StoredDone(upto=upto):
                # Shown, so acknowledged: the server may forget them now.
                session.request(wire.Received(upto)).addErrback(session.show_error)
            case wire.Broadcast(sender=sender, text=text):
                roster.saw(sender)
                show(presentation.broadcast(sender, text), "message")
            case wire.PrivateRequest(sender=sender):
                session.private.asked_by(sender)
            case wire.PrivateAccepted():
                session.private.accepted(event)
            case wire.PrivateDeclined(user=user):
                session.private.declined(user)
            case wire.PrivateExpired(user=user, reason=reason):
                session.private.expired(user, reason)
            case wire.IdleWarning(seconds=seconds):
                show(
                    f"You will be logged out for inactivity in {seconds:.0f} s "
                    "unless you type a command.",
                    "error",
                )
            case wire.LoggedOut(reason=reason):
                session.logged_out(reason)
            case wire.Error(text=text):
                show(f"Error from the server: {text}")
            case _:
                self.log.debug("ignored a {kind} frame", kind=event.TYPE)

    # --- what the user types ------------------------------------------------------------

    def command_entered(self, line: str) -> None:
        session = self._session
        stripped = line.strip()
        if not stripped:
            return
        word, _, rest = stripped.partition(" ")
        if word.lower() in _YES | _NO:
            if not session.private.askers and not rest.strip():
                session.display.show("There is no private messaging request to answer.", "error")
                return
            if session.private.answer(word.lower() in _YES, rest):
                return
        try:
            command = parse_command(stripped)
        except CommandError as e:
            session.display.show(str(e), "error")
            return
        self.run(command)

    def run(self, command: Command) -> None:
        session = self._session
        name = command.name
        if name == "help":
            for line in help_text().splitlines():
                session.display.show(line)
        elif name == "logout":
            session.logout()
        elif name == "message":
            session.roster.saw(command.user)
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
            session.private.start(command.user)
        elif name == "private":
            session.private.send(command.user, command.text)
        elif name == "stopprivate":
            session.private.stop(command.user)
        elif name == "fingerprint":
            session.private.fingerprint(command.user)

    def _send(self, frame: wire.Frame, done: Callable[..., None], *args: Any) -> None:
        session = self._session
        session.request(frame).addCallback(done, *args).addErrback(session.show_error)

    def _message_sent(self, result: dict[str, Any], user: str, text: str) -> None:
        # What we said, as a chat line (the conversation reads as one), once accepted.
        display = self._session.display
        display.show(presentation.own_message(user, text), "own")
        if result.get("stored"):
            display.show(f"{user} is offline; they will get the message when they log in.")

    def _broadcast_sent(self, result: dict[str, Any], text: str) -> None:
        display = self._session.display
        display.show(presentation.own_broadcast(text), "own")
        if result.get("skipped"):
            display.show("Your message could not be delivered to some recipients.")

    def _show_users(self, result: dict[str, Any], empty: str) -> None:
        users = [str(u) for u in result.get("users", [])]
        self._session.roster.saw(*users)
        for user in users or [empty]:
            self._session.display.show(user)

    def _blocked(self, _: dict[str, Any], user: str, blocked: bool) -> None:
        self._session.roster.block(user, blocked)
        self._session.display.show(f"{user} is {'blocked' if blocked else 'unblocked'}")
