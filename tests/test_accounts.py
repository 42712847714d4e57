"""The credentials file: strict parsing, constant-time checks, atomic durable appends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from tests.harness import run_inline, write_credentials
from twisted_chat.errors import UsernameTaken
from twisted_chat.server.accounts import CredentialsFile, CredentialsFormatError, parse_credentials


def test_parses_the_handout_file_without_a_final_newline(tmp_path: Path) -> None:
    accounts = CredentialsFile(write_credentials(tmp_path / "c.txt"), run_inline)
    assert len(accounts) == 10
    assert accounts.verify("r2d2", "do*!@#dedo")
    assert not accounts.verify("r2d2", "do*!@#ded")
    assert not accounts.verify("nobody", "x")


def test_a_double_space_does_not_make_an_empty_password() -> None:
    # FilePasswordDB's trap: "alice  secret" would give alice the password "".
    assert parse_credentials("alice  secret\n", "f") == {"alice": "secret"}


@pytest.mark.parametrize("text", ["alice\n", "alice pass word\n", "a x\na y\n"])
def test_malformed_lines_are_reported_with_file_and_line(text: str) -> None:
    with pytest.raises(CredentialsFormatError, match=r"^f, line \d"):
        parse_credentials("ok fine\n" + text, "f")


def test_blank_lines_are_skipped() -> None:
    assert parse_credentials("\na b\n\n", "f") == {"a": "b"}


def test_create_appends_a_line_after_a_missing_final_newline(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)
    accounts.create("jaba", "hutt")
    assert path.read_text() == "hans solo\njaba hutt\n"
    assert accounts.verify("jaba", "hutt")
    accounts.create("boba", "fett")
    assert path.read_text() == "hans solo\njaba hutt\nboba fett\n"
    assert CredentialsFile(path, run_inline).verify("boba", "fett")


def test_create_keeps_lines_added_by_hand_meanwhile(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)
    with path.open("a") as f:
        f.write("\nlando calrissian\n")
    accounts.create("jaba", "hutt")
    assert path.read_text() == "hans solo\nlando calrissian\njaba hutt\n"


def test_a_failed_write_leaves_the_file_whole_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    failures: list[object] = []
    accounts.create("jaba", "hutt").addErrback(failures.append)
    assert len(failures) == 1
    assert path.read_text() == "hans solo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
    assert not accounts.exists("jaba")
    monkeypatch.undo()
    results: list[object] = []
    accounts.create("jaba", "hutt").addCallback(results.append)
    assert results == [None]  # the name was released and can be created now


def test_a_name_being_created_is_taken_for_everyone_else(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    waiting: list[Deferred[None]] = []

    def slow(f: object, *args: object) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        waiting.append(d)
        return d

    accounts = CredentialsFile(path, slow)
    accounts.create("jaba", "first")
    failures: list[object] = []
    accounts.create("jaba", "second").addErrback(lambda f: failures.append(f.value))
    assert isinstance(failures[0], UsernameTaken)
    accounts.create("hans", "x").addErrback(lambda f: failures.append(f.value))
    assert isinstance(failures[1], UsernameTaken)  # an existing name is taken too
    assert len(waiting) == 1  # only the first creation reached the file


def test_the_file_mode_is_kept(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    path.chmod(0o600)
    CredentialsFile(path, run_inline).create("jaba", "hutt")
    assert path.stat().st_mode & 0o777 == 0o600
