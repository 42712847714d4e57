"""``credentials.txt`` on disk: the handout's format (one ``username password`` a line),
read line by line so that a damaged line is reported and skipped, never fatal, and
appended to durably, one account a line, under an exclusive ``flock``.

We read the file ourselves rather than through ``FilePasswordDB``: that splits on *each*
space (a double space gives an empty password) and compares with ``==``. The account
store over this file is ``accounts.CredentialsFile``.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger

from twisted_chat.errors import AccountsReadOnly, UsernameTaken
from twisted_chat.server import names, passwords
from twisted_chat.text import forbidden_character

log = Logger()

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark Notepad writes at the start of a file."""


@dataclass
class ParsedCredentials:
    """What a credentials file holds: the accounts to use, and what was wrong with it
    (each problem names the file and the line)."""

    accounts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Lines skipped: damaged, or a name that must not be loaded."""
    notes: list[str] = field(default_factory=list)
    """Names kept although no new account could take them."""
    skeletons: dict[str, str] = field(default_factory=dict)
    """What each name looks like (``names.skeleton``) -> the first name that looks so:
    look-alikes of existing names are refused in O(1)."""


def parse_credentials(data: bytes, source: str) -> ParsedCredentials:
    """Parse the file's bytes, line by line, never failing as a whole: a damaged line
    must neither hand an account to a stranger nor stop the server from restarting.

    - A UTF-8 BOM at the start is dropped (else it would become part of the first
      name, and that account would answer to no one who types it).
    - Blank lines are skipped. A line that is not valid UTF-8, holds a NUL or another
      control character, is not exactly two fields, or names a user with invisible
      characters is reported and skipped.
    - Names are compared in NFC; a name seen before is reported and the first line
      wins (the later one may be a hand edit racing an account's creation).
    - A name that no new account could take (``hans(private)``, mixed scripts, a
      look-alike of an earlier name) is reported and kept: existing accounts keep
      working, but the operator is told.
    """
    parsed = ParsedCredentials()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    skeletons = parsed.skeletons
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{source}, line {number}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            parsed.problems.append(f"{where}: not valid UTF-8; line skipped")
            continue
        if not line:
            continue
        if forbidden_character(line) is not None:
            parsed.problems.append(f"{where}: holds a control character; line skipped")
            continue
        parts = line.split()
        if len(parts) != 2:
            reserved = _reserve(parsed, parts[0])
            parsed.problems.append(
                f"{where}: expected 'username password', got {len(parts)} field(s); "
                + (f"nobody can log in as {reserved} or take the name until it is fixed"
                   if reserved else "line skipped")
            )  # fmt: skip
            continue
        user, password = names.normalise(parts[0]), parts[1]
        if names.invisible_character(user) is not None or names.login_name_problem(user):
            parsed.problems.append(
                f"{where}: the username holds invisible or blank characters or is too "
                "long; line skipped"
            )
            continue
        if user in parsed.accounts:
            parsed.problems.append(f"{where}: {user} appears again; the first line for it is used")
            continue
        if passwords.is_hash(password):
            unusable = passwords.hash_problem(password)
            if unusable is not None:
                # Never taken as a password in clear: whoever typed the text would log
                # in. Nor the name freed: a stranger would take the account.
                _reserve(parsed, user)
                parsed.problems.append(
                    f"{where}: {unusable}; nobody can log in as {user} or take the name "
                    "until it is fixed"
                )
                continue
        problem = names.new_name_problem(user)
        look = names.skeleton(user)
        if problem is None and look in skeletons:
            problem = f"looks like {skeletons[look]}"
        if problem is not None:
            parsed.notes.append(
                f"{where}: {user} is kept, but no new account could take that name "
                f"({problem.removeprefix('Error. ')})"
            )
        skeletons.setdefault(look, user)
        parsed.accounts[user] = password
    return parsed


def _reserve(parsed: ParsedCredentials, field: str) -> str | None:
    """Keep a damaged line's name from everyone (``passwords.RESERVED``): the name, or
    None if the line names no user we could tell (or one already taken)."""
    user = names.normalise(field)
    if names.invisible_character(user) is not None or names.login_name_problem(user):
        return None
    if user in parsed.accounts:
        return None
    parsed.accounts[user] = passwords.RESERVED
    parsed.skeletons.setdefault(names.skeleton(user), user)
    return user


def signature(path: Path) -> tuple[int, int, int]:
    """What tells us the file changed: modification time, size, inode."""
    return signature_of(path.stat())


def signature_of(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_mtime_ns, status.st_size, status.st_ino


def writable(path: Path) -> bool:
    """Whether the file may be written: by its mode, not by ``access()``, which says
    yes to root whatever the mode (an operator who made it read-only meant it)."""
    try:
        status = path.stat()
    except OSError:
        return False
    return bool(status.st_mode & 0o222) and os.access(path, os.W_OK)


def append_account(
    path: Path, user: str, password: str, known: tuple[int, int, int], hash_new: bool = False
) -> tuple[tuple[int, int, int], ParsedCredentials | None, str]:
    """Append ``user password`` to ``path`` durably (runs in a worker thread); with
    ``hash_new``, ``user`` and an argon2id hash of the password.

    Under an exclusive ``flock`` (several servers sharing the file take turns): if the
    file is not as we last knew it (``known``), it is read again and the name must still
    be free in it. A line break goes first if the last line lacks one (the handout's
    file, or a hand edit). The line is one ``write``, then ``fsync``; if either fails,
    the file is cut back to its old size, so a failed creation leaves no half account.

    If the file was replaced while we waited for the lock (``chat-server
    hash-credentials`` renames a converted copy over it), the new one is opened and
    locked instead: a line appended to the old one would be lost.

    Returns the file's new signature, what it held before our line if it had changed
    (parsed here, off the reactor thread), and the password field written."""
    if not writable(path):
        raise AccountsReadOnly()
    stored = passwords.make_hash(password) if hash_new else password
    fd = open_locked(path)
    try:
        status = os.fstat(fd)
        reread: ParsedCredentials | None = None
        if signature_of(status) != known:
            reread = parse_credentials(read_all(fd, status.st_size), str(path))
            if user in reread.accounts:
                raise UsernameTaken(user)
        size = status.st_size
        last = os.pread(fd, 1, size - 1) if size else b"\n"
        line = f"{user} {stored}\n".encode()
        payload = line if last == b"\n" else b"\n" + line
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(f"short write to {path} ({written} of {len(payload)} bytes)")
            os.fsync(fd)
        except Exception:
            os.ftruncate(fd, size)  # no half line, no account the user was told failed
            raise
        return signature_of(os.fstat(fd)), reread, stored
    finally:
        os.close(fd)  # releases the flock


def open_locked(path: Path) -> int:
    """The file open for appending, under an exclusive ``flock``, and still the file
    at ``path`` (not one renamed away while we waited)."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_APPEND)  # follows a symlink; keeps owner, mode
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except OSError:
            pass
        os.close(fd)
    raise OSError(f"{path} keeps being replaced; try again")


def read_all(fd: int, size: int) -> bytes:
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def remove_stale_temp_files(path: Path) -> None:
    """Remove the temporary copies of the file that an older server's rewrite left when
    it was killed mid-way: each is a full copy of every password."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError as e:
            log.warn(
                "cannot remove the stale copy {stale} of the accounts file: {error}",
                stale=str(stale),
                error=e,
            )
        else:
            log.warn(
                "removed {stale}, a copy of the accounts file left by a crash",
                stale=str(stale),
                security_event="stale-copy-removed",
            )
