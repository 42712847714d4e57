"""Passwords stored as argon2id hashes: checked off the reactor thread, the lockout
checked first, a bounded queue, hostile hash parameters refused, new accounts hashed on
request, and a whole file converted in place."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tests.harness import Server, run_inline, verified, write_credentials
from twisted_chat.server import hashfile, passwords
from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.credfile import parse_credentials
from twisted_chat.server.hashfile import hash_credentials
from twisted_chat.server.passwords import (
    RESERVED,
    HashChecker,
    ServerBusy,
    hash_problem,
    make_hash,
)

HANS_HASH = make_hash("falcon*solo")


def test_a_hashed_line_is_checked_against_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(f"hans {HANS_HASH}\nluke =hope+\n")
    accounts = CredentialsFile(path, run_inline)
    assert verified(accounts, "hans", "falcon*solo")
    assert not verified(accounts, "hans", "falcon")
    assert not verified(accounts, "hans", HANS_HASH)  # the hash is not the password
    assert verified(accounts, "luke", "=hope+")  # plain lines keep working


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ("$argon2id$v=19$m=19456,t=2,p=1$bm90", "not a valid argon2id hash"),
        ("$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43, "too costly"),
        ("$argon2id$v=19$m=19456,t=100,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43, "too costly"),
    ],
)
def test_an_unusable_hash_skips_its_line_and_is_never_a_password_in_clear(
    field: str, why: str
) -> None:
    parsed = parse_credentials(f"hans {field}\nluke =hope+\n".encode(), "f")
    # Reserved: neither a password in clear nor a name a stranger could take.
    assert parsed.accounts["hans"] == RESERVED and "luke" in parsed.accounts
    (problem,) = parsed.problems
    assert problem.startswith("f, line 1: ") and why in problem
    assert problem.endswith("nobody can log in as hans or take the name until it is fixed")
    assert hash_problem(HANS_HASH) is None


def test_the_lockout_is_checked_before_any_hash(tmp_path: Path) -> None:
    server = Server(tmp_path, "--block-duration", "60")
    checks: list[str] = []
    accounts = server.chat.accounts
    assert isinstance(accounts, CredentialsFile)
    accounts._accounts["yoda"] = make_hash("wise@!man")
    real_check = accounts._check_hash

    def counting(stored: str, password: str, network: str) -> Deferred[bool]:
        checks.append(password)
        return real_check(stored, password, network)

    accounts._check_hash = counting
    for guess in ("a", "b", "c"):
        assert server.connect().login("yoda", guess)["type"] == "error"
    assert checks == ["a", "b", "c"]
    reply = server.connect().login("yoda", "wise@!man")
    assert reply["code"] == "locked"
    assert checks == ["a", "b", "c"]  # a locked name cost no hash check at all


def test_a_right_password_checked_while_the_name_got_locked_does_not_get_in(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    accounts = server.chat.accounts
    assert isinstance(accounts, CredentialsFile)
    accounts._accounts["yoda"] = make_hash("wise@!man")
    waiting: list[tuple[Deferred[bool], bool]] = []

    def slow(stored: str, password: str, network: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        waiting.append((d, passwords.matches_hash(stored, password)))
        return d

    accounts._check_hash = slow
    guessers = [server.connect() for _ in range(4)]
    for guesser, guess in zip(guessers, ("a", "b", "c", "wise@!man"), strict=True):
        guesser.hello()
        guesser.send_raw(b'{"type":"login","user":"yoda","id":1}\n')
        guesser.send_raw(f'{{"type":"password","password":"{guess}","id":2}}\n'.encode())
    for d, result in waiting:  # the checks come back: three wrong, then the right one
        d.callback(result)
    replies = [[f for f in g.received() if f.get("id") == 2] for g in guessers]
    assert replies[-1][0]["code"] == "locked"
    assert "yoda" not in server.chat.online


def test_the_queue_of_checks_is_bounded() -> None:
    checker = HashChecker(reactor, threads=1, waiting=1)
    try:
        first = checker(HANS_HASH, "x")
        second = checker(HANS_HASH, "y")
        third = checker(HANS_HASH, "z")
        refused: list[object] = []
        third.addErrback(lambda f: refused.append(f.value))
        assert isinstance(refused[0], ServerBusy)
        for d in (first, second):
            d.addErrback(lambda _: None)
    finally:
        checker.stop()


def test_new_accounts_are_hashed_on_request(tmp_path: Path) -> None:
    server = Server(tmp_path, "--hash-new-passwords")
    jaba = server.connect()
    assert jaba.login("jaba", "hutt")["type"] == "ok"
    line = server.credentials.read_text().splitlines()[-1]
    user, stored = line.split()
    assert user == "jaba" and stored.startswith("$argon2id$") and "hutt" not in line
    assert server.online("luke")  # the plain accounts still log in
    jaba.send("logout")
    assert server.connect().login("jaba", "hutt")["type"] == "ok"  # checked against the hash
    assert server.connect().login("hans", "wrong")["code"] == "wrong-password"


COSTLY = (
    "$argon2id$v=19$m=262144,t=16,p=8$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


@pytest.mark.parametrize("mode", [(), ("--hash-new-passwords",)])
@pytest.mark.parametrize(
    "password", [COSTLY, "$argon2id$abc", "$2b$12$abcdefghijklmnop", "$6$salt$x", "$scrypt$x"]
)
def test_a_password_chosen_over_the_wire_is_never_read_as_a_hash(
    tmp_path: Path, mode: tuple[str, ...], password: str
) -> None:
    """Stored in clear, a password that looks like a hash would be checked as one: its
    chooser would set what each login costs, or make the account unusable (and, after
    a restart, free its name)."""
    server = Server(tmp_path, *mode)
    rey = server.connect()
    rey.hello()
    assert rey.send("login", user="rey")["account"] == "new"
    refused = rey.send("password", password=password)
    assert refused["code"] == "invalid-password"
    assert refused["text"] == (
        "Error. A password cannot start like a stored hash ($name$...): choose another."
    )
    assert "rey" not in server.credentials.read_text()
    assert rey.send("password", password="$till-a-fine-password")["type"] == "ok"


def test_a_file_converted_in_place_keeps_mode_link_and_odd_lines(tmp_path: Path) -> None:
    real = write_credentials(tmp_path / "real.txt")
    with real.open("ab") as f:
        f.write(f"\nhans2 {HANS_HASH}\nthis line has four fields\n".encode())
    real.chmod(0o640)
    link = tmp_path / "credentials.txt"
    link.symlink_to(real.name)
    result = hash_credentials(link)
    assert result.hashed == 10 and result.kept == 2
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o640
    text = real.read_text()
    assert "falcon*solo" not in text and "this line has four fields" in text
    assert f"hans2 {HANS_HASH}" in text  # an existing hash is left as it was
    accounts = CredentialsFile(link, run_inline)
    assert verified(accounts, "hans", "falcon*solo") and verified(accounts, "hans2", "falcon*solo")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert hash_credentials(link).hashed == 0  # converting again changes nothing


def test_an_append_waiting_for_the_lock_lands_in_the_converted_file(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt")
    accounts = CredentialsFile(path, run_inline)
    hash_credentials(path)  # replaced under the server, which still knows the old file
    done: list[object] = []
    accounts.create("jaba", "hutt").addBoth(done.append)
    assert done == [None]
    assert path.read_text().splitlines()[-1] == "jaba hutt"
    assert "falcon*solo" not in path.read_text()


def test_a_read_only_file_is_not_converted(tmp_path: Path) -> None:
    """Its operator meant it not to change: renaming a new file over it would."""
    path = write_credentials(tmp_path / "credentials.txt")
    path.chmod(0o444)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exited:
        hashfile.run([str(path)], "chat-server")
    assert exited.value.code == f"chat-server: {path} is read-only; make it writable to convert it"
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_verification_runs_off_the_reactor_thread() -> None:
    import threading

    seen: list[str] = []
    original = passwords.matches_hash

    def recording(stored: str, password: str) -> bool:
        seen.append(threading.current_thread().name)
        return original(stored, password)

    passwords.matches_hash = recording
    checker = HashChecker(reactor)
    try:
        result = checker(HANS_HASH, "falcon*solo")
        assert isinstance(result, Deferred)
    finally:
        passwords.matches_hash = original
    result.addErrback(lambda _: None)  # fires only when a reactor runs: not here
    checker.stop()  # joins the pool: the check has finished
    assert seen and seen[0] != threading.current_thread().name


class PendingChecks:
    """Checks that finish when the test says (the pool's threads stand still)."""

    def __init__(self) -> None:
        self.running: list[tuple[str, Deferred[bool]]] = []

    def __call__(self, stored: str, password: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.running.append((password, d))
        return d

    def finish(self, password: str) -> None:
        for i, (running, d) in enumerate(self.running):
            if running == password:
                del self.running[i]
                d.callback(False)
                return
        raise AssertionError(f"{password} is not running")


def test_each_network_has_only_its_share_of_the_pool() -> None:
    """Guesses from 8 networks filled the pool and 19 of 20 real logins got busy; now
    each network has at most 4 checks in the pool, the rest wait in its own line, and a
    login from another network goes straight in."""
    pending = PendingChecks()
    checker = HashChecker(reactor, threads=2, waiting=64, check=pending, share=4, line=16)
    floods = [f"198.51.{n}.0/24" for n in range(8)]
    outcomes: list[object] = []
    for network in floods:
        for n in range(24):
            checker(HANS_HASH, f"{network} guess {n}", network).addBoth(outcomes.append)
    assert len(pending.running) == 8 * 4  # 16 more of each wait, out of the pool
    busy = [o for o in outcomes if isinstance(o, Failure) and o.check(ServerBusy)]
    assert len(busy) == 8 * 4  # past a network's line: busy, and only that network
    real: list[object] = []
    checker(HANS_HASH, "the real one", "203.0.113.0/24").addBoth(real.append)
    assert pending.running[-1][0] == "the real one"  # straight into the pool
    pending.finish("the real one")
    assert real == [False]
    pending.finish("198.51.0.0/24 guess 0")  # a network's check ends: its next goes in
    assert pending.running[-1][0] == "198.51.0.0/24 guess 4"
    assert checker.queued() == 32


def test_a_check_that_waited_for_its_share_gets_its_answer() -> None:
    pending = PendingChecks()
    checker = HashChecker(reactor, check=pending, share=1, line=1)
    first: list[object] = []
    second: list[object] = []
    checker(HANS_HASH, "a", "n").addBoth(first.append)
    checker(HANS_HASH, "b", "n").addBoth(second.append)
    assert [p for p, _ in pending.running] == ["a"] and not second
    pending.finish("a")
    assert first == [False] and [p for p, _ in pending.running] == ["b"]
    pending.finish("b")
    assert second == [False] and checker.queued() == 0
