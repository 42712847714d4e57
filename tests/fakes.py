"""Recording fakes for the client session's collaborators."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from twisted_chat import wire
from twisted_chat.client.link import ServerError
from twisted_chat.client.seams import PeerEvents
from twisted_chat.text import visible


class RecordingDisplay:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.styles: list[str] = []
        self.prompts: list[tuple[str, bool]] = []
        self.status: int | None = None
        self.status_line = ""

    def show(self, text: str, style: str = "") -> None:
        # The real consoles show one line per call and make controls visible.
        self.lines.append(visible(text))
        self.styles.append(style)

    def ask(self, prompt: str, secret: bool = False) -> None:
        self.prompts.append((prompt, secret))

    def show_status(self, text: str) -> None:
        self.status_line = text

    def finish(self, status: int) -> None:
        assert self.status is None, "finish called twice"
        self.status = status

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class ScriptedLink:
    """Records requests; each waits for the test to answer it."""

    def __init__(self) -> None:
        self.requests: list[tuple[wire.Frame, Deferred[dict[str, Any]]]] = []

    def request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.requests.append((frame, d))
        return d

    def sent(self) -> list[wire.Frame]:
        return [frame for frame, _ in self.requests]

    def answer(self, result: dict[str, Any] | None = None, **fields: Any) -> wire.Frame:
        """Answer the oldest unanswered request with ok."""
        frame, d = self._oldest()
        d.callback(dict(result or {}, **fields))
        return frame

    def fail(self, code: str, text: str) -> wire.Frame:
        frame, d = self._oldest()
        d.errback(ServerError(code, text))
        return frame

    def _oldest(self) -> tuple[wire.Frame, Deferred[dict[str, Any]]]:
        for frame, d in self.requests:
            if not d.called:
                return frame, d
        raise AssertionError("no request is waiting for an answer")


FAKE_FINGERPRINT = "ab" * 32


class FakePeers:
    fingerprint = FAKE_FINGERPRINT

    def __init__(self) -> None:
        self.events: PeerEvents | None = None
        self.sessions: set[str] = set()
        self.expected: dict[str, tuple[str, str]] = {}
        self.connects: list[tuple[str, str, int, str, str]] = []
        self.sent: list[tuple[str, str]] = []
        self.stopped: list[tuple[str, str]] = []
        self.reachable = True
        self.consents: set[str] = set()

    def bind(self, events: PeerEvents) -> None:
        self.events = events

    def listen(self, me: str) -> Deferred[int]:
        return succeed(4321)

    def consented(self, user: str) -> None:
        self.consents.add(user)

    def withdrawn(self, user: str) -> None:
        self.consents.discard(user)

    def expect(self, user: str, token: str, fingerprint: str) -> None:
        self.consents.discard(user)
        self.expected[user] = (token, fingerprint)

    def connect(
        self, user: str, host: str, port: int, token: str, fingerprint: str
    ) -> Deferred[None]:
        self.connects.append((user, host, port, token, fingerprint))
        return Deferred()

    def session_code(self, user: str) -> str | None:
        return "0000 1111 2222 3333 4444" if user in self.sessions else None

    def has(self, user: str) -> bool:
        return user in self.sessions

    def open_sessions(self) -> list[str]:
        return sorted(self.sessions)

    def send(self, user: str, text: str) -> bool:
        if not self.reachable:
            self.sessions.discard(user)
            return False
        self.sent.append((user, text))
        return True

    def stop(self, user: str) -> None:
        self.sessions.discard(user)
        self.stopped.append((user, "stop"))

    def stop_all(self, reason: str) -> None:
        for user in sorted(self.sessions):
            self.stopped.append((user, reason))
        self.sessions.clear()
