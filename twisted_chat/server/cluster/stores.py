"""The stores over Redis, behind the same interfaces as the embedded ones.

Reads the domain makes on hot paths (does this account exist, does A block B) stay
synchronous and in memory: each node keeps a copy of the accounts and the blocks,
loaded when it joins and kept current by the events each change publishes to the other
nodes in the same step (``AccountAdded``, ``BlockChanged``). A copy is milliseconds
behind at most; the node a message is delivered through checks the block again, with
its own user's list, which is never behind (``core.Chat._on_direct_message``).

Also here: the lockout's strike records (compare-and-set, with Redis's time) and the
private-chat requests, each change one primitive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat.errors import ChatError, QueueFull, UsernameTaken
from twisted_chat.interfaces import (
    IAccountStore,
    IBlockStore,
    IMailbox,
    IPrivateRequests,
    IStrikeStore,
    PendingRequest,
    StoredMessage,
    Strikes,
)
from twisted_chat.server import events, names, passwords
from twisted_chat.server.accounts import AccountTable, CredentialsFile, look_alike
from twisted_chat.server.cluster import primitives
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.redis import pairs
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
        self, file: CredentialsFile, redis: Primitives, node_id: str, check_hash: HashCheck
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
        that could draw on a terminal as something else, or as nothing, is left out. A
        usable value replaces a reserved one (a damaged line's, fixed since)."""
        current = self._accounts.get(user)
        if current is not None and (current != passwords.RESERVED or stored == current):
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
            flat: list[str | bytes] = []
            for user, stored in chunk:
                flat += [user, stored, events.encode(events.AccountAdded(user, stored))]
            calls.append(self._redis.run(primitives.MERGE_ACCOUNTS, self._node_id, *flat))
            for user, stored in chunk:
                self._merged[user] = stored
                self.learned(user, stored)

        def total(results: list[int]) -> int:
            return sum(results)

        return gatherResults(calls, consumeErrors=True).addCallback(total)

    # --- the file, watched (``service.ChatRunning``) ------------------------------------

    @property
    def watched_path(self) -> Path:
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

    def new_account_problem(self, user: str) -> ChatError | None:
        """The node's file's answer, then look-alikes of accounts made anywhere."""
        problem = self.file.new_account_problem(user)
        if problem is not None:
            return problem
        existing = self.look_alike_of(user)
        if existing is not None:
            return look_alike(user, existing)
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
            added = events.encode(events.AccountAdded(user, stored))
            d: Deferred[None] = self._redis.run(
                primitives.ADD_ACCOUNT, user, stored, added, self._node_id
            ).addCallback(lambda _: None)
            return d

        def unreserve(failure: Failure) -> Failure:
            # Not written: the name is free again (else it would be for 30 s anyway).
            self._redis.call("DEL", f"chat:newname:{user}").addErrback(lambda _: None)
            return failure

        return self._redis.run(primitives.RESERVE_NAME, user, self._node_id).addCallback(reserved)


@implementer(IBlockStore)
class ClusterBlocks(BlockIndex):
    """Block lists: a copy for the checks, Redis for the changes (the other nodes hear
    of each change through their inboxes)."""

    def __init__(self, redis: Primitives, node_id: str) -> None:
        super().__init__()
        self._redis = redis
        self._node_id = node_id

    def load(self, flat: Sequence[str]) -> None:
        """Replace the copy with ``primitives.ALL_BLOCKS``'s answer."""
        self.reset(pairs(flat))

    def block(self, blocker: str, target: str) -> Deferred[None]:
        return self._set(blocker, target, True)

    def unblock(self, blocker: str, target: str) -> Deferred[None]:
        return self._set(blocker, target, False)

    def _set(self, blocker: str, target: str, on: bool) -> Deferred[None]:
        def done(_: object) -> None:
            # Here at once: the user's next command is checked on this node.
            self.learned(blocker, target, on)

        change = events.encode(events.BlockChanged(blocker, target, on))
        d: Deferred[None] = self._redis.run(
            primitives.BLOCK, blocker, target, "1" if on else "0", change, self._node_id
        ).addCallback(done)
        return d


@implementer(IMailbox)
class RedisMailbox:
    """Offline messages in Redis: a hash per recipient, keys from one counter, so that
    their order is the order they were accepted in, across nodes. Each entry is the
    direct-message event that was routed there (``primitives.ROUTE``)."""

    def __init__(self, redis: Primitives, limit: int) -> None:
        self._redis = redis
        self.limit = limit

    def append(self, recipient: str, message: StoredMessage) -> Deferred[None]:
        def stored(answer: str) -> None:
            if answer != "stored":
                raise QueueFull(recipient, self.limit)

        entry = events.DirectMessage(recipient, message.sender, message.text, message.sent)
        d: Deferred[None] = self._redis.run(
            primitives.STORE, recipient, events.encode(entry), self.limit
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
    stays in Redis for the operator). Entries written before events were typed, as
    ``[sender, text, sent]``, still parse."""
    for key, body in pairs(flat):
        try:
            yield _stored_message(int(key), body)
        except (ValueError, TypeError):
            log.error("mailbox entry {key} does not parse; left in Redis", key=key)


def _stored_message(key: int, body: str) -> StoredMessage:
    try:
        event = events.decode(body)
    except events.EventError:
        sender, text, sent = json.loads(body)  # the first releases' [sender, text, sent]
        if not isinstance(sender, str) or not isinstance(text, str):
            raise ValueError("neither an event nor [sender, text, sent]") from None
        return StoredMessage(sender, text, float(sent), key)
    if not isinstance(event, events.DirectMessage):
        raise ValueError(f"a {event.KIND!r} event in a mailbox")
    return event.stored(key)


@implementer(IStrikeStore)
class RedisStrikes:
    """The lockout's strike records in Redis, shared by every node: read with Redis's
    time, written by compare-and-set (``lockout.Lockout`` retries on a conflict)."""

    def __init__(self, redis: Primitives) -> None:
        self._redis = redis

    def read(self, user: str) -> Deferred[tuple[Strikes, int, float]]:
        def parsed(reply: list[Any]) -> tuple[Strikes, int, float]:
            now, flat = reply
            fields = dict(pairs(flat))
            strikes = Strikes(
                int(fields.get("count", 0)),
                float(fields.get("last", 0)),
                float(fields.get("until", 0)),
            )
            return strikes, int(fields.get("v", 0)), float(now)

        d: Deferred[tuple[Strikes, int, float]] = self._redis.run(
            primitives.READ_RECORD, f"strikes:{user}"
        ).addCallback(parsed)
        return d

    def write(self, user: str, version: int, strikes: Strikes, ttl: float) -> Deferred[bool]:
        d: Deferred[bool] = self._redis.run(
            primitives.WRITE_RECORD,
            f"strikes:{user}",
            version,
            round(ttl * 1000),
            "count",
            strikes.count,
            "last",
            repr(strikes.last),
            "until",
            repr(strikes.locked_until),
        ).addCallback(bool)
        return d

    def clear(self, user: str) -> Deferred[None]:
        d: Deferred[None] = self._redis.call("DEL", f"chat:strikes:{user}").addCallback(
            lambda _: None
        )
        return d


@implementer(IPrivateRequests)
class RedisPrivateRequests:
    """Private-chat requests in Redis, each with Redis's expiry as a backstop (the node
    the request was made through lapses it on time)."""

    def __init__(self, redis: Primitives) -> None:
        self._redis = redis

    def open(
        self, requester: str, target: str, pending: PendingRequest, ttl: float
    ) -> Deferred[bool]:
        value = json.dumps([pending.token, pending.fingerprint])
        # A second past the lapse: the node lapses it (and tells both) before Redis
        # forgets it.
        d: Deferred[bool] = self._redis.run(
            primitives.OPEN_REQUEST, requester, target, value, round(ttl * 1000) + 1000
        ).addCallback(bool)
        return d

    def take(self, requester: str, target: str) -> Deferred[PendingRequest | None]:
        def parsed(value: str | None) -> PendingRequest | None:
            if value is None:
                return None
            token, fingerprint = json.loads(value)
            return PendingRequest(str(token), str(fingerprint))

        d: Deferred[PendingRequest | None] = self._redis.run(
            primitives.TAKE_REQUEST, requester, target
        ).addCallback(parsed)
        return d

    def lapse(self, requester: str, target: str, token: str) -> Deferred[bool]:
        d: Deferred[bool] = self._redis.run(
            primitives.LAPSE_REQUEST, requester, target, token
        ).addCallback(bool)
        return d

    def drop_user(self, user: str) -> Deferred[list[tuple[str, str]]]:
        d: Deferred[list[tuple[str, str]]] = self._redis.run(
            primitives.DROP_REQUESTS, user
        ).addCallback(lambda flat: list(pairs(flat)))
        return d
