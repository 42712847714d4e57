"""The line editor's history kept between runs: one file per server and user, in the
XDG state directory (``$XDG_STATE_HOME/twisted-chat/``, by default
``~/.local/state/twisted-chat/``), readable by its owner only, at most
:data:`MAX_LINES` lines. Only commands go there: never what was typed at the username
or password prompts, and never ``private`` text unless the user asked for it.

Read once when the user is logged in; each line is appended as it is entered (one
small write, no sync: a closed terminal, SIGHUP or SIGTERM loses nothing typed), and
the file is rewritten to its last :data:`MAX_LINES` lines when the client ends. A line
that starts with a space is never kept (bash's ``ignorespace``).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

MAX_LINES = 1000


def state_directory() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or ""
    # The XDG spec: a relative path is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "twisted-chat"


def history_path(host: str, port: int, user: str) -> Path:
    """The file for ``user`` on the server at ``host:port``. Anything but letters,
    digits, dot, dash and underscore is written as its code point, so that any name
    makes one safe file name (and two names never share one)."""

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", lambda m: f"%{ord(m.group()):x}%", text)

    return state_directory() / f"history-{safe(host)}-{port}-{safe(user)}.txt"


def remembered(line: str, keep_private: bool) -> bool:
    """Whether a command line goes into history: not a blank one, not one that starts
    with a space (the way to keep one line out), not ``private`` text unless asked."""
    if not line.strip() or line.startswith(" "):
        return False
    return keep_private or line.split(" ", 1)[0] != "private"


def append(path: Path, line: str) -> None:
    """Add one line at the end of the file, owner-only (0600, in a 0700 directory)."""
    if "\n" in line:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "ab") as out:
        out.write(f"{line}\n".encode())


def load(path: Path) -> list[str]:
    """The lines kept, oldest first (none if there is no file or it cannot be read)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    return [line for line in lines if line.strip() and line.isprintable()][-MAX_LINES:]


def save(path: Path, lines: list[str]) -> None:
    """Write the last :data:`MAX_LINES` lines, owner-only (0600, in a 0700 directory),
    replacing the file in one rename so a crash leaves the old one or the new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept = [line for line in lines if "\n" not in line][-MAX_LINES:]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write("".join(f"{line}\n" for line in kept).encode("utf-8"))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
