"""Accounts in the handout's ``credentials.txt``: one ``username password`` a line.

We read the file ourselves rather than through ``FilePasswordDB``: that splits on *each*
space (a double space gives an empty password) and compares with ``==``.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.errors import InvalidPassword, InvalidUsername, UsernameTaken
from twisted_chat.interfaces import IAccountStore

BlockingRunner = Callable[..., Deferred[Any]]
"""Runs a blocking callable off the reactor thread (``deferToThread`` by default; tests
pass a synchronous runner)."""


def check_username(user: str) -> None:
    """Raise :class:`InvalidUsername` unless ``user`` can be stored and typed safely."""
    if not user:
        raise InvalidUsername("Error. The username is empty.")
    if len(user) > wire.MAX_NAME_CHARS:
        raise InvalidUsername(f"Error. A username has at most {wire.MAX_NAME_CHARS} characters.")
    if not _printable_token(user):
        raise InvalidUsername("Error. A username cannot contain spaces or control characters.")


def check_password(password: str) -> None:
    """Raise :class:`InvalidPassword` unless ``password`` fits on a credentials line."""
    if not password:
        raise InvalidPassword("Error. The password is empty.")
    if len(password) > wire.MAX_PASSWORD_CHARS:
        raise InvalidPassword(
            f"Error. A password has at most {wire.MAX_PASSWORD_CHARS} characters."
        )
    if not _printable_token(password):
        raise InvalidPassword("Error. A password cannot contain spaces or control characters.")


def _printable_token(value: str) -> bool:
    # str.isprintable() is False for spaces' relatives (tabs, newlines) and control
    # characters; a plain space is printable, so test it separately.
    return value.isprintable() and " " not in value


class CredentialsFormatError(Exception):
    """A line of the credentials file that is not ``username password``."""


def parse_credentials(text: str, source: str) -> dict[str, str]:
    """Parse the file's text. Blank lines are skipped; any other line must be exactly two
    tokens, and a repeated username is an error (which password would be right?)."""
    accounts: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CredentialsFormatError(
                f"{source}, line {number}: expected 'username password', got {len(parts)} field(s)"
            )
        user, password = parts
        if user in accounts:
            raise CredentialsFormatError(f"{source}, line {number}: {user} appears twice")
        accounts[user] = password
    return accounts


@implementer(IAccountStore)
class CredentialsFile:
    """The account store over ``credentials.txt``.

    The whole file is read once at start (it is small, and this happens before the
    reactor runs). Lookups are dict lookups. A new account is written off the reactor
    thread by rewriting the file atomically: temp file, fsync, rename, fsync of the
    directory, so a crash leaves either the old file or the new one, never half a line.
    """

    log = Logger()

    def __init__(self, path: Path, run_blocking: BlockingRunner = deferToThread) -> None:
        self.path = path
        self._run_blocking = run_blocking
        self._signature = _signature(path)
        self._accounts = parse_credentials(path.read_text(encoding="utf-8"), str(path))
        self._creating: set[str] = set()
        self._file = DeferredLock()
        """One file operation at a time: a re-read never interleaves with a rewrite."""
        self._watched = False
        self._stale = True
        """Watched: whether the file may have changed since we last checked it."""

    def watched(self) -> None:
        """From now on :meth:`changed` is called after every change to the file (see
        ``twisted_chat.server.watch``), so :meth:`refresh` goes to the disk only after
        one instead of at every login."""
        self._watched = True
        self._stale = True  # a change before the watch began would have gone unseen

    def changed(self) -> None:
        """The file may have changed: the next :meth:`refresh` checks it."""
        self._stale = True

    def __len__(self) -> int:
        return len(self._accounts)

    def exists(self, user: str) -> bool:
        return user in self._accounts

    def verify(self, user: str, password: str) -> bool:
        stored = self._accounts.get(user)
        if stored is None:
            return False
        return hmac.compare_digest(stored.encode("utf-8"), password.encode("utf-8"))

    def refresh(self) -> Deferred[None]:
        """Re-read the file, off the reactor thread, if it changed on disk since we last
        read or wrote it, so that accounts added or changed by hand work at the next
        login. A damaged file is reported (file and line) and the accounts known before
        are kept: nothing is discarded, and the file itself is left as it is.

        When the file is watched and has not changed, this answers at once, with no
        thread round trip: logins then cost no disk access."""
        if self._watched:
            if not self._stale:
                if not self._file.locked:
                    return succeed(None)
                # A re-read (or a rewrite) is under way: answer after it, not before.
                return self._file.run(succeed, None)
            self._stale = False  # a change from here on marks it stale again

        def read_if_changed() -> tuple[tuple[int, int, int], str] | None:
            signature = _signature(self.path)
            if signature == self._signature:
                return None
            return signature, self.path.read_text(encoding="utf-8")

        def reread(changed: tuple[tuple[int, int, int], str] | None) -> None:
            if changed is None:
                return
            signature, text = changed
            self._signature = signature
            try:
                self._accounts = parse_credentials(text, str(self.path))
            except CredentialsFormatError as e:
                self.log.error("{error}; keeping the accounts read before", error=str(e))

        def failed(failure: Failure) -> None:
            failure.trap(OSError, UnicodeDecodeError)
            self._stale = True  # try again at the next login
            self.log.error(
                "cannot re-read {path}: {error}; keeping the accounts read before",
                path=str(self.path),
                error=failure.getErrorMessage(),
            )

        def locked() -> Deferred[None]:
            d: Deferred[None] = self._run_blocking(read_if_changed).addCallback(reread)
            return d.addErrback(failed)

        return self._file.run(locked)

    def create(self, user: str, password: str) -> Deferred[None]:
        try:
            check_username(user)
            check_password(password)
        except (InvalidUsername, InvalidPassword) as e:
            return fail(e)
        if user in self._accounts or user in self._creating:
            return fail(UsernameTaken(user))
        # Reserve the name now: a second client creating it while we write loses (§14.6).
        self._creating.add(user)

        def written(signature: tuple[int, int, int]) -> None:
            self._accounts[user] = password
            self._signature = signature
            self.log.info("account {user} created", user=user)

        def finished(result: object) -> object:
            self._creating.discard(user)
            return result

        def locked() -> Deferred[None]:
            d: Deferred[tuple[int, int, int]] = self._run_blocking(
                _append_line, self.path, f"{user} {password}"
            )
            return d.addCallback(written)

        done: Deferred[None] = self._file.run(locked).addBoth(finished)
        return done


def _signature(path: Path) -> tuple[int, int, int]:
    """What tells us the file changed: modification time, size, inode."""
    status = path.stat()
    return status.st_mtime_ns, status.st_size, status.st_ino


def _append_line(path: Path, line: str) -> tuple[int, int, int]:
    """Append ``line`` to ``path`` atomically and durably (runs in a worker thread).

    Reads the current file (so lines added by hand are kept), adds a line break if the
    last line lacks one, writes everything to a temp file in the same directory, fsyncs
    it, renames it over the original and fsyncs the directory so the rename itself
    survives a power cut.
    """
    current = path.read_bytes()
    if current and not current.endswith(b"\n"):
        current += b"\n"
    data = current + line.encode("utf-8") + b"\n"
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    replaced = False
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, path.stat().st_mode & 0o777)
        os.replace(tmp_name, path)
        replaced = True
    finally:
        if not replaced:  # leave no temp file behind; the error reaches the Deferred
            Path(tmp_name).unlink(missing_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _signature(path)
