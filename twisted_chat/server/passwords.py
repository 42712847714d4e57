"""Passwords stored as argon2id hashes, checked off the reactor thread.

``credentials.txt`` stays the handout's ``username password`` file. A password field
that is an argon2id hash in the standard PHC form (``$argon2id$v=19$m=…,t=…,p=…$salt$
hash``, what ``argon2-cffi``, libsodium and most password tools write) is checked
against the hash; any other field is a password in clear, compared in constant time.

Why argon2id: it is the first choice of OWASP's password storage guidance and of RFC
9106, it is memory-hard (a GPU farm gains little), and its PHC string carries its own
parameters, so hashes made by other tools work. We hash with OWASP's smallest
recommended setting (19 MiB, 2 passes, 1 lane: about 30 ms on our machine), which
bounds what a flood of logins can take from the server, and we refuse to *check*
hashes whose parameters would let a hostile file take more (:data:`MAX_MEMORY_KIB`).

A check costs 30 ms of a core, so it runs in a small thread pool of its own (argon2
releases the GIL), never in the reactor thread; at most :data:`MAX_WAITING` checks
wait for it, and past that a login is told to try again rather than queued without
bound. The pool is shared fairly: each network (an IPv4 /24, an IPv6 /64) has at most
:data:`SHARE` checks in it at once, and its further checks wait in a line of its own,
so a flood of guesses from a few networks waits behind itself, not in front of
everyone else's logins.
"""

from __future__ import annotations

import hmac
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from twisted_chat.errors import ChatError
from twisted_chat.server.stats import Stats

HASH_PREFIX = "$argon2id$"
LOOKS_LIKE_A_HASH = re.compile(r"\$[A-Za-z0-9+-]{1,32}\$")
"""How a stored hash of any scheme starts (``$argon2id$``, ``$2b$``, ``$6$``,
``$scrypt$``, ``$pbkdf2-sha256$``...): a password chosen over the wire may not, or its
owner would choose the hash the server checks (its cost, or an unusable one)."""

RESERVED = "\0reserved"
"""What a name holds when its line in the file cannot be used (a damaged hash, a line
of the wrong shape): nobody logs in as it, and nobody can take the name meanwhile.
A NUL cannot come from the file, the wire or Redis's copy of a file line."""
HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""New hashes: OWASP's minimum for argon2id (m = 19 MiB, t = 2, p = 1)."""

MAX_MEMORY_KIB = 256 * 1024
MAX_TIME_COST = 16
MAX_PARALLELISM = 8
"""A stored hash asking for more than these is refused: one login must not be able to
take gigabytes or seconds of the server because of a line in a file."""

THREADS = 2
"""Checks at once: the machine's cores, so that logins never starve the reactor."""
MAX_WAITING = 64
"""Checks queued at most; more logins at once are told to retry."""
SHARE = 4
"""Checks one network may have in the pool (running or queued) at once."""
LINE = 16
"""Checks one network may have waiting for its share; more are told to retry. The
server gives the connections one network may open (``--max-per-ip``): a connection
has at most one check under way, so only a network's own line ever makes it wait."""
LOCAL = "local"
"""The network of a check that comes from no network (tools, tests)."""


class ServerBusy(ChatError):
    code = "busy"

    def __init__(self) -> None:
        super().__init__("The server is busy checking passwords. Try again in a moment.")


def hash_problem(stored: str) -> str | None:
    """Why ``stored``, which starts like an argon2id hash, cannot be used; None if it
    can (it is then checked as a hash)."""
    try:
        parameters = argon2.extract_parameters(stored)
    except InvalidHashError:
        return "an $argon2id$ field that is not a valid argon2id hash"
    if parameters.type is not argon2.Type.ID:
        return "a hash that is not argon2id"
    if (
        parameters.memory_cost > MAX_MEMORY_KIB
        or parameters.time_cost > MAX_TIME_COST
        or parameters.parallelism > MAX_PARALLELISM
    ):
        return (
            f"an argon2id hash too costly to check (m={parameters.memory_cost} KiB, "
            f"t={parameters.time_cost}, p={parameters.parallelism}; at most "
            f"m={MAX_MEMORY_KIB}, t={MAX_TIME_COST}, p={MAX_PARALLELISM})"
        )
    return None


def is_hash(stored: str) -> bool:
    """Whether a password field is an argon2id hash (checked by :func:`hash_problem`
    when the file is read, so a field that passes here is a usable one)."""
    return stored.startswith(HASH_PREFIX)


def make_hash(password: str) -> str:
    """A new argon2id hash of ``password`` (30 ms of a core: call it off the reactor)."""
    return HASHER.hash(password)


def matches_hash(stored: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (blocking)."""
    try:
        return bool(HASHER.verify(stored, password))
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        return False


def matches_clear(stored: str, password: str) -> bool:
    return hmac.compare_digest(stored.encode("utf-8"), password.encode("utf-8"))


HashCheck = Callable[[str, str, str], Deferred[bool]]
"""Checks a password against a stored hash, off the reactor thread: (stored,
password, the network the attempt came from)."""


def verify_stored(
    stored: str, password: str, check_hash: HashCheck, network: str = LOCAL
) -> Deferred[bool]:
    """Whether ``password`` is the one ``stored`` (clear, or an argon2id hash) stands
    for. A hash is checked again here (its costs bounded, :func:`hash_problem`): it may
    come from Redis, which other nodes and tools write, not only from a file we read."""
    if stored == RESERVED:
        return succeed(False)
    if is_hash(stored):
        if hash_problem(stored) is not None:
            return succeed(False)
        return check_hash(stored, password, network)
    return succeed(matches_clear(stored, password))


class HashChecker:
    """Hash checks in a bounded pool of threads of their own, a bounded queue before
    it, each network's share of that queue bounded too. Start it with the server and
    :meth:`stop` it with the server."""

    def __init__(
        self,
        reactor: Any,
        threads: int = THREADS,
        waiting: int = MAX_WAITING,
        stats: Stats | None = None,
        share: int = SHARE,
        line: int = LINE,
        check: Callable[[str, str], Deferred[bool]] | None = None,
    ) -> None:
        """``check`` runs one check (by default :func:`matches_hash` in the pool; a
        test gives its own to decide when each finishes)."""
        self._reactor = reactor
        self._stats = stats or Stats()
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="password-checks")
        self._capacity = threads + waiting
        self._share = share
        self._line = line
        self._in_flight = 0
        self._per_network: dict[str, int] = {}
        """Checks in the pool per network (absent: none)."""
        self._lines: dict[str, deque[tuple[Deferred[bool], str, str]]] = {}
        """Checks waiting for their network's share (absent: none waiting)."""
        self._started = False
        self._check = check or self._in_pool

    def __call__(self, stored: str, password: str, network: str = LOCAL) -> Deferred[bool]:
        if self._per_network.get(network, 0) < self._share:
            if self._in_flight >= self._capacity:
                return self._busy()
            return self._run(stored, password, network)
        line = self._lines.setdefault(network, deque())
        if len(line) >= self._line:
            return self._busy()
        waiting: Deferred[bool] = Deferred()
        line.append((waiting, stored, password))
        return waiting

    def _busy(self) -> Deferred[bool]:
        self._stats.hash_refusals += 1
        return fail(ServerBusy())

    def _in_pool(self, stored: str, password: str) -> Deferred[bool]:
        if not self._started:
            self._pool.start()
            self._started = True
        return deferToThreadPool(self._reactor, self._pool, matches_hash, stored, password)

    def _run(self, stored: str, password: str, network: str) -> Deferred[bool]:
        self._in_flight += 1
        self._per_network[network] = self._per_network.get(network, 0) + 1

        def done(result: object) -> object:
            self._in_flight -= 1
            left = self._per_network[network] - 1
            if left:
                self._per_network[network] = left
            else:
                del self._per_network[network]
            self._next_of(network)
            return result

        return self._check(stored, password).addBoth(done)

    def _next_of(self, network: str) -> None:
        """The network's share has room again: its next waiting check goes in."""
        line = self._lines.get(network)
        if not line:
            return
        waiting, stored, password = line.popleft()
        if not line:
            del self._lines[network]
        self._run(stored, password, network).chainDeferred(waiting)

    def queued(self) -> int:
        """Checks running or waiting for a thread."""
        return self._in_flight

    def stop(self) -> None:
        if self._started:
            self._pool.stop()
            self._started = False


def check_inline(stored: str, password: str, network: str = LOCAL) -> Deferred[bool]:
    """A :data:`HashCheck` that runs at once, in this thread (tests, tools)."""
    return succeed(matches_hash(stored, password))
