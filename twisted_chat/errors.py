"""Domain errors. Each carries the stable ``code`` sent in ``error`` frames and a
human-readable text that clients print as is. A leaf module: no I/O; of Twisted, only
cred's ``UnauthorizedLogin``, which the login errors must be for cred to pass them on."""

from __future__ import annotations

import errno
from typing import ClassVar

from twisted.cred.error import UnauthorizedLogin


class ChatError(Exception):
    """Base of every error a user can cause; never a bug."""

    code: ClassVar[str] = "error"

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class InvalidUsername(ChatError):
    code = "invalid-username"


class InvalidPassword(ChatError):
    code = "invalid-password"


class AlreadyOnline(ChatError):
    code = "already-online"

    def __init__(self, user: str) -> None:
        super().__init__(f"{user} is already logged in. Try another username.")


class UsernameTaken(ChatError):
    """Another client created this account first (spec §14.6)."""

    code = "username-taken"

    def __init__(self, user: str) -> None:
        super().__init__(f"The username {user} was just taken. Choose another.")


class AccountsReadOnly(ChatError):
    """The accounts file is read-only: the operator does not want new accounts."""

    code = "accounts-read-only"

    def __init__(self) -> None:
        super().__init__(
            "Error. This server cannot create new accounts now. Log in with an existing one."
        )


class WrongPassword(ChatError, UnauthorizedLogin):
    code = "wrong-password"

    def __init__(self, remaining: int) -> None:
        tries = "try" if remaining == 1 else "tries"
        super().__init__(f"Invalid password. Please try again ({remaining} {tries} left).")
        self.remaining = remaining


class AccountLocked(ChatError, UnauthorizedLogin):
    code = "locked"

    def __init__(self, just_now: bool, seconds: float = 0) -> None:
        """``seconds``: how long the lock still lasts (0: not said)."""
        left = f" for {_seconds(seconds)}" if seconds > 0 else ""
        if just_now:
            text = f"Invalid password. Your account has been blocked{left}. Please try again later."
        else:
            text = (
                f"Your account is blocked due to multiple login failures{left}. "
                "Please try again later."
            )
        super().__init__(text)
        self.just_now = just_now


def _seconds(seconds: float) -> str:
    """A duration as people say it: "60 s", "5 min", "2 min 30 s"."""
    whole = max(1, round(seconds))
    minutes, rest = divmod(whole, 60)
    if whole < 120:
        return f"{whole} s"
    return f"{minutes} min" + (f" {rest} s" if rest else "")


class NoSuchUser(ChatError):
    code = "no-such-user"

    def __init__(self, user: str) -> None:
        super().__init__(f"Error. {user} is not a user.")


class SelfTarget(ChatError):
    code = "self"

    @classmethod
    def private(cls) -> SelfTarget:
        return cls("Error. You cannot start a private session with yourself.")


class BlockedByRecipient(ChatError):
    code = "blocked"

    @classmethod
    def private(cls, user: str) -> BlockedByRecipient:
        return cls(
            f"Error. You cannot start a private session with {user}: the user has blocked you."
        )

    def __init__(
        self, text: str = "Your message could not be delivered as the recipient has blocked you."
    ) -> None:
        super().__init__(text)


class AlreadyBlocked(ChatError):
    code = "already-blocked"

    def __init__(self, user: str) -> None:
        super().__init__(f"Error. {user} is already blocked.")


class NotBlocked(ChatError):
    code = "not-blocked"

    def __init__(self, user: str) -> None:
        super().__init__(f"Error. {user} was not blocked.")


class TextTooLong(ChatError):
    code = "text-too-long"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"Error. The message has {length} characters; the limit is {limit}. Nothing was sent."
        )


class ControlCharacter(ChatError):
    """Text holding a character that would control the reader's terminal (a newline,
    ESC, a bidi override...): refused, nothing sent or stored."""

    code = "control-character"

    def __init__(self, described: str) -> None:
        super().__init__(
            f"Error. The message contains a control character ({described}); "
            "nothing was sent. Text may not hold line breaks, escape sequences, "
            "bidirectional overrides or other invisible formatting characters."
        )


class EmptyText(ChatError):
    code = "empty-text"

    def __init__(self) -> None:
        super().__init__("Error. The message is empty.")


class QueueFull(ChatError):
    code = "queue-full"

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(
            f"Error. {user} is offline and already has {limit} messages waiting. "
            "Your message was not stored; try again after they log in."
        )


class BadArgument(ChatError):
    code = "bad-argument"


class UserOffline(ChatError):
    code = "offline"

    def __init__(self, user: str) -> None:
        super().__init__(f"Error. {user} is not online.")


class NoPeerListener(ChatError):
    """The user is online, but their client accepts no private-session connections."""

    code = "no-peer-listener"

    def __init__(self, user: str, yours: bool = False) -> None:
        if yours:
            super().__init__(
                "Error. Your client cannot take private sessions: it has no peer listener."
            )
        else:
            super().__init__(f"Error. {user} cannot take private sessions now.")


class PeerUnsupported(ChatError):
    """The user's client is a web page: a browser cannot open the direct connection a
    private session is (docs/protocol.md, "Private chat")."""

    code = "peer-unsupported"

    def __init__(self, user: str, yours: bool = False) -> None:
        if yours:
            super().__init__(
                "Error. A web browser cannot take private sessions: use the terminal "
                "client (chat-client) for one."
            )
        else:
            super().__init__(
                f"Error. {user} is using the chat in a web browser, which cannot take "
                "private sessions; send them a message instead."
            )


class PrivateConflict(ChatError):
    """A private-session request that already exists, or an answer to none."""

    code = "private-conflict"

    @classmethod
    def waiting(cls, user: str) -> PrivateConflict:
        return cls(
            f"Error. A private request between you and {user} is already waiting for an answer."
        )

    @classmethod
    def none_from(cls, user: str) -> PrivateConflict:
        return cls(f"Error. There is no private request from {user}.")


class ProtocolStateError(ChatError):
    """A frame that the connection's phase does not take (a password before a name)."""

    code = "bad-state"


class NotLoggedIn(ChatError):
    code = "not-logged-in"

    def __init__(self) -> None:
        super().__init__("Log in first.")


NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""What the system says when a file may not grow: the disk is full, a quota is
reached, or the file-size limit (``ulimit -f``)."""


class StorageFull(ChatError):
    """The server's disk took no more (full, over a quota, or failing): nothing of the
    request was stored, what was stored before is intact, and the same request works
    again once there is room."""

    code = "storage-full"

    def __init__(self) -> None:
        super().__init__(
            "Error. The server cannot store anything right now (its disk is full); "
            "nothing was stored. Try again later."
        )


class SharedStateUnavailable(ChatError):
    """Redis, which holds the chat's shared state, did not answer in time: nothing was
    done, and the same request can be sent again."""

    code = "unavailable"

    def __init__(self) -> None:
        super().__init__(
            "Error. The chat's shared state cannot be reached right now; nothing was "
            "done. Try again in a few seconds."
        )


class InvalidRoom(ChatError):
    """A room name that is not ``#`` and a name under the rules of usernames, or that
    looks like another room's."""

    code = "invalid-room"


class NoSuchRoom(ChatError):
    code = "no-such-room"

    def __init__(self, room: str) -> None:
        super().__init__(f"Error. There is no room {room}.")


class NotMember(ChatError):
    code = "not-a-member"

    def __init__(self, room: str) -> None:
        super().__init__(f"Error. You are not in {room}: join {room} first.")


class AlreadyMember(ChatError):
    code = "already-a-member"

    def __init__(self, room: str) -> None:
        super().__init__(f"Error. You are already in {room}.")


class RoomFull(ChatError):
    code = "room-full"

    def __init__(self, room: str, limit: int) -> None:
        super().__init__(f"Error. {room} has {limit} members, as many as a room may have.")


class TooManyRooms(ChatError):
    code = "too-many-rooms"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Error. You are in {limit} rooms, as many as this server allows: leave one first."
        )


class TooManyNewAccounts(ChatError):
    """Accounts are made at a bounded rate, per network and in all (as Synapse's
    ``rc_registration``): a flood of new names must not slow everyone's logins."""

    code = "too-many-new-accounts"

    def __init__(self, wait: float) -> None:
        minutes = max(1, round(wait / 60))
        super().__init__(
            "Error. Too many new accounts were made from your network or on this server "
            f"just now: log in with an existing one, or try again in {minutes} minute(s)."
        )


class TooManyNewRooms(ChatError):
    code = "too-many-new-rooms"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Error. You created {limit} rooms in the last hour, as many as this server "
            "allows: join an existing room, or try again later."
        )


class NeedsNewerProtocol(ChatError):
    """A request of a later protocol version than the connection announced."""

    code = "bad-state"

    def __init__(self, kind: str, version: int) -> None:
        super().__init__(f"A {kind} frame needs protocol version {version}: say so in hello.")


class HistoryOff(ChatError):
    code = "history-off"

    def __init__(self) -> None:
        super().__init__("Error. This server keeps no history (--history-days 0).")
