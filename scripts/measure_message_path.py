"""CPU per direct message through the server's own code, with no sockets: the real
protocols over in-memory transports, wired as in production (``tests.harness``), N
users online, messages between random pairs, each reactor turn's output flushed.

What it is for: comparing two versions of the code (run it from each checkout) on
the path every message takes, without the noise of the kernel, the load generator and
the machine's other processes that the full benchmark (``python -m
twisted_chat.bench``) has. It prints the median and spread of several rounds.

    PYTHONPATH=. .venv/bin/python scripts/measure_message_path.py [--users N]
        [--messages M] [--rounds R] [--server-option=--history-days=0 ...]

The state is kept in memory (SQLite's writes run in a thread of their own, which this
script does not model); ``--server-option`` passes a ``twistd chatserver`` option
through.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness import Connection, Server


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--turn", type=int, default=100, help="messages per reactor turn")
    parser.add_argument(
        "--server-option", action="append", default=[], help="an option of the server"
    )
    args = parser.parse_args()

    server = Server(
        Path(tempfile.mkdtemp(prefix="chat-path-")),
        "--flood-burst",
        "100000000",
        "--flood-rate",
        "100000000",
        "--max-per-ip",
        "100000",
        "--max-connections",
        "100000",
        *[part for option in args.server_option for part in option.split("=", 1)],
    )
    names = [f"u{n:05d}" for n in range(args.users)]
    with server.credentials.open("a") as f:
        f.write("\n" + "\n".join(f"{u} pw{u}" for u in names) + "\n")
    connections: dict[str, Connection] = {}
    for user in names:
        connection = server.connect()
        assert connection.login(user, f"pw{user}")["type"] == "ok"
        connections[user] = connection
    for connection in connections.values():
        connection.transport.clear()

    rng = random.Random(1)
    per_message = []
    for _ in range(args.rounds):
        pairs = [rng.sample(names, 2) for _ in range(args.messages)]
        lines = [
            (
                connections[a].protocol,
                b'{"type":"message","to":"%s","text":"hi there"}\n' % b.encode(),
            )
            for a, b in pairs
        ]
        started = time.process_time()
        for n, (protocol, line) in enumerate(lines, start=1):
            protocol.dataReceived(line)
            if n % args.turn == 0:
                server.clock.advance(0)  # the end of a reactor turn: output flushed
        server.clock.advance(0)
        per_message.append(1e6 * (time.process_time() - started) / args.messages)
        for connection in connections.values():
            connection.transport.clear()
    print(
        f"{args.users} users, {args.messages} messages x {args.rounds} rounds: "
        f"{statistics.median(per_message):.2f} µs of CPU per message, median "
        f"({min(per_message):.2f} to {max(per_message):.2f})"
    )


if __name__ == "__main__":
    main()
