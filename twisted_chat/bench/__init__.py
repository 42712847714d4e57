"""Benchmark: twisted-chat side by side with the servers a user would pick instead.

``python -m twisted_chat.bench --users 1000`` starts each server under test on
127.0.0.1, opens ``--users`` client connections, logs them in, and runs the same fixed
workloads against each:

- **login**: every user logs in (and is announced to everyone online: our presence
  notices, the IRC servers' JOIN of one shared channel); logins/s and latency p99.
- **direct messages**: ``--messages`` messages from random senders to random online
  recipients, ``--window`` in flight; delivered/s, end-to-end latency p50/p99 (from a
  timestamp in the text), lost, duplicated and misdelivered counts.
- **broadcast**: one user to all others (our ``broadcast``, a PRIVMSG to the shared
  channel), ``--rounds`` times; the time until the last recipient has it.
- **idle**: all users held; server RSS per connection, server CPU while idle.

The users are spread over ``--workers`` load-generating processes (the coordinator
starts them; see ``worker.py``) so that the generator is not what is measured: each
worker's CPU share is reported. A direct message goes between two users of the same
worker, so each worker keeps its own window of messages in flight; to the server they
are still random pairs of connections.

The anchors, through an IRC adapter: Twisted Words' IRC service (``twistd words``,
ships with Twisted) and ngIRCd (Debian package ``ngircd``; skipped, saying so, when not
installed). Per-user flood limits are raised on every server that has them (ours:
``--flood-burst``/``--flood-rate``; ngIRCd: ``MaxPenaltyTime = 0``; Twisted Words has
none), and our durable storage stays on. Bounded in count and time; every server is
ended by its PID; only 127.0.0.1 is used. No timing is asserted anywhere: it reports.
"""
