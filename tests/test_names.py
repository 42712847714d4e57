"""Usernames that could pass for another user are refused for new accounts; names are
compared in NFC; existing accounts keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import HANDOUT_USERS, Server
from twisted_chat.server import names


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("h\u0430ns", "one script", id="cyrillic-a-in-latin"),
        pytest.param("\u3164", "invisible or blank", id="hangul-filler"),
        pytest.param("\u2800", "invisible or blank", id="braille-blank"),
        pytest.param("ha\u200bns", "invisible or blank", id="zero-width-space"),
        pytest.param("luke\u00ad", "invisible or blank", id="soft-hyphen"),
        pytest.param("hans(private)", "':', '(' or ')'", id="parentheses"),
        pytest.param("hans:", "':', '(' or ')'", id="colon"),
        pytest.param("\u0301abc", "combining mark", id="leading-combining-mark"),
        pytest.param("jose\u0301", "normal form", id="not-nfc"),
    ],
)
def test_names_no_new_account_may_take(name: str, reason: str) -> None:
    problem = names.new_name_problem(name)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "name", ["hans", "r2d2", "josé", "Ωμέγα", "Владимир", "日本語ひらがな", "한국漢字", "a.b-c_d"]
)
def test_ordinary_names_in_any_one_script_are_fine(name: str) -> None:
    assert names.new_name_problem(name) is None


def test_look_alikes_share_a_skeleton_case_and_marks_included() -> None:
    assert names.skeleton("h\u0430ns") == names.skeleton("hans")
    assert names.skeleton("1uke") == names.skeleton("luke") == names.skeleton("Iuke")
    assert names.skeleton("\u04bb\u0430\u0455") == names.skeleton("has")  # all Cyrillic
    # Logins are case-sensitive (the handout's rule), but a new Yoda passes for yoda.
    assert names.skeleton("Yoda") == names.skeleton("yoda")
    assert names.skeleton("hans\u0300") == names.skeleton("hans")
    assert names.skeleton("l\u0131ke") == names.skeleton("like")  # dotless i


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        ("hans", "Hans"),
        ("hans", "hans\u0300"),  # a combining grave accent: no precomposed form
        ("like", "l\u0131ke"),  # dotless i
        ("jose", "jos\u00e9"),
    ],
)
def test_a_new_name_that_differs_only_by_case_or_marks_is_refused(
    tmp_path: Path, existing: str, new: str
) -> None:
    server = Server(tmp_path)
    if existing not in HANDOUT_USERS:
        assert server.connect().login(existing, "pass-word1")["type"] == "ok"
    reply = server.connect()
    reply.hello()
    refused = reply.send("login", user=new)
    assert refused["code"] == "invalid-username"
    assert f"looks too much like {existing}" in refused["text"]


def test_phonetic_letters_are_refused_and_living_languages_letters_are_not() -> None:
    small_capitals = "\u029c\u1d00\u0274s"  # small capital H, A, N, then s
    problem = names.new_name_problem(small_capitals)
    assert problem is not None and "U+029C" in problem
    assert names.new_name_problem("\u0259li") is None  # schwa: Azerbaijani
    assert names.new_name_problem("\u0254k\u0254") is None  # open o: Twi, Ewe
    devanagari = "\u0928\u092e\u0938\u094d\u0924\u0947"  # namaste, with its marks
    assert names.new_name_problem(devanagari) is None


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def refused(server: Server, name: str) -> dict[str, object]:
    connection = server.connect()
    connection.hello()
    return connection.send("login", user=name)


@pytest.mark.parametrize(
    "name",
    ["h\u0430ns", "\u3164", "\u2800", "hans(private)", "1uke", "\u04bb\u0430\u0578\u0455"],
)
def test_the_server_refuses_them_before_asking_a_password(server: Server, name: str) -> None:
    reply = refused(server, name)
    assert reply["type"] == "error" and reply["code"] == "invalid-username", reply
    assert name not in server.credentials.read_text()


def test_a_look_alike_is_told_whom_it_looks_like(server: Server) -> None:
    reply = refused(server, "1uke")
    assert reply["text"] == "Error. The username 1uke looks too much like luke. Choose another."


def test_after_a_refused_name_the_client_can_choose_another(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="h\u0430ns")["type"] == "error"
    assert connection.send("login", user="han")["account"] == "new"


def test_composed_and_decomposed_forms_are_one_account(server: Server) -> None:
    connection = server.connect()
    connection.hello()
    assert connection.send("login", user="jos\u00e9")["account"] == "new"
    assert connection.send("password", password="pw")["type"] == "ok"
    other = server.connect()
    other.hello()
    # The decomposed form is the same user: already online, not a second account.
    reply = other.send("login", user="jose\u0301")
    assert reply["code"] == "already-online"
    luke = server.online("luke")
    assert luke.send("message", to="jose\u0301", text="hola")["type"] == "ok"
    assert [e["text"] for e in connection.events() if e["type"] == "message"] == ["hola"]


def test_existing_accounts_with_such_names_keep_working(tmp_path: Path) -> None:
    server = Server(tmp_path)
    with server.credentials.open("a") as f:
        f.write("\nhan(solo) falcon\n")
    connection = server.connect()
    assert connection.login("han(solo)", "falcon")["type"] == "ok"
