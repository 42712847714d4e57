"""This process as one node of the chat: it joins, beats, notices the nodes that
stopped beating, reads its inbox, and leaves.

- **Joining.** ``primitives.JOIN`` makes the node a member under a new incarnation
  (what an earlier run of the same id left is reaped first). Then the node loads its
  copies of the shared state (accounts, blocks, who is online where and who left
  when) and takes logins.
- **Heartbeat.** Every ``HEARTBEAT_INTERVAL`` seconds the node renews its membership
  for ``HEARTBEAT_TTL`` seconds and learns every member and whether it expired. An
  expired node is reaped (``primitives.REAP``: what Redis holds of its users is
  released, and the messages waiting in its inbox go to their recipients), and every
  node drops that node's users from its roster and tells its own users they logged
  out (``Chat.node_gone``): a ``kill -9``-ed node is gone from presence within
  ``HEARTBEAT_TTL + HEARTBEAT_INTERVAL`` seconds.
- **No split view.** A node that could not beat for ``HEARTBEAT_TTL`` seconds (Redis
  away) has been, or is about to be, given up by the others: it ends its own sessions
  ("unavailable") rather than serve users the others think are gone, and joins again
  once Redis answers.
- **Inbox.** A stream read through a consumer group; each entry is decoded
  (``events``) and applied (``Chat.apply``), then acknowledged and deleted. An entry
  that is not a well-formed event, or of a kind this node does not know, is logged and
  skipped. What a dead node had not acknowledged is moved by its reaper: delivery is
  at least once (report.md §5).
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_chat.server import events
from twisted_chat.server.cluster import primitives
from twisted_chat.server.cluster.directory import RedisDirectory, incarnation_of, node_key
from twisted_chat.server.cluster.primitives import Primitives
from twisted_chat.server.cluster.redis import REDIS_TROUBLE, RedisClient, pairs
from twisted_chat.server.cluster.stores import ClusterAccounts, ClusterBlocks
from twisted_chat.server.core import Chat

HEARTBEAT_INTERVAL = 1.0
"""Seconds between heartbeats (and reaps)."""

HEARTBEAT_TTL = 3.0
"""Seconds a heartbeat counts for: three missed beats and the node is dead to the others,
and a node that could not beat for this long ends its own sessions."""

INBOX_BLOCK_MS = 1000
"""How long one inbox read waits in Redis for an event."""

INBOX_BATCH = 1000
"""Events taken per inbox read."""

GROUP = "chat"


class NodeIdInUse(Exception):
    """Another running process has this node id: joining waits until it is gone."""

    def __init__(self, node_id: str) -> None:
        super().__init__(
            f"node id {node_id} is in use by another running node; give each node its own --node-id"
        )


class ClusterNode(Service):
    """Membership of one node; a child of the server's service, stopped after the
    chat (so its sessions have ended) and before nothing else."""

    name = "cluster"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        commands: RedisClient,
        inbox_reader: RedisClient,
        chat: Chat,
        directory: RedisDirectory,
        accounts: ClusterAccounts,
        blocks: ClusterBlocks,
        interval: float = HEARTBEAT_INTERVAL,
        ttl: float = HEARTBEAT_TTL,
    ) -> None:
        self._reactor = reactor
        self._commands = commands
        self._reader = inbox_reader
        self._redis = Primitives(commands)
        self.chat = chat
        self.directory = directory
        self.accounts = accounts
        self.blocks = blocks
        self.node_id = directory.node_id
        self.inbox = f"chat:inbox:{self.node_id}"
        self.interval = interval
        self.ttl = ttl
        self.instance = secrets.token_hex(8)
        """This process, among any that were given the same node id."""
        self._joining = False
        self._join_failures = 0
        self._reading = False
        self._last_beat = 0.0
        """When Redis last took our heartbeat (our clock: only ever compared with it)."""
        self._beat = LoopingCall(self._tick)
        self._beat.clock = reactor

    @property
    def joined(self) -> bool:
        return self.directory.ready

    # --- the service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._commands.start()
        self._reader.start()
        self._beat.start(self.interval, now=False)
        self._reactor.callLater(0.05, self._tick)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._beat.running:
            self._beat.stop()
        was_joined, self.directory.ready = self.directory.ready, False

        def left(result: object) -> None:
            if isinstance(result, Failure):
                self.log.warn(
                    "could not leave the chat cleanly ({why}); the others will reap "
                    "this node within {ttl} s",
                    why=result.getErrorMessage(),
                    ttl=self.ttl,
                )
            else:
                self.log.info("node {node} left the chat", node=self.node_id)

        leaving: Deferred[Any] = (
            self._redis.run(primitives.REAP, self.node_id, "1") if was_joined else succeed(None)
        )

        def close(_: object) -> Deferred[None]:
            d: Deferred[None] = gatherResults(
                [self._reader.stop(), self._commands.stop()], consumeErrors=True
            ).addBoth(lambda _: None)
            return d

        return leaving.addBoth(left).addBoth(close)

    # --- heartbeat ----------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.running:
            return
        if not self.joined:
            self._join()
            return
        self._redis.run(
            primitives.HEARTBEAT, self.node_id, round(self.ttl * 1000), self.instance
        ).addCallbacks(self._beaten, self._missed)

    def _beaten(self, answer: str | list[Any]) -> None:
        if not self.joined:
            return
        if answer == "reaped":
            self.log.error(
                "the other nodes gave this node up (no heartbeat for {ttl} s): ending "
                "its sessions and joining again",
                ttl=self.ttl,
            )
            self._split("unavailable")
            return
        assert isinstance(answer, list)
        self._last_beat = self._reactor.seconds()
        self._members(int(answer[0]), answer[1:])
        self.directory.retry_pending(self.chat.online)

    def _members(self, counter: int, flat: list[Any]) -> None:
        """The members as Redis holds them now: reap those that expired, and forget the
        users of every node that is no longer a member. A node that joined after this
        answer was made (an incarnation above ``counter``) is left alone: the answer
        could not know it."""
        live: set[str] = set()
        for i in range(0, len(flat) - 2, 3):
            node, incarnation, expired = str(flat[i]), int(flat[i + 1]), int(flat[i + 2])
            if expired:
                self._reap(node)
            else:
                live.add(node_key(node, incarnation))
        now = self._reactor.seconds()
        for key in self.chat.roster.nodes():
            if key not in live and incarnation_of(key) <= counter:
                self.log.info("node {node} left the chat; its users are offline", node=key)
                self.chat.node_gone(key, now)

    def _missed(self, failure: Failure) -> None:
        failure.trap(*REDIS_TROUBLE)
        if self.joined and self._reactor.seconds() - self._last_beat >= self.ttl:
            self.log.error(
                "no heartbeat for {ttl} s (Redis: {why}): ending this node's sessions "
                "rather than keep a view the other nodes no longer share",
                ttl=self.ttl,
                why=failure.getErrorMessage(),
            )
            self._split("unavailable")

    def _split(self, reason: str) -> None:
        self.directory.ready = False
        self.chat.end_all(reason)

    def _reap(self, dead: str) -> None:
        def reaped(result: list[Any]) -> None:
            users, moved = result
            if users or moved:
                self.log.warn(
                    "reaped node {node}: {users} users went offline, {moved} messages "
                    "moved to their recipients",
                    node=dead,
                    users=len(users),
                    moved=moved,
                )

        self._redis.run(primitives.REAP, dead, "0").addCallbacks(
            reaped, self._failed, errbackArgs=("reaping",)
        )

    def _failed(self, failure: Failure, doing: str) -> None:
        failure.trap(*REDIS_TROUBLE)
        self.log.warn("{doing} failed: {why}", doing=doing, why=failure.getErrorMessage())

    # --- joining --------------------------------------------------------------------------

    def _join(self) -> None:
        if self._joining:
            return
        self._joining = True
        redis = self._redis

        async def join() -> None:
            joined = await redis.run(
                primitives.JOIN, self.node_id, round(self.ttl * 1000), self.instance
            )
            if joined == "in-use":
                raise NodeIdInUse(self.node_id)
            incarnation, users, moved = joined
            if users or moved:
                self.log.warn(
                    "node {node} had left {users} users and {moved} messages from an "
                    "earlier run: released and moved",
                    node=self.node_id,
                    users=len(users),
                    moved=moved,
                )
            self.directory.joined(int(incarnation))
            self.accounts.load(await redis.call("HGETALL", "chat:accounts"))
            added = await self.accounts.merge_file(again=True)
            self.blocks.load(await redis.run(primitives.ALL_BLOCKS))
            self._load_presence(await redis.run(primitives.SNAPSHOT))
            self._last_beat = self._reactor.seconds()
            self.directory.ready = True
            self.log.info(
                "node {node} joined the chat (incarnation {incarnation}; {accounts} "
                "accounts, {added} new from {path})",
                node=self.node_id,
                incarnation=incarnation,
                accounts=len(self.accounts.names()),
                added=added,
                path=str(self.accounts.file.path),
            )
            self._read()

        def done(result: object) -> None:
            self._joining = False
            if not isinstance(result, Failure):
                self._join_failures = 0
                return
            result.trap(*REDIS_TROUBLE, NodeIdInUse)
            # Said once, then every half minute: Redis may be away for an hour.
            if self._join_failures % 30 == 0:
                self.log.warn(
                    "cannot join the chat yet ({why}); trying every {interval} s",
                    why=result.getErrorMessage(),
                    interval=self.interval,
                )
            self._join_failures += 1

        Deferred.fromCoroutine(join()).addBoth(done)

    def _load_presence(self, snapshot: list[Any]) -> None:
        """Who is online through the other nodes, and who left when."""
        online, incarnations, lastseen = snapshot
        numbers = {node: int(number) for node, number in pairs(incarnations)}
        roster = self.chat.roster
        roster.clear()
        for user, node in pairs(online):
            if node != self.node_id and node in numbers:
                roster.add(user, node_key(node, numbers[node]))
        self.chat.logouts.load((user, float(when)) for user, when in pairs(lastseen))

    # --- the inbox ------------------------------------------------------------------------

    def _read(self) -> None:
        """One read at a time, while joined: events in, applied, acknowledged."""
        if self._reading or not self.joined or not self.running:
            return
        self._reading = True
        read: Deferred[Any] = self._reader.call(
            "XREADGROUP",
            "GROUP",
            GROUP,
            self.node_id,
            "COUNT",
            INBOX_BATCH,
            "BLOCK",
            INBOX_BLOCK_MS,
            "STREAMS",
            self.inbox,
            ">",
            extra_time=INBOX_BLOCK_MS / 1000,
        )
        read.addCallbacks(self._events, self._read_failed)

    def _events(self, reply: list[Any] | None) -> None:
        self._reading = False
        if reply:
            ids = []
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    self._dispatch(entry_id, fields)
            if ids:
                self._redis.run(primitives.ACKNOWLEDGE, self.node_id, *ids).addErrback(
                    self._failed, "acknowledging events"
                )
        self._read()

    def _dispatch(self, entry_id: str, fields: list[str]) -> None:
        payload = dict(pairs(fields)).get("e")
        try:
            if payload is None:
                raise events.EventError("no 'e' field")
            event = events.decode(payload)
        except events.UnknownEvent as e:
            self.log.warn(
                "inbox entry {id} is an event of a kind this node does not know "
                "({kind!r}: a newer node's?); skipped",
                id=entry_id,
                kind=e.kind,
            )
            return
        except (events.EventError, ValueError) as e:
            self.log.error("inbox entry {id} is malformed ({why}); skipped", id=entry_id, why=e)
            return
        try:
            self.chat.apply(event)
        except Exception:
            # A bug of ours, not the event's: said loudly, and the next one still served.
            self.log.failure("applying inbox entry {id} ({kind})", id=entry_id, kind=event.KIND)

    def _read_failed(self, failure: Failure) -> None:
        self._reading = False
        failure.trap(*REDIS_TROUBLE)
        # Redis away, or our inbox reaped: the heartbeat sorts out which; read again soon.
        self._reactor.callLater(0.2, self._read)
