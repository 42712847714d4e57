"""The coordinator's side of the load-generating processes (``worker``): each one a
child speaking JSON lines on its standard streams; and the progress line redrawn
while a phase runs."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (``q`` from 0 to 1: 0.99 is p99), nearest rank."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is from 0 to 1, not {q}")
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class WorkerProcess(ProcessProtocol):
    """One load-generating process, driven over its stdin and stdout."""

    def __init__(self, index: int, reactor: Any) -> None:
        self.index = index
        self._reactor = reactor
        self.done = 0
        """The worker's latest progress count."""
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._stderr = b""
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._waiting: dict[str, Deferred[dict[str, Any]]] = {}

    def command(self, cmd: str, **fields: Any) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")

    def next(self, event: str, wait: float) -> Deferred[dict[str, Any]]:
        """The next ``event`` from this worker (an error after ``wait`` seconds)."""
        queued = self._events.get(event)
        if queued:
            return succeed(queued.pop(0))
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiting[event] = d
        return d.addTimeout(wait, self._reactor)

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            name = event["event"]
            if name == "progress":
                self.done = event["done"]
            elif name == "crashed":
                self._fail(RuntimeError(f"worker {self.index} crashed:\n{event['error']}"))
            elif name in self._waiting:
                self._waiting.pop(name).callback(event)
            else:
                self._events.setdefault(name, []).append(event)

    def errReceived(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        if not reason.check(ProcessDone):
            stderr = self._stderr.decode("utf-8", "replace")
            self._fail(RuntimeError(f"worker {self.index} ended: {reason.value}\n{stderr}"))
        self.ended.callback(None)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(error)

    def kill(self) -> None:
        """End the worker by its PID if it is still running."""
        if self.transport is not None and not self.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("KILL")


class Progress:
    """What the run is doing, redrawn in place on a terminal, a line every 10 s in a
    log."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.interactive = sys.stdout.isatty()
        self.label = ""
        self.total = 0
        self.workers: list[WorkerProcess] = []
        self._last_line = 0.0
        self._loop = LoopingCall(self._show)

    def phase(self, label: str, total: int, workers: list[WorkerProcess]) -> None:
        self.end()
        self.label, self.total, self.workers = label, total, workers
        for worker in workers:
            worker.done = 0
        self._last_line = time.monotonic()
        self._loop.start(0.5, now=False)

    def end(self) -> None:
        if self._loop.running:
            self._loop.stop()
            if self.interactive:
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()

    def _show(self) -> None:
        done = sum(w.done for w in self.workers)
        text = f"  {self.label}: {done:,}/{self.total:,}"
        if self.interactive:
            sys.stdout.write("\r\x1b[K" + text)
            sys.stdout.flush()
        elif time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            self.say(text)
