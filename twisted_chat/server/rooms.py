"""Rooms and history that last, written once for one process and for many nodes.

A room is ``#`` and a name under the rules of usernames. Joining makes it if there is
none; membership lasts (through logout, timeouts and restarts) until the member
leaves. What is said in a room is kept (``IHistory``) before anyone is sent it, each
message with a msgid that increases in its room, and each member's position (the
newest msgid they were sent) moves forward as messages reach them, so that at login
they are sent what they missed, at most ``replay`` messages a room, exactly once: a
crash can repeat a message (the client drops repeats by msgid), never skip one. A
member only ever reads what was said after they joined.

Blocks hold everywhere: what a user you block says in a room is neither sent nor
replayed to you, and ``history`` leaves it out; and, as for presence, those you block
are not told when you join or leave.

The rooms and members live in an ``IRoomStore`` (memory and SQLite, or Redis); this
module holds the rules and, for this node, which of its online users are in which
room, so that a room's message goes to its members here with no scan of anyone else.
Other nodes hear of it through the events this node emits (``RoomSaid``,
``RoomJoined``) and apply them with the same handlers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_chat import wire
from twisted_chat.errors import (
    AlreadyMember,
    InvalidRoom,
    NoSuchRoom,
    NotMember,
    RoomFull,
    TooManyNewRooms,
    TooManyRooms,
)
from twisted_chat.interfaces import HistoryLine, IHistory, IRoomStore
from twisted_chat.server import events, names

if TYPE_CHECKING:
    from twisted_chat.server.core import Chat
    from twisted_chat.server.session import Session

ROOM_MARK = "#"

POSITIONS_EVERY = 1.0
"""Seconds between saves of the positions that moved: a crash repeats at most that
much of what was sent (never skips), and a busy room costs no write per message."""


@dataclasses.dataclass(frozen=True)
class RoomLimits:
    """What the operator bounds (each an option of the server)."""

    history_days: float = 30.0
    """Messages older than this many days are dropped from every history (0: no
    history is kept at all)."""
    history_max: int = 10_000
    """Messages kept per conversation; the oldest go first."""
    max_rooms_per_user: int = 100
    max_room_members: int = 10_000
    max_rooms_created_per_hour: int = 10
    replay: int = 50
    """Messages sent at login per room the member missed; the rest are counted."""


def is_room(target: str) -> bool:
    return target.startswith(ROOM_MARK)


def conversation_of(a: str, b: str) -> str:
    """The history of what two users said to each other, whichever sent it. A TAB
    between the names: no name holds one."""
    return f"{a}\t{b}" if a < b else f"{b}\t{a}"


def room_name(typed: str) -> str:
    """The canonical form of a room name, or :class:`InvalidRoom` (the name part is
    under the rules of a new username)."""
    room = names.normalise(typed)
    if not is_room(room):
        raise InvalidRoom(f"Error. A room's name starts with '#': #{room}?")
    problem = names.new_name_problem(room[1:])
    if problem is not None:
        raise InvalidRoom(problem.replace("A username", "A room's name"))
    return room


def look_of(room: str) -> str:
    """What a room's name looks like (``names.skeleton``): two rooms may not look alike."""
    return ROOM_MARK + names.skeleton(room[1:])


class Rooms:
    """The rooms of a chat, as this node serves them."""

    log = Logger()

    def __init__(
        self, chat: Chat, store: IRoomStore, history: IHistory, limits: RoomLimits
    ) -> None:
        self._chat = chat
        self.store = store
        self.history = history
        self.limits = limits
        self._here: dict[str, dict[str, Session]] = {}
        """room -> its members online through this node (for each message: no scan)."""
        self._moved: set[Session] = set()
        """Sessions whose positions moved since they were last saved."""
        self._saver = LoopingCall(self.save_positions)
        self._saver.clock = chat.clock

    @property
    def keeps_history(self) -> bool:
        """Whether what is said is kept (``--history-days 0``: not at all)."""
        return self.limits.history_days > 0

    def start(self) -> None:
        self._saver.start(POSITIONS_EVERY, now=False)

    def stop(self) -> Deferred[None]:
        """Save what moved; no timer outlives this."""
        if self._saver.running:
            self._saver.stop()
        return self.save_positions()

    # --- sessions ---------------------------------------------------------------------

    async def session_began(self, session: Session) -> None:
        """A member is online here: into the rooms they are in, then what they missed
        in each (their events are held meanwhile, and follow)."""
        rooms = await self.store.rooms_of(session.name)
        positions = await self.store.positions(session.name)
        if self._chat.online.get(session.name) is not session:
            return  # gone meanwhile: nothing of it may stay in the index
        session.rooms = dict(rooms)
        for room, joined in rooms.items():
            session.seen[room] = max(joined, positions.get(room, 0))
            self._here.setdefault(room, {})[session.name] = session
        for room in sorted(rooms):
            await self._replay(session, room)

    async def _replay(self, session: Session, room: str) -> None:
        """Up to ``replay`` messages of ``room`` that ``session`` has not been sent,
        oldest first (skipping what users it blocks said), then how many more there
        are; its position moves past what was considered."""
        limit = self.limits.replay
        blocks = self._chat.blocks
        start = cursor = session.seen.get(room, 0)
        shown = 0
        while shown < limit:
            lines = await self.history.after(room, cursor, limit)
            for line in lines:
                cursor = line.msgid
                if not blocks.is_blocked(session.name, line.sender):
                    session.mind.deliver(_replayed(room, line))
                    shown += 1
                    if shown == limit:
                        break
            if len(lines) < limit:
                break
        if cursor == start:
            return  # nothing new
        self._advance(session, room, cursor)
        if shown:
            newest = (await self.history.last_ids([room])).get(room, cursor)
            session.mind.deliver(wire.RoomReplayed(room, shown, max(0, newest - cursor)))

    def session_ended(self, session: Session) -> None:
        for room in session.rooms:
            members = self._here.get(room)
            if members is not None and members.get(session.name) is session:
                del members[session.name]
                if not members:
                    del self._here[room]
        self._save(session)

    # --- commands ---------------------------------------------------------------------

    async def join(self, session: Session, typed: str) -> dict[str, Any]:
        room = room_name(typed)
        me = session.name
        if room in session.rooms:
            raise AlreadyMember(room)
        store, limits = self.store, self.limits
        created = False
        if await store.members(room) is None:
            since = self._chat.clock.seconds() - 3600
            if await store.created_since(me, since) >= limits.max_rooms_created_per_hour:
                raise TooManyNewRooms(limits.max_rooms_created_per_hour)
            existing = await store.create(room, look_of(room), me, self._chat.clock.seconds())
            if existing is not None and existing != room:
                raise InvalidRoom(
                    f"Error. The room {room} looks too much like {existing}. Join {existing}, "
                    "or choose another name."
                )
            created = existing is None
        joined = (await self.history.last_ids([room])).get(room, 0)
        answer = await store.add_member(
            room, me, joined, limits.max_room_members, limits.max_rooms_per_user
        )
        if answer == "member":
            raise AlreadyMember(room)
        if answer == "no-room":
            raise NoSuchRoom(room)  # removed under us: not a case this release has
        if answer == "full":
            raise RoomFull(room, limits.max_room_members)
        if answer == "too-many":
            raise TooManyRooms(limits.max_rooms_per_user)
        session.rooms[room] = joined
        session.seen[room] = joined
        self._here.setdefault(room, {})[me] = session
        self._chat.emit(events.RoomJoined(room, me, True))
        counts = await store.member_counts([room])
        self.log.info("{user} joined {room}", user=me, room=room)
        return {"room": room, "created": created, "members": counts.get(room, 1)}

    async def leave(self, session: Session, typed: str) -> dict[str, Any]:
        room = names.normalise(typed)
        if room not in session.rooms:
            raise NotMember(room)
        await self.store.remove_member(room, session.name)
        del session.rooms[room]
        session.seen.pop(room, None)
        members = self._here.get(room)
        if members is not None:
            members.pop(session.name, None)
            if not members:
                del self._here[room]
        self._chat.emit(events.RoomJoined(room, session.name, False))
        return {"room": room}

    def say(self, session: Session, typed: str, text: str) -> Deferred[dict[str, Any]]:
        """A message to a room: kept first (its msgid is the history's), then sent to
        every member online, wherever they are."""
        room = names.normalise(typed)
        if room not in session.rooms:
            raise NotMember(room)
        sender = session.name
        now = self._chat.clock.seconds()

        def kept(msgid: int) -> dict[str, Any]:
            self._chat.emit(events.RoomSaid(room, sender, text, now, msgid))
            return {"room": room, "msgid": msgid}

        return self.history.append(room, sender, text, now).addCallback(kept)

    async def rooms(self, session: Session) -> list[dict[str, Any]]:
        """``rooms``: each room with its member count and what was not yet sent."""
        names_ = sorted(session.rooms)
        counts = await self.store.member_counts(names_)
        newest = await self.history.last_ids(names_)
        return [
            {
                "room": room,
                "members": counts.get(room, 0),
                "unread": max(0, newest.get(room, 0) - session.seen.get(room, 0)),
            }
            for room in names_
        ]

    async def members(self, session: Session, typed: str) -> list[dict[str, Any]]:
        """``members``: online as ``whoelse`` sees it (not those who block the asker)."""
        room = names.normalise(typed)
        if room not in session.rooms:
            raise NotMember(room)
        members = await self.store.members(room)
        chat = self._chat
        me = session.name
        return [
            {
                "user": user,
                "online": chat.is_online(user) and not chat.blocks.is_blocked(user, me),
            }
            for user in sorted(members or ())
        ]

    async def history_of(
        self, session: Session, target: str, limit: int, before: int
    ) -> dict[str, Any]:
        """``history``: the newest ``limit`` messages before msgid ``before`` of a room
        (only from when the asker joined) or of the asker and another user, less what
        users the asker blocks said; oldest first, and whether there are older."""
        me = session.name
        chat = self._chat
        if is_room(target):
            conversation = names.normalise(target)
            if conversation not in session.rooms:
                raise NotMember(conversation)
            floor = session.rooms[conversation]
        else:
            chat.require_user(target)
            conversation = conversation_of(me, target)
            floor = 0
        wanted = max(1, min(limit, wire.MAX_HISTORY))
        shown: list[HistoryLine] = []
        cursor = before
        while len(shown) < wanted:
            page = [
                line
                for line in await self.history.before(conversation, cursor, wanted)
                if line.msgid > floor
            ]
            if not page:
                break
            cursor = page[0].msgid
            kept = [line for line in page if not chat.blocks.is_blocked(me, line.sender)]
            shown = kept[max(0, len(kept) - (wanted - len(shown))) :] + shown
        older = await self.history.before(conversation, cursor, 1) if cursor else []
        more = bool(older) and older[0].msgid > floor
        return {
            "target": target,
            "messages": [dataclasses.asdict(line) for line in shown],
            "more": more,
        }

    # --- events, from this node or another ---------------------------------------------

    def on_said(self, event: events.RoomSaid) -> None:
        members = self._here.get(event.room)
        if not members:
            return
        frame = wire.RoomMessage(event.room, event.sender, event.text, event.sent, event.msgid)
        sender = event.sender
        blockers = self._chat.blocks.blockers_of(sender)
        for user, session in members.items():
            # Not to its sender (their client shows it when the server accepts it),
            # nor to those who block them; everyone's position passes it.
            if user != sender and user not in blockers:
                session.deliver(frame)
            self._advance(session, event.room, event.msgid)

    def on_joined(self, event: events.RoomJoined) -> None:
        members = self._here.get(event.room)
        if not members:
            return
        blocks = self._chat.blocks
        frame = wire.RoomMember(event.room, event.user, event.joined)
        hidden = blocks.blocked_by(event.user)  # as presence: not to those they block
        blockers = blocks.blockers_of(event.user)  # nor to those who block them
        for user, session in members.items():
            if user != event.user and user not in hidden and user not in blockers:
                session.deliver(frame)

    # --- positions ----------------------------------------------------------------------

    def _advance(self, session: Session, room: str, msgid: int) -> None:
        if msgid > session.seen.get(room, 0):
            session.seen[room] = msgid
            self._moved.add(session)

    def save_positions(self) -> Deferred[None]:
        moved, self._moved = self._moved, set()
        saving = [self._save_now(session) for session in moved]
        return _all(saving)

    def _save(self, session: Session) -> None:
        if session in self._moved:
            self._moved.discard(session)
            self._save_now(session)

    def _save_now(self, session: Session) -> Deferred[None]:
        d = self.store.save_positions(session.name, dict(session.seen))
        return d.addErrback(self._not_saved, session.name)

    def _not_saved(self, failure: Any, user: str) -> None:
        self.log.warn(
            "the room positions of {user} were not saved ({why}): they may be sent "
            "again what they were sent",
            user=user,
            why=failure.getErrorMessage(),
        )


def _replayed(room: str, line: HistoryLine) -> wire.RoomMessage:
    return wire.RoomMessage(room, line.sender, line.text, line.sent, line.msgid, True)


def _all(deferreds: Iterable[Deferred[None]]) -> Deferred[None]:
    from twisted.internet.defer import gatherResults

    d: Deferred[None] = gatherResults(list(deferreds), consumeErrors=True).addCallback(
        lambda _: None
    )
    return d
