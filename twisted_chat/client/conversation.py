"""The conversation once logged in: what the user types (commands, and y/n answers to
private-chat requests), and what the server pushes (messages, broadcasts, presence,
private-chat notices), each shown as one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_chat import wire
from twisted_chat.client import presentation
from twisted_chat.client.commands import (
    DEFAULT_HISTORY,
    Command,
    CommandError,
    help_text,
    parse_command,
)

if TYPE_CHECKING:
    from twisted_chat.client.session import ClientSession

_YES = {"y", "yes"}
_NO = {"n", "no"}


class Conversation:
    """Commands out, events in, for one client session."""

    log = Logger()

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._repeats = Repeats()
        self._oldest_shown: dict[str, int] = {}
        """Per ``history`` target, the oldest msgid shown: where ``more`` goes on from."""

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
            case wire.Message(sender=sender, text=text, sent=sent, stored=stored, msgid=msgid):
                roster.saw(sender)
                if self._repeats.seen(sender, msgid):
                    return  # already shown (a repeat after a crash, or history's too)
                if stored:
                    show(presentation.stored_message(sender, text, sent), "message")
                else:
                    show(presentation.message(sender, text), "message")
            case wire.StoredDone(upto=upto):
                # Shown, so acknowledged: the server may forget them now.
                session.request(wire.Received(upto)).addErrback(session.show_error)
            case wire.Broadcast(sender=sender, text=text):
                roster.saw(sender)
                show(presentation.broadcast(sender, text), "broadcast")
            case wire.PrivateRequest(sender=sender):
                session.private.asked_by(sender)
            case wire.PrivateAccepted():
                session.private.accepted(event)
            case wire.PrivateDeclined(user=user):
                session.private.declined(user)
            case wire.PrivateExpired(user=user, reason=reason):
                session.private.expired(user, reason)
            case wire.RoomMessage(
                room=room, sender=sender, text=text, sent=sent, msgid=msgid, replay=replay
            ):
                roster.saw(sender)
                if self._repeats.seen(room, msgid):
                    return
                if replay:
                    show(presentation.replayed_room_message(room, sender, text, sent), "message")
                else:
                    show(presentation.room_message(room, sender, text), "message")
            case wire.RoomMember(room=room, user=user, joined=joined):
                roster.saw(user)
                show(presentation.room_member(room, user, joined), "presence")
            case wire.RoomReplayed(room=room, more=more):
                if more:
                    show(presentation.more_in_room(room, more), "presence")
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
        elif name == "join":
            self._send(wire.Join(command.args[0]), self._joined)
        elif name == "leave":
            self._send(wire.Leave(command.args[0]), self._left)
        elif name == "rooms":
            self._send(wire.Rooms(), self._show_rooms)
        elif name == "members":
            self._send(wire.Members(command.args[0]), self._show_members, command.args[0])
        elif name == "history":
            self._history(command.args[0], command.count)
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

    def _message_sent(self, result: dict[str, Any], to: str, text: str) -> None:
        # What we said, as a chat line (the conversation reads as one), once accepted.
        display = self._session.display
        msgid = result.get("msgid")
        if isinstance(msgid, int):
            self._repeats.seen(to, msgid)  # our own line, should history bring it again
        if to.startswith("#"):
            display.show(presentation.own_room_message(str(result.get("room", to)), text), "own")
            return
        display.show(presentation.own_message(to, text), "own")
        if result.get("stored"):
            display.show(f"{to} is offline; they will get the message when they log in.")

    def _joined(self, result: dict[str, Any]) -> None:
        room = str(result.get("room", ""))
        self._session.roster.rooms.add(room)
        members = result.get("members", 1)
        made = " (a new room)" if result.get("created") else ""
        self._session.display.show(f"You joined {room}{made}: {members} member(s).")

    def _left(self, result: dict[str, Any]) -> None:
        room = str(result.get("room", ""))
        self._session.roster.rooms.discard(room)
        self._session.display.show(f"You left {room}.")

    def _show_rooms(self, result: dict[str, Any]) -> None:
        rooms = [r for r in result.get("rooms", []) if isinstance(r, dict)]
        self._session.roster.rooms.update(str(r.get("room", "")) for r in rooms)
        if not rooms:
            self._session.display.show("You are in no room: join #name to make or join one.")
        for room in rooms:
            self._session.display.show(
                f"{room.get('room')}: {room.get('members')} member(s), "
                f"{room.get('unread')} not seen"
            )

    def _show_members(self, result: dict[str, Any], room: str) -> None:
        members = [m for m in result.get("members", []) if isinstance(m, dict)]
        listed = ", ".join(
            f"{m.get('user')}{' (online)' if m.get('online') else ''}" for m in members
        )
        self._session.roster.saw(*(str(m.get("user", "")) for m in members))
        self._session.display.show(f"{room}: {listed}")

    def _history(self, target: str, count: int | None) -> None:
        before = 0
        if count is None:  # 'more': on from the oldest shown
            before = self._oldest_shown.get(target, 0)
            if before <= 1:
                self._session.display.show(f"There is nothing before that in {target}'s history.")
                return
        wanted = count or DEFAULT_HISTORY
        self._send(wire.History(target, wanted, before), self._show_history, target)

    def _show_history(self, result: dict[str, Any], target: str) -> None:
        display = self._session.display
        lines = [m for m in result.get("messages", []) if isinstance(m, dict)]
        if not lines:
            display.show(f"Nothing more in the history with {target}.")
            self._oldest_shown[target] = 1
            return
        for line in lines:
            display.show(
                presentation.history_line(
                    target, str(line.get("sender")), str(line.get("text")), float(line["sent"])
                )
            )
        self._oldest_shown[target] = int(lines[0].get("msgid", 0))
        if result.get("more"):
            display.show(f"(older: history {target} more)")

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


class Repeats:
    """The msgids shown this run, per conversation, to show each message once: a
    server may send one again (after a crash, it cannot know it was sent) and a
    ``history`` reply may hold what was shown live. The newest thousand a
    conversation."""

    KEPT = 1000

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}

    def seen(self, conversation: str, msgid: int) -> bool:
        """Whether ``msgid`` was shown in ``conversation``; remembers it (0: not kept,
        so never a repeat)."""
        if not msgid:
            return False
        seen = self._seen.setdefault(conversation, set())
        if msgid in seen:
            return True
        seen.add(msgid)
        if len(seen) > self.KEPT:
            seen.discard(min(seen))
        return False
