"""The credentials file: strict parsing, constant-time checks, atomic durable appends."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from tests.harness import run_inline, verified, write_credentials
from twisted_chat.errors import UsernameTaken
from twisted_chat.server.accounts import CredentialsFile
from twisted_chat.server.credfile import parse_credentials


def test_parses_the_handout_file_without_a_final_newline(tmp_path: Path) -> None:
    accounts = CredentialsFile(write_credentials(tmp_path / "c.txt"), run_inline)
    assert len(accounts) == 10
    assert verified(accounts, "r2d2", "do*!@#dedo")
    assert not verified(accounts, "r2d2", "do*!@#ded")
    assert not verified(accounts, "nobody", "x")


def test_a_double_space_does_not_make_an_empty_password() -> None:
    # FilePasswordDB's trap: "alice  secret" would give alice the password "".
    assert parse_credentials(b"alice  secret\n", "f").accounts == {"alice": "secret"}


@pytest.mark.parametrize("text", ["alice\n", "alice pass word\n", "a x\na y\n"])
def test_malformed_lines_are_reported_with_file_and_line(text: str) -> None:
    # Reported and skipped, never fatal: a damaged line must not stop a restart.
    parsed = parse_credentials(("ok fine\n" + text).encode(), "f")
    assert parsed.problems and all(p.startswith("f, line ") for p in parsed.problems)
    assert parsed.accounts["ok"] == "fine"


def test_blank_lines_are_skipped() -> None:
    assert parse_credentials(b"\na b\n\n", "f").accounts == {"a": "b"}


def test_create_appends_a_line_after_a_missing_final_newline(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)
    accounts.create("jaba", "hutt")
    assert path.read_text() == "hans solo\njaba hutt\n"
    assert verified(accounts, "jaba", "hutt")
    accounts.create("boba", "fett")
    assert path.read_text() == "hans solo\njaba hutt\nboba fett\n"
    assert verified(CredentialsFile(path, run_inline), "boba", "fett")


def test_create_keeps_lines_added_by_hand_meanwhile(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)
    with path.open("a") as f:
        f.write("\nlando calrissian\n")
    accounts.create("jaba", "hutt")
    assert path.read_text() == "hans solo\nlando calrissian\njaba hutt\n"


def test_a_failed_write_leaves_the_file_whole_and_no_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    accounts = CredentialsFile(path, run_inline)

    def crash(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", crash)
    failures: list[object] = []
    accounts.create("jaba", "hutt").addErrback(failures.append)
    assert len(failures) == 1
    assert path.read_text() == "hans solo"  # cut back: no line the user was told failed
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


class CountingRunner:
    """Runs blocking calls inline and counts them (each would be a thread round trip)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, f: Callable[..., Any], *args: object) -> Deferred[Any]:
        self.calls += 1
        return run_inline(f, *args)


def test_a_watched_unchanged_file_costs_a_login_no_disk_access(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    runner = CountingRunner()
    accounts = CredentialsFile(path, runner)
    accounts.watched()
    accounts.refresh()  # the first refresh checks: a change before the watch is not lost
    assert runner.calls == 1
    for _ in range(5):
        answered: list[object] = []
        accounts.refresh().addCallback(answered.append)
        assert answered == [None]  # at once
    assert runner.calls == 1


def test_a_watched_file_is_read_again_after_a_change(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    runner = CountingRunner()
    accounts = CredentialsFile(path, runner)
    accounts.watched()
    accounts.refresh()
    with path.open("a") as f:
        f.write("\nlando calrissian")
    accounts.refresh()
    assert not accounts.exists("lando")  # no news from the watcher yet: not read
    accounts.changed()
    accounts.refresh()
    assert verified(accounts, "lando", "calrissian")
    assert runner.calls == 2


def test_a_login_during_a_re_read_waits_for_it(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    waiting: list[tuple[Deferred[Any], Callable[..., Any]]] = []

    def slow(f: Callable[..., Any], *args: object) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        waiting.append((d, lambda: f(*args)))
        return d

    accounts = CredentialsFile(path, slow)
    accounts.watched()
    with path.open("a") as f:
        f.write("\nlando calrissian")
    accounts.refresh()  # stale: goes to the disk, slowly
    second: list[bool] = []
    accounts.refresh().addCallback(lambda _: second.append(accounts.exists("lando")))
    assert second == []  # not answered before the re-read it depends on
    d, work = waiting.pop()
    d.callback(work())
    assert second == [True]


def test_a_failed_re_read_is_tried_again_at_the_next_login(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "c.txt", {"hans": "solo"})
    runner = CountingRunner()
    accounts = CredentialsFile(path, runner)
    accounts.watched()
    path.rename(tmp_path / "elsewhere.txt")
    accounts.refresh()  # the file is gone: logged, accounts kept
    assert verified(accounts, "hans", "solo")
    (tmp_path / "elsewhere.txt").rename(path)
    accounts.refresh()
    assert runner.calls == 2
