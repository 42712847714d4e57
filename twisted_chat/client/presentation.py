"""How the conversation reads: every line about what people said, and about who came
and went, in one place, so that they read alike wherever they are made.

Each function returns the text of one line; the display adds the time, colour and
wrapping. What others wrote is passed on as it came: the display shows any control
character in it visibly, never obeys it.
"""

from __future__ import annotations

import time

WELCOME = "Welcome to the greatest messaging application ever!"


def message(sender: str, text: str) -> str:
    """A message sent to you."""
    return f"{sender}: {text}"


def stored_message(sender: str, text: str, sent: float) -> str:
    """A message that waited for you while you were away."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(sent))
    return f"{sender}: {text}  (sent {when} while you were away)"


def broadcast(sender: str, text: str) -> str:
    return f"{sender}: {text}"


def private(sender: str, text: str) -> str:
    return f"{sender}(private): {text}"


def own_message(to: str, text: str) -> str:
    """What you said to one user, once the server accepted it."""
    return f"\u2192 {to}: {text}"


def own_broadcast(text: str) -> str:
    return f"\u2192 all: {text}"


def own_private(to: str, text: str) -> str:
    return f"\u2192 {to} (private): {text}"


def presence(user: str, online: bool) -> str:
    return f"{user} logged {'in' if online else 'out'}"
