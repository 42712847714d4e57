"""The line editor's history kept between runs: one file per server and user, in the
XDG state directory (``$XDG_STATE_HOME/twisted-chat/``, by default
``~/.local/state/twisted-chat/``), readable by its owner only, at most
:data:`MAX_LINES` lines. Only commands go there: never what was typed at the username
or password prompts, and never ``private`` text unless the user asked for it.

Read once when the user is logged in; each line is appended as it is entered (one
small write, no sync: a closed terminal, SIGHUP or SIGTERM loses nothing typed), and
when the client ends a file grown past :data:`MAX_LINES` lines is cut back to its last
ones (from the file itself, so that lines another client of the same user appended
are kept). A line that starts with a space is never kept (bash's ``ignorespace``).
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


def _open_private(path: Path, flags: int) -> int:
    """``path`` opened with ``flags``, owner-only (0600, in a 0700 directory)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, flags, 0o600)


def append(path: Path, line: str) -> None:
    """Add one line at the end of the file."""
    if "\n" in line:
        return
    with os.fdopen(_open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as out:
        out.write(f"{line}\n".encode())


def load(path: Path) -> list[str]:
    """The lines kept, oldest first (none if there is no file or it cannot be read)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    return [line for line in lines if line.strip() and line.isprintable()][-MAX_LINES:]


def trim(path: Path) -> None:
    """Cut the file back to its last :data:`MAX_LINES` lines if it grew past them,
    replacing it in one rename so a crash leaves the old one or the new one."""
    try:
        lines = path.read_bytes().split(b"\n")[:-1]
    except FileNotFoundError:
        return
    if len(lines) <= MAX_LINES:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(
            _open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb"
        ) as out:
            out.write(b"".join(line + b"\n" for line in lines[-MAX_LINES:]))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
