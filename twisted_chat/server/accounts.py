"""Accounts in the handout's ``credentials.txt``: one ``username password`` a line.

We read the file ourselves rather than through ``FilePasswordDB``: that splits on *each*
space (a double space gives an empty password) and compares with ``==``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.errors import (
    AccountsReadOnly,
    InvalidPassword,
    InvalidUsername,
    UsernameTaken,
)
from twisted_chat.interfaces import IAccountStore
from twisted_chat.server import names, passwords
from twisted_chat.text import forbidden_character

BlockingRunner = Callable[..., Deferred[Any]]
"""Runs a blocking callable off the reactor thread (``deferToThread`` by default; tests
pass a synchronous runner)."""


def check_username(user: str) -> None:
    """Raise :class:`InvalidUsername` unless ``user`` can be looked up (every name in
    use passes; a new account must also pass :meth:`CredentialsFile.new_account_problem`)."""
    problem = names.login_name_problem(user)
    if problem is not None:
        raise InvalidUsername(problem)


def check_password(password: str) -> None:
    """Raise :class:`InvalidPassword` unless ``password`` fits on a credentials line."""
    if not password:
        raise InvalidPassword("Error. The password is empty.")
    if len(password) > wire.MAX_PASSWORD_CHARS:
        raise InvalidPassword(
            f"Error. A password has at most {wire.MAX_PASSWORD_CHARS} characters."
        )
    if not password.isprintable() or " " in password:
        # str.isprintable() is False for tabs, newlines and control characters; a
        # plain space is printable, so test it separately.
        raise InvalidPassword("Error. A password cannot contain spaces or control characters.")


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
            parsed.problems.append(
                f"{where}: expected 'username password', got {len(parts)} field(s); line skipped"
            )
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
                # Never taken as a password in clear: whoever typed the text would log in.
                parsed.problems.append(f"{where}: {unusable}; line skipped")
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


class AccountTable:
    """Accounts in memory: name -> stored password (clear or an argon2id hash), the
    names sorted once after each change, and what each name looks like (to refuse
    look-alikes in O(1)). What the file store and the Redis replica have in common."""

    def __init__(self, check_hash: passwords.HashCheck) -> None:
        self._check_hash = check_hash
        self._accounts: dict[str, str] = {}
        self._sorted_names: list[str] | None = None
        self._skeletons: dict[str, str] = {}
        """See :attr:`ParsedCredentials.skeletons`; kept in step with each change."""

    def _reset(self) -> None:
        """No accounts (before loading them all again)."""
        self._accounts, self._skeletons, self._sorted_names = {}, {}, None

    def _add(self, user: str, stored: str, look: str | None = None) -> None:
        self._accounts[user] = stored
        self._sorted_names = None
        self._skeletons.setdefault(look or names.skeleton(user), user)

    def __len__(self) -> int:
        return len(self._accounts)

    def exists(self, user: str) -> bool:
        return user in self._accounts

    def names(self) -> Sequence[str]:
        if self._sorted_names is None:
            self._sorted_names = sorted(self._accounts)
        return self._sorted_names

    def verify(self, user: str, password: str) -> Deferred[bool]:
        stored = self._accounts.get(user)
        if stored is None:
            return succeed(False)
        return passwords.verify_stored(stored, password, self._check_hash)

    def refusal(self, user: str, password: str) -> Deferred[None] | None:
        """Why no account ``user`` with ``password`` can be created at all (a failed
        Deferred: a bad name or password, or a name taken), or None."""
        try:
            check_username(user)
            check_password(password)
        except (InvalidUsername, InvalidPassword) as e:
            return fail(e)
        if user in self._accounts:
            return fail(UsernameTaken(user))
        return None

    def look_alike_of(self, user: str) -> str | None:
        """Another account's name that ``user`` looks like, or None."""
        existing = self._skeletons.get(names.skeleton(user))
        return existing if existing is not None and existing != user else None


@implementer(IAccountStore)
class CredentialsFile(AccountTable):
    """The account store over ``credentials.txt``.

    The whole file is read once at start (before the reactor runs). Lookups are dict
    lookups. A new account is one line appended, off the reactor thread, under an
    exclusive ``flock``, with one ``write`` and an ``fsync``: O(1) in the file's size,
    through a symlink if the file is one, keeping its owner and mode (nothing is
    renamed over it). Before appending, the file is checked as it is on disk: if it
    changed since we last read it, it is read again, and a name that appeared meanwhile
    is not added twice.
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        run_blocking: BlockingRunner = deferToThread,
        check_hash: passwords.HashCheck = passwords.check_inline,
        hash_new: bool = False,
    ) -> None:
        super().__init__(check_hash)
        self.path = path
        self.generation = 0
        """How many times the file has been read: changes when a re-read took in a
        hand edit (not for accounts this store appended itself)."""
        self._run_blocking = run_blocking
        self.hash_new = hash_new
        """New accounts are written with an argon2id hash, not the password."""
        remove_stale_temp_files(path)
        data = path.read_bytes()
        self._signature = _signature(path)
        self._use(parse_credentials(data, str(path)))
        self._creating: dict[str, str] = {}
        """Names being written now -> their skeletons (taken for everyone else)."""
        self._file = DeferredLock()
        """One file operation at a time: a re-read never interleaves with an append."""
        self._watched = False
        self._stale = True
        """Watched: whether the file may have changed since we last checked it."""
        self._rereading = 0
        """Re-reads queued or running: logins wait for them (never for creations)."""
        self.read_only = not _writable(path)
        """The operator made the file read-only: no account can be created."""
        if self.read_only:
            self.log.warn(
                "{path} is read-only: no new accounts can be created",
                path=str(path),
                security_event="credentials-read-only",
            )

    def _use(self, parsed: ParsedCredentials) -> None:
        for problem in parsed.problems:
            self.log.error("{problem}", problem=problem, security_event="credentials-line")
        for note in parsed.notes:
            self.log.warn("{note}", note=note, security_event="credentials-name")
        self._accounts = parsed.accounts
        self._skeletons = parsed.skeletons
        self._sorted_names = None
        self.generation += 1

    @property
    def watched_path(self) -> Path:
        return self.path

    def learned(self, user: str, stored: str) -> None:
        """An account another node made (``IAccountStore.learned``): usable here too,
        until the file says otherwise at its next re-read."""
        if user not in self._accounts:
            self._add(user, stored)

    def watched(self) -> None:
        """From now on :meth:`changed` is called after every change to the file (see
        ``twisted_chat.server.watch``), so :meth:`refresh` goes to the disk only after
        one instead of at every login."""
        self._watched = True
        self._stale = True  # a change before the watch began would have gone unseen

    def changed(self) -> None:
        """The file may have changed: the next :meth:`refresh` checks it."""
        self._stale = True

    def items(self) -> Iterable[tuple[str, str]]:
        """(name, stored password) for each account in the file."""
        return self._accounts.items()

    def stored(self, user: str) -> str | None:
        """``user``'s password as the file stores it (clear or a hash), or None."""
        return self._accounts.get(user)

    def new_account_problem(self, user: str) -> str | None:
        """Why no account may be created as ``user`` now, or None."""
        problem = names.new_name_problem(user)
        if problem is not None:
            return problem
        if self.read_only:
            return AccountsReadOnly().text
        look = names.skeleton(user)
        existing = self._skeletons.get(look)
        if existing is None:
            existing = next((u for u, s in self._creating.items() if s == look), None)
        if existing is not None and existing != user:
            return f"Error. The username {user} looks too much like {existing}. Choose another."
        return None

    def refresh(self) -> Deferred[None]:
        """Re-read the file, off the reactor thread, if it changed on disk since we last
        read or wrote it, so that accounts added or changed by hand work at the next
        login. Damaged lines are reported (file and line) and skipped; the file itself
        is left as it is.

        When the file is watched and has not changed, this answers at once, with no
        thread round trip and without waiting for accounts being created: logins then
        cost no disk access and never queue behind a creation flood."""
        if self._watched:
            if not self._stale:
                if not self._rereading:
                    return succeed(None)
                # A re-read is under way: answer after it, not before.
                return self._file.run(succeed, None)
            self._stale = False  # a change from here on marks it stale again

        def read_if_changed() -> tuple[tuple[int, int, int], ParsedCredentials | None, bool]:
            # In the worker thread: the stat, the read and the parse (seconds for a
            # file of 100,000 accounts) never hold up the reactor.
            signature = _signature(self.path)
            writable = _writable(self.path)
            if signature == self._signature:
                return signature, None, writable
            return signature, parse_credentials(self.path.read_bytes(), str(self.path)), writable

        def reread(changed: tuple[tuple[int, int, int], ParsedCredentials | None, bool]) -> None:
            signature, parsed, writable = changed
            self.read_only = not writable
            if parsed is None:
                return
            self._signature = signature
            self._use(parsed)

        def failed(failure: Failure) -> None:
            failure.trap(OSError)
            self._stale = True  # try again at the next login
            self.log.error(
                "cannot re-read {path}: {error}; keeping the accounts read before",
                path=str(self.path),
                error=failure.getErrorMessage(),
            )

        def locked() -> Deferred[None]:
            d: Deferred[None] = self._run_blocking(read_if_changed).addCallback(reread)
            return d.addErrback(failed)

        def done(result: object) -> object:
            self._rereading -= 1
            return result

        self._rereading += 1
        return self._file.run(locked).addBoth(done)

    def create(self, user: str, password: str) -> Deferred[None]:
        refused = self.refusal(user, password)
        if refused is not None:
            return refused
        if user in self._creating:
            return fail(UsernameTaken(user))
        problem = self.new_account_problem(user)
        if problem is not None:
            return fail(InvalidUsername(problem))
        look = names.skeleton(user)
        # Reserve the name now: a second client creating it while we write loses (§14.6).
        self._creating[user] = look

        def written(result: tuple[tuple[int, int, int], ParsedCredentials | None, str]) -> None:
            signature, reread, stored = result
            if reread is not None:  # the file had changed: take in what it holds now
                self._use(reread)
            self._signature = signature
            self._add(user, stored, look)
            self.log.info("account {user} created", user=user)

        def finished(result: object) -> object:
            self._creating.pop(user, None)
            return result

        def locked() -> Deferred[None]:
            d: Deferred[tuple[tuple[int, int, int], ParsedCredentials | None, str]] = (
                self._run_blocking(
                    append_account, self.path, user, password, self._signature, self.hash_new
                )
            )
            return d.addCallback(written)

        done: Deferred[None] = self._file.run(locked).addBoth(finished)
        return done


def _signature(path: Path) -> tuple[int, int, int]:
    """What tells us the file changed: modification time, size, inode."""
    return _signature_of(path.stat())


def _signature_of(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_mtime_ns, status.st_size, status.st_ino


def _writable(path: Path) -> bool:
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
    if not _writable(path):
        raise AccountsReadOnly()
    stored = passwords.make_hash(password) if hash_new else password
    fd = open_locked(path)
    try:
        status = os.fstat(fd)
        reread: ParsedCredentials | None = None
        if _signature_of(status) != known:
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
        return _signature_of(os.fstat(fd)), reread, stored
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
            CredentialsFile.log.warn(
                "cannot remove the stale copy {stale} of the accounts file: {error}",
                stale=str(stale),
                error=e,
            )
        else:
            CredentialsFile.log.warn(
                "removed {stale}, a copy of the accounts file left by a crash",
                stale=str(stale),
                security_event="stale-copy-removed",
            )
