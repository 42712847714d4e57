"""Every decision over several Redis keys, as one Lua script each: Redis runs a script
to the end before anything else, so a claim, a strike, a route or a reap is atomic, and
it costs one round trip. Times come from Redis (``TIME``), never from a node's clock.

The key layout (docs/scaling.md), all under ``chat:``:

=============================  =====================================================
``accounts``                   hash: username -> stored password (clear or argon2id)
``newname:<user>``             string: a name being created, by which node (30 s)
``strikes:<user>``             hash: count, last, until: the login lockout
``online``                     hash: username -> node id
``peer``                       hash: username -> [host, port, fingerprint] (JSON)
``lastseen``                   sorted set: username by last logout time
``nodes``                      sorted set: node id by heartbeat expiry (ms)
``instances``                  hash: node id -> the process (a random token) that has it
``node:<id>:users``            set: who is online through that node
``inbox:<id>``                 stream, group ``chat``: events for that node's users
``blocks:<u>``/``blockers:<u>``  sets: whom u blocks / who blocks u
``blocking``                   set: users who block anyone (to load every block)
``mail:<u>``                   hash: key -> [sender, text, sent] (JSON), offline mail
``mailseq``                    counter: mail keys, increasing
``private:<a><TAB><b>``        string: a's pending private request to b (token, TTL)
``privateof:<u>``              set: "a<TAB>b" requests u takes part in
=============================  =====================================================

An event in an inbox is one field ``e``: a JSON array whose first item is its kind
(``node.EVENT_KINDS``). Scripts name no KEYS: this is for one Redis primary, not for
Redis Cluster (docs/scaling.md says why that is enough).
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
local function send(node, event)
  redis.call('XADD', P .. 'inbox:' .. node, '*', 'e', cjson.encode(event))
end
local function send_all(event)
  local payload = cjson.encode(event)
  for _, node in ipairs(redis.call('ZRANGE', P .. 'nodes', 0, -1)) do
    redis.call('XADD', P .. 'inbox:' .. node, '*', 'e', payload)
  end
end
local function store(to, from, text, sent, limit)
  local box = P .. 'mail:' .. to
  if limit > 0 and redis.call('HLEN', box) >= limit then return false end
  local key = redis.call('INCR', P .. 'mailseq')
  redis.call('HSET', box, key, cjson.encode({from, text, sent}))
  return true
end
-- A message already accepted: to the recipient's node if online, else stored, past
-- the cap if need be (the sender was told it was sent: it must not be lost).
local function deliver_or_store(to, from, text, sent)
  local node = redis.call('HGET', P .. 'online', to)
  if node then send(node, {'m', to, from, text, sent}) else store(to, from, text, sent, 0) end
end
-- A private request's key: a TAB between the names, which no username can hold (a
-- ':' could: "x:y" to "z" and "x" to "y:z" would be one key).
local function pkey(a, b)
  return P .. 'private:' .. a .. '\t' .. b
end
local function split_pair(pair)
  local tab = string.find(pair, '\t', 1, true)
  return string.sub(pair, 1, tab - 1), string.sub(pair, tab + 1)
end
local function forget_pair(a, b)
  local pair = a .. '\t' .. b
  redis.call('SREM', P .. 'privateof:' .. a, pair)
  redis.call('SREM', P .. 'privateof:' .. b, pair)
end
-- user is gone: their pending private requests end, and whoever is on the other side
-- is told (only for a request still pending).
local function release_private(user)
  local set = P .. 'privateof:' .. user
  for _, pair in ipairs(redis.call('SMEMBERS', set)) do
    local a, b = split_pair(pair)
    local other = (a == user) and b or a
    redis.call('SREM', P .. 'privateof:' .. other, pair)
    if redis.call('DEL', pkey(a, b)) == 1 then
      local node = redis.call('HGET', P .. 'online', other)
      if node then send(node, {'px', other, user, 'left'}) end
    end
  end
  redis.call('DEL', set)
end
local function go_offline(user, when)
  redis.call('HDEL', P .. 'online', user)
  redis.call('HDEL', P .. 'peer', user)
  redis.call('ZADD', P .. 'lastseen', when, user)
  release_private(user)
end
-- Every user of a node goes offline, and the messages waiting in its inbox go to
-- their recipients (or their mailboxes). Returns {users released, messages moved}.
local function reap(node)
  local members = P .. 'node:' .. node .. ':users'
  local users = redis.call('SMEMBERS', members)
  redis.call('DEL', members)
  redis.call('ZREM', P .. 'nodes', node)
  redis.call('HDEL', P .. 'instances', node)
  local when = now_s()
  local gone = {}
  for _, user in ipairs(users) do
    if redis.call('HGET', P .. 'online', user) == node then
      go_offline(user, when)
      gone[#gone + 1] = user
    end
  end
  local inbox = P .. 'inbox:' .. node
  local moved = 0
  for _, entry in ipairs(redis.call('XRANGE', inbox, '-', '+')) do
    local ok, event = pcall(cjson.decode, entry[2][2])
    if ok and event[1] == 'm' then
      deliver_or_store(event[2], event[3], event[4], event[5])
      moved = moved + 1
    end
  end
  redis.call('DEL', inbox)
  for _, user in ipairs(gone) do send_all({'p', user, 0}) end
  return {gone, moved}
end
"""


@dataclass(frozen=True)
class Script:
    """One Lua script (the prelude plus ``body``), run by its SHA1."""

    name: str
    body: str
    source: str = field(init=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        source = PRELUDE + self.body
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode("utf-8")).hexdigest())


JOIN = Script(
    "join",
    r"""
-- ARGV: node, heartbeat ttl (ms), instance (random, one per process). 'in-use' while
-- another process that is alive has this node id (two would split one inbox between
-- them). Else whatever an earlier run of this node left is reaped first (its users
-- went with it), and the node is a member with an inbox.
local node, ttl, instance = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local expiry = redis.call('ZSCORE', P .. 'nodes', node)
local holder = redis.call('HGET', P .. 'instances', node)
if expiry and tonumber(expiry) >= now_ms() and holder and holder ~= instance then
  return 'in-use'
end
local result = reap(node)
redis.call('ZADD', P .. 'nodes', now_ms() + ttl, node)
redis.call('HSET', P .. 'instances', node, instance)
pcall(redis.call, 'XGROUP', 'CREATE', P .. 'inbox:' .. node, 'chat', '0', 'MKSTREAM')
return result
""",
)

HEARTBEAT = Script(
    "heartbeat",
    r"""
-- ARGV: node, ttl (ms), instance. 'reaped' if the others gave this node up, or another
-- process took its id over (it must drop its users and join again); else the ids of
-- nodes whose heartbeat has expired.
local node, ttl, instance = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not redis.call('ZSCORE', P .. 'nodes', node) then return 'reaped' end
if redis.call('HGET', P .. 'instances', node) ~= instance then return 'reaped' end
local now = now_ms()
redis.call('ZADD', P .. 'nodes', now + ttl, node)
return redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. now)
""",
)

REAP = Script(
    "reap",
    r"""
-- ARGV: node, force ('1': leave now). Reaps the node if its heartbeat expired (or on
-- force); reaping twice, or a node that came back, does nothing.
local node, force = ARGV[1], ARGV[2]
local expiry = redis.call('ZSCORE', P .. 'nodes', node)
if not expiry then return {{}, 0} end
if force ~= '1' and tonumber(expiry) >= now_ms() then return {{}, 0} end
return reap(node)
""",
)

CLAIM = Script(
    "claim",
    r"""
-- ARGV: user, node. The login's one decision: 'ok' (now online through node),
-- 'back' (the same, and the others never heard the user leave), 'online' (through
-- another node), 'no-node' (this node is not a member now). Nobody is told yet: the
-- presence notice waits for the session to begin (ANNOUNCE), as in one process.
local user, node = ARGV[1], ARGV[2]
if not redis.call('ZSCORE', P .. 'nodes', node) then return 'no-node' end
local holder = redis.call('HGET', P .. 'online', user)
-- Held through this very node but not online in it: a logout whose release has not
-- reached Redis yet; the node knows, so it takes the name back.
if holder and holder ~= node then return 'online' end
redis.call('HSET', P .. 'online', user, node)
redis.call('SADD', P .. 'node:' .. node .. ':users', user)
if holder then return 'back' end
return 'ok'
""",
)

ANNOUNCE = Script(
    "announce",
    r"""
-- ARGV: user, node. The user's session began (they have their welcome): everyone is
-- told, if they are still online through node.
if redis.call('HGET', P .. 'online', ARGV[1]) ~= ARGV[2] then return 0 end
send_all({'p', ARGV[1], 1})
return 1
""",
)

RELEASE = Script(
    "release",
    r"""
-- ARGV: user, node. The user left node: offline, logout time kept, others told.
local user, node = ARGV[1], ARGV[2]
if redis.call('HGET', P .. 'online', user) ~= node then return 0 end
redis.call('SREM', P .. 'node:' .. node .. ':users', user)
go_offline(user, now_s())
send_all({'p', user, 0})
return 1
""",
)

ROUTE = Script(
    "route",
    r"""
-- ARGV: from, to, text, mailbox limit. 'sent' (into the recipient node's inbox),
-- 'stored', 'full', 'blocked' or 'no-such-user'.
local from, to, text, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HEXISTS', P .. 'accounts', to) == 0 then return 'no-such-user' end
if redis.call('SISMEMBER', P .. 'blocks:' .. to, from) == 1 then return 'blocked' end
local sent = now_s()
local node = redis.call('HGET', P .. 'online', to)
if node then
  send(node, {'m', to, from, text, sent})
  return 'sent'
end
if store(to, from, text, sent, limit) then return 'stored' end
return 'full'
""",
)

REDELIVER = Script(
    "redeliver",
    r"""
-- ARGV: to, from, text, sent, node. A message that reached node after its recipient
-- left it: to the node they are on now, or their mailbox. Never back to the same node
-- (Redis may not have heard yet that they left it): that would go round in circles.
local to, node = ARGV[1], ARGV[5]
local now_on = redis.call('HGET', P .. 'online', to)
if now_on and now_on ~= node then
  send(now_on, {'m', to, ARGV[2], ARGV[3], tonumber(ARGV[4])})
else
  store(to, ARGV[2], ARGV[3], tonumber(ARGV[4]), 0)
end
return 1
""",
)

BROADCAST = Script(
    "broadcast",
    r"""
-- ARGV: from, text. To every node; returns 1 if an online user blocks the sender
-- (they will not get it: the sender is told some did not).
local from, text = ARGV[1], ARGV[2]
local skipped = 0
for _, blocker in ipairs(redis.call('SMEMBERS', P .. 'blockers:' .. from)) do
  if redis.call('HEXISTS', P .. 'online', blocker) == 1 then skipped = 1; break end
end
send_all({'b', from, text, now_s()})
return skipped
""",
)

BLOCK = Script(
    "block",
    r"""
-- ARGV: blocker, target, '1' to block or '0' to unblock. 0 if nothing changed.
local a, b, on = ARGV[1], ARGV[2], ARGV[3]
if on == '1' then
  if redis.call('SADD', P .. 'blocks:' .. a, b) == 0 then return 0 end
  redis.call('SADD', P .. 'blockers:' .. b, a)
  redis.call('SADD', P .. 'blocking', a)
else
  if redis.call('SREM', P .. 'blocks:' .. a, b) == 0 then return 0 end
  redis.call('SREM', P .. 'blockers:' .. b, a)
  if redis.call('SCARD', P .. 'blocks:' .. a) == 0 then redis.call('SREM', P .. 'blocking', a) end
end
send_all({'k', a, b, tonumber(on)})
return 1
""",
)

ALL_BLOCKS = Script(
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

SEEN = Script(
    "seen",
    r"""
-- ARGV: me, seconds ('-1': online now only). Users online, or logged out within
-- seconds, except me and those who block me.
local me, seconds = ARGV[1], tonumber(ARGV[2])
local names = redis.call('HKEYS', P .. 'online')
if seconds >= 0 then
  local recent = redis.call('ZRANGEBYSCORE', P .. 'lastseen', now_s() - seconds, '+inf')
  for _, user in ipairs(recent) do names[#names + 1] = user end
end
local out, seen = {}, {}
for _, user in ipairs(names) do
  if user ~= me and not seen[user] then
    seen[user] = true
    if redis.call('SISMEMBER', P .. 'blocks:' .. user, me) == 0 then out[#out + 1] = user end
  end
end
return out
""",
)

STRIKE = Script(
    "strike",
    r"""
-- ARGV: user, block duration (s), strikes that lock. A wrong password: returns
-- {tries left, seconds locked} as strings (0 tries left: locked now).
local user, duration, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local key = P .. 'strikes:' .. user
local now = now_s()
local h = redis.call('HMGET', key, 'count', 'last', 'until')
local count, last, locked = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
if locked > now then return {'0', tostring(locked - now)} end
if locked > 0 then count = 0 end
if count > 0 and now - last > duration then count = 0 end
count = count + 1
local lasts = math.ceil(duration * 1000) + 1000
if count >= most then
  redis.call('HSET', key, 'count', count, 'last', tostring(now), 'until', tostring(now + duration))
  redis.call('PEXPIRE', key, lasts)
  return {'0', tostring(duration)}
end
redis.call('HSET', key, 'count', count, 'last', tostring(now), 'until', '0')
redis.call('PEXPIRE', key, lasts)
return {tostring(most - count), '0'}
""",
)

LOCK_LEFT = Script(
    "lock-left",
    r"""
-- ARGV: user. Seconds the user's lock still lasts, as a string ('0': not locked).
local locked = tonumber(redis.call('HGET', P .. 'strikes:' .. ARGV[1], 'until')) or 0
local left = locked - now_s()
if left > 0 then return tostring(left) end
return '0'
""",
)

MERGE_ACCOUNTS = Script(
    "merge-accounts",
    r"""
-- ARGV: user, stored, user, stored, ... from a node's file. The first value Redis
-- holds wins; every node hears of the names that are new. Returns how many.
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', P .. 'accounts', ARGV[i], ARGV[i + 1]) == 1 then
    send_all({'a', ARGV[i], ARGV[i + 1]})
    added = added + 1
  end
end
return added
""",
)

RESERVE_NAME = Script(
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

ADD_ACCOUNT = Script(
    "add-account",
    r"""
-- ARGV: user, stored. The new account, written to its node's file, for everyone.
redis.call('HSET', P .. 'accounts', ARGV[1], ARGV[2])
redis.call('DEL', P .. 'newname:' .. ARGV[1])
send_all({'a', ARGV[1], ARGV[2]})
return 1
""",
)

LISTENING = Script(
    "listening",
    r"""
-- ARGV: user, node, [host, port, fingerprint] as JSON: where the user's client takes
-- private sessions (only while online through this node).
if redis.call('HGET', P .. 'online', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', P .. 'peer', ARGV[1], ARGV[3])
return 1
""",
)

PRIVATE_REQUEST = Script(
    "private-request",
    r"""
-- ARGV: requester, target, ttl (ms), token. 'ok', or why not: 'offline', 'blocked',
-- 'conflict', 'no-peer' (target has no listener), 'no-peer-yours'.
local me, target, ttl, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local node = redis.call('HGET', P .. 'online', target)
if not node then return 'offline' end
if redis.call('SISMEMBER', P .. 'blocks:' .. target, me) == 1 then return 'blocked' end
if redis.call('EXISTS', pkey(me, target), pkey(target, me)) > 0 then return 'conflict' end
if redis.call('HEXISTS', P .. 'peer', target) == 0 then return 'no-peer' end
if redis.call('HEXISTS', P .. 'peer', me) == 0 then return 'no-peer-yours' end
redis.call('SET', pkey(me, target), token, 'PX', ttl)
local pair = me .. '\t' .. target
redis.call('SADD', P .. 'privateof:' .. me, pair)
redis.call('SADD', P .. 'privateof:' .. target, pair)
send(node, {'pr', target, me, ttl / 1000})
return 'ok'
""",
)

PRIVATE_ANSWER = Script(
    "private-answer",
    r"""
-- ARGV: target (who answers), requester, '1' accept / '0' decline, session token.
-- Exactly once: the request is deleted here, and a second answer finds none.
local target, requester, accept, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('DEL', pkey(requester, target)) == 0 then return 'none' end
forget_pair(requester, target)
local rnode = redis.call('HGET', P .. 'online', requester)
local tnode = redis.call('HGET', P .. 'online', target)
if not rnode then return 'none' end
if accept ~= '1' then
  send(rnode, {'pd', requester, target})
  return 'ok'
end
local nobody = '["", 0, ""]'
local tpeer = cjson.decode(redis.call('HGET', P .. 'peer', target) or nobody)
local rpeer = cjson.decode(redis.call('HGET', P .. 'peer', requester) or nobody)
send(rnode, {'pa', requester, target, token, tpeer[1], tpeer[2], tpeer[3]})
if tnode then send(tnode, {'pa', target, requester, token, '', 0, rpeer[3]}) end
return 'ok'
""",
)

PRIVATE_LAPSE = Script(
    "private-lapse",
    r"""
-- ARGV: requester, target, token. The request went unanswered: both are told, if
-- it is still this request.
local requester, target, token = ARGV[1], ARGV[2], ARGV[3]
local key = pkey(requester, target)
if redis.call('GET', key) ~= token then return 0 end
redis.call('DEL', key)
forget_pair(requester, target)
for _, pair in ipairs({{requester, target}, {target, requester}}) do
  local node = redis.call('HGET', P .. 'online', pair[1])
  if node then send(node, {'px', pair[1], pair[2], 'unanswered'}) end
end
return 1
""",
)

ACKNOWLEDGE = Script(
    "acknowledge",
    r"""
-- ARGV: node, entry id, entry id, ... Events handed to this node's users: acknowledged
-- and deleted together, so that no acknowledged event is left for a reaper to move
-- again.
local inbox = P .. 'inbox:' .. ARGV[1]
local ids = {unpack(ARGV, 2)}
redis.call('XACK', inbox, 'chat', unpack(ids))
return redis.call('XDEL', inbox, unpack(ids))
""",
)

STORE = Script(
    "store",
    r"""
-- ARGV: to, from, text, limit. IMailbox.append: 'stored' or 'full'.
if store(ARGV[1], ARGV[2], ARGV[3], now_s(), tonumber(ARGV[4])) then return 'stored' end
return 'full'
""",
)


EVERY_SCRIPT = tuple(v for v in list(globals().values()) if isinstance(v, Script))
"""Loaded on every connection that runs scripts (``RedisClient(scripts=...)``)."""

SOURCES = tuple(script.source for script in EVERY_SCRIPT)


class Scripts:
    """Runs :class:`Script` objects by SHA1 on a client that loaded them
    (:data:`SOURCES`) when it connected."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    def run(self, script: Script, *args: str | int | float) -> Deferred[Reply]:
        return self._client.call("EVALSHA", script.sha, 0, *args)

    def call(self, *args: str | int | float) -> Deferred[Reply]:
        """One plain command, for what touches a single key."""
        return self._client.call(*args)
