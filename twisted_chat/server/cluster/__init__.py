"""Several server processes acting as one chat over a shared Redis (docs/scaling.md).

- ``redis``: the connection to Redis (RESP over Twisted, hiredis's parser).
- ``scripts``: every decision over several keys, as one Lua script each.
- ``node``: this process's membership: heartbeat, reaping dead nodes, its inbox.
- ``stores``: accounts, blocks, mailboxes and the lockout over Redis.
- ``chat``: the domain's cluster face (``ClusterChat``, ``ClusterSession``).
"""
