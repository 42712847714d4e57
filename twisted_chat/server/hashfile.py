"""``chat-server hash-credentials FILE``: every password in clear in a credentials
file replaced by its argon2id hash, in place and atomically.

The converted file is written beside the real one (through a symlink, the link is
kept and its target replaced), given the original's mode and, where we may, its owner,
flushed to disk, and renamed over it: a reader sees the old file or the new one, never
half of each. The original is held under the same ``flock`` a server takes to append an
account, and a server that waited for it appends to the new file (``accounts``), so a
running server loses nothing. Lines that are not ``username password`` (damaged, or a
password already hashed) are kept byte for byte.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from twisted_chat.server import passwords
from twisted_chat.server.credfile import BOM, open_locked, read_all, writable


@dataclass(frozen=True)
class Converted:
    hashed: int
    """Passwords in clear that are now hashes."""
    kept: int
    """Lines left as they were (already hashed, blank, or not an account line)."""


class ReadOnly(Exception):
    """The file is read-only: its operator meant it not to change."""


def hash_credentials(path: Path) -> Converted:
    """Convert ``path`` in place (blocking: a command-line tool, not the server).
    Raises :class:`ReadOnly` for a read-only file: renaming a new file over it would
    change it all the same (the server, too, writes nothing to such a file)."""
    real = path.resolve()
    if real.exists() and not writable(real):
        raise ReadOnly(f"{path} is read-only; make it writable to convert it")
    fd = open_locked(real)
    try:
        status = os.fstat(fd)
        data = read_all(fd, status.st_size)
        lines, hashed, kept = [], 0, 0
        for number, raw in enumerate(data.split(b"\n")):
            prefix = BOM if number == 0 and raw.startswith(BOM) else b""
            converted = _hashed_line(raw[len(prefix) :])
            if converted is None:
                lines.append(raw)
                kept += bool(raw.strip())
            else:
                lines.append(prefix + converted)
                hashed += 1
        if hashed:
            _replace(real, b"\n".join(lines), status)
        return Converted(hashed, kept)
    finally:
        os.close(fd)  # releases the lock


def _hashed_line(raw: bytes) -> bytes | None:
    """The line with its password hashed, or None to keep it as it is."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = text.split()
    if len(fields) != 2 or passwords.is_hash(fields[1]) or not fields[1].isprintable():
        return None
    user, password = fields
    return f"{user} {passwords.make_hash(password)}".encode()


def _replace(real: Path, data: bytes, original: os.stat_result) -> None:
    # The name remove_stale_temp_files looks for: a copy left by a crash is cleaned up.
    temporary = real.parent / f".{real.name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, stat.S_IMODE(original.st_mode))
            if (original.st_uid, original.st_gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, original.st_uid, original.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, real)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def run(argv: list[str], program: str) -> None:
    """The command line: one FILE."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print(f"usage: {program} hash-credentials FILE", file=sys.stderr)
        raise SystemExit(2)
    path = Path(argv[0])
    try:
        result = hash_credentials(path)
    except ReadOnly as e:
        raise SystemExit(f"{program}: {e}") from None
    except OSError as e:
        raise SystemExit(f"{program}: cannot convert {path}: {e.strerror or e}") from None
    print(
        f"{path}: {result.hashed} password(s) hashed (argon2id); "
        f"{result.kept} line(s) left as they were"
    )
