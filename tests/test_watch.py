"""The credentials watcher on the real reactor and the real kernel (inotify)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from twisted_chat.server.watch import watch_file

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


class Changes:
    """Counts ``changed()`` calls; ``next()`` waits for the next one (5 s at most)."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: Deferred[None] | None = None

    def __call__(self) -> None:
        self.count += 1
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def next(self) -> Deferred[None]:
        self._waiting = Deferred()
        return self._waiting.addTimeout(5, reactor)


async def settle() -> None:
    await deferLater(reactor, 0.1, lambda: None)


@dataclass
class Watched:
    """A credentials file under watch, the changes seen, and how to stop."""

    path: Path
    changes: Changes
    stop: Callable[[], None]


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    path = tmp_path / "credentials.txt"
    path.write_text("hans solo\n")
    changes = Changes()
    stop = watch_file(reactor, path, changes)
    assert stop is not None
    stopped: list[bool] = []

    def stop_once() -> None:
        if not stopped:
            stopped.append(True)
            stop()

    yield Watched(path, changes, stop_once)
    stop_once()


@pytest_twisted.ensureDeferred
async def test_appending_and_replacing_the_file_are_both_seen(watched: Watched) -> None:
    path, changes = watched.path, watched.changes
    seen = changes.next()
    with path.open("a") as f:  # an append by hand: seen when the file is closed
        f.write("lando calrissian\n")
    await seen
    await settle()
    before = changes.count
    seen = changes.next()
    # What editors and our own atomic rewrite do: a new file renamed over the old.
    (path.parent / "new.tmp").write_text("hans solo\n")
    os.replace(path.parent / "new.tmp", path)
    await seen
    assert changes.count > before


@pytest_twisted.ensureDeferred
async def test_other_files_in_the_directory_are_ignored(watched: Watched) -> None:
    path, changes = watched.path, watched.changes
    (path.parent / "chat-state.sqlite3").write_text("x")  # created, written, closed
    (path.parent / "chat-state.sqlite3").unlink()
    seen = changes.next()
    with path.open("a") as f:  # the kernel reports in order: this comes last
        f.write("lando calrissian\n")
    await seen
    await settle()
    assert changes.count == 1


@pytest_twisted.ensureDeferred
async def test_no_calls_after_stop(watched: Watched) -> None:
    watched.stop()
    with watched.path.open("a") as f:
        f.write("lando calrissian\n")
    await settle()
    assert watched.changes.count == 0
