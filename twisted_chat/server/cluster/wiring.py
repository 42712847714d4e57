"""A node's seams, from the options: the stores, the directory, the requests and the
strikes over Redis, and the node's membership. Imported by ``server.wiring`` only
when ``--redis`` is given."""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.python import usage

from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.cluster.directory import RedisDirectory
from twisted_chat.server.cluster.node import ClusterNode
from twisted_chat.server.cluster.primitives import SOURCES, Primitives
from twisted_chat.server.cluster.redis import RedisClient
from twisted_chat.server.cluster.rooms import RedisHistory, RedisRoomStore
from twisted_chat.server.cluster.stores import (
    ClusterAccounts,
    ClusterBlocks,
    RedisMailbox,
    RedisPrivateRequests,
    RedisStrikes,
)
from twisted_chat.server.passwords import HashCheck
from twisted_chat.server.stats import Stats
from twisted_chat.server.wiring import Seams


def node_seams(
    options: usage.Options,
    reactor: Any,
    file: CredentialsFile,
    check_hash: HashCheck,
    stats: Stats,
) -> Seams:
    """A node of a chat on Redis: two connections (commands, and the inbox's blocking
    read, which would hold up every command queued behind it), the seams over them,
    and the membership that joins the chat and feeds the chat its inbox."""
    address = options["redis-address"]
    node_id = options["node-id"]
    commands = RedisClient(reactor, address, name=f"node {node_id}", scripts=SOURCES, stats=stats)
    # Not counted in the call latencies: each read waits up to a second on purpose.
    inbox_reader = RedisClient(reactor, address, name=f"node {node_id} inbox")
    redis = Primitives(commands)
    accounts = ClusterAccounts(file, redis, node_id, check_hash)
    blocks = ClusterBlocks(redis, node_id)
    directory = RedisDirectory(redis, node_id)
    limits = options["room-limits"]
    return Seams(
        accounts,
        blocks,
        RedisMailbox(redis, options["mailbox-limit"]),
        directory,
        RedisPrivateRequests(redis),
        RedisStrikes(redis),
        RedisRoomStore(redis),
        RedisHistory(redis, reactor, limits.history_days, limits.history_max),
        membership=partial(
            ClusterNode,
            reactor,
            commands,
            inbox_reader,
            directory=directory,
            accounts=accounts,
            blocks=blocks,
        ),
    )
