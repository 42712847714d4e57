"""Log events captured while a ``with`` block runs, for tests that check what an
operator is told."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

LogEvent = dict[str, Any]


@contextmanager
def log_events() -> Iterator[list[LogEvent]]:
    """Every event logged inside the block, in order."""
    events: list[LogEvent] = []
    # Any callable taking an event is an observer; zope cannot declare that of a method.
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def formatted(events: list[LogEvent]) -> list[str]:
    """The events as an operator's log shows them."""
    return [formatEvent(event) for event in events]
