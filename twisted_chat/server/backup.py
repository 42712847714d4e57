"""``chat-backup STATE DEST``: a consistent copy of the server's state (offline mail and
block lists), safe to take while the server runs.

Copying ``chat-state.sqlite3`` with ``cp`` is not: committed data may still be in its
``-wal`` file, and a copy without it silently loses those messages. This uses SQLite's
online backup API instead and writes one self-contained file. To restore, stop the
server, put the copy in place of the state file (and remove any ``-wal``/``-shm`` files
beside it), and start the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from twisted_chat.cli import print_help
from twisted_chat.server.sqlite_store import StateFileError, backup

USAGE = "usage: chat-backup STATE_FILE BACKUP_FILE"
HELP = """Copy the server's state (offline mail, history, rooms, blocks) consistently, even
while the server runs; BACKUP_FILE must not exist. To restore: stop the server, put
the copy in place of the state file (removing any -wal/-shm files beside it), start."""


def run(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print_help(f"{USAGE}\n\n{HELP}")
    if len(args) != 2 or any(a.startswith("-") for a in args):
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    source, destination = Path(args[0]), Path(args[1])
    try:
        messages = backup(source, destination)
    except StateFileError as e:
        print(f"chat-backup: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"backed up {source} to {destination} ({messages} offline messages)")


if __name__ == "__main__":
    run()
