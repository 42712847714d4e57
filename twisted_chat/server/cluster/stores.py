"""The stores over Redis, behind the same interfaces as the embedded ones.

Reads the domain makes on hot paths (does this account exist, does A block B) stay
synchronous and in memory: each node keeps a replica of the accounts and the blocks,
loaded when it joins and kept current by the ``a`` and ``k`` events every change sends
to every node's inbox. Decisions are Redis's: a message's route checks the block in
Redis itself (``scripts.ROUTE``), so a replica a few milliseconds behind never lets a
blocked sender through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.errors import QueueFull, UsernameTaken
from twisted_chat.interfaces import IAccountStore, IBlockStore, IMailbox, StoredMessage
from twisted_chat.server import names
from twisted_chat.server.accounts import (
    AccountTable,
    CredentialsFile,
)
from twisted_chat.server.auth import MAX_FAILURES
from twisted_chat.server.cluster import scripts
from twisted_chat.server.cluster.redis import pairs
from twisted_chat.server.cluster.scripts import Scripts
from twisted_chat.server.passwords import HashCheck
from twisted_chat.server.stores import BlockIndex

MERGE_CHUNK = 500
"""Accounts sent to Redis per script call: a script blocks Redis while it runs."""


@implementer(IAccountStore)
class ClusterAccounts(AccountTable):
    """Every account of the chat, as Redis holds it; this node's ``credentials.txt``
    is merged in at start and after each change to it, and an account created through
    this node is appended to it (once: Redis reserves the name first, so no other node
    appends it, even to the same file)."""

    log = Logger()

    def __init__(
        self, file: CredentialsFile, redis: Scripts, node_id: str, check_hash: HashCheck
    ) -> None:
        super().__init__(check_hash)
        self.file = file
        self._redis = redis
        self._node_id = node_id
        self._merged: dict[str, str] = {}
        """What this node has sent to Redis from its file (name -> stored form)."""
        self._merged_generation = -1
        """The file's ``generation`` last merged: a login merges nothing (and scans
        nothing) unless the file was read again since."""

    # --- the replica --------------------------------------------------------------------

    def load(self, flat: Sequence[str]) -> None:
        """Replace the replica with ``HGETALL chat:accounts``'s answer."""
        self._reset()
        for user, stored in pairs(flat):
            self.learned(user, stored)

    def learned(self, user: str, stored: str) -> None:
        """An account Redis holds (at join, or an ``a`` event). Redis is written by
        other nodes and tools, so a name is checked as a file's line would be: one
        that could draw on a terminal as something else, or as nothing, is left out."""
        if user in self._accounts:
            return
        if names.login_name_problem(user) or names.invisible_character(user) is not None:
            self.log.error(
                "Redis holds an account named {user!r} that no user could type; "
                "left out on this node",
                user=user,
                security_event="credentials-name",
            )
            return
        self._add(user, stored)

    def merge_file(self, again: bool = False) -> Deferred[int]:
        """Send Redis the file's accounts it has not had from us (all of them with
        ``again``: a join, after which Redis may be a new one); fires with how many
        were new to the chat."""
        if not again and self.file.generation == self._merged_generation:
            return succeed(0)
        self._merged_generation = self.file.generation
        if again:
            self._merged.clear()
        items = [(u, s) for u, s in self.file.items() if self._merged.get(u) != s]
        calls = []
        for start in range(0, len(items), MERGE_CHUNK):
            chunk = items[start : start + MERGE_CHUNK]
            flat = [field for pair in chunk for field in pair]
            calls.append(self._redis.run(scripts.MERGE_ACCOUNTS, *flat))
            for user, stored in chunk:
                self._merged[user] = stored
                self.learned(user, stored)

        def total(results: list[int]) -> int:
            return sum(results)

        return gatherResults(calls, consumeErrors=True).addCallback(total)

    # --- the file, watched (``service.ChatRunning``) ------------------------------------

    @property
    def path(self) -> Path:
        return self.file.path

    def watched(self) -> None:
        self.file.watched()

    def changed(self) -> None:
        """The file changed: read it and give Redis what is new at once (not at the next
        login), so that an account added by hand works on every node."""
        self.file.changed()
        self.refresh().addErrback(
            lambda f: self.log.warn(
                "could not merge {path} into Redis yet ({why}); it will be at the next "
                "login or join",
                path=str(self.file.path),
                why=f.getErrorMessage(),
            )
        )

    # --- IAccountStore (exists, names, verify: the AccountTable's) -----------------------

    def new_account_problem(self, user: str) -> str | None:
        """The node's file's answer, then look-alikes of accounts made anywhere."""
        problem = self.file.new_account_problem(user)
        if problem is not None:
            return problem
        existing = self.look_alike_of(user)
        if existing is not None:
            return f"Error. The username {user} looks too much like {existing}. Choose another."
        return None

    def refresh(self) -> Deferred[None]:
        """The file's hand edits, then whatever in it Redis lacks."""

        def merged(_: object) -> None:
            return None

        return self.file.refresh().addCallback(lambda _: self.merge_file()).addCallback(merged)

    def create(self, user: str, password: str) -> Deferred[None]:
        refused = self.refusal(user, password)
        if refused is not None:
            return refused

        def reserved(answer: str) -> Deferred[None]:
            if answer != "ok":
                raise UsernameTaken(user)
            return self.file.create(user, password).addCallbacks(written, unreserve)

        def written(_: object) -> Deferred[None]:
            stored = self.file.stored(user)
            assert stored is not None
            self._merged[user] = stored
            self.learned(user, stored)
            d: Deferred[None] = self._redis.run(scripts.ADD_ACCOUNT, user, stored).addCallback(
                lambda _: None
            )
            return d

        def unreserve(failure: Failure) -> Failure:
            # Not written: the name is free again (else it would be for 30 s anyway).
            self._redis.call("DEL", f"chat:newname:{user}").addErrback(lambda _: None)
            return failure

        return self._redis.run(scripts.RESERVE_NAME, user, self._node_id).addCallback(reserved)


@implementer(IBlockStore)
class ClusterBlocks(BlockIndex):
    """Block lists: a replica for the checks, Redis for the changes (every node hears
    of each change through its inbox)."""

    def __init__(self, redis: Scripts) -> None:
        super().__init__()
        self._redis = redis

    def load(self, flat: Sequence[str]) -> None:
        """Replace the replica with ``scripts.ALL_BLOCKS``'s answer."""
        self.reset(pairs(flat))

    def changed(self, blocker: str, target: str, on: bool) -> None:
        """A ``k`` event."""
        if on:
            self.add(blocker, target)
        else:
            self.discard(blocker, target)

    def block(self, blocker: str, target: str) -> Deferred[None]:
        return self._set(blocker, target, True)

    def unblock(self, blocker: str, target: str) -> Deferred[None]:
        return self._set(blocker, target, False)

    def _set(self, blocker: str, target: str, on: bool) -> Deferred[None]:
        def done(_: object) -> None:
            # At once here: the user's next command may be checked on this node before
            # the event comes back through the inbox.
            self.changed(blocker, target, on)

        d: Deferred[None] = self._redis.run(
            scripts.BLOCK, blocker, target, "1" if on else "0"
        ).addCallback(done)
        return d


@implementer(IMailbox)
class RedisMailbox:
    """Offline messages in Redis: a hash per recipient, keys from one counter, so that
    their order is the order they were accepted in, across nodes."""

    def __init__(self, redis: Scripts, limit: int) -> None:
        self._redis = redis
        self.limit = limit

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        def stored(answer: str) -> None:
            if answer != "stored":
                raise QueueFull(recipient, self.limit)

        d: Deferred[None] = self._redis.run(
            scripts.STORE, recipient, message.sender, message.text, self.limit
        ).addCallback(stored)
        return d

    def pending(self, recipient: str) -> Deferred[list[StoredMessage]]:
        def parsed(flat: list[str]) -> list[StoredMessage]:
            return sorted(_stored_messages(flat), key=lambda m: m.key)

        d: Deferred[list[StoredMessage]] = self._redis.call(
            "HGETALL", f"chat:mail:{recipient}"
        ).addCallback(parsed)
        return d

    def delivered(self, recipient: str, messages: list[StoredMessage]) -> Deferred[None]:
        if not messages:
            return succeed(None)
        d: Deferred[None] = self._redis.call(
            "HDEL", f"chat:mail:{recipient}", *(m.key for m in messages)
        ).addCallback(lambda _: None)
        return d


log = Logger()


def _stored_messages(flat: Sequence[str]) -> Iterable[StoredMessage]:
    """Parse a mailbox hash; an entry that does not parse is logged and left out (it
    stays in Redis for the operator)."""
    for key, body in pairs(flat):
        try:
            sender, text, sent = json.loads(body)
            yield StoredMessage(str(sender), str(text), float(sent), int(key))
        except (ValueError, TypeError):
            log.error("mailbox entry {key} does not parse; left in Redis", key=key)


class RedisThrottle:
    """The login lockout counted in Redis, so that strikes on any node add up and the
    lock holds on every node (``auth.Throttle``)."""

    def __init__(self, redis: Scripts, block_duration: float) -> None:
        self._redis = redis
        self.block_duration = block_duration

    def lock_left(self, user: str) -> Deferred[float]:
        d: Deferred[float] = self._redis.run(scripts.LOCK_LEFT, user).addCallback(float)
        return d

    def strike(self, user: str) -> Deferred[tuple[int, float]]:
        def parsed(reply: list[str]) -> tuple[int, float]:
            return int(reply[0]), float(reply[1])

        d: Deferred[tuple[int, float]] = self._redis.run(
            scripts.STRIKE, user, self.block_duration, MAX_FAILURES
        ).addCallback(parsed)
        return d

    def clear(self, user: str) -> Deferred[None]:
        d: Deferred[None] = self._redis.call("DEL", f"chat:strikes:{user}").addCallback(
            lambda _: None
        )
        return d
