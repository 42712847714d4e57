"""Parsing what the user types."""

from __future__ import annotations

import pytest

from twisted_chat.client.commands import COMMANDS, Command, CommandError, help_text, parse_command


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("whoelse", Command("whoelse", ())),
        ("  whoelse  ", Command("whoelse", ())),
        ("whoelsesince 300", Command("whoelsesince", ("300",))),
        ("message yoda Hey Dude", Command("message", ("yoda", "Hey Dude"))),
        ("message yoda  two  spaces ", Command("message", ("yoda", "two  spaces"))),
        ("broadcast vader is evil", Command("broadcast", ("vader is evil",))),
        ("block hans", Command("block", ("hans",))),
        ("private luke héllo 中 🎉", Command("private", ("luke", "héllo 中 🎉"))),
        ("logout", Command("logout", ())),
    ],
)
def test_valid_commands(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("whatsthetime", "Error. Invalid command: whatsthetime"),
        ("Whoelse", "Error. Invalid command: Whoelse"),
        ("message", "Usage: message <user> <message>"),
        ("message yoda", "Usage: message <user> <message>"),
        ("block", "Usage: block <user>"),
        ("block a b", "Usage: block <user>"),
        ("whoelse now", "Usage: whoelse"),
        ("whoelsesince", "Usage: whoelsesince <seconds>"),
        ("whoelsesince soon", "Usage: whoelsesince <seconds>"),
        ("whoelsesince -5", "Usage: whoelsesince <seconds>"),
    ],
)
def test_errors_say_what_to_type(line: str, error: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_command(line)
    assert str(raised.value).startswith(error)


def test_help_lists_every_command_with_its_arguments() -> None:
    text = help_text()
    for spec in COMMANDS.values():
        assert spec.usage in text
