"""The account stores: :class:`AccountTable` (accounts in memory, what the file store
and a Redis node's copy have in common) and :class:`CredentialsFile`, the store over
the handout's ``credentials.txt`` (whose format and disk work are ``credfile``'s),
and the checks a name and a password pass before an account is made."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_chat import wire
from twisted_chat.errors import (
    NO_ROOM,
    AccountsReadOnly,
    ChatError,
    InvalidPassword,
    InvalidUsername,
    StorageFull,
    UsernameTaken,
)
from twisted_chat.interfaces import IAccountStore
from twisted_chat.server import credfile, names, passwords
from twisted_chat.server.credfile import ParsedCredentials

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
    if passwords.LOOKS_LIKE_A_HASH.match(password):
        raise InvalidPassword(
            "Error. A password cannot start like a stored hash ($name$...): choose another."
        )


def look_alike(user: str, existing: str) -> InvalidUsername:
    return InvalidUsername(
        f"Error. The username {user} looks too much like {existing}. Choose another."
    )


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

    def verify(self, user: str, password: str, network: str = passwords.LOCAL) -> Deferred[bool]:
        stored = self._accounts.get(user)
        if stored is None:
            return succeed(False)
        return passwords.verify_stored(stored, password, self._check_hash, network)

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
        credfile.remove_stale_temp_files(path)
        data = path.read_bytes()
        self._signature = credfile.signature(path)
        self._use(credfile.parse_credentials(data, str(path)))
        self._creating: dict[str, str] = {}
        """Names being written now -> their skeletons (taken for everyone else)."""
        self._file = DeferredLock()
        """One file operation at a time: a re-read never interleaves with an append."""
        self._watched = False
        self._stale = True
        """Watched: whether the file may have changed since we last checked it."""
        self._rereading = 0
        """Re-reads queued or running: logins wait for them (never for creations)."""
        self.read_only = not credfile.writable(path)
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

    def new_account_problem(self, user: str) -> ChatError | None:
        """Why no account may be created as ``user`` now (the error to answer), or None."""
        problem = names.new_name_problem(user)
        if problem is not None:
            return InvalidUsername(problem)
        if self.read_only:
            return AccountsReadOnly()
        look = names.skeleton(user)
        existing = self._skeletons.get(look)
        if existing is None:
            existing = next((u for u, s in self._creating.items() if s == look), None)
        if existing is not None and existing != user:
            return look_alike(user, existing)
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
            signature = credfile.signature(self.path)
            writable = credfile.writable(self.path)
            if signature == self._signature:
                return signature, None, writable
            return (
                signature,
                credfile.parse_credentials(self.path.read_bytes(), str(self.path)),
                writable,
            )

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
            return fail(problem)
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
                    credfile.append_account,
                    self.path,
                    user,
                    password,
                    self._signature,
                    self.hash_new,
                )
            )
            return d.addCallbacks(written, no_room)

        def no_room(failure: Failure) -> Failure:
            if isinstance(failure.value, OSError) and failure.value.errno in NO_ROOM:
                self.log.error(
                    "cannot add {user} to {path}: {why}; the file is as it was",
                    user=user,
                    path=str(self.path),
                    why=failure.getErrorMessage(),
                )
                return Failure(StorageFull())
            return failure

        done: Deferred[None] = self._file.run(locked).addBoth(finished)
        return done
