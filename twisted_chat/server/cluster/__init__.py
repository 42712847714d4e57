"""Several server processes acting as one chat over a shared Redis (docs/scaling.md).

The core's rules run unchanged; this package supplies the seams they run over when
the chat is shared, and is imported only when ``--redis`` is given.

- ``address``: where Redis is (``--redis``), parsed without the rest of the package.
- ``redis``: the connection to Redis (RESP over Twisted, hiredis's parser).
- ``primitives``: the storage steps over several keys, one Lua script each.
- ``directory``: who is online through which node, and the way to them.
- ``stores``: accounts, blocks, mailboxes, strikes and private requests over Redis.
- ``node``: this process's membership: join, heartbeat, dead nodes, its inbox.
- ``wiring``: a node's parts, from the options.
"""
