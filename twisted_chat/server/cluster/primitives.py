"""The storage steps that must touch several Redis keys at once, each one Lua script:
Redis runs a script to the end before anything else, so each step is atomic and costs
one round trip.

They are primitives, not rules: claim a name, release it, put a payload where a user
is or into their mailbox (with a cap), publish a payload to every node, reap a node,
compare-and-set a record, take or drop a request. Payloads are opaque to them (events
encoded by ``server.events``); who may message whom, who is told what and when a
username locks are decided in Python, by the core (``server.core``,
``server.private``, ``server.lockout``), and are the same in one process.

The key layout (docs/scaling.md), all under ``chat:``:

=============================  =====================================================
``accounts``                   hash: username -> stored password (clear or argon2id)
``newname:<user>``             string: a name being created, by which node (30 s)
``strikes:<user>``             hash: count, last, until, v (version): the lockout
``online``                     hash: username -> node id
``peer``                       hash: username -> [host, port, fingerprint] (JSON)
``lastseen``                   sorted set: username by last logout time
``nodes``                      sorted set: node id by heartbeat expiry (ms)
``instances``                  hash: node id -> the process (a random token) that has it
``incarnation``                counter: one number per join of any node
``incarnations``               hash: node id -> the incarnation it joined as
``node:<id>:users``            set: who is online through that node
``inbox:<id>``                 stream, group ``chat``: events for that node
``blocks:<u>``/``blockers:<u>``  sets: whom u blocks / who blocks u
``blocking``                   set: users who block anyone (to load every block)
``mail:<u>``                   hash: key -> a direct-message event, offline mail
``mailseq``                    counter: mail keys, increasing
``private:<a><TAB><b>``        string: a's pending request to b, [token, fingerprint]
``privateof:<u>``              set: "a<TAB>b" requests u takes part in
``hist:<conversation>``        stream, ids ``0-<msgid>``: s, t, w (sender, text, time)
``hlast``                      hash: conversation -> its newest msgid (never reused)
``room:<#room>``               hash: look, creator, created
``roomlooks``                  hash: what a room's name looks like -> the room
``created:<u>``                sorted set: rooms u created, by when
``members:<#room>``            hash: member -> the msgid they joined after
``roomsof:<u>``                hash: room -> the msgid u joined after
``seen:<u>``                   hash: room -> the newest msgid u was sent
=============================  =====================================================

An inbox entry has the field ``e`` (the event) and, for a direct message, ``to`` (its
recipient), which is all a reaper needs to move it on.

This module is long on purpose: every script is here with the prelude of helpers
they share and the key layout they keep, so that one can check, reading it through,
that no two disagree about a key. Scripts name no KEYS: this is
for one Redis primary, not Redis Cluster (docs/scaling.md says why that is enough).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred

from twisted_chat.server.cluster.redis import RedisClient, Reply

PRELUDE = r"""
local P = 'chat:'
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- payload to every node but except.
local function publish(payload, except)
  local sent = 0
  for _, node in ipairs(redis.call('ZRANGE', P .. 'nodes', 0, -1)) do
    if node ~= except then
      redis.call('XADD', P .. 'inbox:' .. node, '*', 'e', payload)
      sent = sent + 1
    end
  end
  return sent
end
-- payload for user to the node holding them (not not_node), else to their mailbox,
-- unless cap (> 0) payloads already wait there.
local function route(to, payload, cap, not_node)
  local node = redis.call('HGET', P .. 'online', to)
  if node and node ~= not_node then
    redis.call('XADD', P .. 'inbox:' .. node, '*', 'to', to, 'e', payload)
    return 'sent'
  end
  local box = P .. 'mail:' .. to
  if cap > 0 and redis.call('HLEN', box) >= cap then return 'full' end
  redis.call('HSET', box, redis.call('INCR', P .. 'mailseq'), payload)
  return 'stored'
end
-- A request's key: a TAB between the names, which no username can hold (a ':'
-- could: "x:y" to "z" and "x" to "y:z" would be one key).
local function pkey(a, b)
  return P .. 'private:' .. a .. '\t' .. b
end
local function unindex(a, b)
  local pair = a .. '\t' .. b
  redis.call('SREM', P .. 'privateof:' .. a, pair)
  redis.call('SREM', P .. 'privateof:' .. b, pair)
end
-- node is no longer a member: what Redis holds of its users is released (logout time
-- kept), and what waits in its inbox for a user goes where they are now or to their
-- mailbox, past any cap (its sender was told it was sent). Returns {users, moved}.
local function reap(node)
  local members = P .. 'node:' .. node .. ':users'
  local users = redis.call('SMEMBERS', members)
  redis.call('DEL', members)
  redis.call('ZREM', P .. 'nodes', node)
  redis.call('HDEL', P .. 'instances', node)
  redis.call('HDEL', P .. 'incarnations', node)
  local when = now_s()
  local gone = {}
  for _, user in ipairs(users) do
    if redis.call('HGET', P .. 'online', user) == node then
      redis.call('HDEL', P .. 'online', user)
      redis.call('HDEL', P .. 'peer', user)
      redis.call('ZADD', P .. 'lastseen', when, user)
      gone[#gone + 1] = user
    end
  end
  local inbox = P .. 'inbox:' .. node
  local moved = 0
  for _, entry in ipairs(redis.call('XRANGE', inbox, '-', '+')) do
    local fields, to, payload = entry[2], nil, nil
    for i = 1, #fields, 2 do
      if fields[i] == 'to' then to = fields[i + 1] end
      if fields[i] == 'e' then payload = fields[i + 1] end
    end
    if to and payload then
      route(to, payload, 0, node)
      moved = moved + 1
    end
  end
  redis.call('DEL', inbox)
  return {gone, moved}
end
"""


@dataclass(frozen=True)
class Primitive:
    """One Lua script (the prelude plus ``body``), run by its SHA1."""

    name: str
    body: str
    source: str = field(init=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        source = PRELUDE + self.body
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode("utf-8")).hexdigest())


# --- membership --------------------------------------------------------------------------

JOIN = Primitive(
    "join",
    r"""
-- ARGV: node, heartbeat ttl (ms), instance (random, one per process). 'in-use' while
-- another live process has this node id (two would split one inbox). Else what an
-- earlier run of this node left is reaped, and the node is a member again under a
-- new incarnation, with an inbox. Returns {incarnation, users released, moved}.
local node, ttl, instance = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local expiry = redis.call('ZSCORE', P .. 'nodes', node)
local holder = redis.call('HGET', P .. 'instances', node)
if expiry and tonumber(expiry) >= now_ms() and holder and holder ~= instance then
  return 'in-use'
end
local reaped = reap(node)
local incarnation = redis.call('INCR', P .. 'incarnation')
redis.call('ZADD', P .. 'nodes', now_ms() + ttl, node)
redis.call('HSET', P .. 'instances', node, instance)
redis.call('HSET', P .. 'incarnations', node, incarnation)
pcall(redis.call, 'XGROUP', 'CREATE', P .. 'inbox:' .. node, 'chat', '0', 'MKSTREAM')
return {incarnation, reaped[1], reaped[2]}
""",
)

HEARTBEAT = Primitive(
    "heartbeat",
    r"""
-- ARGV: node, ttl (ms), instance. 'reaped' if this node is no longer a member under
-- this process; else {the incarnation counter, node, incarnation, expired (0/1), ...}
-- for every member, this one renewed.
local node, ttl, instance = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not redis.call('ZSCORE', P .. 'nodes', node) then return 'reaped' end
if redis.call('HGET', P .. 'instances', node) ~= instance then return 'reaped' end
local now = now_ms()
redis.call('ZADD', P .. 'nodes', now + ttl, node)
local out = {tonumber(redis.call('GET', P .. 'incarnation') or '0')}
local members = redis.call('ZRANGE', P .. 'nodes', 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  out[#out + 1] = members[i]
  out[#out + 1] = tonumber(redis.call('HGET', P .. 'incarnations', members[i]) or '0')
  out[#out + 1] = (tonumber(members[i + 1]) < now) and 1 or 0
end
return out
""",
)

REAP = Primitive(
    "reap",
    r"""
-- ARGV: node, force ('1': now). Reaps the node if its heartbeat expired (or on force);
-- reaping twice, or a node that came back, does nothing.
local node, force = ARGV[1], ARGV[2]
local expiry = redis.call('ZSCORE', P .. 'nodes', node)
if not expiry then return {{}, 0} end
if force ~= '1' and tonumber(expiry) >= now_ms() then return {{}, 0} end
return reap(node)
""",
)

SNAPSHOT = Primitive(
    "snapshot",
    r"""
-- Who is online where and who left when, at one instant: {online (flat user, node),
-- incarnations (flat node, number), lastseen (flat user, time)}.
return {
  redis.call('HGETALL', P .. 'online'),
  redis.call('HGETALL', P .. 'incarnations'),
  redis.call('ZRANGE', P .. 'lastseen', 0, -1, 'WITHSCORES'),
}
""",
)

ACKNOWLEDGE = Primitive(
    "acknowledge",
    r"""
-- ARGV: node, entry id, entry id, ... Entries handed over: acknowledged and deleted
-- together, so that none is left for a reaper to move again.
local inbox = P .. 'inbox:' .. ARGV[1]
local ids = {unpack(ARGV, 2)}
redis.call('XACK', inbox, 'chat', unpack(ids))
return redis.call('XDEL', inbox, unpack(ids))
""",
)

# --- who holds whom, and the way to them ----------------------------------------------------

CLAIM = Primitive(
    "claim",
    r"""
-- ARGV: user, node. 'ok' (held by node from now on, or already), 'online' (held by
-- another node), 'no-node' (node is not a member now).
local user, node = ARGV[1], ARGV[2]
if not redis.call('ZSCORE', P .. 'nodes', node) then return 'no-node' end
local holder = redis.call('HGET', P .. 'online', user)
if holder and holder ~= node then return 'online' end
redis.call('HSET', P .. 'online', user, node)
redis.call('SADD', P .. 'node:' .. node .. ':users', user)
return 'ok'
""",
)

RELEASE = Primitive(
    "release",
    r"""
-- ARGV: user, node, when, payload. If node holds user: released (logout time kept),
-- and payload published to the other nodes. 0 if node did not hold them.
local user, node, when, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', P .. 'online', user) ~= node then return 0 end
redis.call('SREM', P .. 'node:' .. node .. ':users', user)
redis.call('HDEL', P .. 'online', user)
redis.call('HDEL', P .. 'peer', user)
redis.call('ZADD', P .. 'lastseen', when, user)
publish(payload, node)
return 1
""",
)

PUBLISH = Primitive(
    "publish",
    r"""
-- ARGV: payload, node. To every other node; returns how many.
return publish(ARGV[1], ARGV[2])
""",
)

ROUTE = Primitive(
    "route",
    r"""
-- ARGV: to, payload, cap (0: none), not_node ('' for none). 'sent', 'stored', 'full'.
return route(ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4])
""",
)

STORE = Primitive(
    "store",
    r"""
-- ARGV: to, payload, cap. Into the mailbox only: 'stored' or 'full'.
local box = P .. 'mail:' .. ARGV[1]
local cap = tonumber(ARGV[3])
if cap > 0 and redis.call('HLEN', box) >= cap then return 'full' end
redis.call('HSET', box, redis.call('INCR', P .. 'mailseq'), ARGV[2])
return 'stored'
""",
)

TELL = Primitive(
    "tell",
    r"""
-- ARGV: user, payload. To the node holding user: 1, or 0 if none does.
local node = redis.call('HGET', P .. 'online', ARGV[1])
if not node then return 0 end
redis.call('XADD', P .. 'inbox:' .. node, '*', 'e', ARGV[2])
return 1
""",
)

SET_PEER = Primitive(
    "set-peer",
    r"""
-- ARGV: user, node, peer. Kept only while node holds user: 1, else 0.
if redis.call('HGET', P .. 'online', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', P .. 'peer', ARGV[1], ARGV[3])
return 1
""",
)

# --- records kept consistent in one step --------------------------------------------------

RESERVE_NAME = Primitive(
    "reserve-name",
    r"""
-- ARGV: user, node. 'ok' if no account has the name and no node is creating it.
local user, node = ARGV[1], ARGV[2]
if redis.call('HEXISTS', P .. 'accounts', user) == 1 then return 'taken' end
if not redis.call('SET', P .. 'newname:' .. user, node, 'NX', 'PX', 30000) then
  return 'taken'
end
return 'ok'
""",
)

ADD_ACCOUNT = Primitive(
    "add-account",
    r"""
-- ARGV: user, stored, payload, node. The account, its reservation gone, and payload
-- to the other nodes.
redis.call('HSET', P .. 'accounts', ARGV[1], ARGV[2])
redis.call('DEL', P .. 'newname:' .. ARGV[1])
publish(ARGV[3], ARGV[4])
return 1
""",
)

MERGE_ACCOUNTS = Primitive(
    "merge-accounts",
    r"""
-- ARGV: node, then user, stored, payload, ... The first value Redis holds wins, but a
-- usable value replaces a reserved one (a damaged line's, "\0reserved", which only
-- keeps the name from strangers); each value taken is published with its payload.
-- Returns how many names were new.
local added, reserved = 0, '\0reserved'
for i = 2, #ARGV, 3 do
  local user, stored = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', P .. 'accounts', user)
  if not current or (current == reserved and stored ~= reserved) then
    redis.call('HSET', P .. 'accounts', user, stored)
    publish(ARGV[i + 2], ARGV[1])
    if not current then added = added + 1 end
  end
end
return added
""",
)

BLOCK = Primitive(
    "block",
    r"""
-- ARGV: blocker, target, '1' to add or '0' to remove, payload, node. The relation is
-- kept both ways; payload goes to the other nodes if anything changed (1, else 0).
local a, b, on, payload, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if on == '1' then
  if redis.call('SADD', P .. 'blocks:' .. a, b) == 0 then return 0 end
  redis.call('SADD', P .. 'blockers:' .. b, a)
  redis.call('SADD', P .. 'blocking', a)
else
  if redis.call('SREM', P .. 'blocks:' .. a, b) == 0 then return 0 end
  redis.call('SREM', P .. 'blockers:' .. b, a)
  if redis.call('SCARD', P .. 'blocks:' .. a) == 0 then redis.call('SREM', P .. 'blocking', a) end
end
publish(payload, node)
return 1
""",
)

ALL_BLOCKS = Primitive(
    "all-blocks",
    r"""
-- Every block as a flat list: blocker, target, blocker, target, ...
local out = {}
for _, a in ipairs(redis.call('SMEMBERS', P .. 'blocking')) do
  for _, b in ipairs(redis.call('SMEMBERS', P .. 'blocks:' .. a)) do
    out[#out + 1] = a
    out[#out + 1] = b
  end
end
return out
""",
)

READ_RECORD = Primitive(
    "read-record",
    r"""
-- ARGV: key (under chat:). {Redis's time (s, as a string), the hash as a flat list}.
return {tostring(now_s()), redis.call('HGETALL', P .. ARGV[1])}
""",
)

WRITE_RECORD = Primitive(
    "write-record",
    r"""
-- ARGV: key, version, ttl (ms), field, value, ... Compare-and-set: written (its 'v'
-- then version + 1) only if its 'v' is still version (0: none): 1, else 0.
local key, version, ttl = P .. ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if (tonumber(redis.call('HGET', key, 'v')) or 0) ~= version then return 0 end
redis.call('HSET', key, 'v', version + 1, unpack(ARGV, 4))
redis.call('PEXPIRE', key, ttl)
return 1
""",
)

OPEN_REQUEST = Primitive(
    "open-request",
    r"""
-- ARGV: a, b, value, ttl (ms). a's request to b, unless one waits either way (0).
local a, b, value, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', pkey(a, b), pkey(b, a)) > 0 then return 0 end
redis.call('SET', pkey(a, b), value, 'PX', ttl)
local pair = a .. '\t' .. b
redis.call('SADD', P .. 'privateof:' .. a, pair)
redis.call('SADD', P .. 'privateof:' .. b, pair)
return 1
""",
)

TAKE_REQUEST = Primitive(
    "take-request",
    r"""
-- ARGV: a, b. a's request to b, removed; nil if there is none.
local value = redis.call('GET', pkey(ARGV[1], ARGV[2]))
redis.call('DEL', pkey(ARGV[1], ARGV[2]))
unindex(ARGV[1], ARGV[2])
return value
""",
)

LAPSE_REQUEST = Primitive(
    "lapse-request",
    r"""
-- ARGV: a, b, token. Removed only if it is still the request with token (its value
-- is a JSON array, token first): 1, else 0.
local value = redis.call('GET', pkey(ARGV[1], ARGV[2]))
if not value or cjson.decode(value)[1] ~= ARGV[3] then return 0 end
redis.call('DEL', pkey(ARGV[1], ARGV[2]))
unindex(ARGV[1], ARGV[2])
return 1
""",
)

DROP_REQUESTS = Primitive(
    "drop-requests",
    r"""
-- ARGV: user. Every request user takes part in, removed; returns a flat list of the
-- (a, b) pairs that were still waiting.
local set = P .. 'privateof:' .. ARGV[1]
local out = {}
for _, pair in ipairs(redis.call('SMEMBERS', set)) do
  local tab = string.find(pair, '\t', 1, true)
  local a, b = string.sub(pair, 1, tab - 1), string.sub(pair, tab + 1)
  unindex(a, b)
  if redis.call('DEL', pkey(a, b)) == 1 then
    out[#out + 1] = a
    out[#out + 1] = b
  end
end
redis.call('DEL', set)
return out
""",
)


# --- rooms and history ---------------------------------------------------------------------

HISTORY_APPEND = Primitive(
    "history-append",
    r"""
-- ARGV: cap, cutoff, ttl (ms), then four per message: conversation, sender, text,
-- sent. Each message as the next msgid of its conversation (a counter that outlives
-- the stream, so no msgid is given twice), in the order given; then, once per
-- conversation touched, at most cap kept and none older than cutoff (the oldest go
-- first, a few at a time: they only ever go from the start). Returns the msgids.
local cap, cutoff, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local msgids, touched = {}, {}
for i = 4, #ARGV, 4 do
  local conversation = ARGV[i]
  local key = P .. 'hist:' .. conversation
  local msgid = redis.call('HINCRBY', P .. 'hlast', conversation, 1)
  redis.call('XADD', key, 'MAXLEN', cap, '0-' .. msgid,
             's', ARGV[i + 1], 't', ARGV[i + 2], 'w', ARGV[i + 3])
  msgids[#msgids + 1] = msgid
  if not touched[key] then
    touched[key] = true
    touched[#touched + 1] = key
  end
end
for _, key in ipairs(touched) do
  for _ = 1, 10 do
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
    if not oldest then break end
    local fields, sent = oldest[2], nil
    for j = 1, #fields, 2 do
      if fields[j] == 'w' then sent = tonumber(fields[j + 1]) end
    end
    if sent and sent < cutoff then redis.call('XDEL', key, oldest[1]) else break end
  end
  redis.call('PEXPIRE', key, ttl)
end
return msgids
""",
)

ROOM_CREATE = Primitive(
    "room-create",
    r"""
-- ARGV: room, look, creator, when. Made unless a room has the name or looks the same
-- (false), else the existing room's name.
local room, look, creator, when = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', P .. 'room:' .. room) == 1 then return room end
local existing = redis.call('HGET', P .. 'roomlooks', look)
if existing then return existing end
redis.call('HSET', P .. 'room:' .. room, 'look', look, 'creator', creator, 'created', when)
redis.call('HSET', P .. 'roomlooks', look, room)
redis.call('ZADD', P .. 'created:' .. creator, when, room)
return false
""",
)

ROOM_ADD_MEMBER = Primitive(
    "room-add-member",
    r"""
-- ARGV: room, user, joined, max members, max rooms. Into both capped maps at once:
-- 'ok', 'member', 'no-room', 'full' or 'too-many'.
local room, user, joined = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'room:' .. room) == 0 then return 'no-room' end
local members, mine = P .. 'members:' .. room, P .. 'roomsof:' .. user
if redis.call('HEXISTS', members, user) == 1 then return 'member' end
if redis.call('HLEN', members) >= tonumber(ARGV[4]) then return 'full' end
if redis.call('HLEN', mine) >= tonumber(ARGV[5]) then return 'too-many' end
redis.call('HSET', members, user, joined)
redis.call('HSET', mine, room, joined)
return 'ok'
""",
)

ROOM_REMOVE_MEMBER = Primitive(
    "room-remove-member",
    r"""
-- ARGV: room, user. Out of both maps: 1, or 0 if not in them.
local removed = redis.call('HDEL', P .. 'members:' .. ARGV[1], ARGV[2])
redis.call('HDEL', P .. 'roomsof:' .. ARGV[2], ARGV[1])
return removed
""",
)

ROOM_MEMBERS = Primitive(
    "room-members",
    r"""
-- ARGV: room. Its members (flat: user, joined, ...), or false if there is no room.
if redis.call('EXISTS', P .. 'room:' .. ARGV[1]) == 0 then return false end
return redis.call('HGETALL', P .. 'members:' .. ARGV[1])
""",
)

ROOM_COUNTS = Primitive(
    "room-counts",
    r"""
-- ARGV: room, room, ... How many members each has, in order.
local out = {}
for i, room in ipairs(ARGV) do out[i] = redis.call('HLEN', P .. 'members:' .. room) end
return out
""",
)

SAVE_POSITIONS = Primitive(
    "save-positions",
    r"""
-- ARGV: user, room, msgid, room, msgid, ... Each moves only forward.
local key = P .. 'seen:' .. ARGV[1]
for i = 2, #ARGV, 2 do
  local seen = tonumber(redis.call('HGET', key, ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > seen then redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
return 1
""",
)


EVERY_PRIMITIVE = tuple(v for v in list(globals().values()) if isinstance(v, Primitive))
"""Loaded on every connection that runs primitives (``RedisClient(scripts=...)``)."""

SOURCES = tuple(primitive.source for primitive in EVERY_PRIMITIVE)


class Primitives:
    """Runs :class:`Primitive` scripts by SHA1 on a client that loaded them
    (:data:`SOURCES`) when it connected, and plain commands for what touches one key."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    def run(self, primitive: Primitive, *args: str | int | float | bytes) -> Deferred[Reply]:
        return self._client.call("EVALSHA", primitive.sha, 0, *args)

    def call(self, *args: str | int | float | bytes) -> Deferred[Reply]:
        return self._client.call(*args)
