"""The commands of an online user: each frame to its call on the session (the avatar),
and the call's result to the reply's fields. ``logout`` is not here: it ends the
connection, which is the protocol's to do."""

from __future__ import annotations

from typing import Any, TypeAlias

from twisted_chat import wire
from twisted_chat.errors import BadArgument, ProtocolStateError
from twisted_chat.interfaces import Now, then
from twisted_chat.server import names
from twisted_chat.server.session import Session

Reply: TypeAlias = Now[dict[str, Any]]
"""The reply's fields, now or once the command is done (stored, written)."""


def run(avatar: Session, frame: wire.Frame, peer_ip: str | None) -> Reply:
    """Carry out ``frame`` for ``avatar``. ``peer_ip``: the client's IP address, the
    one its private-session partners will be given (None when it has none)."""
    match frame:
        case wire.WhoElse():
            return _field("users", avatar.whoelse())
        case wire.WhoElseSince(seconds=seconds):
            return _field("users", avatar.whoelsesince(seconds))
        case wire.Accounts():
            return avatar.accounts()
        case wire.SendMessage(to=to, text=text):
            return message(avatar, to, text)
        case wire.SendBroadcast(text=text):
            return _field("skipped", avatar.broadcast(text))
        case wire.Block(user=user):
            return avatar.block(names.normalise(user)).addCallback(lambda _: {})
        case wire.Unblock(user=user):
            return avatar.unblock(names.normalise(user)).addCallback(lambda _: {})
        case wire.StartPrivate(user=user):
            return _done(avatar.start_private(names.normalise(user)))
        case wire.AnswerPrivate(user=user, accept=accept):
            return _done(avatar.answer_private(names.normalise(user), accept))
        case wire.Listening(port=port, fingerprint=fingerprint):
            if peer_ip is None:
                raise BadArgument(
                    "Error. Private sessions need a TCP connection to the server: "
                    "there is no address to give your partner."
                )
            return _done(avatar.listening(peer_ip, port, fingerprint))
        case wire.Activity():
            avatar.activity()
            return {}
        case wire.Received(upto=upto):
            return avatar.received(upto).addCallback(lambda _: {})
        case wire.Join(room=room):
            return avatar.join(room)
        case wire.Leave(room=room):
            return avatar.leave(room)
        case wire.Rooms():
            return _field("rooms", avatar.list_rooms())
        case wire.Members(room=room):
            return _field("members", avatar.members(room))
        case wire.History(target=target, limit=limit, before=before):
            return avatar.history(names.normalise(target), limit, before)
    raise ProtocolStateError(f"A {frame.TYPE} frame is not expected now.")


def message(avatar: Session, to: str, text: str) -> Reply:
    """``message``: to a room (``#name``), or to a user: delivered now (``stored``
    false), or once kept in history and delivered or stored for later (``msgid``)."""
    if to.startswith("#"):
        return avatar.say(to, text)
    sent = avatar.message(names.normalise(to), text)
    if sent is None:
        return _DELIVERED
    return sent.addCallback(_sent_reply)


def _sent_reply(sent: tuple[bool, int]) -> dict[str, Any]:
    stored, msgid = sent
    return {"stored": stored, "msgid": msgid}


def _field(name: str, value: Now[Any]) -> Reply:
    """``{name: value}``, now or once ``value`` is known."""
    return then(value, lambda known: {name: known})


def _done(value: Now[None]) -> Reply:
    """An empty reply, now or once the command is done."""
    return then(value, lambda _: {})


_DELIVERED: dict[str, Any] = {"stored": False}
"""The reply to every message delivered at once (read only: one dict for all)."""
