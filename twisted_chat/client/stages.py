"""The stages of a client session and every move between them, in one table: the
session moves only along :data:`MOVES`, and only the stages in :data:`TAKES_INPUT`
take the next typed line (in the others a check is under way, or the session is
leaving, and typed lines wait in order)."""

from __future__ import annotations

import enum


class Stage(enum.Enum):
    CONNECTING = "connecting"
    USERNAME = "username"
    CHECKING_NAME = "checking-name"
    PASSWORD = "password"
    CHECKING_PASSWORD = "checking-password"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    """The server went away; connecting and logging in again (``reconnect``)."""
    LEAVING = "leaving"
    DONE = "done"


MOVES: dict[Stage, frozenset[Stage]] = {
    Stage.CONNECTING: frozenset({Stage.USERNAME}),
    Stage.USERNAME: frozenset({Stage.CHECKING_NAME}),
    Stage.CHECKING_NAME: frozenset({Stage.PASSWORD, Stage.USERNAME}),
    Stage.PASSWORD: frozenset({Stage.CHECKING_PASSWORD}),
    Stage.CHECKING_PASSWORD: frozenset({Stage.ONLINE, Stage.PASSWORD, Stage.USERNAME}),
    Stage.ONLINE: frozenset({Stage.LEAVING, Stage.RECONNECTING}),
    Stage.RECONNECTING: frozenset({Stage.ONLINE, Stage.LEAVING}),
    Stage.LEAVING: frozenset(),
    Stage.DONE: frozenset(),
}
"""Where each stage may go next, besides DONE (reachable from every stage but DONE):
a session moves only along these."""

TAKES_INPUT = frozenset({Stage.USERNAME, Stage.PASSWORD, Stage.ONLINE})
"""Stages that take the next typed line; in the others (a check under way, leaving),
typed lines wait in order."""
