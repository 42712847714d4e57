"""The client's knowledge of other users: every account name (from the server at
login), who is online and who left, whom we block, and any name seen this run. It is
what Tab completion offers and what lets the client say "not a user" or "offline"
without asking the server each time."""

from __future__ import annotations

from typing import Any


class Roster:
    """Names, as this client has learned them."""

    def __init__(self) -> None:
        self.known: set[str] = set()
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
        self.rooms: set[str] = set()
        """The rooms we are in (for completing ``leave``, ``members``...)."""

    def saw(self, *users: str) -> None:
        self.known.update(users)

    def took(self, result: dict[str, Any]) -> None:
        """The server's ``accounts`` reply."""
        users = [u for u in result.get("users", []) if isinstance(u, str)]
        self.known.update(users)
        if not result.get("truncated"):
            self.accounts = set(users)
        self.online.update(u for u in result.get("online", []) if isinstance(u, str))
        self.blocked.update(u for u in result.get("blocked", []) if isinstance(u, str))
        self.rooms.update(r for r in result.get("rooms", []) if isinstance(r, str))

    def presence(self, user: str, online: bool) -> None:
        self.known.add(user)
        if self.accounts is not None:
            self.accounts.add(user)  # created since we asked
        (self.online if online else self.offline).add(user)
        (self.offline if online else self.online).discard(user)

    def block(self, user: str, blocked: bool) -> None:
        (self.blocked.add if blocked else self.blocked.discard)(user)

    def not_reachable(self, user: str) -> str | None:
        """Why ``user`` cannot be reached privately, when we know: not a user, offline."""
        if self.accounts is not None and user not in self.accounts:
            return f"Error. {user} is not a user."
        if user in self.offline:
            return f"Error. {user} is offline."
        return None

    def names_for(self, command: str, me: str, private_sessions: list[str]) -> list[str]:
        """The names that make sense after ``command`` (Tab completion): anyone for
        ``message`` and ``block``, those we block for ``unblock``, online users for
        ``startprivate``, our private sessions for ``private`` and ``stopprivate``."""
        if command in ("private", "stopprivate", "fingerprint"):
            pool: set[str] = set(private_sessions)
        elif command == "unblock":
            pool = set(self.blocked)
        elif command == "startprivate":
            pool = set(self.online)
        elif command in ("join", "leave", "members"):
            pool = set(self.rooms)
        elif command in ("message", "history"):
            pool = set(self.accounts or self.known) | self.rooms
        else:
            pool = set(self.accounts or self.known)
        pool.discard(me)
        return sorted(pool)
