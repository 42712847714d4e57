"""Shared fixtures. pytest-twisted does not fail a test that logged an unhandled error
(trial does), so every test here fails if anything logged a failure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[list[dict[str, object]]]:
    failures: list[dict[str, object]] = []

    def observe(event: dict[str, object]) -> None:
        if "log_failure" in event or event.get("log_level") is LogLevel.critical:
            failures.append(event)

    observer = cast(ILogObserver, observe)  # zope cannot declare it of a function
    globalLogPublisher.addObserver(observer)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observer)
    messages = [str(event.get("log_failure", event.get("log_format"))) for event in failures]
    assert not failures, f"failures were logged: {messages}"
