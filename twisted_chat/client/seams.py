"""What the client's session talks to, as typed Protocols: the user's screen
(:class:`Display`), the server link (:class:`Link`) and private sessions straight
between clients (:class:`PeerNetwork`, which reports back through
:class:`PeerEvents`). The consoles, ``link`` and ``peer`` implement them; unit tests
record them. Also the exit statuses every way out uses."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from twisted_chat import wire

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
"""The shell's convention for a program ended by Ctrl-C (128 + SIGINT)."""


class Display(Protocol):
    """What the user sees. The console implements it; tests record it."""

    def show(self, text: str, style: str = "") -> None:
        """Print one line for the user. ``style`` (``error``, ``message``, ``private``,
        ``presence``) lets a terminal colour it. ``text`` may hold what others sent:
        every control character in it (a line break included) is shown visibly
        (``twisted_chat.text.visible``), never obeyed."""

    def ask(self, prompt: str, secret: bool = False) -> None:
        """Wait for the next line, showing ``prompt``; ``secret`` hides what is typed."""

    def show_status(self, text: str) -> None:
        """What a status bar says now (who you are, private chats, waiting requests);
        a console without one ignores it."""

    def finish(self, status: int) -> None:
        """The session is over: restore the terminal and exit with ``status``."""


class Link(Protocol):
    def request(self, frame: wire.Frame) -> Deferred[dict[str, Any]]: ...


class PeerEvents(Protocol):
    """What the peer network tells the session."""

    def peer_opened(self, user: str) -> None: ...
    def peer_text(self, user: str, text: str) -> None: ...
    def peer_closed(self, user: str, reason: str) -> None: ...


class PeerNetwork(Protocol):
    """Private sessions straight between clients (see ``client/peer.py``)."""

    def bind(self, events: PeerEvents) -> None:
        """Report openings, texts and closings to ``events``."""

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the certificate this client shows its peers."""

    def listen(self, me: str) -> Deferred[int]:
        """Start accepting peers for user ``me``; fires with the port."""

    def consented(self, user: str) -> None:
        """We said yes to ``user``'s request: their hello may come before the approval
        (a hello from anyone else is refused at once)."""

    def withdrawn(self, user: str) -> None:
        """The request with ``user`` ended before an approval."""

    def expect(self, user: str, token: str, fingerprint: str) -> None:
        """``user`` will connect presenting ``token`` (once), over TLS with the
        certificate whose fingerprint is ``fingerprint``."""

    def connect(
        self, user: str, host: str, port: int, token: str, fingerprint: str
    ) -> Deferred[None]:
        """Connect to ``user``'s client, whose certificate must have ``fingerprint``,
        and authenticate with ``token``."""

    def session_code(self, user: str) -> str | None:
        """The code both users of the session with ``user`` can compare aloud."""

    def has(self, user: str) -> bool: ...

    def open_sessions(self) -> list[str]:
        """The users we have a private session with."""

    def send(self, user: str, text: str) -> bool:
        """Send a private message; False if the connection is gone."""

    def stop(self, user: str) -> None: ...

    def stop_all(self, reason: str) -> None: ...
