"""Who was online when, and who is online through other nodes: the two records the
core's presence rules (``whoelse``, ``whoelsesince``, the broadcast's "some did not get
it") read besides this node's own sessions. Both are fed by presence events, the
node's own and the others', so they answer in memory, with no round trip.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator


class PresenceHistory:
    """When each user who has been online last went offline.

    Kept in logout order (most recent last), so ``offline_since(cutoff)`` walks back
    only over the users it returns: O(result), never a scan of every user.
    """

    def __init__(self) -> None:
        self._last_logout: OrderedDict[str, float] = OrderedDict()

    def went_offline(self, user: str, when: float) -> None:
        last = self._last_logout.get(user)
        if last is not None and last > when:
            return  # an older notice, late (from another node): the newer one stands
        self._last_logout.pop(user, None)
        self._last_logout[user] = when

    def load(self, logouts: Iterable[tuple[str, float]]) -> None:
        """Replace everything with these (user, last logout) pairs."""
        self._last_logout = OrderedDict(sorted(logouts, key=lambda item: item[1]))

    def offline_since(self, cutoff: float) -> Iterator[str]:
        """Users whose last logout was at or after ``cutoff``."""
        for user in reversed(self._last_logout):
            if self._last_logout[user] < cutoff:
                return
            yield user


class Roster:
    """Users online through other nodes: user -> node key (``id#incarnation``), and
    the reverse index, so that a node that dies takes exactly its users with it. Empty
    in one process."""

    def __init__(self) -> None:
        self._where: dict[str, str] = {}
        self._by_node: dict[str, set[str]] = {}

    def __contains__(self, user: object) -> bool:
        return user in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def node_of(self, user: str) -> str | None:
        return self._where.get(user)

    def nodes(self) -> set[str]:
        return set(self._by_node)

    def add(self, user: str, node: str) -> None:
        self.discard(user)
        self._where[user] = node
        self._by_node.setdefault(node, set()).add(user)

    def discard(self, user: str, node: str | None = None) -> bool:
        """Forget ``user`` (only if held by ``node``, when given); whether it was."""
        held = self._where.get(user)
        if held is None or (node is not None and held != node):
            return False
        del self._where[user]
        users = self._by_node[held]
        users.discard(user)
        if not users:
            del self._by_node[held]
        return True

    def drop_node(self, node: str) -> set[str]:
        """Forget every user of ``node``; return them."""
        users = self._by_node.pop(node, set())
        for user in users:
            del self._where[user]
        return users

    def clear(self) -> None:
        self._where.clear()
        self._by_node.clear()
