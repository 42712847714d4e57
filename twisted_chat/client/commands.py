"""What a user types, parsed: the command table (also behind ``help`` and completion)
and a parser that turns one typed line into a :class:`Command` or a clear error.
Pure: no I/O, no Twisted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CommandSpec:
    name: str
    args: tuple[str, ...]
    """Argument names; a last name of ``message`` takes the rest of the line."""
    summary: str

    @property
    def usage(self) -> str:
        return " ".join((self.name, *(f"<{a}>" for a in self.args)))

    @property
    def takes_user(self) -> bool:
        return bool(self.args) and self.args[0] in ("user", "target")


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            "message",
            ("user", "message"),
            "send a message to a user (kept for later if they are offline), or to a #room",
        ),
        CommandSpec("broadcast", ("message",), "send a message to everyone online"),
        CommandSpec("whoelse", (), "list the other users online"),
        CommandSpec(
            "whoelsesince", ("seconds",), "list who was online at any time in the last <seconds>"
        ),
        CommandSpec("block", ("user",), "stop a user reaching you or seeing you"),
        CommandSpec("unblock", ("user",), "undo a block"),
        CommandSpec("startprivate", ("user",), "ask a user for a private chat"),
        CommandSpec(
            "private", ("user", "message"), "send a private message, straight to the user's client"
        ),
        CommandSpec("stopprivate", ("user",), "end a private chat"),
        CommandSpec(
            "fingerprint",
            ("user",),
            "show a private chat's session code, to compare aloud with the user",
        ),
        CommandSpec("join", ("room",), "join a #room, making it if there is none"),
        CommandSpec("leave", ("room",), "leave a #room"),
        CommandSpec("rooms", (), "list your rooms, with their members and what you have not seen"),
        CommandSpec("members", ("room",), "list a room's members, and who is online"),
        CommandSpec(
            "history",
            ("target", "count"),
            "show what was said with a user or in a #room: the last <count> (20 if left "
            "out, at most 200), or 'more' for what came before the last you were shown",
        ),
        CommandSpec("logout", (), "log out and quit"),
        CommandSpec("help", (), "show this list"),
    )
}


DEFAULT_HISTORY = 20
MAX_HISTORY = 200
"""What a ``history`` shows when no count is given, and at most (the server's cap)."""

MAX_WHOELSESINCE = 10**12
"""Seconds (some 31,000 years): a longer window is this one. Bounded so that the number
fits the wire's integers (JSON numbers past 2**53 are not exact everywhere)."""


class CommandError(Exception):
    """A typed line that is not a valid command; the text says what to type instead."""


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]

    @property
    def user(self) -> str:
        """The user a command names (its first argument)."""
        return self.args[0]

    @property
    def seconds(self) -> int:
        """``whoelsesince``'s window (checked and bounded by :func:`parse_command`)."""
        return int(self.args[0])

    @property
    def text(self) -> str:
        """A message's text (its last argument)."""
        return self.args[-1]

    @property
    def count(self) -> int | None:
        """``history``'s count: a number, or None for ``more`` (what came before)."""
        return None if self.args[1] == "more" else int(self.args[1])


def parse_command(line: str) -> Command:
    """Parse one typed line. Words are separated by spaces; a trailing ``message``
    argument keeps its inner spacing as typed."""
    line = line.strip()
    name, _, rest = line.partition(" ")
    spec = COMMANDS.get(name)
    if spec is None:
        raise CommandError(f"Error. Invalid command: {name}. Type help for the commands.")
    if name == "history" and len(rest.split()) == 1:
        rest += f" {DEFAULT_HISTORY}"  # the count may be left out
    args: list[str] = []
    for position, arg in enumerate(spec.args):
        rest = rest.lstrip(" ")
        if not rest:
            raise CommandError(f"Usage: {spec.usage}")
        if arg == "message" and position == len(spec.args) - 1:
            args.append(rest)
            rest = ""
        else:
            word, _, rest = rest.partition(" ")
            args.append(word)
    if rest.strip():
        raise CommandError(f"Usage: {spec.usage}")
    if name == "whoelsesince":
        # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
        if not args[0].isascii() or not args[0].isdigit():
            raise CommandError("Usage: whoelsesince <seconds>  (a whole number of seconds)")
        if len(args[0]) > len(str(MAX_WHOELSESINCE)) or int(args[0]) > MAX_WHOELSESINCE:
            # Any such window reaches back past the server's start: the same answer.
            args[0] = str(MAX_WHOELSESINCE)
    if name in ("join", "leave", "members") and not args[0].startswith("#"):
        raise CommandError(f"Usage: {spec.usage}  (a room's name starts with #: #{args[0]})")
    count = args[1] if name == "history" else "more"
    if count != "more" and not _whole_number(count, 1, MAX_HISTORY):
        raise CommandError(f"Usage: {spec.usage}  (a number from 1 to {MAX_HISTORY}, or more)")
    return Command(name, tuple(args))


def _whole_number(text: str, low: int, high: int) -> bool:
    # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
    return text.isascii() and text.isdigit() and low <= int(text) <= high


def help_text() -> str:
    width = max(len(spec.usage) for spec in COMMANDS.values())
    lines = ["Commands:"]
    lines += [f"  {spec.usage:<{width}}  {spec.summary}" for spec in COMMANDS.values()]
    lines.append("Answer a private-chat request with y or n.")
    lines.append("A room's name starts with #: message #general hello.")
    return "\n".join(lines)
