"""Logging in through the real server protocol: every path of spec §3 and §15."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Server
from twisted_chat.server.credfile import parse_credentials


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, "--block-duration", "60", "--timeout", "120")


def test_hello_reports_version_and_limits(server: Server) -> None:
    reply = server.connect().hello()
    assert reply["type"] == "ok"
    assert reply["version"] == 2
    assert reply["max_text"] == 1000


def test_hello_with_another_version_is_refused_and_closed(server: Server) -> None:
    connection = server.connect()
    reply = connection.send("hello", version=1)  # a client from before sealed sessions
    assert reply["code"] == "bad-state"
    assert connection.lost


def test_commands_before_hello_or_login_are_refused(server: Server) -> None:
    connection = server.connect()
    assert connection.send("whoelse")["code"] == "bad-state"
    connection.hello()
    assert connection.send("whoelse")["code"] == "not-logged-in"
    assert connection.send("password", password="x")["code"] == "bad-state"
    assert not connection.lost


def test_existing_user_logs_in(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="yoda") == {"type": "ok", "id": 2, "account": "existing"}
    assert connection.send("password", password="wise@!man")["user"] == "yoda"
    assert server.chat.is_online("yoda")


def test_wrong_password_asks_again_then_the_right_one_works(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    connection.send("login", user="yoda")
    reply = connection.send("password", password="nope")
    assert reply["code"] == "wrong-password"
    assert "2 tries left" in reply["text"]
    assert connection.send("password", password="wise@!man")["type"] == "ok"


def test_three_wrong_passwords_lock_the_username_and_close(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    connection.send("login", user="yoda")
    connection.send("password", password="a")
    connection.send("password", password="b")
    reply = connection.send("password", password="c")
    assert reply["code"] == "locked"
    assert "blocked" in reply["text"]
    assert connection.lost


def test_lock_holds_from_every_client_until_it_expires(server: Server) -> None:
    first = server.connect()
    first.hello()
    first.send("login", user="yoda")
    for wrong in ("a", "b", "c"):
        first.send("password", password=wrong)
    server.advance(59.99)
    second = server.connect()
    reply = second.login("yoda")  # the right password, during the lock
    assert reply["code"] == "locked"
    assert "multiple login failures" in reply["text"]
    assert second.lost
    server.advance(0.01)
    assert server.connect().login("yoda")["type"] == "ok"


def test_attempts_during_a_lock_neither_count_nor_extend_it(server: Server) -> None:
    for _ in range(3):
        connection = server.connect()
        connection.hello()
        connection.send("login", user="luke")
        connection.send("password", password="wrong")
    server.advance(30)
    late = server.connect()
    assert late.login("luke", "wrong")["code"] == "locked"
    server.advance(30)
    # Expired after the original 60 s, and the count starts from zero again.
    retry = server.connect()
    assert retry.login("luke", "wrong")["code"] == "wrong-password"
    assert retry.send("password", password="=hope+")["type"] == "ok"


def test_failures_count_across_connections(server: Server) -> None:
    for wrong in ("a", "b"):
        connection = server.connect()
        assert connection.login("hans", wrong)["code"] == "wrong-password"
        connection.close()
    assert server.connect().login("hans", "c")["code"] == "locked"


def test_a_success_resets_the_count(server: Server) -> None:
    connection = server.connect()
    connection.login("hans", "a")
    connection.send("password", password="b")
    connection.send("password", password="falcon*solo")
    connection.send("logout")
    reply = server.connect().login("hans", "x")
    assert reply["code"] == "wrong-password"
    assert "2 tries left" in reply["text"]


def test_duplicate_login_is_refused_right_after_the_username(server: Server) -> None:
    server.online("hans")
    second = server.connect()
    second.hello()
    reply = second.send("login", user="hans")
    assert reply["code"] == "already-online"
    assert not second.lost
    assert second.send("login", user="yoda")["account"] == "existing"


def test_new_user_gets_an_account_appended_to_the_file(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="jaba")["account"] == "new"
    assert connection.send("password", password="hutt!")["user"] == "jaba"
    text = server.credentials.read_text()
    assert text.endswith("palpatine sithlord**\njaba hutt!\n")
    connection.send("logout")
    assert server.connect().login("jaba", "hutt!")["type"] == "ok"


def test_new_account_password_must_be_one_printable_word(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    connection.send("login", user="jaba")
    assert connection.send("password", password="two words")["code"] == "invalid-password"
    assert connection.send("password", password="")["code"] == "invalid-password"
    assert connection.send("password", password="ok")["type"] == "ok"
    assert "jaba ok" in server.credentials.read_text()


@pytest.mark.parametrize("name", ["", "has space", "tab\there", "x" * 33, "bell\x07"])
def test_invalid_usernames_get_a_clear_error(server: Server, name: str) -> None:
    connection = server.connect()
    connection.hello()
    reply = connection.send("login", user=name)
    assert reply["code"] == "invalid-username"
    assert reply["text"].startswith("Error.")


def test_usernames_are_case_sensitive_and_no_new_one_differs_only_by_case(
    tmp_path: Path,
) -> None:
    """Logins match exactly (the handout's rule): two accounts in the file that differ
    only by case stay two. But a *new* Yoda would pass for yoda, and is refused."""
    parsed = parse_credentials(b"luke =hope+\nLuke other-pass\n", "credentials.txt")
    assert parsed.accounts == {"luke": "=hope+", "Luke": "other-pass"}  # both kept
    assert parsed.notes == [
        "credentials.txt, line 2: Luke is kept, but no new account could take that "
        "name (looks like luke)"
    ]
    server = Server(tmp_path)
    connection = server.connect()
    connection.hello()
    refused = connection.send("login", user="Yoda")
    assert refused["code"] == "invalid-username" and "looks too much like yoda" in refused["text"]


def test_a_client_leaving_mid_login_leaves_no_trace(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    connection.send("login", user="hans")
    connection.close()
    assert not server.chat.is_online("hans")
    assert server.connect().login("hans")["type"] == "ok"


def test_a_pipelined_login_is_served_in_order(server: Server) -> None:
    """hello, login and password in one write: the login step waits on a file check
    off the reactor thread, and the password must wait for it, not be refused."""
    from twisted.internet.defer import Deferred

    waiting: list[tuple[Deferred[object], object]] = []

    def slow(f: object, *args: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        waiting.append((d, f))
        return d

    server.chat.accounts._run_blocking = slow  # type: ignore[attr-defined]
    connection = server.connect()
    frames = connection.send_raw(
        b'{"type":"hello","version":2,"id":1}\n'
        b'{"type":"login","user":"hans","id":2}\n'
        b'{"type":"password","password":"falcon*solo","id":3}\n'
    )
    assert [f["id"] for f in frames] == [1]  # the rest waits for the file check
    d, check = waiting.pop()
    d.callback(check())  # type: ignore[operator]
    frames = connection.received()
    assert [(f["id"], f["type"]) for f in frames] == [(2, "ok"), (3, "ok")]
    assert server.chat.is_online("hans")


@pytest.mark.parametrize(
    ("duration", "said"), [("60", "60 s"), ("90", "90 s"), ("300", "5 min"), ("150", "2 min 30 s")]
)
def test_a_lockout_says_for_how_long(tmp_path: Path, duration: str, said: str) -> None:
    server = Server(tmp_path, "--block-duration", duration)
    replies = [server.connect().login("yoda", guess) for guess in ("a", "b", "c")]
    assert replies[-1]["text"] == (
        f"Invalid password. Your account has been blocked for {said}. Please try again later."
    )
    server.advance(30)
    later = server.connect().login("yoda", "wise@!man")
    left = {"60": "30 s", "90": "60 s", "300": "4 min 30 s", "150": "2 min"}[duration]
    assert later["text"] == (
        f"Your account is blocked due to multiple login failures for {left}. "
        "Please try again later."
    )
